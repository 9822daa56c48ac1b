//! LedgerError: what can go wrong opening, appending to and reading the ledger.

use std::path::PathBuf;

use thiserror::Error;

use crate::domain::DomainError;

/// One rejected input line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: usize,
    pub error: DomainError,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A command other than `init` (or `demo`) was pointed at a directory without
    /// a ledger: a typo in `--data-dir` must not silently start a new, empty one.
    #[error(
        "no ledger at {} (run `sf2520 init`); if the ledger is elsewhere, check \
         --data-dir or SF2520_DATA_DIR. Nothing was created",
        .path.display()
    )]
    NoLedger { path: PathBuf },

    #[error("cannot open ledger database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("{path} is readable or writable by group or others (mode {mode:o}); run `chmod 600 {path}` (or `chmod 700` for a directory)")]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error(
        "the ledger at {path} has schema version {found}; this program knows version {expected}{}",
        schema_hint(*.found, *.expected)
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        expected: i64,
    },

    #[error("{} line(s) rejected; nothing was written", .0.len())]
    Rejected(Vec<LineError>),

    #[error("event at position {position} cannot be decoded: {reason}")]
    CorruptPayload { position: u64, reason: String },

    #[error("the log has a gap or disorder: expected position {expected}, found {found}")]
    PositionGap { expected: u64, found: u64 },

    #[error("position {position} does not exist (the log ends at {head})")]
    NoSuchPosition { position: u64, head: u64 },

    #[error(
        "agreement {agreement} is not registered as of position {position}; \
         `sf2520 log` lists the agreements registered (type AgreementRegistered)"
    )]
    UnknownAgreement { agreement: String, position: u64 },

    #[error("{what} changed while this run worked; another process is writing to the ledger")]
    Concurrent { what: String },

    #[error("{path} is not a ledger: {why}")]
    NotALedger { path: PathBuf, why: String },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What to do about a ledger file of another schema version.
fn schema_hint(found: i64, expected: i64) -> &'static str {
    if found < expected {
        ". A ledger of an older version is upgraded when it is opened as a data \
         directory's ledger.sqlite3 (any sf2520 command with --data-dir); a copy such \
         as a backup is only read, so upgrade it that way first"
    } else {
        ". It was written by a newer sf2520; use that version"
    }
}
