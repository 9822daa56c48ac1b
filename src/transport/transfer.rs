//! Simple transfer to Serviceplatformen (DESIGN §6): data file, then trigger, then receipt.
//!
//! The steps are separate calls so the caller can record an event after each:
//! [`upload`] puts `OUT/<name>` and, only once the server reports its full size,
//! `OUT/<name>.trigger`; [`await_receipt`] waits for `IN/<name>.sftpreceipt`.
//! The exporter records an event between the two. Connection failures are retried
//! with backoff per `[sftp.retry]`.
//!
//! Nothing on the platform is overwritten. Each file is written under a staging
//! name of this delivery's own (`<path>.<SendersFileId>.partial`) and renamed into
//! place; SFTP's rename (version 3, which OpenSSH's server implements with
//! `link(2)`) fails when the new name exists, so a file that appears under the name
//! between our look and the rename is never replaced either. What an earlier
//! attempt of the same delivery left (its staged file, the whole data file, its
//! trigger) is finished, not redone; anything else under the name is
//! [`TransportError::NameTaken`].

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use uuid::Uuid;

use super::config::SftpConfig;
use super::error::TransportError;
use super::retry::with_retry;
use super::sftp::SftpClient;
use super::xml::{
    parse_in_document, trigger_xml, BusinessReceipt, DynamicRouting, InDocument, ReceiptOutcome,
    TechnicalReceipt, Trigger, XmlError,
};
use crate::domain::ReceiptErrorCode;
use sha2::{Digest, Sha256};

/// The most bytes a receipt (or a trigger read back) may hold: 64 KiB. KOMBIT's
/// `SFTPTypes.xsd` documents are a few hundred bytes to a few KiB; a larger one
/// is refused before it is read whole, so memory, the ledger and `receipts/`
/// stay bounded whatever the server's `IN/` holds (docs/operations.md, "Receipts").
pub const RECEIPT_BYTES_MAX: u64 = 64 * 1024;

/// A file to hand to the platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingFile {
    /// The name in `OUT/`, e.g. `SF2520_0751_20260201_000001.txt`; no directory part.
    pub name: String,
    pub bytes: Vec<u8>,
    /// The trigger's `SendersFileId`; the receipt must carry the same one.
    pub senders_file_id: Uuid,
}

/// The data file and its trigger are on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// Where the data file is, relative to the login directory (`OUT/<name>`).
    pub remote_path: String,
    pub trigger_path: String,
    /// Confirmed by the server after the upload.
    pub size_bytes: u64,
    /// 1 when the first attempt succeeded.
    pub attempt: u32,
}

/// The platform's answer to a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Accepted {
        file_transfer_uuid: String,
    },
    Rejected {
        file_transfer_uuid: String,
        /// Never empty.
        errors: Vec<ReceiptErrorCode>,
    },
}

/// The technical receipt that answers a delivery, with the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedReceipt {
    pub receipt: TechnicalReceipt,
    /// Exactly as read from `IN/`, to be archived.
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

impl ReceivedReceipt {
    pub fn outcome(&self) -> DeliveryOutcome {
        outcome_of(self.receipt.clone())
    }
}

/// A business receipt found in `IN/` for one of the data files asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundBusinessReceipt {
    /// Its path on the server, to remove once recorded.
    pub path: String,
    pub receipt: BusinessReceipt,
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

/// The paths on the server that belong to one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePaths {
    pub data: String,
    pub trigger: String,
    pub receipt: String,
}

impl RemotePaths {
    pub fn new(config: &SftpConfig, name: &str) -> RemotePaths {
        let out = config.remote_out_dir.trim_end_matches('/');
        let inbox = config.remote_in_dir.trim_end_matches('/');
        RemotePaths {
            data: format!("{out}/{name}"),
            trigger: format!("{out}/{name}.trigger"),
            receipt: format!("{inbox}/{name}.sftpreceipt"),
        }
    }

    /// Where one delivery writes `path` before renaming it into place: a name of
    /// its own, so the platform (which reacts to `*.trigger`) never reads half a
    /// file, and two deliveries of one name never write into each other's.
    pub fn staged(path: &str, senders_file_id: Uuid) -> String {
        format!("{path}.{senders_file_id}.partial")
    }
}

