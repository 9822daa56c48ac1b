//! The ledger: the append-only event log on SQLite, its hash chain, idempotent
//! batch ingest, projections as of any position, and verification by replay.

mod backup;
mod codec;
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
pub use error::{LedgerError, LineError};
pub use projection::{Totals, KIND_CORRECTION, KIND_WITHHOLDING};
pub use store::Appender;
pub use store::{create_private_dir, AsOf, Head, IngestReport, Ledger, LineOutcome, DATABASE_FILE};
pub use verify::{VerifyFailure, VerifyReport};
