//! Projections: applying one event to the derived tables, and reading totals as of
//! any position.
//!
//! [`Projector::apply`] is the only code that writes projection tables. The live
//! ledger calls it inside the append transaction; `verify` calls it on an empty
//! database to replay the log, so both paths are one.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::domain::{
    Agreement, AgreementEnd, Correction, Event, FileExported, Kommune, Withholding,
};

/// Kinds in the `entries` table.
pub const KIND_WITHHOLDING: i64 = 1;
pub const KIND_CORRECTION: i64 = 2;

fn days(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce())
}

fn date_from_days(days: i64) -> Option<NaiveDate> {
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

fn position_sql(position: u64) -> i64 {
    // Positions are SQLite rowids: they never exceed i64::MAX.
    i64::try_from(position).expect("positions fit an SQLite integer")
}

/// How many latest-totals rows a [`Projector`] keeps per table before it starts
/// afresh: enough for every agreement of a large kommune batch, bounded so that a
/// long replay does not grow without limit (about 100 bytes per entry).
const REMEMBERED_MAX: usize = 200_000;

/// Applies events to the projection tables. It remembers the latest totals row of
/// each agreement and kommune it wrote or read, so that appending a change does
/// not read the previous row back: per entry that saves two index lookups.
///
/// What it remembers is only right while every change to the projection tables
/// goes through it; its owner forgets it when that may not hold (a rollback, or
/// another connection having appended: see `store::Memo`).
#[derive(Default)]
pub struct Projector {
    agreement_totals: HashMap<String, RawTotals>,
    kommune_totals: HashMap<u16, RawTotals>,
}

impl Projector {
    /// Forgets everything remembered; the tables are read again when needed.
    pub fn forget(&mut self) {
        self.agreement_totals.clear();
        self.kommune_totals.clear();
    }

    /// Applies one event at `position` to the projection tables.
    pub fn apply(
        &mut self,
        conn: &Connection,
        position: u64,
        event: &Event,
    ) -> rusqlite::Result<()> {
        let position = position_sql(position);
        match event {
            Event::AgreementRegistered(agreement) => apply_agreement(conn, position, agreement),
            Event::AgreementEnded(end) => apply_end(conn, end),
            Event::WithholdingRecorded(withholding) => {
                self.apply_withholding(conn, position, withholding)
            }
            Event::WithholdingCorrected(correction) => {
                self.apply_correction(conn, position, correction)
            }
            Event::FileExported(file) => apply_file(conn, position, file),
            Event::FileReissued(reissue) => apply_delivery(
                conn,
                position,
                (reissue.kommune, reissue.sequence),
                "reissued",
                &reissue.delivery_id,
                "",
                None,
            ),
            Event::FileUploaded(upload) => apply_delivery(
                conn,
                position,
                (upload.kommune, upload.sequence),
                "uploaded",
                &upload.senders_file_id,
                &format!(
                    "{} ({} bytes, attempt {})",
                    upload.remote_path, upload.size_bytes, upload.attempt
                ),
                None,
            ),
            Event::ReceiptReceived(receipt) => {
                let detail = receipt
                    .errors
                    .iter()
                    .map(|e| format!("{} {}: {}", e.code, e.code_description, e.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                apply_delivery(
                    conn,
                    position,
                    (receipt.kommune, receipt.sequence),
                    "receipt",
                    &receipt.senders_file_id,
                    &detail,
                    Some(receipt.accepted),
                )
            }
        }
    }
}

fn apply_agreement(
    conn: &Connection,
    position: i64,
    agreement: &Agreement,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO agreements (agreement, position, kommune, valid_from, valid_to, ended)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
    )?
    .execute(params![
        agreement.agreement.as_str(),
        position,
        agreement.kommune.number(),
        days(agreement.valid_from),
        agreement.valid_to.map(days),
    ])?;
    Ok(())
}

fn apply_end(conn: &Connection, end: &AgreementEnd) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE agreements SET ended = ?2 WHERE agreement = ?1")?
        .execute(params![end.agreement.as_str(), days(end.valid_to)])?;
    Ok(())
}

impl Projector {
    fn apply_withholding(
        &mut self,
        conn: &Connection,
        position: i64,
        w: &Withholding,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO entries (kommune, reference, position, kind, agreement, corrects, amount_ore, net_ore)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6)",
        )?
        .execute(params![
            w.kommune.number(),
            w.reference.as_str(),
            position,
            KIND_WITHHOLDING,
            w.agreement.as_str(),
            w.amount.ore(),
        ])?;
        let change = TotalsChange {
            withheld_ore: w.amount.ore(),
            corrected_ore: 0,
            payout: Some(days(w.payout_date)),
        };
        self.add_totals(conn, position, w.agreement.as_str(), w.kommune, &change)
    }

    fn apply_correction(
        &mut self,
        conn: &Connection,
        position: i64,
        c: &Correction,
    ) -> rusqlite::Result<()> {
        let agreement: String = conn
            .prepare_cached("SELECT agreement FROM entries WHERE kommune = ?1 AND reference = ?2")?
            .query_row(params![c.kommune.number(), c.corrects.as_str()], |row| {
                row.get(0)
            })?;
        conn.prepare_cached(
            "INSERT INTO entries (kommune, reference, position, kind, agreement, corrects, amount_ore, net_ore)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
        )?
        .execute(params![
            c.kommune.number(),
            c.reference.as_str(),
            position,
            KIND_CORRECTION,
            agreement,
            c.corrects.as_str(),
            c.amount.ore(),
        ])?;
        conn.prepare_cached(
            "UPDATE entries SET net_ore = net_ore + ?3 WHERE kommune = ?1 AND reference = ?2",
        )?
        .execute(params![
            c.kommune.number(),
            c.corrects.as_str(),
            c.amount.ore()
        ])?;
        let change = TotalsChange {
            withheld_ore: 0,
            corrected_ore: c.amount.ore(),
            payout: None,
        };
        self.add_totals(conn, position, &agreement, c.kommune, &change)
    }

    /// Appends a new totals row for the agreement and for the kommune: the previous
    /// row plus this change.
    fn add_totals(
        &mut self,
        conn: &Connection,
        position: i64,
        agreement: &str,
        kommune: Kommune,
        change: &TotalsChange,
    ) -> rusqlite::Result<()> {
        let previous = match self.agreement_totals.get(agreement) {
            Some(latest) => *latest,
            None => conn
                .prepare_cached(
                    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM agreement_totals
                     WHERE agreement = ?1 ORDER BY position DESC LIMIT 1",
                )?
                .query_row(params![agreement], raw_totals)
                .optional()?
                .unwrap_or_default(),
        };
        let next = previous.plus(change);
        conn.prepare_cached(
            "INSERT INTO agreement_totals (agreement, position, kommune, withheld_ore, corrected_ore, entries, last_payout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            agreement,
            position,
            kommune.number(),
            next.0,
            next.1,
            next.2,
            next.3
        ])?;
        match self.agreement_totals.get_mut(agreement) {
            Some(latest) => *latest = next,
            None => remember(&mut self.agreement_totals, agreement.to_string(), next),
        }
        let previous = match self.kommune_totals.get(&kommune.number()) {
            Some(latest) => *latest,
            None => conn
                .prepare_cached(
                    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM kommune_totals
                     WHERE kommune = ?1 ORDER BY position DESC LIMIT 1",
                )?
                .query_row(params![kommune.number()], raw_totals)
                .optional()?
                .unwrap_or_default(),
        };
        let next = previous.plus(change);
        conn.prepare_cached(
            "INSERT INTO kommune_totals (kommune, position, withheld_ore, corrected_ore, entries, last_payout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![kommune.number(), position, next.0, next.1, next.2, next.3])?;
        remember(&mut self.kommune_totals, kommune.number(), next);
        Ok(())
    }
}