/// What the server holds under a data file's name, beside the bytes we mean to
/// put there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCopy {
    Absent,
    /// Exactly our bytes.
    Same,
    /// Fewer bytes, all of them the start of ours: an upload that an older
    /// sf2520, which wrote straight to the name, did not finish.
    Prefix {
        size_bytes: u64,
    },
    /// Other bytes: the size the server reports, and their SHA-256 when there
    /// are no more of them than ours (a larger file is not read).
    Different {
        size_bytes: u64,
        sha256: Option<[u8; 32]>,
    },
}

impl ServerCopy {
    /// What is there, for a message: "other bytes (N bytes, SHA-256 …)".
    pub fn describe(&self) -> String {
        match self {
            ServerCopy::Absent => "nothing".to_owned(),
            ServerCopy::Same => "the same bytes".to_owned(),
            ServerCopy::Prefix { size_bytes } => {
                format!("the first {size_bytes} bytes of ours (an unfinished upload)")
            }
            ServerCopy::Different {
                size_bytes,
                sha256: Some(sha256),
            } => format!("other bytes ({size_bytes} bytes, SHA-256 {})", hex(sha256)),
            ServerCopy::Different { size_bytes, .. } => {
                format!("other bytes ({size_bytes} bytes, more than ours; not read)")
            }
        }
    }
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares the file at `path` with `bytes`: its size first, then its bytes, read
/// bounded by our size (a larger file is never read).
pub async fn compare_with_server(
    client: &SftpClient,
    path: &str,
    bytes: &[u8],
) -> Result<ServerCopy, TransportError> {
    if !client.exists(path).await? {
        return Ok(ServerCopy::Absent);
    }
    let ours = byte_count(bytes);
    let size_bytes = client.size(path).await?;
    let larger = ServerCopy::Different {
        size_bytes,
        sha256: None,
    };
    if size_bytes > ours {
        return Ok(larger);
    }
    let theirs = match client.read_at_most(path, ours).await {
        Ok(theirs) => theirs,
        // It grew between the size and the read.
        Err(TransportError::TooLarge { .. }) => return Ok(larger),
        Err(error) => return Err(error),
    };
    let size_bytes = byte_count(&theirs);
    Ok(if theirs == bytes {
        ServerCopy::Same
    } else if bytes.starts_with(&theirs) {
        ServerCopy::Prefix { size_bytes }
    } else {
        ServerCopy::Different {
            size_bytes,
            sha256: Some(Sha256::digest(&theirs).into()),
        }
    })
}

/// Uploads the data file, checks its size on the server, then puts the trigger in
/// place, each under a staging name renamed into place without replacing anything.
/// Retries connection failures; each attempt finishes what an earlier one of this
/// delivery left. A name that holds anything else is [`TransportError::NameTaken`].
pub async fn upload(config: &SftpConfig, file: &OutgoingFile) -> Result<Uploaded, TransportError> {
    check_file_name(&file.name)?;
    let paths = RemotePaths::new(config, &file.name);
    let size_bytes = byte_count(&file.bytes);
    let trigger = trigger_xml(&trigger_for(config, file, size_bytes, chrono::Utc::now())?)
        .map_err(|source| TransportError::Trigger {
            name: file.name.clone(),
            source,
        })?;
    let what = format!("upload {}", paths.data);
    let ((), attempt) = with_retry(&config.retry, &what, |_| {
        upload_once(config, &paths, file, &trigger)
    })
    .await?;
    Ok(Uploaded {
        remote_path: paths.data,
        trigger_path: paths.trigger,
        size_bytes,
        attempt,
    })
}

/// The trigger for `file`: `[sftp]` sender and recipients, and `[sftp.routing]`
/// with this file's `SendersFileId` as `TransactionId` and `now` as `SenderTimestamp`.
pub fn trigger_for(
    config: &SftpConfig,
    file: &OutgoingFile,
    size_bytes: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Trigger, TransportError> {
    let routing = match &config.routing {
        None => None,
        Some(routing) => {
            let bad = |e: super::config::ConfigError| TransportError::Trigger {
                name: file.name.clone(),
                source: XmlError::Serialize {
                    message: e.to_string(),
                },
            };
            Some(DynamicRouting {
                inf_ref: routing.inf_ref.clone(),
                sender_it_system: routing.sender_it_system_uuid().map_err(bad)?,
                sender_authority: routing.sender_authority.clone(),
                transaction_id: file.senders_file_id,
                sender_timestamp: now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                recipient_it_system: routing.recipient_it_system_uuid().map_err(bad)?,
                recipient_authority: routing.recipient_authority.clone(),
            })
        }
    };
    Ok(Trigger {
        file_name: file.name.clone(),
        size_bytes,
        sender: config.sender.clone(),
        senders_file_id: file.senders_file_id,
        recipients: config.recipients.clone(),
        routing,
    })
}

async fn upload_once(
    config: &SftpConfig,
    paths: &RemotePaths,
    file: &OutgoingFile,
    trigger: &str,
) -> Result<(), TransportError> {
    let client = SftpClient::connect(config).await?;
    let result = put_data_then_trigger(&client, paths, file, trigger).await;
    client.close().await;
    result
}

/// The order is the protocol: no trigger may exist while the data file is incomplete.
async fn put_data_then_trigger(
    client: &SftpClient,
    paths: &RemotePaths,
    file: &OutgoingFile,
    trigger: &str,
) -> Result<(), TransportError> {
    let id = file.senders_file_id;
    if trigger_names(client, &paths.trigger, id).await? {
        // An earlier attempt of this delivery got as far as its trigger.
        return Ok(());
    }
    put_data(client, paths, file).await?;
    let staged = RemotePaths::staged(&paths.trigger, id);
    client.upload(&staged, trigger.as_bytes()).await?;
    if let Err(error) = client.rename(&staged, &paths.trigger).await {
        // A trigger that appeared since we looked is never replaced.
        if trigger_names(client, &paths.trigger, id).await? {
            let _ = client.remove(&staged).await;
            return Ok(());
        }
        return Err(error);
    }
    Ok(())
}

/// Whether a trigger waits at `path` for this delivery (`true`) or for none
/// (`false`); one for another delivery of the name is [`TransportError::NameTaken`].
async fn trigger_names(
    client: &SftpClient,
    path: &str,
    senders_file_id: Uuid,
) -> Result<bool, TransportError> {
    if !client.exists(path).await? {
        return Ok(false);
    }
    let taken = |found: String| TransportError::NameTaken {
        path: path.to_owned(),
        found,
    };
    let text = match client.read_at_most(path, RECEIPT_BYTES_MAX).await {
        Ok(text) => text,
        Err(TransportError::TooLarge { .. }) => {
            return Err(taken("a trigger larger than any trigger we write".into()))
        }
        Err(error) => return Err(error),
    };
    if String::from_utf8_lossy(&text).contains(&senders_file_id.to_string()) {
        return Ok(true);
    }
    Err(taken(format!(
        "a trigger for another delivery of this name (not SendersFileId {senders_file_id})"
    )))
}

/// Puts the data file under its name unless our bytes are there already: staged,
/// its size checked, then renamed without replacing. No trigger waits (checked
/// by the caller), so an unfinished upload of our own bytes may be removed first.
async fn put_data(
    client: &SftpClient,
    paths: &RemotePaths,
    file: &OutgoingFile,
) -> Result<(), TransportError> {
    let taken = |found: &ServerCopy| TransportError::NameTaken {
        path: paths.data.clone(),
        found: found.describe(),
    };
    match compare_with_server(client, &paths.data, &file.bytes).await? {
        ServerCopy::Same => return Ok(()),
        ServerCopy::Absent => {}
        ServerCopy::Prefix { size_bytes } => {
            tracing::warn!(path = %paths.data, size_bytes, "removing an unfinished upload of these bytes (no trigger points at it)");
            client.remove(&paths.data).await?;
        }
        other => return Err(taken(&other)),
    }
    let staged = RemotePaths::staged(&paths.data, file.senders_file_id);
    client.upload(&staged, &file.bytes).await?;
    let expected_bytes = byte_count(&file.bytes);
    let actual_bytes = client.size(&staged).await?;
    if actual_bytes != expected_bytes {
        return Err(TransportError::SizeMismatch {
            path: staged,
            expected_bytes,
            actual_bytes,
        });
    }
    let Err(error) = client.rename(&staged, &paths.data).await else {
        return Ok(());
    };
    // SFTP's rename does not replace: the name was taken since we looked, or the
    // rename failed for another reason.
    match compare_with_server(client, &paths.data, &file.bytes).await? {
        ServerCopy::Absent => Err(error),
        ServerCopy::Same => {
            let _ = client.remove(&staged).await;
            Ok(())
        }
        other => {
            let _ = client.remove(&staged).await;
            Err(taken(&other))
        }
    }
}

/// Waits up to `receipt_timeout_secs` for `IN/<name>.sftpreceipt` answering
/// `senders_file_id`, polling every `receipt_poll_interval_ms`.
///
/// The receipt is matched by its name and, when it carries one, by its
/// `SendersFileId` (the schema makes it optional, and error receipts may leave it
/// out). A receipt for another SendersFileId answers an earlier delivery of the same
/// name and is ignored, as is one whose SHA-256 is in `recorded` (a receipt already
/// recorded whose removal failed).
///
/// The receipt is left on the server: remove it (with [`SftpClient::remove`]) once
/// it is archived and recorded, so that a crash in between loses nothing.
pub async fn await_receipt(
    config: &SftpConfig,
    file_name: &str,
    senders_file_id: Uuid,
    recorded: &HashSet<[u8; 32]>,
) -> Result<ReceivedReceipt, TransportError> {
    check_file_name(file_name)?;
    let path = RemotePaths::new(config, file_name).receipt;
    // One deadline for all attempts: reconnecting does not extend the wait.
    let deadline = Instant::now() + config.receipt_timeout();
    let what = format!("await receipt {path}");
    let (received, _attempt) = with_retry(&config.retry, &what, |_| {
        watch_once(config, &path, senders_file_id, recorded, deadline)
    })
    .await?;
    Ok(received)
}

async fn watch_once(
    config: &SftpConfig,
    path: &str,
    senders_file_id: Uuid,
    recorded: &HashSet<[u8; 32]>,
    deadline: Instant,
) -> Result<ReceivedReceipt, TransportError> {
    let client = SftpClient::connect(config).await?;
    let mut watch = ReceiptWatch::new(path, senders_file_id, recorded);
    let result = watch
        .poll_until(&client, config.receipt_poll_interval(), deadline)
        .await;
    client.close().await;
    let waited_secs = config.receipt_timeout_secs;
    result.and_then(|found| found.ok_or_else(|| watch.timeout_error(waited_secs)))
}

/// What one watch has seen of the receipt path so far.
struct ReceiptWatch<'a> {
    path: &'a str,
    senders_file_id: Uuid,
    recorded: &'a HashSet<[u8; 32]>,
    /// A receipt for another delivery of the same name.
    stale: Option<Uuid>,
    /// The last bytes that did not parse, and why. The platform may still be writing
    /// the receipt, so it is read again before being declared malformed.
    unreadable: Option<(Vec<u8>, XmlError)>,
}

impl<'a> ReceiptWatch<'a> {
    fn new(path: &'a str, senders_file_id: Uuid, recorded: &'a HashSet<[u8; 32]>) -> Self {
        ReceiptWatch {
            path,
            senders_file_id,
            recorded,
            stale: None,
            unreadable: None,
        }
    }

