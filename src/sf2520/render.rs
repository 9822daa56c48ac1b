//! Rendering one record from field values, driven by the layout table.
//!
//! The writer hands in a function from field identity to value; this module puts each
//! value where the table says, pads it, and refuses (never truncates) what does not fit.
//! It renders into a fixed stack buffer: no heap allocation unless there is an error.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::error::WriteError;
use super::layout::{
    max_for_digits, Content, Field, FieldId, Kind, RecordLayout, RECORD_END, RECORD_LEN,
    RECORD_WITH_END_LEN,
};
use crate::domain::is_printable_latin1;

/// A record's bytes followed by CR LF, exactly as it stands in a file.
pub type RecordBytes = [u8; RECORD_WITH_END_LEN];

/// The value the writer supplies for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// For an N field: the number, zero-padded on the left.
    Number(u64),
    /// For an N field: digits given as text (a CPR keeps its leading zeros).
    Digits(&'a str),
    /// For an N field: `ÅÅÅÅMMDD`.
    Date(NaiveDate),
    /// For an N field: `TTMMSS`, whole seconds.
    Time(NaiveTime),
    /// For an N field: `ÅÅÅÅMMDDTTMMSS`, whole seconds.
    DateTime(NaiveDateTime),
    /// For an X field: text, space-padded on the right.
    Text(&'a str),
    /// What the table fixes: a constant or blank filler.
    Table,
}

/// Renders one record of `layout`, asking `value_of` for each field's value.
pub fn render_record<'a>(
    layout: &RecordLayout,
    mut value_of: impl FnMut(FieldId) -> FieldValue<'a>,
) -> Result<RecordBytes, WriteError> {
    // Zero is never a byte a field may hold, so a zero left over after rendering
    // would be a gap in the layout.
    let mut buffer: RecordBytes = [0; RECORD_WITH_END_LEN];
    for field in layout.fields {
        let slot = buffer
            .get_mut(field.range())
            .ok_or(WriteError::OutsideRecord {
                record: layout.record_type,
                field: field.name,
            })?;
        let value = value_of(field.id);
        let from_table = value == FieldValue::Table;
        render_field(layout, field, value, slot)?;
        if !from_table {
            check_fixed(layout, field, slot)?;
        }
    }
    buffer[RECORD_LEN..].copy_from_slice(&RECORD_END);
    debug_assert!(
        buffer[..RECORD_LEN].iter().all(|&byte| byte != 0),
        "record {} left bytes unwritten",
        layout.record_type
    );
    Ok(buffer)
}

fn render_field(
    layout: &RecordLayout,
    field: &Field,
    value: FieldValue<'_>,
    slot: &mut [u8],
) -> Result<(), WriteError> {
    let context = FieldContext { layout, field };
    match (field.kind, value) {
        (_, FieldValue::Table) => context.table_value(slot),
        (Kind::X, FieldValue::Text(text)) => context.text(text, slot),
        (Kind::N, FieldValue::Number(number)) => context.number(number, slot),
        (Kind::N, FieldValue::Digits(digits)) => context.digits(digits, slot),
        (Kind::N, FieldValue::Date(date)) => context.number(date_number(&context, date)?, slot),
        (Kind::N, FieldValue::Time(time)) => context.number(time_number(&context, time)?, slot),
        (Kind::N, FieldValue::DateTime(at)) => {
            let date = date_number(&context, at.date())?;
            let time = time_number(&context, at.time())?;
            let combined = date
                .checked_mul(1_000_000)
                .and_then(|value| value.checked_add(time))
                .ok_or_else(|| context.does_not_fit(at.to_string()))?;
            context.number(combined, slot)
        }
        (kind, _) => Err(WriteError::WrongValueKind {
            record: layout.record_type,
            field: field.name,
            expected: kind,
        }),
    }
}

/// A value given for a constant or filler must be what the table fixes: the low-level
/// API lets a caller pass one (to test widths), never to change the layout.
fn check_fixed(layout: &RecordLayout, field: &Field, slot: &[u8]) -> Result<(), WriteError> {
    let fixed = match field.content {
        Content::Constant(value) => slot == value.as_bytes(),
        Content::Blank => slot.iter().all(|&byte| byte == b' '),
        Content::Data => true,
    };
    if fixed {
        Ok(())
    } else {
        Err(WriteError::OutOfRange {
            record: layout.record_type,
            field: field.name,
            value: slot.iter().copied().map(char::from).collect(),
            why: "the layout fixes this field's value",
        })
    }
}

/// `ÅÅÅÅMMDD` as a number; a year beyond 9999 then fails the width check.
fn date_number(context: &FieldContext<'_>, date: NaiveDate) -> Result<u64, WriteError> {
    let year = u64::try_from(date.year())
        .map_err(|_| context.out_of_range(date.to_string(), "years before 0 have no ÅÅÅÅ"))?;
    let month_day = u64::from(date.month() * 100 + date.day());
    year.checked_mul(10_000)
        .map(|value| value + month_day)
        .ok_or_else(|| context.does_not_fit(date.to_string()))
}

/// `TTMMSS` as a number. Fractions of a second would be lost, so they are refused.
fn time_number(context: &FieldContext<'_>, time: NaiveTime) -> Result<u64, WriteError> {
    if time.nanosecond() != 0 {
        return Err(context.out_of_range(
            time.to_string(),
            "whole seconds only; a fraction would be lost",
        ));
    }
    Ok(u64::from(
        time.hour() * 10_000 + time.minute() * 100 + time.second(),
    ))
}

