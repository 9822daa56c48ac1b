//! Projections: applying one event to the derived tables, and reading totals as of
//! any position.
//!
//! [`Projector::apply`] is the only code that writes projection tables. The live
//! ledger calls it inside the append transaction; `verify` calls it on an empty
//! database to replay the log, so both paths are one.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
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

/// Applies events to the projection tables of one connection.
///
/// It remembers nothing about the data between events: every projection row is a
/// function of the log's events and their positions, so a replay in any grouping
/// of transactions writes the same rows. It only keeps the statement every
/// withholding runs, prepared once rather than looked up per entry.
pub struct Projector<'c> {
    conn: &'c Connection,
    block: u64,
    insert_withholding: Option<CachedStatement<'c>>,
}

impl<'c> Projector<'c> {
    /// A projector writing through `conn`, for a ledger whose totals blocks are
    /// `block` positions long.
    pub fn new(conn: &'c Connection, block: u64) -> Projector<'c> {
        Projector {
            conn,
            block: block.max(1),
            insert_withholding: None,
        }
    }

    /// Applies one event at `position` to the projection tables. The first event of
    /// a block first completes the block before it (see [`close_block`]).
    pub fn apply(&mut self, position: u64, event: &Event) -> rusqlite::Result<()> {
        let conn = self.conn;
        if position > 0 && position.is_multiple_of(self.block) {
            close_block(conn, self.block, position / self.block - 1)?;
        }
        let position = position_sql(position);
        match event {
            Event::AgreementRegistered(agreement) => apply_agreement(conn, position, agreement),
            Event::AgreementEnded(end) => apply_end(conn, end),
            Event::WithholdingRecorded(withholding) => {
                self.apply_withholding(position, withholding)
            }
            Event::WithholdingCorrected(correction) => apply_correction(conn, position, correction),
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
            Event::ReceiptReceived(receipt) => apply_delivery(
                conn,
                position,
                (receipt.kommune, receipt.sequence),
                "receipt",
                &receipt.senders_file_id,
                &error_detail(
                    receipt
                        .errors
                        .iter()
                        .map(|e| (e.code.to_string(), &e.code_description, &e.description)),
                ),
                Some(receipt.accepted),
            ),
            Event::TechnicalReceiptReceived(receipt) => apply_delivery(
                conn,
                position,
                (receipt.kommune, receipt.sequence),
                "receipt",
                &receipt.senders_file_id,
                &error_detail(
                    receipt
                        .errors
                        .iter()
                        .map(|e| (e.code.to_string(), &e.code_description, &e.description)),
                ),
                Some(receipt.accepted),
            ),
            Event::BusinessReceiptReceived(receipt) => {
                let detail = match &receipt.reason {
                    Some(reason) => format!(
                        "{} by {}: {reason}",
                        receipt.acceptance.as_str(),
                        receipt.recipient
                    ),
                    None => format!("{} by {}", receipt.acceptance.as_str(), receipt.recipient),
                };
                apply_delivery(
                    conn,
                    position,
                    (receipt.kommune, receipt.sequence),
                    "business",
                    &receipt.senders_file_id,
                    &detail,
                    Some(receipt.acceptance == crate::domain::FileAcceptance::Accepted),
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

impl Projector<'_> {
    fn apply_withholding(&mut self, position: i64, w: &Withholding) -> rusqlite::Result<()> {
        let statement = match &mut self.insert_withholding {
            Some(statement) => statement,
            None => self.insert_withholding.insert(self.conn.prepare_cached(
                "INSERT INTO entries (kommune, position, reference, kind, agreement, corrects, amount_ore, net_ore, payout)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6, ?7)",
            )?),
        };
        statement.execute(params![
            w.kommune.number(),
            position,
            w.reference.as_str(),
            KIND_WITHHOLDING,
            w.agreement.as_str(),
            w.amount.ore(),
            days(w.payout_date),
        ])?;
        Ok(())
    }
}

fn apply_correction(conn: &Connection, position: i64, c: &Correction) -> rusqlite::Result<()> {
    let agreement: String = conn
        .prepare_cached("SELECT agreement FROM entries WHERE kommune = ?1 AND reference = ?2")?
        .query_row(params![c.kommune.number(), c.corrects.as_str()], |row| {
            row.get(0)
        })?;
    conn.prepare_cached(
        "INSERT INTO entries (kommune, position, reference, kind, agreement, corrects, amount_ore, net_ore, payout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL)",
    )?
    .execute(params![
        c.kommune.number(),
        position,
        c.reference.as_str(),
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
    Ok(())
}

/// An agreement's totals row of the last block before block ?2 (its totals at the
/// end of that block).
const AGREEMENT_TOTALS_BEFORE: &str =
    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM agreement_totals
     WHERE agreement = ?1 AND block < ?2 ORDER BY block DESC LIMIT 1";

/// A kommune's totals row of the last block before block ?2.
const KOMMUNE_TOTALS_BEFORE: &str =
    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM kommune_totals
     WHERE kommune = ?1 AND block < ?2 ORDER BY block DESC LIMIT 1";

/// A kommune's entries at positions ?2..=?3 with their agreement, as changes to totals.
const KOMMUNE_ENTRIES_BETWEEN: &str = "SELECT agreement, kind, amount_ore, payout FROM entries
     WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3";

/// A kommune's entries at positions ?2..=?3, as changes to totals.
const KOMMUNE_CHANGES_BETWEEN: &str = "SELECT kind, amount_ore, payout FROM entries
     WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3";

/// The first and last position of block `block`.
fn block_bounds(block_size: u64, block: u64) -> (i64, i64) {
    let first = block.saturating_mul(block_size);
    (
        position_sql(first),
        position_sql(first.saturating_add(block_size - 1)),
    )
}

/// Writes the totals rows of block `block`, now complete: for every agreement and
/// every kommune with entries in it, the last row before it plus those entries.
/// The rows go in in key order, so each index page is written once per block.
fn close_block(conn: &Connection, block_size: u64, block: u64) -> rusqlite::Result<()> {
    let (first, last) = block_bounds(block_size, block);
    let mut agreements: BTreeMap<String, (u16, RawTotals)> = BTreeMap::new();
    let mut kommuner: BTreeMap<u16, RawTotals> = BTreeMap::new();
    let mut statement = conn.prepare_cached(KOMMUNE_ENTRIES_BETWEEN)?;
    for kommune in Kommune::all() {
        let number = kommune.number();
        let mut rows = statement.query(params![number, first, last])?;
        while let Some(row) = rows.next()? {
            let entry = entry_change(row, 1)?;
            let agreement: String = row.get(0)?;
            agreements
                .entry(agreement)
                .or_insert((number, RawTotals::default()))
                .1
                .add(&entry);
            kommuner.entry(number).or_default().add(&entry);
        }
    }
    let block = position_sql(block);
    let mut previous = conn.prepare_cached(AGREEMENT_TOTALS_BEFORE)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO agreement_totals (agreement, block, kommune, withheld_ore, corrected_ore, entries, last_payout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (agreement, (kommune, change)) in &agreements {
        let before = previous
            .query_row(params![agreement, block], raw_totals)
            .optional()?
            .unwrap_or_default();
        let next = before.plus(change);
        insert.execute(params![
            agreement, block, kommune, next.0, next.1, next.2, next.3
        ])?;
    }
    let mut previous = conn.prepare_cached(KOMMUNE_TOTALS_BEFORE)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO kommune_totals (kommune, block, withheld_ore, corrected_ore, entries, last_payout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (kommune, change) in &kommuner {
        let before = previous
            .query_row(params![kommune, block], raw_totals)
            .optional()?
            .unwrap_or_default();
        let next = before.plus(change);
        insert.execute(params![kommune, block, next.0, next.1, next.2, next.3])?;
    }
    Ok(())
}

/// One entry's effect on totals: (kind, amount in øre, payout in days).
struct EntryChange {
    kind: i64,
    amount_ore: i64,
    payout: Option<i64>,
}

/// Reads (kind, amount_ore, payout) from `row`, starting at column `from`.
fn entry_change(row: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<EntryChange> {
    Ok(EntryChange {
        kind: row.get(from)?,
        amount_ore: row.get(from + 1)?,
        payout: row.get(from + 2)?,
    })
}

/// (withheld, corrected, entries, last payout in days) as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawTotals(i64, i64, i64, Option<i64>);

impl RawTotals {
    /// Adds one entry: a withholding to the withheld sum, a correction (signed) to
    /// the corrected sum.
    fn add(&mut self, entry: &EntryChange) {
        if entry.kind == KIND_WITHHOLDING {
            self.0 += entry.amount_ore;
        } else {
            self.1 += entry.amount_ore;
        }
        self.2 += 1;
        self.3 = latest(self.3, entry.payout);
    }

    /// These totals followed by `later`.
    fn plus(&self, later: &RawTotals) -> RawTotals {
        RawTotals(
            self.0 + later.0,
            self.1 + later.1,
            self.2 + later.2,
            latest(self.3, later.3),
        )
    }
}

fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
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

/// Where a total as of `position` comes from: the last totals row of a block
/// before `block`, and the entries at positions `first..=position`.
struct AsOfBlock {
    block: i64,
    first: i64,
    position: i64,
}

impl AsOfBlock {
    fn new(block_size: u64, position: u64) -> AsOfBlock {
        let block = position / block_size.max(1);
        AsOfBlock {
            block: position_sql(block),
            first: block_bounds(block_size.max(1), block).0,
            position: position_sql(position),
        }
    }
}

/// The kommune of an agreement registered at or before `position`, if any.
pub fn agreement_kommune(
    conn: &Connection,
    agreement: &str,
    position: u64,
) -> rusqlite::Result<Option<u16>> {
    conn.prepare_cached("SELECT kommune FROM agreements WHERE agreement = ?1 AND position <= ?2")?
        .query_row(params![agreement, position_sql(position)], |row| row.get(0))
        .optional()
}

/// One agreement's totals as of `position` (`None` if it had no entries by then).
pub fn agreement_totals(
    conn: &Connection,
    block_size: u64,
    agreement: &str,
    position: u64,
) -> rusqlite::Result<Option<Totals>> {
    let kommune: Option<u16> = conn
        .prepare_cached("SELECT kommune FROM agreements WHERE agreement = ?1")?
        .query_row(params![agreement], |row| row.get(0))
        .optional()?;
    let Some(kommune) = kommune else {
        return Ok(None);
    };
    let at = AsOfBlock::new(block_size, position);
    let mut totals = conn
        .prepare_cached(AGREEMENT_TOTALS_BEFORE)?
        .query_row(params![agreement, at.block], raw_totals)
        .optional()?
        .unwrap_or_default();
    let mut statement = conn.prepare_cached(
        "SELECT kind, amount_ore, payout FROM entries
         WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3 AND agreement = ?4",
    )?;
    let mut rows = statement.query(params![kommune, at.first, at.position, agreement])?;
    while let Some(row) = rows.next()? {
        totals.add(&entry_change(row, 0)?);
    }
    Ok((totals.2 > 0).then(|| Totals::from_raw(totals)))
}

/// One kommune's totals at positions `1..=position`: its totals row of the last
/// block before `position`'s plus its entries since.
fn kommune_raw_through(
    conn: &Connection,
    block_size: u64,
    kommune: Kommune,
    position: u64,
) -> rusqlite::Result<RawTotals> {
    let at = AsOfBlock::new(block_size, position);
    let mut totals = conn
        .prepare_cached(KOMMUNE_TOTALS_BEFORE)?
        .query_row(params![kommune.number(), at.block], raw_totals)
        .optional()?
        .unwrap_or_default();
    let mut statement = conn.prepare_cached(KOMMUNE_CHANGES_BETWEEN)?;
    let mut rows = statement.query(params![kommune.number(), at.first, at.position])?;
    while let Some(row) = rows.next()? {
        totals.add(&entry_change(row, 0)?);
    }
    Ok(totals)
}

/// What one kommune's entries at positions `after + 1..=through` add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeTotals {
    pub entries: u64,
    /// Withholdings plus corrections (signed), øre.
    pub net_ore: i64,
}

/// One kommune's entries at positions `after + 1..=through`, read from the totals
/// rather than by a pass over them: a file's record count and net sum before it
/// is rendered cost two block lookups.
pub fn kommune_range_totals(
    conn: &Connection,
    block_size: u64,
    kommune: Kommune,
    after: u64,
    through: u64,
) -> rusqlite::Result<RangeTotals> {
    if through <= after {
        return Ok(RangeTotals::default());
    }
    let later = kommune_raw_through(conn, block_size, kommune, through)?;
    let earlier = kommune_raw_through(conn, block_size, kommune, after)?;
    let entries = later.2 - earlier.2;
    Ok(RangeTotals {
        entries: u64::try_from(entries)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, entries))?,
        net_ore: (later.0 + later.1) - (earlier.0 + earlier.1),
    })
}

/// Every kommune's totals as of `position`, in code order; kommuner without
/// entries by then are left out.
pub fn kommune_totals(
    conn: &Connection,
    block_size: u64,
    position: u64,
) -> rusqlite::Result<Vec<(Kommune, Totals)>> {
    let mut result = Vec::new();
    for kommune in Kommune::all() {
        let totals = kommune_raw_through(conn, block_size, kommune, position)?;
        if totals.2 > 0 {
            result.push((kommune, Totals::from_raw(totals)));
        }
    }
    Ok(result)
}

/// Every agreement of one kommune with its totals as of `position`, by reference;
/// agreements without entries by then are left out.
pub fn agreements_of_kommune(
    conn: &Connection,
    block_size: u64,
    kommune: Kommune,
    position: u64,
) -> rusqlite::Result<Vec<(String, Totals)>> {
    let at = AsOfBlock::new(block_size, position);
    let mut in_block: HashMap<String, RawTotals> = HashMap::new();
    let mut statement = conn.prepare_cached(KOMMUNE_ENTRIES_BETWEEN)?;
    let mut rows = statement.query(params![kommune.number(), at.first, at.position])?;
    while let Some(row) = rows.next()? {
        let agreement: String = row.get(0)?;
        in_block
            .entry(agreement)
            .or_default()
            .add(&entry_change(row, 1)?);
    }
    let mut before = conn.prepare_cached(AGREEMENT_TOTALS_BEFORE)?;
    let mut statement = conn
        .prepare_cached("SELECT agreement FROM agreements WHERE kommune = ?1 ORDER BY agreement")?;
    let agreements = statement
        .query_map(params![kommune.number()], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let mut result = Vec::new();
    for agreement in agreements {
        let totals = before
            .query_row(params![agreement, at.block], raw_totals)
            .optional()?
            .unwrap_or_default();
        let totals = match in_block.get(&agreement) {
            Some(change) => totals.plus(change),
            None => totals,
        };
        if totals.2 > 0 {
            result.push((agreement, Totals::from_raw(totals)));
        }
    }
    Ok(result)
}

/// A receipt's error messages as the `deliveries` row's detail: "CODE DESCRIPTION:
/// TEXT", joined by "; " (empty for an accepted receipt).
fn error_detail<'e>(errors: impl Iterator<Item = (String, &'e String, &'e String)>) -> String {
    errors
        .map(|(code, code_description, description)| {
            format!("{code} {code_description}: {description}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
