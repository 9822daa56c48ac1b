//! The rules' view of the ledger, read from SQLite inside the writing transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::projection::{KIND_CORRECTION, KIND_WITHHOLDING};
use super::{codec, LedgerError};
use crate::domain::{AgreementRef, AgreementState, EntryState, Event, Kommune, KyRef, LedgerView};

/// How many agreement states an [`AgreementMemo`] keeps before it starts afresh
/// (a few hundred bytes each).
const REMEMBERED_MAX: usize = 200_000;

/// Agreement states the rules asked for, so that the next withholding of the same
/// agreement does not read and decode its registration again. An entry is dropped
/// whenever an event about that agreement is appended, and the whole memo is
/// forgotten when the ledger cannot trust it (see `store::Memo`).
#[derive(Default)]
pub struct AgreementMemo(RefCell<HashMap<String, AgreementState>>);

impl AgreementMemo {
    pub fn forget(&mut self) {
        self.0.get_mut().clear();
    }

    /// Drops what is remembered of one agreement, after an event changed it.
    pub fn changed(&mut self, agreement: &AgreementRef) {
        self.0.get_mut().remove(agreement.as_str());
    }

    fn get(&self, agreement: &AgreementRef) -> Option<AgreementState> {
        self.0.borrow().get(agreement.as_str()).cloned()
    }

    fn remember(&self, agreement: &AgreementRef, state: &AgreementState) {
        let mut map = self.0.borrow_mut();
        if map.len() >= REMEMBERED_MAX {
            map.clear();
        }
        map.insert(agreement.as_str().to_string(), state.clone());
    }
}

/// Reads what `decide` needs. Inside a batch it sees the batch's earlier lines,
/// because they were applied to the same (uncommitted) transaction.
pub struct SqlView<'c> {
    pub conn: &'c Connection,
    pub agreements: &'c AgreementMemo,
}

impl SqlView<'_> {
    fn event_at(&self, position: i64) -> Result<Event, LedgerError> {
        let payload: Vec<u8> = self
            .conn
            .prepare_cached("SELECT payload FROM events WHERE position = ?1")?
            .query_row(params![position], |row| row.get(0))?;
        let position = u64::try_from(position).unwrap_or(0);
        codec::decode(position, &payload)
    }

    fn unexpected(&self, position: i64, wanted: &str) -> LedgerError {
        LedgerError::CorruptPayload {
            position: u64::try_from(position).unwrap_or(0),
            reason: format!("the projection points at this event as {wanted}, but it is not one"),
        }
    }
}

impl LedgerView for SqlView<'_> {
    type Error = LedgerError;

    fn agreement(&self, agreement: &AgreementRef) -> Result<Option<AgreementState>, LedgerError> {
        if let Some(state) = self.agreements.get(agreement) {
            return Ok(Some(state));
        }
        let row: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT position, ended FROM agreements WHERE agreement = ?1")?
            .query_row(params![agreement.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((position, ended)) = row else {
            return Ok(None);
        };
        let Event::AgreementRegistered(registered) = self.event_at(position)? else {
            return Err(self.unexpected(position, "an agreement"));
        };
        let ended = ended
            .and_then(|days| i32::try_from(days).ok())
            .and_then(chrono::NaiveDate::from_num_days_from_ce_opt);
        let state = AgreementState { registered, ended };
        self.agreements.remember(agreement, &state);
        Ok(Some(state))
    }

    fn entry(
        &self,
        kommune: Kommune,
        reference: &KyRef,
    ) -> Result<Option<EntryState>, LedgerError> {
        let row: Option<(i64, i64, Option<i64>)> = self
            .conn
            .prepare_cached(
                "SELECT position, kind, net_ore FROM entries WHERE kommune = ?1 AND reference = ?2",
            )?
            .query_row(params![kommune.number(), reference.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some((position, kind, net_ore)) = row else {
            return Ok(None);
        };
        match (kind, self.event_at(position)?) {
            (KIND_WITHHOLDING, Event::WithholdingRecorded(withholding)) => {
                Ok(Some(EntryState::Withholding {
                    withholding,
                    net_ore: net_ore.unwrap_or(0),
                }))
            }
            (KIND_CORRECTION, Event::WithholdingCorrected(correction)) => {
                Ok(Some(EntryState::Correction(correction)))
            }
            _ => Err(self.unexpected(position, "an entry")),
        }
    }
}
