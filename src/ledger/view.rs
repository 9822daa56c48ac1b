//! The rules' view of the ledger, read inside the writing transaction.

use std::cell::RefCell;
use std::collections::HashMap;

use super::keys::Keyring;
use super::postgres;
use super::sql::{self, args, Db, Source};
use super::store::open_event;
use super::{codec, LedgerError};
use crate::domain::{
    AgreementRef, AgreementState, Command, EntryKind, EntryState, Event, Kommune, KyRef, LedgerView,
};

/// How many agreement states an [`AgreementMemo`] keeps before it starts afresh
/// (a few hundred bytes each).
const REMEMBERED_MAX: usize = 200_000;

/// Agreement states the rules asked for (or learnt there is none of), so that the
/// next withholding of the same agreement does not read and decode its
/// registration again. An appended event about an agreement updates what is
/// remembered of it, and the whole memo is forgotten when the ledger cannot trust
/// it (see `store::Memo`).
#[derive(Default)]
pub(super) struct AgreementMemo(RefCell<HashMap<String, Option<AgreementState>>>);

impl AgreementMemo {
    pub(super) fn forget(&mut self) {
        self.0.get_mut().clear();
    }

    /// Keeps what is remembered in step with an appended registration or end.
    pub(super) fn appended(&mut self, event: &Event) {
        let map = self.0.get_mut();
        match event {
            Event::AgreementRegistered(agreement) => {
                let state = AgreementState {
                    registered: agreement.clone(),
                    ended: None,
                };
                map.insert(agreement.agreement.as_str().to_string(), Some(state));
            }
            Event::AgreementEnded(end) => {
                if let Some(Some(state)) = map.get_mut(end.agreement.as_str()) {
                    state.ended = Some(end.valid_to);
                } else {
                    map.remove(end.agreement.as_str());
                }
            }
            _ => {}
        }
    }

    /// What is remembered: `Some(None)` when the agreement is known not to exist.
    fn get(&self, agreement: &AgreementRef) -> Option<Option<AgreementState>> {
        self.0.borrow().get(agreement.as_str()).cloned()
    }

    fn knows(&self, agreement: &str) -> bool {
        self.0.borrow().contains_key(agreement)
    }

    fn remember(&self, agreement: &str, state: Option<AgreementState>) {
        let mut map = self.0.borrow_mut();
        if map.len() >= REMEMBERED_MAX {
            map.clear();
        }
        map.insert(agreement.to_string(), state);
    }
}

/// The entries one write transaction read or wrote, by (kommune, reference):
/// `None` for a reference known to be free. Filled by [`prefetch`] for a batch's
/// references and then kept in step with every appended entry, so that the rules
/// need not ask the database line by line; cleared when the transaction begins.
/// Without a prefetch (SQLite, or a write that is no ingest) it stays empty and
/// costs the append nothing.
#[derive(Default)]
pub(super) struct EntryMemo {
    states: HashMap<(u16, String), Option<EntryState>>,
    /// Whether a prefetch filled it in this transaction.
    active: bool,
}

impl EntryMemo {
    pub(super) fn forget(&mut self) {
        self.states.clear();
        self.active = false;
    }

    /// The agreement of the withholding `event` corrects, if `event` is a
    /// correction of a withholding this memo holds.
    pub(super) fn corrected_agreement(&self, event: &Event) -> Option<String> {
        let Event::WithholdingCorrected(correction) = event else {
            return None;
        };
        match self
            .states
            .get(&key(correction.kommune, correction.corrects.as_str()))
        {
            Some(Some(EntryState::Withholding { withholding, .. })) => {
                Some(withholding.agreement.as_str().to_string())
            }
            _ => None,
        }
    }

    /// Keeps the memo in step with an appended withholding or correction.
    pub(super) fn appended(&mut self, event: &Event) {
        if !self.active {
            return;
        }
        match event {
            Event::WithholdingRecorded(withholding) => {
                let state = EntryState::Withholding {
                    withholding: withholding.clone(),
                    net_ore: withholding.amount.ore(),
                };
                self.states.insert(
                    key(withholding.kommune, withholding.reference.as_str()),
                    Some(state),
                );
            }
            Event::WithholdingCorrected(correction) => {
                let corrected = key(correction.kommune, correction.corrects.as_str());
                match self.states.get_mut(&corrected) {
                    Some(Some(EntryState::Withholding { net_ore, .. })) => {
                        // The rules accepted this correction only if the sum fits.
                        *net_ore = net_ore
                            .checked_add(correction.amount.ore())
                            .expect("decide refuses a correction whose new net overflows");
                    }
                    // Not a withholding this memo holds: the database answers.
                    _ => {
                        self.states.remove(&corrected);
                    }
                }
                self.states.insert(
                    key(correction.kommune, correction.reference.as_str()),
                    Some(EntryState::Correction(correction.clone())),
                );
            }
            _ => {}
        }
    }
}