/// Keeps `value` under `key`, starting afresh when the map is full.
fn remember<K: std::hash::Hash + Eq>(map: &mut HashMap<K, RawTotals>, key: K, value: RawTotals) {
    if map.len() >= REMEMBERED_MAX {
        map.clear();
    }
    map.insert(key, value);
}

struct TotalsChange {
    withheld_ore: i64,
    corrected_ore: i64,
    payout: Option<i64>,
}

/// (withheld, corrected, entries, last payout in days) as stored.
#[derive(Clone, Copy, Default)]
struct RawTotals(i64, i64, i64, Option<i64>);

impl RawTotals {
    fn plus(&self, change: &TotalsChange) -> RawTotals {
        RawTotals(
            self.0 + change.withheld_ore,
            self.1 + change.corrected_ore,
            self.2 + 1,
            match (self.3, change.payout) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        )
    }
}

fn raw_totals(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawTotals> {
    Ok(RawTotals(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
    ))
}

fn apply_file(conn: &Connection, position: i64, file: &FileExported) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO files (kommune, sequence, position, file_id, file_name, created_at_us,
            previous_cutoff_position, cutoff_position, test_marker, record_count, plus_ore, minus_ore, sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        file.kommune.number(),
        file.sequence,
        position,
        &file.file_id[..],
        file.file_name,
        file.created_at_us,
        position_sql(file.previous_cutoff_position),
        position_sql(file.cutoff_position),
        file.test_marker,
        position_sql(file.record_count),
        file.plus_ore,
        file.minus_ore,
        &file.sha256[..],
    ])?;
    Ok(())
}

