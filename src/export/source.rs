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
        let event = decode_payload(position, payload_of(row, 1)?)?;
        visit(entry_record(conn, range.kommune, position, event)?)?;
    }
    Ok(())
}

/// Calls `visit(index, record)` with each entry of any of `ranges` as a detail
/// record, `index` naming its range, in log order: for each range the same records
/// in the same order as [`for_each_record`] gives for it alone.
///
/// It reads the log once, sequentially, from the lowest to the highest position of
/// the ranges. [`for_each_record`] finds a kommune's entries through the index and
/// reads their events one by one; those lie scattered over the whole log, so
/// rendering all kommuner that way reads every page of the log once per kommune
/// that has an entry on it (about 18 times at 98 kommuner), which dominated the
/// batch export.
pub fn for_each_record_in(
    conn: &Connection,
    ranges: &[EntryRange],
    mut visit: impl FnMut(usize, DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    // Kommune number -> the ranges of that kommune (one, unless asked twice).
    let slots = ranges
        .iter()
        .map(|range| usize::from(range.kommune.number()) + 1)
        .max()
        .unwrap_or(0);
    let mut ranges_of: Vec<Vec<usize>> = vec![Vec::new(); slots];
    for (index, range) in ranges.iter().enumerate() {
        ranges_of[usize::from(range.kommune.number())].push(index);
    }
    let ranges_for = |number: u16| {
        ranges_of
            .get(usize::from(number))
            .filter(|indices| !indices.is_empty())
    };
    let from = ranges.iter().map(|r| r.after_position).min().unwrap_or(0);
    let through = ranges.iter().map(|r| r.through_position).max().unwrap_or(0);
    let mut statement = conn.prepare_cached(
        "SELECT position, stream, payload FROM events
         WHERE position > ?1 AND position <= ?2
           AND event_type IN ('WithholdingRecorded', 'WithholdingCorrected')
         ORDER BY position",
    )?;
    let mut rows = statement.query(params![sql(from), sql(through)])?;
    while let Some(row) = rows.next()? {
        let position = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
        // The stream (`entry/<kommune>/<reference>`, hashed with the event) tells the
        // kommune without decoding the payload: most events belong to other
        // kommuner (or the other worker's). The decoded event decides below.
        let stream = row.get_ref(1)?.as_bytes().unwrap_or_default();
        if stream_kommune(stream).is_some_and(|number| ranges_for(number).is_none()) {
            continue;
        }
        let event = decode_payload(position, payload_of(row, 2)?)?;
        let kommune = match &event {
            Event::WithholdingRecorded(w) => w.kommune,
            Event::WithholdingCorrected(c) => c.kommune,
            other => {
                // The stored type said entry, the payload says otherwise.
                return Err(ExportError::NotAnEntry {
                    position,
                    kommune: String::from_utf8_lossy(stream.get(6..10).unwrap_or(b"?")).into(),
                    found: other.type_name(),
                });
            }
        };
        let Some(indices) = ranges_for(kommune.number()) else {
            continue;
        };
        let mut wanted = indices.iter().copied().filter(|&index| {
            let range = &ranges[index];
            position > range.after_position && position <= range.through_position
        });
        let Some(first) = wanted.next() else {
            continue;
        };
        let record = entry_record(conn, kommune, position, event)?;
        // More than one range of a kommune only if the caller asked for it twice.
        for index in wanted {
            visit(index, record.clone())?;
        }
        visit(first, record)?;
    }
    Ok(())
}

/// The kommune number in an entry's stream `entry/<kommune>/<reference>`, read
/// from the bytes (no UTF-8 check: only four ASCII digits matter).
fn stream_kommune(stream: &[u8]) -> Option<u16> {
    let digits = stream.strip_prefix(b"entry/")?.get(..4)?;
    digits.iter().try_fold(0u16, |number, &byte| {
        byte.is_ascii_digit()
            .then(|| number * 10 + u16::from(byte - b'0'))
    })
}

/// An entry event as its detail record; a correction takes the CPR, agreement and
/// dates of the withholding it corrects.
fn entry_record(
    conn: &Connection,
    kommune: Kommune,
    position: u64,
    event: Event,
) -> Result<DetailRecord, ExportError> {
    match event {
        Event::WithholdingRecorded(w) => Ok(withholding_record(w)),
        Event::WithholdingCorrected(c) => {
            let original = withholding_of(conn, kommune, &c.corrects, position)?;
            Ok(DetailRecord {
                transaction: TransactionCode::Correction,
                amount: c.amount,
                reference: c.reference,
                corrects: Some(c.corrects),
                ..withholding_record(original)
            })
        }
        other => Err(ExportError::NotAnEntry {
            position,
            kommune: kommune.code(),
            found: other.type_name(),
        }),
    }
}

/// A withholding as its own detail record (code 01).
pub fn withholding_record(w: Withholding) -> DetailRecord {
    DetailRecord {
        cpr: w.cpr,
        agreement: w.agreement,
        transaction: TransactionCode::Withholding,
        payout_date: w.payout_date,
        period_from: w.period_from,
        period_to: w.period_to,
        amount: w.amount,
        reference: w.reference,
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

/// A payload column, borrowed from the row: no copy per event.
fn payload_of<'r>(row: &'r rusqlite::Row<'_>, column: usize) -> rusqlite::Result<&'r [u8]> {
    row.get_ref(column)?.as_blob().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            Box::new(error),
        )
    })
}
