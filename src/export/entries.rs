//! The entries of one file, as the ledger reads them from the log (not from
//! projections) in log order, turned into detail records.

use super::ExportError;
use crate::domain::{EntryKind, Event, Kommune, Withholding};
use crate::ledger::EntryRange;
use crate::ledger::Ledger;
use crate::sf2520::DetailRecord;

/// Calls `visit` with each entry of the range as a detail record, in log order,
/// found through the (kommune, position) index.
pub fn for_each_record(
    ledger: &Ledger,
    range: EntryRange,
    mut visit: impl FnMut(DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    ledger.for_each_entry(range, |position, event, corrected| {
        visit(entry_record(
            ledger,
            range.kommune,
            position,
            event,
            corrected,
        )?)
    })
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
pub(super) fn for_each_record_in(
    ledger: &Ledger,
    ranges: &[EntryRange],
    mut visit: impl FnMut(usize, DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    // Kommune number -> the ranges of that kommune (one, unless asked twice).
    let slots = ranges
        .iter()
        .map(|range| usize::from(range.kommune.number()) + 1)
        .fold(0, usize::max);
    let mut ranges_of: Vec<Vec<usize>> = vec![Vec::new(); slots];
    for (index, range) in ranges.iter().enumerate() {
        ranges_of[usize::from(range.kommune.number())].push(index);
    }
    let ranges_for = |number: u16| {
        ranges_of
            .get(usize::from(number))
            .filter(|indices| !indices.is_empty())
    };
    let (Some(from), Some(through)) = (
        ranges.iter().map(|r| r.after_position).min(),
        ranges.iter().map(|r| r.through_position).max(),
    ) else {
        return Ok(());
    };
    ledger.for_each_entry_event(
        from,
        through,
        |number| ranges_for(number).is_some(),
        |position, stream, event, corrected| {
            let kommune = match &event {
                Event::WithholdingRecorded(w) => w.kommune,
                Event::WithholdingCorrected(c) => c.kommune,
                other => {
                    // The stored type said entry, the payload says otherwise.
                    return Err(ExportError::NotAnEntry {
                        position,
                        kommune: stream.get(6..10).unwrap_or("?").into(),
                        found: other.type_name(),
                    });
                }
            };
            let Some(indices) = ranges_for(kommune.number()) else {
                return Ok(());
            };
            let mut wanted = indices.iter().copied().filter(|&index| {
                let range = &ranges[index];
                position > range.after_position && position <= range.through_position
            });
            let Some(first) = wanted.next() else {
                return Ok(());
            };
            let record = entry_record(ledger, kommune, position, event, corrected)?;
            // More than one range of a kommune only if the caller asked for it twice.
            for index in wanted {
                visit(index, record.clone())?;
            }
            visit(first, record)
        },
    )
}

/// An entry event as its detail record, its CPR opened; a correction takes the
/// CPR, agreement and dates of the withholding it corrects (`corrected`, as the
/// ledger found it).
fn entry_record(
    ledger: &Ledger,
    kommune: Kommune,
    position: u64,
    event: Event,
    corrected: Option<Withholding>,
) -> Result<DetailRecord, ExportError> {
    match event {
        Event::WithholdingRecorded(w) => withholding_record(position, opened(ledger, w)?),
        Event::WithholdingCorrected(c) => {
            let original = corrected.ok_or_else(|| ExportError::MissingWithholding {
                position,
                corrects: c.corrects.to_string(),
                kommune: kommune.code(),
            })?;
            Ok(DetailRecord {
                kind: EntryKind::Correction,
                amount: c.amount,
                reference: c.reference,
                corrects: Some(c.corrects),
                ..withholding_record(position, opened(ledger, original)?)?
            })
        }
        other => Err(ExportError::NotAnEntry {
            position,
            kommune: kommune.code(),
            found: other.type_name(),
        }),
    }
}

/// Withholding `w` with its CPR opened.
pub(super) fn opened(ledger: &Ledger, w: Withholding) -> Result<Withholding, ExportError> {
    let mut event = Event::WithholdingRecorded(w);
    ledger.open_personal_data(&mut event)?;
    match event {
        Event::WithholdingRecorded(w) => Ok(w),
        _ => unreachable!("opening keeps the event's kind"),
    }
}

/// A withholding as its own detail record (code 01); its CPR must have been
/// opened (the entry at `position` is named if it was not).
pub fn withholding_record(position: u64, w: Withholding) -> Result<DetailRecord, ExportError> {
    let cpr = *w.cpr.plain().ok_or(ExportError::SealedCpr { position })?;
    Ok(DetailRecord {
        cpr,
        agreement: w.agreement,
        kind: EntryKind::Withholding,
        payout_date: w.payout_date,
        period_from: w.period_from,
        period_to: w.period_to,
        amount: w.amount,
        reference: w.reference,
        corrects: None,
    })
}
