//! The ledger: the append-only event log, its hash chain, idempotent batch
//! ingest, projections as of any position, and verification by replay; the one
//! door to the database. The rules, codec, chain and projections are shared;
//! `sqlite` (the embedded default) and `postgres` (several nodes) hold what differs,
//! and `sql` is the one SQL surface over both drivers. No module outside this one
//! uses a database driver.

mod backup;
mod codec;
mod datadir;
mod entries;
mod error;
mod files;
mod keys;
mod migrate;
pub mod nofollow;
mod postgres;
mod projection;
mod retention;
mod schema;
mod sql;
mod sqlite;
mod store;
mod verify;
mod view;

pub use backup::{backup, restore, BackupError, RestoreReport};
pub use codec::{
    chain_hash, decode as decode_payload, encode as encode_payload, StoredEvent,
    CURRENT_SCHEMA_VERSION, GENESIS_HASH,
};
pub(crate) use datadir::host_name;
pub use datadir::{
    check_private_dir, name_command, read_mark, read_small_file, replace_small_file,
    try_lock_named, HeadMark, HeldLock, LockAttempt, EXPORT_LOCK_FILE, HEAD_MARK_FILE,
    VERIFY_RECORD_FILE, WRITER_NOTE_FILE,
};
pub use entries::EntryRange;
pub use error::{LedgerError, LineError, LostHistory};
pub use files::{file_stream, DeliveryState, DeliveryStatus, OfficialFile, ProjectionDamage};
pub use keys::{key_file_path, set_key_file, KeyFile, KEY_FILE};
pub use migrate::{MigrateReport, SealReport};
pub use postgres::{DatabaseUrl, Replication, DEFAULT_FAILOVER_WAIT};
pub use projection::{RangeTotals, Totals};
pub use retention::{ErasableAgreement, FileExpiry, RetentionPlan, RetentionRule};
pub use schema::DEFAULT_TOTALS_BLOCK;
pub use store::Appender;
pub use store::{
    create_private_dir, ensure_private_dir, set_database_url, set_default_busy_wait, AsOf,
    BatchOutcome, Clock, Cutoff, ExportLock, Head, IngestMode, IngestReport, Ledger, LineOutcome,
    Location, SystemClock, DATABASE_FILE, DEFAULT_BUSY_WAIT, UNKNOWN_OUTCOME_RETRIES,
};
pub use verify::{VerifyFailure, VerifyReport};