fn key(kommune: Kommune, reference: &str) -> (u16, String) {
    (kommune.number(), reference.to_string())
}

/// Reads what `decide` needs. Inside a batch it sees the batch's earlier lines,
/// because they were applied to the same (uncommitted) transaction and to the
/// memos.
pub(crate) struct SqlView<'c> {
    pub conn: &'c Db,
    /// Opens the CPRs the rules compare (`None`: a ledger of plain CPRs).
    pub keys: Option<&'c Keyring>,
    pub agreements: &'c AgreementMemo,
    pub entries: &'c EntryMemo,
}

const AGREEMENTS: Source = Source {
    table: "agreements",
};
const ENTRIES: Source = Source { table: "entries" };
const EVENTS: Source = Source { table: "events" };

impl SqlView<'_> {
    fn event_at(&self, position: u64) -> Result<Event, LedgerError> {
        let payload = self
            .conn
            .query_opt(
                "SELECT payload FROM events WHERE position = ?1",
                &[sql::position(position)?],
                |row| Ok(row.blob(EVENTS, 0)?.to_vec()),
            )?
            .ok_or_else(|| unexpected(position, "an event"))?;
        let mut event = codec::decode(position, &payload)?;
        open_event(self.conn, self.keys, &mut event)?;
        Ok(event)
    }
}

impl LedgerView for SqlView<'_> {
    type Error = LedgerError;

    fn agreement(&self, agreement: &AgreementRef) -> Result<Option<AgreementState>, LedgerError> {
        if let Some(state) = self.agreements.get(agreement) {
            return Ok(state);
        }
        let row = self.conn.query_opt(
            "SELECT position, ended FROM agreements WHERE agreement = ?1",
            &args![agreement.as_str()],
            |row| Ok((row.unsigned(AGREEMENTS, 0)?, row.opt_int(AGREEMENTS, 1)?)),
        )?;
        let state = match row {
            None => None,
            Some((position, ended)) => Some(agreement_state(
                agreement.as_str(),
                position,
                ended,
                self.event_at(position)?,
            )?),
        };
        self.agreements.remember(agreement.as_str(), state.clone());
        Ok(state)
    }

    fn entry(
        &self,
        kommune: Kommune,
        reference: &KyRef,
    ) -> Result<Option<EntryState>, LedgerError> {
        if let Some(state) = self.entries.states.get(&key(kommune, reference.as_str())) {
            return Ok(state.clone());
        }
        let row = self.conn.query_opt(
            "SELECT position, kind, net_ore FROM entries WHERE kommune = ?1 AND reference = ?2",
            &args![kommune.number(), reference.as_str()],
            |row| {
                let position = row.unsigned(ENTRIES, 0)?;
                Ok(StoredEntry {
                    position,
                    kind: row.entry_kind(ENTRIES, 1, || format!("at position {position}"))?,
                    net_ore: row.opt_int(ENTRIES, 2)?,
                })
            },
        )?;
        let Some(stored) = row else {
            return Ok(None);
        };
        let position = stored.position;
        stored
            .state(kommune, reference.as_str(), self.event_at(position)?)
            .map(Some)
    }
}

