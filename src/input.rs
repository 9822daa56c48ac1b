//! Input: KY's JSON Lines (docs/input-format.md) read with a bounded line length and
//! parsed into commands, each failure tied to its line.

use std::collections::HashSet;
use std::fmt;
use std::io::BufRead;

use chrono::NaiveDate;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
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

/// The most characters of a field name an error message repeats: a name is
/// attacker-sized (up to a whole line), a message is read by a person.
const FIELD_NAME_SHOWN_CHARS_MAX: usize = 40;

/// Why one input line could not become a command. Byte offsets count from 0.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("line is {bytes} bytes or more; at most {LINE_BYTES_MAX} are accepted")]
    LineTooLong { bytes: usize },
    #[error("starts with a UTF-8 byte order mark (BOM); save the file as UTF-8 without BOM")]
    ByteOrderMark,
    #[error("NUL byte at byte {offset}; expected UTF-8 text (is the file UTF-16?)")]
    NulByte { offset: usize },
    #[error("not UTF-8 at byte {offset}")]
    NotUtf8 { offset: usize },
    #[error(
        "carriage return (CR) at byte {offset} does not end the line; lines end in LF or CR LF, \
         CR-only line endings are not accepted"
    )]
    BareCarriageReturn { offset: usize },
    /// `detail` is serde_json's own message, for people; `defect` is what a
    /// program (or a test) may rely on, whatever serde_json's wording.
    #[error("not valid JSON: {}{detail}", defect.advice())]
    Json { defect: JsonDefect, detail: String },
    #[error("expected a JSON object with a \"type\" field, found {found}")]
    NotAnObject { found: &'static str },
    #[error(
        "field {field} appears more than once in the object; JSON readers disagree on \
         which one counts, so the line is refused"
    )]
    DuplicateField { field: String },
    #[error("missing field {field}")]
    MissingField { field: &'static str },
    #[error("unknown field {field} for type {kind}; expected only: {expected}")]
    UnknownField {
        field: String,
        kind: &'static str,
        expected: String,
    },
    #[error("field {field}: expected a JSON string, found {found}")]
    NotAString { field: String, found: &'static str },
    #[error(
        "unknown type {found:?}; expected agreement, agreement_ended, withholding or correction"
    )]
    UnknownType { found: String },
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

/// What is wrong with a line that is not JSON, by serde_json's classification of
/// its error ([`serde_json::error::Category`]), which its API keeps stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonDefect {
    /// The line ends before its JSON value does: an object or string cut short.
    Truncated,
    /// Any other syntax error: a stray or missing character, a bad escape, a
    /// number out of range, nesting deeper than serde_json's limit.
    Syntax,
}

impl JsonDefect {
    fn of(error: &serde_json::Error) -> JsonDefect {
        match error.classify() {
            serde_json::error::Category::Eof => JsonDefect::Truncated,
            // Reading a `Value` from a string does no IO and accepts any data, so
            // Io and Data do not occur; were they to, the line is still not JSON.
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Io
            | serde_json::error::Category::Data => JsonDefect::Syntax,
        }
    }

