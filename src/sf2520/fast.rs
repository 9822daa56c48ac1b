//! The detail record rendered at memory speed: a million of them in each export.
//!
//! [`render_record`](super::render::render_record) walks the layout table and asks
//! for each field's value through a closure, which is right for the start and end
//! records and for every error. A detail record's fields are few and fixed, so this
//! module writes them straight into a copy of a template (the constants and filler
//! already in place), numbers through a table of digit pairs, text as the ASCII
//! bytes it is. Whatever it cannot render that way (a letter beyond ASCII, a value
//! too wide, a year beyond 9999) it leaves to the table-driven renderer, which
//! renders it or names the error: the two give the same bytes for every record
//! (the test below checks them against each other over many random records).

use std::ops::Range;

use chrono::{Datelike, NaiveDate};

use super::layout::{DETAIL, RECORD_END, RECORD_LEN, RECORD_WITH_END_LEN};
use super::render::RecordBytes;
use super::writer::DetailRecord;

/// Each field's bytes in the detail record, from the layout table (the index is
/// the field's place in `DETAIL.fields`; a test checks each against its id).
const RECORD_TYPE: Range<usize> = DETAIL.fields[0].range();
const RECORD_NUMBER: Range<usize> = DETAIL.fields[1].range();
const KOMMUNE: Range<usize> = DETAIL.fields[2].range();
const CPR: Range<usize> = DETAIL.fields[3].range();
const AGREEMENT: Range<usize> = DETAIL.fields[4].range();
const TRANSACTION_CODE: Range<usize> = DETAIL.fields[5].range();
const PAYOUT_DATE: Range<usize> = DETAIL.fields[6].range();
const PERIOD_FROM: Range<usize> = DETAIL.fields[7].range();
const PERIOD_TO: Range<usize> = DETAIL.fields[8].range();
const SIGN: Range<usize> = DETAIL.fields[9].range();
const AMOUNT: Range<usize> = DETAIL.fields[10].range();
const REFERENCE: Range<usize> = DETAIL.fields[11].range();
const CORRECTED: Range<usize> = DETAIL.fields[12].range();

/// A detail record with its constant and filler in place and spaces elsewhere.
const TEMPLATE: RecordBytes = {
    let mut bytes = [b' '; RECORD_WITH_END_LEN];
    bytes[RECORD_LEN] = RECORD_END[0];
    bytes[RECORD_LEN + 1] = RECORD_END[1];
    let record_type = DETAIL.record_type.as_bytes();
    let mut at = 0;
    while at < record_type.len() {
        bytes[RECORD_TYPE.start + at] = record_type[at];
        at += 1;
    }
    bytes
};

/// "00", "01", … "99": two digits per table lookup.
const DIGIT_PAIRS: [u8; 200] = *b"000102030405060708091011121314151617181920212223242526272829\
    303132333435363738394041424344454647484950515253545556575859\
    606162636465666768697071727374757677787980818283848586878889\
    90919293949596979899";

/// The detail record of `record`, numbered `record_number` in the file of
/// `kommune`, or `None` when a field needs the table-driven renderer.
pub(super) fn detail_bytes(
    record: &DetailRecord,
    record_number: u64,
    kommune: u16,
) -> Option<RecordBytes> {
    let mut bytes = TEMPLATE;
    number(&mut bytes[RECORD_NUMBER], record_number)?;
    number(&mut bytes[KOMMUNE], u64::from(kommune))?;
    digits(&mut bytes[CPR], record.cpr.digits())?;
    text(&mut bytes[AGREEMENT], record.agreement.as_str())?;
    let code = record.kind.transaction_code();
    number(&mut bytes[TRANSACTION_CODE], u64::from(code))?;
    date(&mut bytes[PAYOUT_DATE], record.payout_date)?;
    date(&mut bytes[PERIOD_FROM], record.period_from)?;
    date(&mut bytes[PERIOD_TO], record.period_to)?;
    let ore = record.amount.ore();
    bytes[SIGN.start] = if ore < 0 { b'-' } else { b'+' };
    number(&mut bytes[AMOUNT], ore.unsigned_abs())?;
    text(&mut bytes[REFERENCE], record.reference.as_str())?;
    if let Some(corrected) = &record.corrects {
        text(&mut bytes[CORRECTED], corrected.as_str())?;
    }
    Some(bytes)
}

/// `value` zero-padded to the slot's width; `None` if it has more digits.
fn number(slot: &mut [u8], mut value: u64) -> Option<()> {
    let mut end = slot.len();
    while value >= 100 && end >= 2 {
        let pair = usize::try_from(value % 100).ok()? * 2;
        slot[end - 2..end].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        value /= 100;
        end -= 2;
    }
    while end > 0 {
        let digit = u8::try_from(value % 10).ok()?;
        slot[end - 1] = b'0' + digit;
        value /= 10;
        end -= 1;
    }
    (value == 0).then_some(())
}

/// Digits given as text, zero-padded on the left.
fn digits(slot: &mut [u8], text: &str) -> Option<()> {
    let bytes = text.as_bytes();
    let padding = slot.len().checked_sub(bytes.len())?;
    if !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    slot[..padding].fill(b'0');
    slot[padding..].copy_from_slice(bytes);
    Some(())
}

