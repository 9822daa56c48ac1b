//! Input: KY's JSON Lines (DESIGN.md §4) read with a bounded line length and
//! parsed into commands, each failure tied to its line.

use std::io::BufRead;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::domain::{
    Agreement, AgreementEnd, AgreementRef, Amount, Command, Correction, Cpr, DomainError, Kommune,
    KyRef, Withholding,
};

/// The longest line accepted. A real line is under 400 bytes; anything near this
/// is not KY's output, and reading it whole would let one line exhaust memory.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// The longest correction reason, in characters.
pub const REASON_CHARS_MAX: usize = 200;

/// Why one input line could not become a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("line is {bytes} bytes or more; at most {LINE_BYTES_MAX} are accepted")]
    LineTooLong { bytes: usize },
    #[error("not UTF-8 at byte {offset}")]
    NotUtf8 { offset: usize },
    #[error("not valid JSON: {message}")]
    Json { message: String },
    #[error("expected a JSON object with a \"type\" field")]
    NotAnObject,
    #[error(
        "unknown type {found:?}; expected agreement, agreement_ended, withholding or correction"
    )]
    UnknownType { found: String },
    #[error("{message}")]
    Shape { message: String },
    #[error("field {field}: {error}")]
    Field {
        field: &'static str,
        error: DomainError,
    },
    #[error("field {field}: {value:?} is not a date YYYY-MM-DD")]
    Date { field: &'static str, value: String },
    #[error("field reason: {why}")]
    Reason { why: String },
}

/// An input line that failed, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {error}")]
pub struct InputLineError {
    pub line: usize,
    pub error: InputError,
}

/// Everything read from one input: the commands that parsed and the lines that did not.
#[derive(Debug, Default)]
pub struct ParsedInput {
    pub commands: Vec<(usize, Command)>,
    pub errors: Vec<InputLineError>,
}

/// Reads and parses every line. Blank lines are skipped; an IO error aborts.
pub fn parse_lines(mut reader: impl BufRead) -> std::io::Result<ParsedInput> {
    let mut parsed = ParsedInput::default();
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        line += 1;
        buffer.clear();
        let Some(overlong) = read_bounded_line(&mut reader, &mut buffer)? else {
            return Ok(parsed);
        };
        let result = match overlong {
            Some(bytes) => Err(InputError::LineTooLong { bytes }),
            None if buffer.iter().all(u8::is_ascii_whitespace) => continue,
            None => parse_line(&buffer),
        };
        match result {
            Ok(command) => parsed.commands.push((line, command)),
            Err(error) => parsed.errors.push(InputLineError { line, error }),
        }
    }
}

/// Reads one line (without its `\n` or `\r\n`) into `buffer`, keeping at most
/// [`LINE_BYTES_MAX`] bytes. `None` at end of input; `Some(Some(n))` when the line
/// was longer (the rest is read and dropped); `Some(None)` for a normal line.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Option<usize>>> {
    let mut total = 0usize;
    let mut saw_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(index) => (&available[..index], true),
            None => (available, false),
        };
        let room = LINE_BYTES_MAX.saturating_sub(buffer.len());
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total += chunk.len();
        let consumed = chunk.len() + usize::from(found_newline);
        reader.consume(consumed);
        if found_newline {
            break;
        }
    }
    if !saw_any {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\r') {
        buffer.pop();
    }
    Ok(Some((total > LINE_BYTES_MAX).then_some(total)))
}

/// Parses one line of JSON into a command.
pub fn parse_line(bytes: &[u8]) -> Result<Command, InputError> {
    let text = std::str::from_utf8(bytes).map_err(|error| InputError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|error| InputError::Json {
        message: error.to_string(),
    })?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or(InputError::NotAnObject)?
        .to_string();
    match kind.as_str() {
        "agreement" => agreement(shape(value)?),
        "agreement_ended" => agreement_ended(shape(value)?),
        "withholding" => withholding(shape(value)?),
        "correction" => correction(shape(value)?),
        _ => Err(InputError::UnknownType { found: kind }),
    }
}

fn shape<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, InputError> {
    serde_json::from_value(value).map_err(|error| InputError::Shape {
        message: error.to_string(),
    })
}

