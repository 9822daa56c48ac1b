//! Delivery of official files to Serviceplatformen: pick the files not yet
//! accepted, upload each (data file, then trigger), record `FileUploaded`, wait for
//! the technical receipt, record `ReceiptReceived` — kommuner in parallel, bounded.
//!
//! Exactly once: a file whose receipt said SUCCESS is never uploaded again unless
//! it is reissued (which gives it a new `SendersFileId`). A run that died after its
//! upload but before recording it finds the trigger or the receipt on the server and
//! does not upload a second time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::outbox::write_bytes_atomically;
use super::reconstruct::reconstruct;
use super::register::{delivery_status, official_files, DeliveryState, OfficialFile};
use super::ExportError;
use crate::domain::{Event, FileUploaded, Kommune, ReceiptError, ReceiptReceived};
use crate::ledger::Ledger;
use crate::transport::{
    await_receipt, parse_receipt, run_limited, upload, DeliveryOutcome, OutgoingFile, RemotePaths,
    SftpClient, SftpConfig, TransportError,
};

/// Which files to deliver.
#[derive(Clone, Debug, Default)]
pub struct DeliverRequest {
    pub kommune: Option<Kommune>,
    pub sequence: Option<u32>,
}

/// A file that still has to reach the platform, and how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    pub file: OfficialFile,
    pub senders_file_id: Uuid,
    /// Uploaded already (recorded); only the receipt is missing.
    pub awaiting_receipt: bool,
    /// Uploads recorded so far; the next one is `uploads + 1`.
    pub uploads: u32,
}

/// What happened to one file in this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryResult {
    Accepted {
        file_transfer_uuid: String,
    },
    Rejected {
        errors: Vec<ReceiptError>,
    },
    /// Not delivered in this run; a later `deliver` retries it.
    Failed {
        reason: String,
        /// The server's host key was not the pinned one (its own exit code).
        host_key_mismatch: bool,
    },
}

/// One file's line in the delivery report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    pub kommune: Kommune,
    pub sequence: u32,
    pub file_name: String,
    pub senders_file_id: Uuid,
    pub result: DeliveryResult,
}

/// Files that are exported or reissued and not yet accepted, plus uploaded ones
/// still waiting for a receipt. Rejected files wait for an operator's reissue.
pub fn pending_deliveries(
    ledger: &Ledger,
    request: &DeliverRequest,
) -> Result<Vec<PendingDelivery>, ExportError> {
    let mut pending = Vec::new();
    for file in official_files(ledger.connection(), request.kommune)? {
        if request
            .sequence
            .is_some_and(|sequence| sequence != file.sequence)
        {
            continue;
        }
        let status = delivery_status(
            ledger.connection(),
            file.kommune,
            file.sequence,
            file.file_id,
        )?;
        let awaiting_receipt = match status.state {
            DeliveryState::Exported | DeliveryState::Reissued => false,
            DeliveryState::Uploaded { .. } => true,
            DeliveryState::Accepted | DeliveryState::Rejected { .. } => continue,
        };
        pending.push(PendingDelivery {
            file,
            senders_file_id: Uuid::from_bytes(status.senders_file_id),
            awaiting_receipt,
            uploads: status.uploads,
        });
    }
    Ok(pending)
}

/// Delivers every pending file, at most `config.concurrency` at a time, recording
/// each step in the ledger. `on_done` is called as each file finishes.
pub fn deliver(
    ledger: Ledger,
    config: &SftpConfig,
    request: &DeliverRequest,
    outbox: &Path,
    on_done: &(dyn Fn(&DeliveryReport) + Sync),
) -> Result<(Ledger, Vec<DeliveryReport>), ExportError> {
    let pending = pending_deliveries(&ledger, request)?;
    let shared = Shared {
        ledger: Mutex::new(ledger),
        outbox: outbox.to_path_buf(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ExportError::io(
            "cannot start the async runtime for",
            outbox,
        ))?;
    let reports = runtime.block_on(run_limited(config.concurrency, pending, |item| {
        let shared = &shared;
        async move {
            let result = deliver_one(config, shared, &item)
                .await
                .unwrap_or_else(|error| DeliveryResult::Failed {
                    reason: error.to_string(),
                    host_key_mismatch: matches!(
                        &error,
                        StepError::Transport(transport) if transport.is_host_key_mismatch()
                    ),
                });
            let report = DeliveryReport {
                kommune: item.file.kommune,
                sequence: item.file.sequence,
                file_name: item.file.file_name.clone(),
                senders_file_id: item.senders_file_id,
                result,
            };
            on_done(&report);
            report
        }
    }));
    let ledger = shared
        .ledger
        .into_inner()
        .map_err(|error| ExportError::Worker(error.to_string()))?;
    Ok((ledger, reports))
}

/// What the concurrent deliveries share: the ledger (one writer) and the outbox.
struct Shared {
    ledger: Mutex<Ledger>,
    outbox: PathBuf,
}

impl Shared {
    fn with_ledger<T>(
        &self,
        work: impl FnOnce(&mut Ledger) -> Result<T, ExportError>,
    ) -> Result<T, ExportError> {
        let mut ledger = self
            .ledger
            .lock()
            .map_err(|error| ExportError::Worker(error.to_string()))?;
        work(&mut ledger)
    }

    fn append(&self, event: Event) -> Result<u64, ExportError> {
        self.with_ledger(|ledger| Ok(ledger.write(|appender| appender.append(&event))?))
    }
}

/// Why one delivery stopped.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{0}")]
    Refused(String),
}