struct FieldContext<'a> {
    layout: &'a RecordLayout,
    field: &'a Field,
}

impl FieldContext<'_> {
    fn does_not_fit(&self, value: String) -> WriteError {
        WriteError::DoesNotFit {
            record: self.layout.record_type,
            field: self.field.name,
            value,
            width: self.field.len,
        }
    }

    fn out_of_range(&self, value: String, why: &'static str) -> WriteError {
        WriteError::OutOfRange {
            record: self.layout.record_type,
            field: self.field.name,
            value,
            why,
        }
    }

    fn table_value(&self, slot: &mut [u8]) -> Result<(), WriteError> {
        match self.field.content {
            // The layout's const checks guarantee that a constant has the field's width.
            Content::Constant(value) => slot.copy_from_slice(value.as_bytes()),
            Content::Blank => slot.fill(b' '),
            Content::Data => {
                return Err(WriteError::MissingValue {
                    record: self.layout.record_type,
                    field: self.field.name,
                })
            }
        }
        Ok(())
    }

    fn number(&self, number: u64, slot: &mut [u8]) -> Result<(), WriteError> {
        if max_for_digits(slot.len()).is_some_and(|max| number > max) {
            return Err(self.does_not_fit(number.to_string()));
        }
        // Zeros first, then only as many divisions as the number has digits: most
        // fields (amounts, counts) are far shorter than their width.
        slot.fill(b'0');
        let mut rest = number;
        for byte in slot.iter_mut().rev() {
            if rest == 0 {
                break;
            }
            *byte = b'0' + digit(rest % 10);
            rest /= 10;
        }
        Ok(())
    }

    fn digits(&self, digits: &str, slot: &mut [u8]) -> Result<(), WriteError> {
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(self.out_of_range(digits.to_string(), "an N field holds digits only"));
        }
        let padding = slot
            .len()
            .checked_sub(digits.len())
            .ok_or_else(|| self.does_not_fit(digits.to_string()))?;
        let (zeros, value) = slot.split_at_mut(padding);
        zeros.fill(b'0');
        value.copy_from_slice(digits.as_bytes());
        Ok(())
    }

    fn text(&self, text: &str, slot: &mut [u8]) -> Result<(), WriteError> {
        // Printable ASCII is its own ISO-8859-1: copied as it is.
        let bytes = text.as_bytes();
        if bytes.len() <= slot.len() && bytes.iter().all(|&byte| (0x20..=0x7E).contains(&byte)) {
            let (value, padding) = slot.split_at_mut(bytes.len());
            value.copy_from_slice(bytes);
            padding.fill(b' ');
            return Ok(());
        }
        let mut written = 0;
        for character in text.chars() {
            let byte = latin1_byte(character).ok_or_else(|| WriteError::NotLatin1 {
                record: self.layout.record_type,
                field: self.field.name,
                value: text.escape_debug().to_string(),
                character,
            })?;
            let target = slot
                .get_mut(written)
                .ok_or_else(|| self.does_not_fit(text.to_string()))?;
            *target = byte;
            written += 1;
        }
        if let Some(padding) = slot.get_mut(written..) {
            padding.fill(b' ');
        }
        Ok(())
    }
}

/// The ISO-8859-1 byte of a printable character, or `None`: never a substitute.
fn latin1_byte(character: char) -> Option<u8> {
    if is_printable_latin1(character) {
        u8::try_from(u32::from(character)).ok()
    } else {
        None
    }
}

/// The last decimal digit of `value`, which is below 10 by construction.
fn digit(value: u64) -> u8 {
    u8::try_from(value % 10).expect("below 10")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sf2520::layout::{Kind, END};

    fn defaults(field: FieldId) -> FieldValue<'static> {
        let spec = END.field(field).unwrap();
        match (spec.content, spec.kind) {
            (Content::Data, Kind::N) => FieldValue::Number(0),
            (Content::Data, Kind::X) => FieldValue::Text("+"),
            _ => FieldValue::Table,
        }
    }

    #[test]
    fn renders_padded_fields_and_crlf() {
        let bytes = render_record(&END, |id| match id {
            FieldId::Kommune => FieldValue::Number(751),
            FieldId::NetSum => FieldValue::Number(12),
            other => defaults(other),
        })
        .unwrap();
        assert_eq!(&bytes[..13], b"9990751000000");
        assert_eq!(&bytes[50..66], b"+000000000000012");
        assert_eq!(&bytes[128..], b"\r\n");
    }

    #[test]
    fn refuses_instead_of_truncating() {
        let error = render_record(&END, |id| match id {
            FieldId::Sequence => FieldValue::Number(1_000_000),
            other => defaults(other),
        })
        .unwrap_err();
        assert!(matches!(
            error,
            WriteError::DoesNotFit {
                record: "999",
                field: "løbenummer",
                width: 6,
                ..
            }
        ));
    }

    #[test]
    fn refuses_characters_outside_latin1() {
        let error = render_record(&END, |id| match id {
            FieldId::NetSign => FieldValue::Text("€"),
            other => defaults(other),
        })
        .unwrap_err();
        assert!(matches!(
            error,
            WriteError::NotLatin1 {
                character: '€', ..
            }
        ));
    }
}