/// An agreement's state from its projection row and its registration event.
fn agreement_state(
    agreement: &str,
    position: u64,
    ended: Option<i64>,
    event: Event,
) -> Result<AgreementState, LedgerError> {
    let Event::AgreementRegistered(registered) = event else {
        return Err(unexpected(position, "an agreement"));
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
    Ok(AgreementState { registered, ended })
}

/// An `entries` row: where the entry's event is, its kind and its net.
struct StoredEntry {
    position: u64,
    kind: EntryKind,
    net_ore: Option<i64>,
}

impl StoredEntry {
    /// The entry's state, from this row and the event at its position.
    fn state(
        &self,
        kommune: Kommune,
        reference: &str,
        event: Event,
    ) -> Result<EntryState, LedgerError> {
        match (self.kind, event) {
            (EntryKind::Withholding, Event::WithholdingRecorded(withholding)) => {
                let net_ore = self.net_ore.ok_or_else(|| LedgerError::CorruptLedger {
                    position: Some(self.position),
                    what: format!("withholding {reference} of kommune {kommune} has no net sum"),
                })?;
                Ok(EntryState::Withholding {
                    withholding,
                    net_ore,
                })
            }
            (EntryKind::Correction, Event::WithholdingCorrected(correction)) => {
                Ok(EntryState::Correction(correction))
            }
            _ => Err(unexpected(self.position, "an entry")),
        }
    }
}

fn unexpected(position: u64, wanted: &str) -> LedgerError {
    LedgerError::CorruptPayload {
        position,
        reason: format!("the projection points at this position as {wanted}, but it is not one"),
    }
}

/// Reads, in a few statements, what the rules will ask about a batch's lines: the
/// entries its references name and the agreements it names that the memo does not
/// know. PostgreSQL only: there every question costs a round trip to the server,
/// and a read would also send the transaction's delayed inserts
/// ([`Db::insert_later`]) one by one. SQLite answers each question from its own
/// pages, so it is asked line by line as before.
pub(crate) fn prefetch(
    db: &Db,
    keys: Option<&Keyring>,
    commands: &[(usize, Command)],
    agreements: &AgreementMemo,
    entries: &mut EntryMemo,
) -> Result<(), LedgerError> {
    let Db::Postgres(session) = db else {
        return Ok(());
    };
    entries.active = true;
    let (entry_keys, agreement_refs) = wanted(commands, agreements);
    if let Some(keys) = keys {
        keys.prefetch(db, agreement_refs.iter().map(String::as_str))?;
    }
    for chunk in agreement_refs.chunks(PREFETCH_CHUNK) {
        let mut found = Vec::with_capacity(chunk.len());
        postgres::prefetch_agreements(session, chunk, &mut |row| {
            let agreement = row.text(AGREEMENTS, 0)?.to_string();
            let position = row.unsigned(AGREEMENTS, 1)?;
            let ended = row.opt_int(AGREEMENTS, 2)?;
            let event = codec::decode(position, row.blob(EVENTS, 3)?)?;
            found.push((agreement, position, ended, event));
            Ok(())
        })?;
        for agreement in chunk {
            agreements.remember(agreement, None);
        }
        for (agreement, position, ended, mut event) in found {
            open_event(db, keys, &mut event)?;
            let state = agreement_state(&agreement, position, ended, event)?;
            agreements.remember(&agreement, Some(state));
        }
    }
    for chunk in entry_keys.chunks(PREFETCH_CHUNK) {
        for key in chunk {
            entries.states.insert(key.clone(), None);
        }
        let mut found = Vec::new();
        postgres::prefetch_entries(session, chunk, &mut |row| {
            let number = row.narrow::<u16>(ENTRIES, 0)?;
            let kommune =
                Kommune::from_number(number).ok_or_else(|| LedgerError::CorruptLedger {
                    position: None,
                    what: format!("an entry names kommune {number}, which is no kommune"),
                })?;
            let reference = row.text(ENTRIES, 1)?.to_string();
            let position = row.unsigned(ENTRIES, 2)?;
            let stored = StoredEntry {
                position,
                kind: row.entry_kind(ENTRIES, 3, || format!("at position {position}"))?,
                net_ore: row.opt_int(ENTRIES, 4)?,
            };
            let event = codec::decode(stored.position, row.blob(EVENTS, 5)?)?;
            found.push((number, kommune, reference, stored, event));
            Ok(())
        })?;
        if let Some(keys) = keys {
            let agreements = found.iter().filter_map(|(.., event)| event.personal_cpr());
            keys.prefetch(db, agreements.map(|(agreement, _)| agreement.as_str()))?;
        }
        for (number, kommune, reference, stored, mut event) in found {
            open_event(db, keys, &mut event)?;
            let state = stored.state(kommune, &reference, event)?;
            entries.states.insert((number, reference), Some(state));
        }
    }
    Ok(())
}

/// The entry keys (kommune, reference) and the agreements the rules will ask
/// about for `commands`, sorted and without repeats; agreements the memo already
/// knows are left out.
fn wanted(
    commands: &[(usize, Command)],
    agreements: &AgreementMemo,
) -> (Vec<(u16, String)>, Vec<String>) {
    let mut entry_keys: Vec<(u16, String)> = Vec::new();
    let mut agreement_refs: Vec<String> = Vec::new();
    let mut want_agreement = |agreement: &AgreementRef| {
        if !agreements.knows(agreement.as_str()) {
            agreement_refs.push(agreement.as_str().to_string());
        }
    };
    for (_, command) in commands {
        match command {
            Command::RegisterAgreement(agreement) => want_agreement(&agreement.agreement),
            Command::EndAgreement(end) => want_agreement(&end.agreement),
            Command::RecordWithholding(withholding) => {
                want_agreement(&withholding.agreement);
                entry_keys.push(key(withholding.kommune, withholding.reference.as_str()));
            }
            Command::CorrectWithholding(correction) => {
                entry_keys.push(key(correction.kommune, correction.reference.as_str()));
                entry_keys.push(key(correction.kommune, correction.corrects.as_str()));
            }
        }
    }
    entry_keys.sort_unstable();
    entry_keys.dedup();
    agreement_refs.sort_unstable();
    agreement_refs.dedup();
    (entry_keys, agreement_refs)
}

/// Keys one prefetching statement asks about.
const PREFETCH_CHUNK: usize = 10_000;