    /// What the message says before serde_json's detail.
    fn advice(self) -> &'static str {
        match self {
            JsonDefect::Truncated => {
                "the line ends before its JSON does (is the line cut short, or split over two?): "
            }
            JsonDefect::Syntax => "",
        }
    }
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
///
/// The checks run from the outside in, so that the message names the first thing
/// wrong: bytes (BOM, NUL, UTF-8, stray CR), JSON syntax, the object's shape
/// (duplicate, unknown, missing or non-string fields), then each value.
pub fn parse_line(bytes: &[u8]) -> Result<Command, InputError> {
    let text = check_bytes(bytes)?;
    let value: Value = serde_json::from_str(text).map_err(|error| InputError::Json {
        defect: JsonDefect::of(&error),
        detail: error.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(InputError::NotAnObject {
            found: json_kind(&value),
        });
    };
    // serde_json keeps the last of two equal keys; KY's intent is then unknowable.
    if let Some(field) = duplicate_key(text) {
        return Err(InputError::DuplicateField {
            field: shown_field(&field),
        });
    }
    let kind = match object.get("type") {
        None => return Err(InputError::MissingField { field: "type" }),
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => {
            return Err(InputError::NotAString {
                field: "type".into(),
                found: json_kind(other),
            })
        }
    };
    match kind.as_str() {
        "agreement" => agreement(Fields::new(object, "agreement", AGREEMENT_FIELDS)?),
        "agreement_ended" => agreement_ended(Fields::new(
            object,
            "agreement_ended",
            AGREEMENT_ENDED_FIELDS,
        )?),
        "withholding" => withholding(Fields::new(object, "withholding", WITHHOLDING_FIELDS)?),
        "correction" => correction(Fields::new(object, "correction", CORRECTION_FIELDS)?),
        _ => Err(InputError::UnknownType { found: kind }),
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The line as text, if its bytes can be JSON Lines at all.
fn check_bytes(bytes: &[u8]) -> Result<&str, InputError> {
    if bytes.starts_with(UTF8_BOM) {
        return Err(InputError::ByteOrderMark);
    }
    if let Some(offset) = bytes.iter().position(|&byte| byte == 0) {
        return Err(InputError::NulByte { offset });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| InputError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    // JSON counts a CR as white space, so without this check a file with CR-only
    // line endings would read as one line holding several objects.
    if let Some(offset) = text.find('\r') {
        return Err(InputError::BareCarriageReturn { offset });
    }
    Ok(text)
}

/// What a JSON value is, for a message; the value itself is not repeated, since it
/// may be a CPR number sent in the wrong shape.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null (leave an optional field out instead)",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number (every value is a string, amounts too: \"1623.50\")",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name from the input, quoted and escaped, and shortened if it is long.
fn shown_field(name: &str) -> String {
    let count = name.chars().count();
    if count <= FIELD_NAME_SHOWN_CHARS_MAX {
        return format!("{name:?}");
    }
    let head: String = name.chars().take(FIELD_NAME_SHOWN_CHARS_MAX).collect();
    format!(
        "{head:?}… ({} more characters)",
        count - FIELD_NAME_SHOWN_CHARS_MAX
    )
}

/// The first key that occurs twice in the line's top-level object, if any. Only
/// called on text already known to be a JSON object.
fn duplicate_key(text: &str) -> Option<String> {
    struct FirstDuplicate(Option<String>);

    impl<'de> Deserialize<'de> for FirstDuplicate {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(FirstDuplicate(None))
        }
    }

    impl<'de> Visitor<'de> for FirstDuplicate {
        type Value = FirstDuplicate;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self, A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if seen.contains(&key) {
                    self.0.get_or_insert(key);
                } else {
                    seen.insert(key);
                }
            }
            Ok(self)
        }
    }

    serde_json::from_str::<FirstDuplicate>(text)
        .ok()
        .and_then(|found| found.0)
}

// The fields each type may have. Every value is a JSON string, and an unknown
// field is an error, so that a float amount or a misspelt name is caught rather
// than guessed at.
const AGREEMENT_FIELDS: &[&str] = &[
    "type",
    "agreement",
    "kommune",
    "cpr",
    "valid_from",
    "valid_to",
];
const AGREEMENT_ENDED_FIELDS: &[&str] = &["type", "agreement", "kommune", "valid_to"];
const WITHHOLDING_FIELDS: &[&str] = &[
    "type",
    "reference",
    "agreement",
    "kommune",
    "cpr",
    "payout_date",
    "period_from",
    "period_to",
    "amount",
];
const CORRECTION_FIELDS: &[&str] = &[
    "type",
    "reference",
    "corrects",
    "kommune",
    "amount",
    "reason",
];

/// One line's object, its fields taken out by name as strings.
struct Fields(Map<String, Value>);

impl Fields {
    /// Refuses a field the type does not have before looking at any value: a
    /// misspelt name explains a "missing field" that would otherwise come first.
    fn new(
        object: Map<String, Value>,
        kind: &'static str,
        allowed: &[&str],
    ) -> Result<Fields, InputError> {
        if let Some(unknown) = object.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(InputError::UnknownField {
                field: shown_field(unknown),
                kind,
                expected: allowed.join(", "),
            });
        }
        Ok(Fields(object))
    }

    fn required(&mut self, field: &'static str) -> Result<String, InputError> {
        self.optional(field)?
            .ok_or(InputError::MissingField { field })
    }

    fn optional(&mut self, field: &'static str) -> Result<Option<String>, InputError> {
        match self.0.remove(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(InputError::NotAString {
                field: field.into(),
                found: json_kind(&other),
            }),
        }
    }

    fn parsed<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, DomainError>,
    ) -> Result<T, InputError> {
        parse(&self.required(field)?).map_err(|error| InputError::Field { field, error })
    }

    fn date(&mut self, field: &'static str) -> Result<NaiveDate, InputError> {
        date(field, &self.required(field)?)
    }
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

fn agreement(mut fields: Fields) -> Result<Command, InputError> {
    Ok(Command::RegisterAgreement(Agreement {
        agreement: fields.parsed("agreement", AgreementRef::parse)?,
        kommune: fields.parsed("kommune", Kommune::parse)?,
        cpr: fields.parsed("cpr", Cpr::parse)?.into(),
        valid_from: fields.date("valid_from")?,
        valid_to: fields
            .optional("valid_to")?
            .map(|to| date("valid_to", &to))
            .transpose()?,
    }))
}

