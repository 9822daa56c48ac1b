//! WriteError and ReadError: every reason a file cannot be written or is rejected.

use std::fmt;

use thiserror::Error;

use super::layout::Kind;

/// Why a record could not be written. Every variant names the record type and the
/// field; nothing is ever truncated or substituted to avoid one of these.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("record {record}, field {field}: value {value:?} does not fit its {width} positions; values are never truncated")]
    DoesNotFit {
        record: &'static str,
        field: &'static str,
        value: String,
        width: usize,
    },

    #[error("record {record}, field {field}: value \"{value}\" holds {character:?}, which is not printable ISO-8859-1; nothing is ever substituted")]
    NotLatin1 {
        record: &'static str,
        field: &'static str,
        value: String,
        character: char,
    },

    #[error("record {record}, field {field}: value {value:?} is out of range: {why}")]
    OutOfRange {
        record: &'static str,
        field: &'static str,
        value: String,
        why: &'static str,
    },

    #[error("record {record}, field {field}: a {kind} {why}")]
    CorrectedReference {
        record: &'static str,
        field: &'static str,
        kind: crate::domain::EntryKind,
        why: &'static str,
    },

    #[error("record {record}, field {field}: the writer supplied no value (a bug in the writer)")]
    MissingValue {
        record: &'static str,
        field: &'static str,
    },

    #[error("record {record}, field {field}: the writer supplied a value of the wrong kind for an {expected:?} field (a bug in the writer)")]
    WrongValueKind {
        record: &'static str,
        field: &'static str,
        expected: Kind,
    },

    #[error("record {record}, field {field}: the layout places the field outside the record (a bug in the layout table)")]
    OutsideRecord {
        record: &'static str,
        field: &'static str,
    },

    #[error("writing the file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One defect the reader found, and where: `line` is the 1-based record number in
/// the file (CR LF counts as the end of a line), `column` the 1-based byte within it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("line {line}, column {column}, {field}: {kind}")]
pub struct ReadError {
    pub line: usize,
    pub column: usize,
    /// The layout's field name, or `record`/`line end` for the file's structure.
    pub field: &'static str,
    pub kind: ReadErrorKind,
}

/// What is wrong, each message saying what was expected. A CPR is only ever
/// shown masked (`DDMMYY-xxxx`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadErrorKind {
    #[error("the file is empty; expected a 000 start record")]
    EmptyFile,
    #[error("found a UTF-8 byte order mark; expected ISO-8859-1 without a BOM")]
    ByteOrderMark,
    #[error("record is {found} bytes long; expected 128 bytes before CR LF")]
    RecordLength { found: usize },
    #[error("line end is {found}; expected CR LF")]
    LineEnding { found: &'static str },
    #[error("first record is {found:?}; expected a 000 start record")]
    MissingStartRecord { found: String },
    #[error("the file ends without a 999 end record")]
    MissingEndRecord,
    #[error("a {found} record here; expected {expected}")]
    UnexpectedRecord {
        found: String,
        expected: &'static str,
    },
    #[error("data after the 999 end record; expected nothing after its CR LF")]
    DataAfterEndRecord,
    #[error("unknown record type {found:?}; expected 000, 010 or 999")]
    UnknownRecordType { found: String },
    #[error("found {found:?}; expected {expected:?}")]
    WrongConstant {
        expected: &'static str,
        found: String,
    },
    #[error("found {found:?}; expected digits 0-9 only (zero-padded)")]
    NotDigits { found: String },
    #[error("byte 0x{byte:02X} is not printable ISO-8859-1")]
    NotPrintable { byte: u8 },
    #[error("{character:?} is encoded as UTF-8; expected one ISO-8859-1 byte per character")]
    Utf8InsteadOfLatin1 { character: char },
    #[error("found {found:?}; expected blanks (spaces) only")]
    NotBlank { found: String },
    #[error("{found:?} is not a real {format}")]
    InvalidDate { found: String, format: &'static str },
    #[error("{found:?} is not one of the 98 kommunekoder")]
    UnknownKommune { found: String },
    #[error("kommune {found}; expected {expected} as in the start record")]
    KommuneMismatch { found: String, expected: String },
    #[error("CPR {masked} is invalid: {why}")]
    InvalidCpr { masked: String, why: &'static str },
    #[error("reference {found:?} is invalid: {why}")]
    InvalidReference { found: String, why: String },
    #[error("record number {found}; expected {expected} (numbered 1, 2, 3, … in file order)")]
    RecordNumber { found: u64, expected: u64 },
    #[error("transaction code {found:?}; expected 01 (withholding) or 02 (correction)")]
    TransactionCode { found: String },
    #[error("blank; a correction (02) must name the KY reference it corrects")]
    MissingCorrectedReference,
    #[error("found {found:?}; a withholding (01) must leave the corrected reference blank")]
    UnexpectedCorrectedReference { found: String },
    #[error("sign {found:?}; expected {expected}")]
    InvalidSign {
        found: String,
        expected: &'static str,
    },
    #[error("test marker {found:?}; expected \"T\" (test) or blank (production)")]
    TestMarker { found: String },
    #[error("{found:?} is out of range; expected {expected}")]
    OutOfRange {
        found: String,
        expected: &'static str,
    },
    #[error("løbenummer {found}; expected {expected} as in the start record")]
    SequenceMismatch { found: String, expected: String },
    #[error("control total says {found}; the detail records give {computed}")]
    ControlTotal { found: String, computed: String },
}

/// All defects found in one file, in line and column order, at most
/// [`ReadErrors::CAP`]; `truncated` says that reading stopped at the cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadErrors {
    pub errors: Vec<ReadError>,
    pub truncated: bool,
}

impl ReadErrors {
    /// A broken file can have a defect on every line; past this many the operator
    /// has enough to act on and the reader stops.
    pub const CAP: usize = 100;

    /// The first defect, the one a fix should start with.
    pub fn first(&self) -> Option<&ReadError> {
        self.errors.first()
    }
}

impl fmt::Display for ReadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s)", self.errors.len())?;
        if self.truncated {
            write!(f, " (stopped after {})", Self::CAP)?;
        }
        for error in &self.errors {
            write!(f, "\n{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReadErrors {}

/// Collects a reader's errors up to [`ReadErrors::CAP`].
#[derive(Debug, Default)]
pub(crate) struct ErrorSink {
    errors: Vec<ReadError>,
    truncated: bool,
}

impl ErrorSink {
    pub(crate) fn push(
        &mut self,
        line: usize,
        column: usize,
        field: &'static str,
        kind: ReadErrorKind,
    ) {
        if self.errors.len() >= ReadErrors::CAP {
            self.truncated = true;
            return;
        }
        self.errors.push(ReadError {
            line,
            column,
            field,
            kind,
        });
    }

    /// True once an error was dropped for the cap: reading further is wasted work.
    pub(crate) fn is_full(&self) -> bool {
        self.truncated
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in line and column order (stable, so same-place errors keep the
    /// order in which they were found).
    pub(crate) fn into_errors(mut self) -> ReadErrors {
        self.errors.sort_by_key(|error| (error.line, error.column));
        ReadErrors {
            errors: self.errors,
            truncated: self.truncated,
        }
    }
}
