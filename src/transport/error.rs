//! TransportError: every way a delivery can fail, and which failures are worth retrying.

use std::path::PathBuf;

use thiserror::Error;

use super::xml::XmlError;

/// Why a connection, an upload or the wait for a receipt failed.
///
/// [`TransportError::is_retryable`] separates the failures a later attempt can cure
/// (server down, connection dropped) from those it cannot (wrong host key, refused
/// login, a receipt we cannot read).
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },

    #[error("no SSH session with {address} within {timeout_secs} s (connect_timeout_secs)")]
    ConnectTimeout { address: String, timeout_secs: u64 },

    #[error(
        "host key of {address} is not the pinned one: the server offered {offered}, \
         [sftp] host_key expects {expected}; refusing to connect. If the platform has \
         changed its key, confirm the new fingerprint with the operator out of band \
         before updating host_key"
    )]
    HostKeyMismatch {
        address: String,
        offered: String,
        expected: String,
    },

    #[error("SSH session with {address} failed: {message}")]
    Ssh {
        address: String,
        message: String,
        /// A dropped or timed-out connection, as opposed to a protocol failure.
        connection_lost: bool,
    },

    #[error(
        "{address} refused the key {key_path} for user {user:?}; is its public key registered?"
    )]
    AuthRejected {
        address: String,
        user: String,
        key_path: PathBuf,
    },

    #[error("cannot load the private key {path}: {message}")]
    PrivateKey { path: PathBuf, message: String },

    #[error("SFTP {operation} {path:?} failed: {message}")]
    Remote {
        operation: &'static str,
        path: String,
        message: String,
    },

    #[error("SFTP {operation} {path:?} failed, the connection was lost: {message}")]
    ConnectionLost {
        operation: &'static str,
        path: String,
        message: String,
    },

    #[error("uploaded {path:?} but the server reports {actual_bytes} bytes, not {expected_bytes}; no trigger was written")]
    SizeMismatch {
        path: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },

    /// The server already holds something under a delivery's name that is not
    /// ours to replace: a data file with other bytes, or a trigger for another
    /// delivery. Nothing was overwritten (docs/operations.md, "The platform holds
    /// another file under this name").
    #[error("{path:?} on the server already holds {found}; it was not overwritten")]
    NameTaken {
        path: String,
        /// What is there, for the operator: its size and SHA-256, or whose trigger.
        found: String,
    },

    #[error("file name {name:?} cannot be delivered: {why}")]
    InvalidFileName { name: String, why: &'static str },

    #[error("cannot build the trigger for {name:?}: {source}")]
    Trigger { name: String, source: XmlError },

    #[error("cannot read the receipt {path:?}: {source}")]
    MalformedReceipt { path: String, source: XmlError },

    /// A file on the server (a receipt, a trigger) larger than what such a file
    /// may hold ([`super::RECEIPT_BYTES_MAX`]); it was not read whole.
    #[error(
        "{path:?} on the server {}larger than the {limit_bytes} bytes a receipt may have \
         (docs/operations.md, \"Receipts\"); it was not read whole, recorded or archived, and \
         stays where it is: ask the platform's operator what it is, and have it removed there",
        size_note(*.size_bytes)
    )]
    TooLarge {
        path: String,
        /// The size the server reported, if it reported one.
        size_bytes: Option<u64>,
        limit_bytes: u64,
    },

    #[error(
        "no receipt for {expected_senders_file_id} at {path:?} within {waited_secs} s \
         (receipt_timeout_secs){}",
        stale_note(.stale_senders_file_id)
    )]
    ReceiptTimeout {
        path: String,
        waited_secs: u64,
        expected_senders_file_id: String,
        /// The SendersFileId of a receipt found there that answers an earlier delivery.
        stale_senders_file_id: Option<String>,
    },

    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<TransportError>,
    },

    #[error("delivery task for {name:?} stopped unexpectedly: {message}")]
    TaskFailed { name: String, message: String },
}

fn size_note(size_bytes: Option<u64>) -> String {
    match size_bytes {
        Some(size) => format!("holds {size} bytes, "),
        None => "is ".to_owned(),
    }
}

fn stale_note(stale: &Option<String>) -> String {
    match stale {
        Some(id) => format!("; the receipt there answers an earlier delivery ({id})"),
        None => String::new(),
    }
}

impl TransportError {
    /// Whether this failure was (or, after retries, ended in) a host key that is
    /// not the pinned one: the operator must act, and `main` gives it its own
    /// exit code.
    pub fn is_host_key_mismatch(&self) -> bool {
        match self {
            TransportError::HostKeyMismatch { .. } => true,
            TransportError::RetriesExhausted { last, .. } => last.is_host_key_mismatch(),
            _ => false,
        }
    }

    /// Whether the server holds another file under a delivery's name (never
    /// overwritten; its own exit code).
    pub fn is_name_taken(&self) -> bool {
        match self {
            TransportError::NameTaken { .. } => true,
            TransportError::RetriesExhausted { last, .. } => last.is_name_taken(),
            _ => false,
        }
    }

    /// Whether trying again later may succeed: the server was down or unreachable,
    /// or the connection dropped. Re-running an upload is safe: it finishes what an
    /// earlier attempt of the same delivery left and replaces nothing else.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Connect { .. }
            | TransportError::ConnectTimeout { .. }
            | TransportError::ConnectionLost { .. } => true,
            TransportError::Ssh {
                connection_lost, ..
            } => *connection_lost,
            // A short file after an upload that reported success means bytes were
            // lost in flight; uploading again from scratch is the cure.
            TransportError::SizeMismatch { .. } => true,
            TransportError::HostKeyMismatch { .. }
            | TransportError::AuthRejected { .. }
            | TransportError::PrivateKey { .. }
            | TransportError::Remote { .. }
            | TransportError::InvalidFileName { .. }
            | TransportError::NameTaken { .. }
            | TransportError::Trigger { .. }
            | TransportError::MalformedReceipt { .. }
            | TransportError::TooLarge { .. }
            | TransportError::ReceiptTimeout { .. }
            | TransportError::RetriesExhausted { .. }
            | TransportError::TaskFailed { .. } => false,
        }
    }
}
