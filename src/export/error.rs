//! ExportError: what can stop an export, a reconstruction or a reissue.

use std::path::PathBuf;

use thiserror::Error;

use crate::ledger::LedgerError;
use crate::sf2520::WriteError;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),

    #[error("kommune {kommune}, løbenummer {sequence}: {source}")]
    Render {
        kommune: String,
        sequence: u32,
        source: WriteError,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("kommune {kommune} løbenummer {sequence}: the creation time {created_at_us} µs in its FileExported event at position {position} is out of range: the event is damaged; run `sf2520 verify`")]
    CreationTimeOutOfRange {
        kommune: String,
        sequence: u32,
        position: u64,
        created_at_us: i64,
    },

    #[error(
        "position {position} is listed as an entry of kommune {kommune} but holds a {found} event"
    )]
    NotAnEntry {
        position: u64,
        kommune: String,
        found: &'static str,
    },

    #[error("correction at position {position} corrects {corrects}, which the ledger does not hold as a withholding of kommune {kommune}")]
    MissingWithholding {
        position: u64,
        corrects: String,
        kommune: String,
    },

    /// An entry whose CPR is still sealed when it is rendered: the ledger opens
    /// every CPR it hands the exporter, so this is a bug, never a file.
    #[error(
        "the entry at position {position} reached the file with its CPR sealed; no file was made"
    )]
    SealedCpr { position: u64 },

    #[error("another export recorded kommune {kommune} løbenummer {sequence} while this run worked; run export again")]
    ConcurrentExport { kommune: String, sequence: u32 },

    #[error("a worker thread failed: {0}")]
    Worker(String),

    #[error(
        "the outbox {dir} belongs to another ledger (id {owner}; this one is {ours}): an \
         export never writes into, or removes from, another ledger's outbox. Give this \
         ledger its own with --out DIR"
    )]
    OutboxClaimed {
        dir: PathBuf,
        owner: String,
        ours: String,
    },

    #[error(
        "the outbox {dir} holds {count} SF2520 file(s) this ledger did not write ({names}); \
         nothing was exported and nothing was removed. Move them elsewhere, or give this \
         ledger its own outbox with --out DIR"
    )]
    ForeignFiles {
        dir: PathBuf,
        count: usize,
        names: String,
    },

    #[error(
        "{path} should say which ledger the outbox belongs to, but cannot be read as such; \
         nothing was exported. If the outbox is this ledger's, remove the file and run \
         again"
    )]
    DamagedClaim { path: PathBuf },

    #[error(
        "kommune {kommune}, løbenummer {sequence}: the rendered file read back through the \
         strict reader does not agree with the ledger ({what}); nothing was recorded. \
         This is a bug: keep the ledger as it is and report it"
    )]
    ReadBack {
        kommune: String,
        sequence: u32,
        what: String,
    },
}

impl From<crate::interrupt::Interrupted> for ExportError {
    fn from(interrupted: crate::interrupt::Interrupted) -> ExportError {
        ExportError::Ledger(LedgerError::Interrupted(interrupted))
    }
}

impl ExportError {
    /// A closure for `map_err` that says what was being done to which path.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ExportError {
        let path = path.to_path_buf();
        move |source| ExportError::Io {
            action,
            path,
            source,
        }
    }
}