async fn deliver_one(
    config: &SftpConfig,
    shared: &Shared,
    item: &PendingDelivery,
) -> Result<DeliveryResult, StepError> {
    let file = &item.file;
    let mut awaiting = item.awaiting_receipt;
    if !awaiting {
        awaiting = match probe_earlier_upload(config, file, item.senders_file_id).await? {
            Probe::Nothing => false,
            Probe::AlreadyUploaded => {
                tracing::warn!(file = %file.file_name, "found this delivery on the server from a run that died before recording it; not uploading again");
                true
            }
        };
        let bytes = outbox_bytes(shared, file)?;
        let size_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let remote_path = if awaiting {
            RemotePaths::new(config, &file.file_name).data
        } else {
            let outgoing = OutgoingFile {
                name: file.file_name.clone(),
                bytes,
                senders_file_id: item.senders_file_id,
            };
            upload(config, &outgoing).await?.remote_path
        };
        shared.append(Event::FileUploaded(FileUploaded {
            kommune: file.kommune,
            sequence: file.sequence,
            remote_path,
            size_bytes,
            senders_file_id: *item.senders_file_id.as_bytes(),
            attempt: item.uploads + 1,
        }))?;
        awaiting = true;
    }
    debug_assert!(awaiting);
    let outcome = await_receipt(config, &file.file_name, item.senders_file_id).await?;
    let (accepted, file_transfer_uuid, errors) = match &outcome {
        DeliveryOutcome::Accepted { file_transfer_uuid } => {
            (true, file_transfer_uuid.clone(), Vec::new())
        }
        DeliveryOutcome::Rejected {
            file_transfer_uuid,
            errors,
        } => (false, file_transfer_uuid.clone(), errors.clone()),
    };
    shared.append(Event::ReceiptReceived(ReceiptReceived {
        kommune: file.kommune,
        sequence: file.sequence,
        senders_file_id: *item.senders_file_id.as_bytes(),
        file_transfer_uuid: file_transfer_uuid.clone(),
        accepted,
        errors: errors.clone(),
    }))?;
    remove_receipt(config, &file.file_name).await;
    Ok(if accepted {
        DeliveryResult::Accepted { file_transfer_uuid }
    } else {
        DeliveryResult::Rejected { errors }
    })
}

enum Probe {
    Nothing,
    /// Our trigger is still waiting in `OUT/`, or our receipt is already in `IN/`.
    AlreadyUploaded,
}

/// Looks on the server for traces of an upload of this delivery that the ledger
/// does not know about (the process died between the upload and its event).
async fn probe_earlier_upload(
    config: &SftpConfig,
    file: &OfficialFile,
    id: Uuid,
) -> Result<Probe, StepError> {
    let paths = RemotePaths::new(config, &file.file_name);
    let client = SftpClient::connect(config).await?;
    // Receipt, trigger, receipt again: the platform removes the trigger before it
    // writes the receipt, so a delivery it is processing right now shows up in the
    // second look at the receipt.
    let result = async {
        if our_receipt(&client, &paths.receipt, id).await? {
            return Ok(Probe::AlreadyUploaded);
        }
        if client.exists(&paths.trigger).await? {
            let trigger = client.read(&paths.trigger).await?;
            if String::from_utf8_lossy(&trigger).contains(&id.to_string()) {
                return Ok(Probe::AlreadyUploaded);
            }
        }
        if our_receipt(&client, &paths.receipt, id).await? {
            return Ok(Probe::AlreadyUploaded);
        }
        Ok::<_, TransportError>(Probe::Nothing)
    }
    .await;
    client.close().await;
    Ok(result?)
}

/// True when a receipt for `id` is at `path`.
async fn our_receipt(client: &SftpClient, path: &str, id: Uuid) -> Result<bool, TransportError> {
    if !client.exists(path).await? {
        return Ok(false);
    }
    let bytes = client.read(path).await?;
    Ok(parse_receipt(&bytes).is_ok_and(|receipt| receipt.senders_file_id == id))
}

/// The file's bytes from the outbox, checked against the recorded SHA-256; a
/// missing or different file is rendered again from the log (and put back) if the
/// log still gives the recorded bytes, and refused otherwise.
fn outbox_bytes(shared: &Shared, file: &OfficialFile) -> Result<Vec<u8>, StepError> {
    let path = shared.outbox.join(&file.file_name);
    if let Ok(bytes) = std::fs::read(&path) {
        if <[u8; 32]>::from(Sha256::digest(&bytes)) == file.sha256 {
            return Ok(bytes);
        }
        tracing::warn!(file = %file.file_name, "outbox copy differs from the recorded SHA-256; rendering it again from the log");
    }
    let rebuilt = shared.with_ledger(|ledger| reconstruct(ledger, file.kommune, file.sequence))?;
    if !rebuilt.matches() {
        return Err(StepError::Refused(format!(
            "{} no longer renders to its recorded SHA-256; run `sf2520 verify` and `sf2520 reconstruct`",
            file.file_name
        )));
    }
    write_bytes_atomically(&shared.outbox, &file.file_name, &rebuilt.bytes)?;
    Ok(rebuilt.bytes)
}

/// Removes the receipt once its outcome is recorded; a failure only leaves it there
/// (a later delivery of the same name ignores a receipt for another SendersFileId).
async fn remove_receipt(config: &SftpConfig, file_name: &str) {
    let path = RemotePaths::new(config, file_name).receipt;
    match SftpClient::connect(config).await {
        Ok(client) => {
            if let Err(error) = client.remove(&path).await {
                tracing::warn!(%path, %error, "could not remove the recorded receipt");
            }
            client.close().await;
        }
        Err(error) => {
            tracing::warn!(%path, %error, "could not connect to remove the recorded receipt")
        }
    }
}