// The raw line shapes: every field a string, unknown fields rejected, so that a
// float amount or a misspelt field name is an error rather than a guess.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreement {
    #[serde(rename = "type")]
    _type: String,
    agreement: String,
    kommune: String,
    cpr: String,
    valid_from: String,
    valid_to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreementEnded {
    #[serde(rename = "type")]
    _type: String,
    agreement: String,
    kommune: String,
    valid_to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWithholding {
    #[serde(rename = "type")]
    _type: String,
    reference: String,
    agreement: String,
    kommune: String,
    cpr: String,
    payout_date: String,
    period_from: String,
    period_to: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrection {
    #[serde(rename = "type")]
    _type: String,
    reference: String,
    corrects: String,
    kommune: String,
    amount: String,
    #[serde(default)]
    reason: String,
}

fn field<T>(field: &'static str, result: Result<T, DomainError>) -> Result<T, InputError> {
    result.map_err(|error| InputError::Field { field, error })
}

/// A strict `YYYY-MM-DD` date that exists in the calendar.
fn date(field: &'static str, raw: &str) -> Result<NaiveDate, InputError> {
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(index, byte)| match index {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| InputError::Date {
            field,
            value: raw.to_string(),
        })
}

fn agreement(raw: RawAgreement) -> Result<Command, InputError> {
    Ok(Command::RegisterAgreement(Agreement {
        agreement: field("agreement", AgreementRef::parse(&raw.agreement))?,
        kommune: field("kommune", Kommune::parse(&raw.kommune))?,
        cpr: field("cpr", Cpr::parse(&raw.cpr))?,
        valid_from: date("valid_from", &raw.valid_from)?,
        valid_to: raw.valid_to.map(|to| date("valid_to", &to)).transpose()?,
    }))
}

fn agreement_ended(raw: RawAgreementEnded) -> Result<Command, InputError> {
    Ok(Command::EndAgreement(AgreementEnd {
        agreement: field("agreement", AgreementRef::parse(&raw.agreement))?,
        kommune: field("kommune", Kommune::parse(&raw.kommune))?,
        valid_to: date("valid_to", &raw.valid_to)?,
    }))
}

fn withholding(raw: RawWithholding) -> Result<Command, InputError> {
    Ok(Command::RecordWithholding(Withholding {
        reference: field("reference", KyRef::parse(&raw.reference))?,
        agreement: field("agreement", AgreementRef::parse(&raw.agreement))?,
        kommune: field("kommune", Kommune::parse(&raw.kommune))?,
        cpr: field("cpr", Cpr::parse(&raw.cpr))?,
        payout_date: date("payout_date", &raw.payout_date)?,
        period_from: date("period_from", &raw.period_from)?,
        period_to: date("period_to", &raw.period_to)?,
        amount: field("amount", Amount::parse_kroner(&raw.amount))?,
    }))
}

fn correction(raw: RawCorrection) -> Result<Command, InputError> {
    let reason_chars = raw.reason.chars().count();
    if reason_chars > REASON_CHARS_MAX {
        return Err(InputError::Reason {
            why: format!("{reason_chars} characters; at most {REASON_CHARS_MAX}"),
        });
    }
    if raw.reason.chars().any(char::is_control) {
        return Err(InputError::Reason {
            why: "contains control characters".into(),
        });
    }
    Ok(Command::CorrectWithholding(Correction {
        reference: field("reference", KyRef::parse(&raw.reference))?,
        corrects: field("corrects", KyRef::parse(&raw.corrects))?,
        kommune: field("kommune", Kommune::parse(&raw.kommune))?,
        amount: field("amount", Amount::parse_kroner(&raw.amount))?,
        reason: raw.reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let input = r#"{"type":"agreement","agreement":"BA000123456","kommune":"0751","cpr":"0101901234","valid_from":"2026-01-01"}
{"type":"withholding","reference":"KY-2026-000987","agreement":"BA000123456","kommune":"0751","cpr":"0101901234","payout_date":"2026-02-01","period_from":"2026-01-01","period_to":"2026-01-31","amount":"1623.00"}

{"type":"correction","reference":"KY-2026-001234","corrects":"KY-2026-000987","kommune":"0751","amount":"-200.00","reason":"genberegnet"}
{"type":"agreement_ended","agreement":"BA000123456","kommune":"0751","valid_to":"2026-06-30"}
"#;
        let parsed = parse_lines(input.as_bytes()).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let lines: Vec<usize> = parsed.commands.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [1, 2, 4, 5]);
    }

    #[test]
    fn an_overlong_line_is_reported_without_keeping_it() {
        let mut input = vec![b'x'; LINE_BYTES_MAX + 10];
        input.extend_from_slice(b"\n{}\n");
        let parsed = parse_lines(&input[..]).unwrap();
        assert_eq!(parsed.errors.len(), 2);
        assert_eq!(parsed.errors[0].line, 1);
        assert!(matches!(
            parsed.errors[0].error,
            InputError::LineTooLong { .. }
        ));
        assert_eq!(parsed.errors[1].line, 2);
    }

    #[test]
    fn dates_must_be_strict_and_real() {
        assert!(date("d", "2026-02-28").is_ok());
        for bad in [
            "2026-02-29",
            "2026-2-1",
            "20260201",
            "2026-02-01T00:00",
            "+2026-02-01",
        ] {
            assert!(date("d", bad).is_err(), "{bad}");
        }
    }
}
