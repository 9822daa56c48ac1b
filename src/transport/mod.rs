//! Transport: delivering files to Serviceplatformen over SFTP and reading its receipts.
//!
//! Stands apart from the ledger: it takes bytes, a name and a `SendersFileId`, and
//! gives back what happened, so the exporter records the events.
//!
//! - `config`: the `[sftp]` section (server, pinned host key, timeouts, retry).
//! - `xml`: the `Trigger` we write and the `TechnicalReceipt` we read.
//! - `sftp`: one SSH/SFTP connection with the host key pinned.
//! - [`keys`]: client keys; RSA signs through ring, ed25519 and ECDSA through russh.
//! - `transfer`: data file, then trigger, then receipt (DESIGN §6), with retry.
//! - `retry`: exponential backoff for failures a later attempt can cure.
//! - `error`: [`TransportError`], and which of its variants are retryable.

mod config;
mod error;
pub mod keys;
mod retry;
mod sftp;
mod transfer;
mod xml;

pub use config::{load, ConfigError, PinnedHostKey, RetryConfig, RoutingConfig, SftpConfig};
pub use error::TransportError;
pub use sftp::{plain_file_name, SftpClient};
pub use transfer::{
    await_receipt, business_receipts, business_receipts_via, byte_count, compare_with_server,
    run_limited, trigger_for, upload, DeliveryOutcome, FoundBusinessReceipt, OutgoingFile,
    ReceivedReceipt, RemotePaths, ServerCopy, Uploaded, RECEIPT_BYTES_MAX,
};
pub use xml::{
    parse_in_document, parse_receipt, trigger_xml, BusinessReceipt, DynamicRouting, InDocument,
    ReceiptOutcome, TechnicalReceipt, Trigger, XmlError,
};