/// Printable ASCII text, space-padded on the right (the template's spaces).
fn text(slot: &mut [u8], text: &str) -> Option<()> {
    let bytes = text.as_bytes();
    let target = slot.get_mut(..bytes.len())?;
    if !bytes.iter().all(|byte| (0x20..=0x7E).contains(byte)) {
        return None;
    }
    target.copy_from_slice(bytes);
    Some(())
}

/// `ÅÅÅÅMMDD`.
fn date(slot: &mut [u8], date: NaiveDate) -> Option<()> {
    let year = u64::try_from(date.year()).ok()?;
    let (year_slot, month_day) = slot.split_at_mut(4);
    number(year_slot, year)?;
    number(month_day, u64::from(date.month() * 100 + date.day()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{AgreementRef, Amount, Cpr, EntryKind, KyRef};
    use crate::sf2520::layout::{Field, FieldId};
    use crate::sf2520::render::render_record;
    use crate::sf2520::writer::detail_value;

    #[test]
    fn the_slots_are_the_layout_tables_fields() {
        let slots: [(FieldId, Range<usize>); 13] = [
            (FieldId::RecordType, RECORD_TYPE),
            (FieldId::RecordNumber, RECORD_NUMBER),
            (FieldId::Kommune, KOMMUNE),
            (FieldId::Cpr, CPR),
            (FieldId::Agreement, AGREEMENT),
            (FieldId::TransactionCode, TRANSACTION_CODE),
            (FieldId::PayoutDate, PAYOUT_DATE),
            (FieldId::PeriodFrom, PERIOD_FROM),
            (FieldId::PeriodTo, PERIOD_TO),
            (FieldId::Sign, SIGN),
            (FieldId::Amount, AMOUNT),
            (FieldId::Reference, REFERENCE),
            (FieldId::Corrected, CORRECTED),
        ];
        for (id, range) in slots {
            let field: &Field = DETAIL.field(id).unwrap();
            assert_eq!(field.range(), range, "{}", field.name);
        }
        assert_eq!(DIGIT_PAIRS[2 * 7..2 * 7 + 2], *b"07");
        assert_eq!(DIGIT_PAIRS[2 * 99..], *b"99");
    }

    fn generic(record: &DetailRecord, record_number: u64, kommune: u16) -> Option<RecordBytes> {
        render_record(&DETAIL, |id| {
            detail_value(id, record, record_number, u64::from(kommune))
        })
        .ok()
    }

    fn reference() -> impl Strategy<Value = String> {
        // Mostly ASCII, sometimes a Danish letter (the table-driven path), up to
        // and beyond the field's width (refused by the type or the renderer).
        prop::collection::vec(
            prop_oneof![
                8 => prop::char::range('A', 'Z'),
                2 => prop::char::range('0', '9'),
                1 => Just('-'),
                1 => prop_oneof![Just('Æ'), Just('Ø'), Just('Å')],
            ],
            1..22,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn day() -> impl Strategy<Value = NaiveDate> {
        (-100i32..=12_000, 1u32..=12, 1u32..=28)
            .prop_filter_map("a date", |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        // The fast renderer gives exactly the table-driven renderer's bytes, and
        // declines only records the table-driven renderer renders another way
        // (letters beyond ASCII) or refuses.
        #[test]
        fn the_fast_renderer_agrees_with_the_layout_table(
            cpr in "[0-3][0-9][01][0-9][0-9]{6}",
            agreement in reference(),
            reference_text in reference(),
            corrects in prop::option::of(reference()),
            dates in (day(), day(), day()),
            ore in prop_oneof![
                -9_999_999_999_999i64..=9_999_999_999_999,
                -1000i64..=1000,
            ],
            record_number in prop_oneof![1u64..=10_000, 9_999_990u64..=10_000_010],
            kommune in 0u16..=10_500,
        ) {
            let (Ok(cpr), Ok(agreement), Ok(reference), Some(amount)) = (
                Cpr::parse(&cpr),
                AgreementRef::parse(&agreement),
                KyRef::parse(&reference_text),
                Amount::from_ore(ore),
            ) else {
                return Ok(());
            };
            let corrects = match corrects.map(|text| KyRef::parse(&text)) {
                Some(Err(_)) => return Ok(()),
                other => other.map(Result::unwrap),
            };
            let record = DetailRecord {
                cpr,
                agreement,
                kind: if corrects.is_some() { EntryKind::Correction } else { EntryKind::Withholding },
                payout_date: dates.0,
                period_from: dates.1,
                period_to: dates.2,
                amount,
                reference,
                corrects,
            };
            let slow = generic(&record, record_number, kommune);
            match detail_bytes(&record, record_number, kommune) {
                Some(fast) => prop_assert_eq!(Some(fast), slow),
                None => {
                    let declined = slow.is_none()
                        || !record.agreement.as_str().is_ascii()
                        || !record.reference.as_str().is_ascii()
                        || record.corrects.as_ref().is_some_and(|c| !c.as_str().is_ascii());
                    prop_assert!(declined, "declined a record it can render: {record:?}");
                }
            }
        }
    }
}
