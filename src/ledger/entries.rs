//! The entries of files, read from the log itself (not from projections), in log
//! order: through the (kommune, position) index for one kommune's range, or in one
//! sequential pass over the log for many kommuner at once.

use std::collections::HashMap;

use super::codec::decode as decode_payload;
use super::postgres;
use super::sql::{self, args, Db, Source};
use super::{Ledger, LedgerError};
use crate::domain::{Event, Kommune, KyRef, Withholding};

/// Which entries a file holds: those of `kommune` at positions in
/// `(after_position, through_position]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRange {
    pub kommune: Kommune,
    pub after_position: u64,
    pub through_position: u64,
}

const EVENTS: Source = Source { table: "events" };

/// Events read per query: a window of the log held in memory at a time, so that
/// the withholdings its corrections correct can be read in one more query before
/// the visitor sees them (PostgreSQL streams rows over the one connection, which
/// is busy until the window is read), or found in the window itself. Issue 24,
/// paired runs of the 1M-record export: 16,384 → 24,576 positions 1.29 → 1.24 s
/// at a peak RSS of 38–42 MB; 32,768 gave 1.17 s but up to 48 MB, too near the
/// export's budget of 50.
const WINDOW: u64 = 24_576;

/// Entries of one kommune read per query through the index.
const INDEX_WINDOW: u64 = 4_096;

impl Ledger {
    /// Calls `visit(position, event)` for each entry of `range`, in log order,
    /// found through the (kommune, position) index. Payloads come from the
    /// `events` table, so what is rendered is a function of the log.
    pub fn for_each_entry<E: From<LedgerError>>(
        &self,
        range: EntryRange,
        mut visit: impl FnMut(u64, Event, Option<Withholding>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = range.after_position;
        loop {
            let rows = self.db().query_vec(
                &format!(
                    "SELECT ev.position, ev.payload FROM entries en JOIN events ev ON ev.position = en.position
                     WHERE en.kommune = ?1 AND en.position > ?2 AND en.position <= ?3
                     ORDER BY en.position LIMIT {INDEX_WINDOW}"
                ),
                &[
                    range.kommune.number().into(),
                    sql::position(after)?,
                    sql::position(range.through_position)?,
                ],
                |row| {
                    let position = row.unsigned(EVENTS, 0)?;
                    Ok((position, decode_payload(position, row.blob(EVENTS, 1)?)?))
                },
            )?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(());
            };
            let mut rows = rows;
            let mut corrected = self.corrected_withholdings(rows.iter().map(|(_, event)| event))?;
            self.open_known(rows.iter_mut().map(|(_, event)| event), &mut corrected)?;
            for (position, event) in rows {
                let withholding = corrected_in(&mut corrected, &event);
                visit(position, event, withholding)?;
            }
            after = last;
        }
    }