fn apply_delivery(
    conn: &Connection,
    position: i64,
    (kommune, sequence): (Kommune, u32),
    kind: &str,
    senders_file_id: &[u8; 16],
    detail: &str,
    accepted: Option<bool>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO deliveries (position, kommune, sequence, kind, senders_file_id, detail, accepted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        position,
        kommune.number(),
        sequence,
        kind,
        &senders_file_id[..],
        detail,
        accepted
    ])?;
    Ok(())
}

/// Totals of one agreement or one kommune at some position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Sum of withholdings, øre.
    pub withheld_ore: i64,
    /// Sum of corrections (signed), øre.
    pub corrected_ore: i64,
    /// `withheld_ore + corrected_ore`.
    pub net_ore: i64,
    /// Number of withholdings and corrections.
    pub entries: u64,
    pub last_payout_date: Option<NaiveDate>,
}

impl Totals {
    fn from_raw(raw: RawTotals) -> Totals {
        Totals {
            withheld_ore: raw.0,
            corrected_ore: raw.1,
            net_ore: raw.0 + raw.1,
            entries: u64::try_from(raw.2).unwrap_or(0),
            last_payout_date: raw.3.and_then(date_from_days),
        }
    }
}

/// One agreement's totals as of `position` (`None` if it had no entries by then).
pub fn agreement_totals(
    conn: &Connection,
    agreement: &str,
    position: u64,
) -> rusqlite::Result<Option<Totals>> {
    conn.prepare_cached(
        "SELECT withheld_ore, corrected_ore, entries, last_payout FROM agreement_totals
         WHERE agreement = ?1 AND position <= ?2 ORDER BY position DESC LIMIT 1",
    )?
    .query_row(params![agreement, position_sql(position)], raw_totals)
    .optional()
    .map(|raw| raw.map(Totals::from_raw))
}

/// Every kommune's totals as of `position`, in code order; kommuner without
/// entries by then are left out.
pub fn kommune_totals(
    conn: &Connection,
    position: u64,
) -> rusqlite::Result<Vec<(Kommune, Totals)>> {
    let mut result = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT withheld_ore, corrected_ore, entries, last_payout FROM kommune_totals
         WHERE kommune = ?1 AND position <= ?2 ORDER BY position DESC LIMIT 1",
    )?;
    for kommune in Kommune::all() {
        let raw = statement
            .query_row(
                params![kommune.number(), position_sql(position)],
                raw_totals,
            )
            .optional()?;
        if let Some(raw) = raw {
            result.push((kommune, Totals::from_raw(raw)));
        }
    }
    Ok(result)
}

/// Every agreement of one kommune with its totals as of `position`, by reference.
pub fn agreements_of_kommune(
    conn: &Connection,
    kommune: Kommune,
    position: u64,
) -> rusqlite::Result<Vec<(String, Totals)>> {
    let mut statement = conn.prepare_cached(
        "SELECT t.agreement, t.withheld_ore, t.corrected_ore, t.entries, t.last_payout
         FROM agreement_totals t
         WHERE t.kommune = ?1 AND t.position = (
             SELECT MAX(position) FROM agreement_totals
             WHERE agreement = t.agreement AND position <= ?2)
         ORDER BY t.agreement",
    )?;
    let rows = statement.query_map(params![kommune.number(), position_sql(position)], |row| {
        let agreement: String = row.get(0)?;
        let raw = RawTotals(row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
        Ok((agreement, Totals::from_raw(raw)))
    })?;
    rows.collect()
}
