//! The entries of one file, read from the log itself (not from projections) in log
//! order and turned into detail records.

use rusqlite::{params, Connection, OptionalExtension};

use super::ExportError;
use crate::domain::{Event, Kommune, KyRef, Withholding};
use crate::ledger::decode_payload;
use crate::sf2520::{DetailRecord, TransactionCode};

/// Which entries a file holds: those of `kommune` at positions in
/// `(after_position, through_position]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRange {
    pub kommune: Kommune,
    pub after_position: u64,
    pub through_position: u64,
}

fn sql(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// How many entries the range holds (an index count; no payload is read).
pub fn count_entries(conn: &Connection, range: EntryRange) -> Result<u64, ExportError> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM entries WHERE kommune = ?1 AND position > ?2 AND position <= ?3",
        )?
        .query_row(
            params![
                range.kommune.number(),
                sql(range.after_position),
                sql(range.through_position)
            ],
            |row| row.get(0),
        )?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Calls `visit` with each entry of the range as a detail record, in log order.
/// Payloads come from the `events` table, so a file rendered here is a function of
/// the log; the `entries` projection only serves as the index.
pub fn for_each_record(
    conn: &Connection,
    range: EntryRange,
    mut visit: impl FnMut(DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut statement = conn.prepare_cached(
        "SELECT ev.position, ev.payload FROM entries en JOIN events ev ON ev.position = en.position
         WHERE en.kommune = ?1 AND en.position > ?2 AND en.position <= ?3
         ORDER BY en.position",
    )?;
    let mut rows = statement.query(params![
        range.kommune.number(),
        sql(range.after_position),
        sql(range.through_position)
    ])?;
    while let Some(row) = rows.next()? {
        let position = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
        let payload: Vec<u8> = row.get(1)?;
        let record = match decode_payload(position, &payload)? {
            Event::WithholdingRecorded(w) => withholding_record(&w),
            Event::WithholdingCorrected(c) => {
                let original = withholding_of(conn, range.kommune, &c.corrects, position)?;
                DetailRecord {
                    transaction: TransactionCode::Correction,
                    amount: c.amount,
                    reference: c.reference,
                    corrects: Some(c.corrects),
                    ..withholding_record(&original)
                }
            }
            other => {
                return Err(ExportError::NotAnEntry {
                    position,
                    kommune: range.kommune.code(),
                    found: other.type_name(),
                })
            }
        };
        visit(record)?;
    }
    Ok(())
}

/// A withholding as its own detail record (code 01).
fn withholding_record(w: &Withholding) -> DetailRecord {
    DetailRecord {
        cpr: w.cpr,
        agreement: w.agreement.clone(),
        transaction: TransactionCode::Withholding,
        payout_date: w.payout_date,
        period_from: w.period_from,
        period_to: w.period_to,
        amount: w.amount,
        reference: w.reference.clone(),
        corrects: None,
    }
}

/// The withholding a correction refers to, read from the log.
fn withholding_of(
    conn: &Connection,
    kommune: Kommune,
    reference: &KyRef,
    correction_position: u64,
) -> Result<Withholding, ExportError> {
    let missing = || ExportError::MissingWithholding {
        position: correction_position,
        corrects: reference.to_string(),
        kommune: kommune.code(),
    };
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT ev.position, ev.payload FROM entries en JOIN events ev ON ev.position = en.position
             WHERE en.kommune = ?1 AND en.reference = ?2",
        )?
        .query_row(params![kommune.number(), reference.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (position, payload) = row.ok_or_else(missing)?;
    match decode_payload(u64::try_from(position).unwrap_or(0), &payload)? {
        Event::WithholdingRecorded(w) if w.kommune == kommune && w.reference == *reference => Ok(w),
        _ => Err(missing()),
    }
}