    /// Calls `visit(position, stream, event)` for each event in `(after,
    /// through]` stored as an entry (`WithholdingRecorded` or
    /// `WithholdingCorrected`) whose stream's kommune `wanted` accepts, in log
    /// order: one sequential pass over the log. A stream that names no kommune is
    /// passed on, for the caller to judge by the decoded event.
    pub fn for_each_entry_event<E: From<LedgerError>>(
        &self,
        after: u64,
        through: u64,
        wanted: impl Fn(u16) -> bool,
        mut visit: impl FnMut(u64, &str, Event, Option<Withholding>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut from = after;
        while from < through {
            let to = from.saturating_add(WINDOW).min(through);
            let mut window = Vec::new();
            // The streams of the window, end to end: one allocation, not one per event.
            let mut streams = String::new();
            self.db().query_each(
                "SELECT position, stream, payload FROM events
                 WHERE position > ?1 AND position <= ?2
                   AND event_type IN ('WithholdingRecorded', 'WithholdingCorrected')
                 ORDER BY position",
                &[sql::position(from)?, sql::position(to)?],
                |row| {
                    let stream = row.text(EVENTS, 1)?;
                    // The stream (`entry/<kommune>/<reference>`, hashed with the
                    // event) tells the kommune without decoding the payload: most
                    // events belong to other kommuner.
                    if stream_kommune(stream.as_bytes()).is_some_and(|number| !wanted(number)) {
                        return Ok(());
                    }
                    let position = row.unsigned(EVENTS, 0)?;
                    let event = decode_payload(position, row.blob(EVENTS, 2)?)?;
                    let start = streams.len();
                    streams.push_str(stream);
                    window.push((position, start..streams.len(), event));
                    Ok(())
                },
            )?;
            let mut corrected =
                self.corrected_withholdings(window.iter().map(|(_, _, event)| event))?;
            self.open_known(window.iter_mut().map(|(_, _, event)| event), &mut corrected)?;
            for (position, stream, event) in window {
                let withholding = corrected_in(&mut corrected, &event);
                let stream = streams.get(stream).unwrap_or_default();
                visit(position, stream, event, withholding)?;
            }
            from = to;
        }
        Ok(())
    }

    /// The withholding of `kommune` with KY reference `reference`, with its
    /// position, read from the log (`None` if the ledger holds none).
    pub fn withholding(
        &self,
        kommune: Kommune,
        reference: &KyRef,
    ) -> Result<Option<(u64, Withholding)>, LedgerError> {
        let row = self.db().query_opt(
            "SELECT ev.position, ev.payload FROM entries en JOIN events ev ON ev.position = en.position
             WHERE en.kommune = ?1 AND en.reference = ?2",
            &args![kommune.number(), reference.as_str()],
            |row| Ok((row.unsigned(EVENTS, 0)?, row.blob(EVENTS, 1)?.to_vec())),
        )?;
        let Some((position, payload)) = row else {
            return Ok(None);
        };
        Ok(match decode_payload(position, &payload)? {
            Event::WithholdingRecorded(w) if w.kommune == kommune && w.reference == *reference => {
                Some((position, w))
            }
            _ => None,
        })
    }
}

/// The withholdings the corrections among `events` correct, found ones only, by
/// (kommune, reference): among `events` themselves when they are there (most
/// corrections correct a recent payout), else one lookup each on SQLite, one
/// query per window on PostgreSQL (where each lookup is a round trip to the
/// server).
type Corrected = HashMap<(u16, String), Withholding>;

impl Ledger {
    fn corrected_withholdings<'e>(
        &self,
        events: impl Iterator<Item = &'e Event> + Clone,
    ) -> Result<Corrected, LedgerError> {
        let mut wanted: Vec<(Kommune, &KyRef)> = events
            .clone()
            .filter_map(|event| match event {
                Event::WithholdingCorrected(c) => Some((c.kommune, &c.corrects)),
                _ => None,
            })
            .collect();
        let mut found = Corrected::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        // A reference names one withholding of a kommune in the whole log (the
        // rules, and the unique index the lookups below go through), so the one
        // found among `events` is the one a lookup would find.
        let targets: std::collections::HashSet<(u16, &str)> = wanted
            .iter()
            .map(|(kommune, reference)| (kommune.number(), reference.as_str()))
            .collect();
        for event in events {
            if let Event::WithholdingRecorded(w) = event {
                let key = (w.kommune.number(), w.reference.as_str());
                if targets.contains(&key) {
                    found.insert((key.0, key.1.to_string()), w.clone());
                }
            }
        }
        wanted.retain(|(kommune, reference)| {
            !found.contains_key(&(kommune.number(), reference.as_str().to_string()))
        });
        wanted.sort_unstable_by(|(a_kommune, a_reference), (b_kommune, b_reference)| {
            (a_kommune.number(), a_reference.as_str())
                .cmp(&(b_kommune.number(), b_reference.as_str()))
        });
        wanted.dedup();
        let Db::Postgres(session) = self.db() else {
            for (kommune, reference) in wanted {
                if let Some((_, withholding)) = self.withholding(kommune, reference)? {
                    found.insert(
                        (kommune.number(), reference.as_str().to_string()),
                        withholding,
                    );
                }
            }
            return Ok(found);
        };
        let keys: Vec<(u16, String)> = wanted
            .iter()
            .map(|(kommune, reference)| (kommune.number(), reference.as_str().to_string()))
            .collect();
        for chunk in keys.chunks(10_000) {
            postgres::prefetch_entries(session, chunk, &mut |row| {
                let position = row.unsigned(EVENTS, 2)?;
                if let Event::WithholdingRecorded(w) =
                    decode_payload(position, row.blob(EVENTS, 5)?)?
                {
                    let kommune = row.narrow::<u16>(EVENTS, 0)?;
                    let reference = row.text(EVENTS, 1)?;
                    if (w.kommune.number(), w.reference.as_str()) == (kommune, reference) {
                        found.insert((kommune, reference.to_string()), w);
                    }
                }
                Ok(())
            })?;
        }
        Ok(found)
    }
}

impl Ledger {
    /// Opens the CPRs of `events` and `corrected` this process has opened before,
    /// all at once, and reads the data keys of the others in a few queries
    /// ([`Keyring::open_known`]), so that opening each CPR the visitor needs
    /// costs no round trip. Opening the rest is the visitor's: an entry outside
    /// every range it renders is never opened, so an erased agreement's old
    /// entries do not stop a later file.
    fn open_known<'e>(
        &self,
        events: impl Iterator<Item = &'e mut Event>,
        corrected: &'e mut Corrected,
    ) -> Result<(), LedgerError> {
        let Some(keys) = self.keyring() else {
            return Ok(());
        };
        keys.open_known(
            self.db(),
            events
                .filter_map(Event::personal_cpr_mut)
                .chain(corrected.values_mut().map(|w| (&w.agreement, &mut w.cpr))),
        )
    }
}

/// The withholding `event` corrects, if it is a correction and it was found.
fn corrected_in(corrected: &mut Corrected, event: &Event) -> Option<Withholding> {
    let Event::WithholdingCorrected(c) = event else {
        return None;
    };
    corrected
        .get(&(c.kommune.number(), c.corrects.as_str().to_string()))
        .cloned()
}

/// The kommune number in an entry's stream `entry/<kommune>/<reference>`, read
/// from the bytes (no UTF-8 check: only four ASCII digits matter).
pub(super) fn stream_kommune(stream: &[u8]) -> Option<u16> {
    let digits = stream.strip_prefix(b"entry/")?.get(..4)?;
    digits.iter().try_fold(0u16, |number, &byte| {
        byte.is_ascii_digit()
            .then(|| number * 10 + u16::from(byte - b'0'))
    })
}