fn agreement_ended(mut fields: Fields) -> Result<Command, InputError> {
    Ok(Command::EndAgreement(AgreementEnd {
        agreement: fields.parsed("agreement", AgreementRef::parse)?,
        kommune: fields.parsed("kommune", Kommune::parse)?,
        valid_to: fields.date("valid_to")?,
    }))
}

fn withholding(mut fields: Fields) -> Result<Command, InputError> {
    Ok(Command::RecordWithholding(Withholding {
        reference: fields.parsed("reference", KyRef::parse)?,
        agreement: fields.parsed("agreement", AgreementRef::parse)?,
        kommune: fields.parsed("kommune", Kommune::parse)?,
        cpr: fields.parsed("cpr", Cpr::parse)?.into(),
        payout_date: fields.date("payout_date")?,
        period_from: fields.date("period_from")?,
        period_to: fields.date("period_to")?,
        amount: fields.parsed("amount", Amount::parse_kroner)?,
    }))
}

fn correction(mut fields: Fields) -> Result<Command, InputError> {
    let reason = fields.optional("reason")?.unwrap_or_default();
    let reason_chars = reason.chars().count();
    if reason_chars > REASON_CHARS_MAX {
        return Err(InputError::Reason {
            why: format!("{reason_chars} characters; at most {REASON_CHARS_MAX}"),
        });
    }
    if reason.chars().any(char::is_control) {
        return Err(InputError::Reason {
            why: "contains control characters".into(),
        });
    }
    Ok(Command::CorrectWithholding(Correction {
        reference: fields.parsed("reference", KyRef::parse)?,
        corrects: fields.parsed("corrects", KyRef::parse)?,
        kommune: fields.parsed("kommune", Kommune::parse)?,
        amount: fields.parsed("amount", Amount::parse_kroner)?,
        reason,
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
    fn a_line_that_is_not_json_says_whether_it_was_cut_short() {
        let defect = |line: &[u8]| match parse_line(line) {
            Err(InputError::Json { defect, .. }) => defect,
            other => panic!("{} gave {other:?}", String::from_utf8_lossy(line)),
        };
        for truncated in [&b"{"[..], b"{\"type\":", b"{\"type\":\"agree", b"[1,"] {
            assert_eq!(defect(truncated), JsonDefect::Truncated);
        }
        for broken in [
            &b"{\"type\" \"x\"}"[..],
            b"{'type':'x'}",
            b"{} {}",
            b"// x",
            b"{\"a\":1,}",
        ] {
            assert_eq!(defect(broken), JsonDefect::Syntax);
        }
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

    /// Regression: serde_json's `Value` keeps the last of two equal keys, so
    /// `"amount":"1.00","amount":"1000.00"` was silently read as 1000.00.
    #[test]
    fn a_duplicate_key_is_refused_not_resolved() {
        let line = br#"{"type":"agreement_ended","agreement":"BA1","kommune":"0751","valid_to":"2026-06-30","valid_to":"2026-07-31"}"#;
        assert_eq!(
            parse_line(line),
            Err(InputError::DuplicateField {
                field: "\"valid_to\"".into()
            })
        );
    }

    #[test]
    fn every_value_must_be_a_string_even_an_optional_one() {
        let line = br#"{"type":"agreement","agreement":"BA1","kommune":"0751","cpr":"0101901234","valid_from":"2026-01-01","valid_to":null}"#;
        assert!(matches!(
            parse_line(line),
            Err(InputError::NotAString { ref field, .. }) if field == "valid_to"
        ));
    }

    #[test]
    fn a_type_error_does_not_repeat_the_value() {
        let line = br#"{"type":"agreement","agreement":"BA1","kommune":"0751","cpr":1010901234,"valid_from":"2026-01-01"}"#;
        let message = parse_line(line).unwrap_err().to_string();
        assert!(!message.contains("1010901234"), "{message}");
        assert!(message.contains("field cpr"), "{message}");
    }

    #[test]
    fn a_cr_inside_a_line_is_refused() {
        let input = b"{\"type\":\"x\"}\r{\"type\":\"y\"}\r";
        let parsed = parse_lines(&input[..]).unwrap();
        assert!(matches!(
            parsed.errors[0].error,
            InputError::BareCarriageReturn { offset: 12 }
        ));
    }

    #[test]
    fn a_long_field_name_is_shortened_in_messages() {
        let shown = shown_field(&"x".repeat(1000));
        assert!(shown.ends_with("(960 more characters)"), "{shown}");
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
