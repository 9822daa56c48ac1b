//! The rules' view of the ledger, read inside the writing transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use super::projection::{KIND_CORRECTION, KIND_WITHHOLDING};
use super::sql::{self, args, Db, Source};
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
pub(crate) struct SqlView<'c> {
    pub conn: &'c Db,
    pub agreements: &'c AgreementMemo,
}

const AGREEMENTS: Source = Source {
    table: "agreements",
};
const ENTRIES: Source = Source { table: "entries" };

impl SqlView<'_> {
    fn event_at(&self, position: u64) -> Result<Event, LedgerError> {
        let payload = self
            .conn
            .query_opt(
                "SELECT payload FROM events WHERE position = ?1",
                &[sql::position(position)?],
                |row| Ok(row.blob(Source { table: "events" }, 0)?.to_vec()),
            )?
            .ok_or_else(|| self.unexpected(position, "an event"))?;
        codec::decode(position, &payload)
    }

    fn unexpected(&self, position: u64, wanted: &str) -> LedgerError {
        LedgerError::CorruptPayload {
            position,
            reason: format!(
                "the projection points at this position as {wanted}, but it is not one"
            ),
        }
    }
}

impl LedgerView for SqlView<'_> {
    type Error = LedgerError;

    fn agreement(&self, agreement: &AgreementRef) -> Result<Option<AgreementState>, LedgerError> {
        if let Some(state) = self.agreements.get(agreement) {
            return Ok(Some(state));
        }
        let row = self.conn.query_opt(
            "SELECT position, ended FROM agreements WHERE agreement = ?1",
            &args![agreement.as_str()],
            |row| Ok((row.unsigned(AGREEMENTS, 0)?, row.opt_int(AGREEMENTS, 1)?)),
        )?;
        let Some((position, ended)) = row else {
            return Ok(None);
        };
        let Event::AgreementRegistered(registered) = self.event_at(position)? else {
            return Err(self.unexpected(position, "an agreement"));
        };
        let ended = match ended {
            None => None,
            Some(days) => Some(
                i32::try_from(days)
                    .ok()
                    .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
                    .ok_or_else(|| LedgerError::CorruptLedger {
                        position: Some(position),
                        what: format!(
                            "agreement {agreement} has the end date {days}, which is no date"
                        ),
                    })?,
            ),
        };
        let state = AgreementState { registered, ended };
        self.agreements.remember(agreement, &state);
        Ok(Some(state))
    }

    fn entry(
        &self,
        kommune: Kommune,
        reference: &KyRef,
    ) -> Result<Option<EntryState>, LedgerError> {
        let row = self.conn.query_opt(
            "SELECT position, kind, net_ore FROM entries WHERE kommune = ?1 AND reference = ?2",
            &args![kommune.number(), reference.as_str()],
            |row| {
                Ok((
                    row.unsigned(ENTRIES, 0)?,
                    row.int(ENTRIES, 1)?,
                    row.opt_int(ENTRIES, 2)?,
                ))
            },
        )?;
        let Some((position, kind, net_ore)) = row else {
            return Ok(None);
        };
        match (kind, self.event_at(position)?) {
            (KIND_WITHHOLDING, Event::WithholdingRecorded(withholding)) => {
                let net_ore = net_ore.ok_or_else(|| LedgerError::CorruptLedger {
                    position: Some(position),
                    what: format!("withholding {reference} of kommune {kommune} has no net sum"),
                })?;
                Ok(Some(EntryState::Withholding {
                    withholding,
                    net_ore,
                }))
            }
            (KIND_CORRECTION, Event::WithholdingCorrected(correction)) => {
                Ok(Some(EntryState::Correction(correction)))
            }
            _ => Err(self.unexpected(position, "an entry")),
        }
    }
}