    /// `Ok(None)` when the deadline passed without a receipt for us.
    async fn poll_until(
        &mut self,
        client: &SftpClient,
        interval: Duration,
        deadline: Instant,
    ) -> Result<Option<ReceivedReceipt>, TransportError> {
        loop {
            if let Some(outcome) = self.look(client).await? {
                return Ok(Some(outcome));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
        }
    }

    async fn look(
        &mut self,
        client: &SftpClient,
    ) -> Result<Option<ReceivedReceipt>, TransportError> {
        if !client.exists(self.path).await? {
            return Ok(None);
        }
        let bytes = client.read_at_most(self.path, RECEIPT_BYTES_MAX).await?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if self.recorded.contains(&sha256) {
            return Ok(None);
        }
        match parse_in_document(&bytes) {
            Ok(InDocument::Technical(receipt)) => match receipt.senders_file_id {
                Some(id) if id != self.senders_file_id => {
                    self.stale = Some(id);
                    Ok(None)
                }
                // Ours by SendersFileId, or by name when the receipt has none.
                _ => Ok(Some(ReceivedReceipt {
                    receipt,
                    bytes,
                    sha256,
                })),
            },
            // A business receipt under the technical receipt's name is collected
            // by [`business_receipts`]; the technical one is still to come.
            Ok(InDocument::Business(_)) => Ok(None),
            Err(source) => self.unreadable(bytes, source),
        }
    }

    /// A receipt that fails to parse twice in a row with the same bytes is final.
    fn unreadable(
        &mut self,
        bytes: Vec<u8>,
        source: XmlError,
    ) -> Result<Option<ReceivedReceipt>, TransportError> {
        if matches!(&self.unreadable, Some((previous, _)) if *previous == bytes) {
            return Err(self.malformed(source));
        }
        self.unreadable = Some((bytes, source));
        Ok(None)
    }

    fn malformed(&self, source: XmlError) -> TransportError {
        TransportError::MalformedReceipt {
            path: self.path.to_owned(),
            source,
        }
    }

    fn timeout_error(&mut self, waited_secs: u64) -> TransportError {
        if let Some((_, source)) = self.unreadable.take() {
            return self.malformed(source);
        }
        TransportError::ReceiptTimeout {
            path: self.path.to_owned(),
            waited_secs,
            expected_senders_file_id: self.senders_file_id.to_string(),
            stale_senders_file_id: self.stale.map(|id| id.to_string()),
        }
    }
}

fn outcome_of(receipt: TechnicalReceipt) -> DeliveryOutcome {
    match receipt.outcome {
        ReceiptOutcome::Success => DeliveryOutcome::Accepted {
            file_transfer_uuid: receipt.file_transfer_uuid,
        },
        ReceiptOutcome::Errors(errors) => DeliveryOutcome::Rejected {
            file_transfer_uuid: receipt.file_transfer_uuid,
            errors,
        },
    }
}

/// Every business receipt in `IN/` for one of `names` (data file names): a file
/// there whose name starts with `<name>.` and which holds a `BusinessReceipt` whose
/// `Filename` is that name. Files that are not business receipts are left alone;
/// one that names a business receipt but cannot be read is an error naming it.
pub async fn business_receipts(
    config: &SftpConfig,
    names: &[String],
) -> Result<Vec<FoundBusinessReceipt>, TransportError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let client = SftpClient::connect(config).await?;
    let result = business_receipts_via(&client, config, names).await;
    client.close().await;
    result
}

/// [`business_receipts`] over a connection the caller holds.
pub async fn business_receipts_via(
    client: &SftpClient,
    config: &SftpConfig,
    names: &[String],
) -> Result<Vec<FoundBusinessReceipt>, TransportError> {
    let inbox = config.remote_in_dir.trim_end_matches('/');
    let mut found = Vec::new();
    for entry in client.list_dir(inbox).await? {
        let Some(name) = names.iter().find(|name| {
            entry
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        }) else {
            continue;
        };
        let path = format!("{inbox}/{entry}");
        let bytes = match client.read_at_most(&path, RECEIPT_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(error @ TransportError::TooLarge { .. }) => {
                // Not ours to judge further; the technical receipts still count.
                tracing::warn!(%error, "left a file in IN/ unread");
                continue;
            }
            Err(error) => return Err(error),
        };
        match parse_in_document(&bytes) {
            Ok(InDocument::Business(receipt)) if receipt.file_name == *name => {
                let sha256 = Sha256::digest(&bytes).into();
                found.push(FoundBusinessReceipt {
                    path,
                    receipt,
                    bytes,
                    sha256,
                });
            }
            Ok(_) => {}
            Err(XmlError::WrongRoot { .. }) => {}
            Err(source) if String::from_utf8_lossy(&bytes).contains("BusinessReceipt") => {
                return Err(TransportError::MalformedReceipt { path, source })
            }
            Err(_) => {}
        }
    }
    Ok(found)
}

/// Runs `job` on every item with at most `limit` running at once, and returns the
/// outputs in input order. For callers that record events between [`upload`] and
/// [`await_receipt`] and still want kommuner delivered in parallel.
pub async fn run_limited<I, F, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = I>,
    job: F,
) -> Vec<Fut::Output>
where
    F: FnMut(I) -> Fut,
    Fut: Future,
{
    stream::iter(items)
        .map(job)
        .buffered(limit.max(1))
        .collect()
        .await
}

/// Names end up in remote paths and in the trigger: one plain path segment only.
fn check_file_name(name: &str) -> Result<(), TransportError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else if name.starts_with('.') {
        Some("it starts with `.`")
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("only printable ASCII without spaces is allowed")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else {
        None
    };
    match why {
        Some(why) => Err(TransportError::InvalidFileName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

// Every supported target has a usize of at most 64 bits, so a length always fits.
const _: () = assert!(usize::BITS <= u64::BITS);

/// A buffer's length in bytes; lossless by the assertion above.
pub fn byte_count(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).expect("usize fits u64 (asserted at compile time)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_one_plain_segment() {
        assert!(check_file_name("SF2520_0751_20260201_000001.txt").is_ok());
        for bad in ["", ".hidden", "../x", "OUT/x", "a b", "a\\b", "æ.txt"] {
            assert!(
                matches!(
                    check_file_name(bad),
                    Err(TransportError::InvalidFileName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn run_limited_keeps_input_order_and_the_limit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let outputs = run_limited(2, 0..6u64, |n| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10 * (6 - n))).await;
                running.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        })
        .await;
        assert_eq!(outputs, [0, 2, 4, 6, 8, 10]);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
