//! The ledger: the append-only event log on SQLite, its hash chain, idempotent
//! batch ingest, projections as of any position, and verification by replay.

mod backup;
mod codec;
mod datadir;
mod error;
mod projection;
mod schema;
mod store;
mod verify;
mod view;

pub use backup::{backup, restore, BackupError, RestoreReport};
pub use codec::{
    chain_hash, decode as decode_payload, encode as encode_payload, StoredEvent,
    CURRENT_SCHEMA_VERSION, GENESIS_HASH,
};
pub use datadir::{
    check_private_dir, read_mark, try_lock_named, ExportLock, HeadMark, HeldLock, LockAttempt,
    EXPORT_LOCK_FILE, HEAD_MARK_FILE, WRITER_NOTE_FILE,
};
pub use error::{LedgerError, LineError};
pub use projection::{RangeTotals, Totals, KIND_CORRECTION, KIND_WITHHOLDING};
pub use store::Appender;
pub use store::{
    create_private_dir, ensure_private_dir, set_default_busy_wait, AsOf, Cutoff, Head,
    IngestReport, Ledger, LineOutcome, DATABASE_FILE, DEFAULT_BUSY_WAIT,
};
pub use verify::{VerifyFailure, VerifyReport};
