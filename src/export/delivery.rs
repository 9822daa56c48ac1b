//! Delivery of official files to Serviceplatformen: pick the files not yet
//! accepted, upload each (data file, then trigger), record `FileUploaded`, wait for
//! the technical receipt, record `ReceiptReceived` — kommuner in parallel, bounded.
//!
//! Every receipt's bytes are archived in `<data-dir>/receipts/` (0600, fsynced) and
//! their SHA-256 recorded before the receipt is removed from `IN/`. Business
//! receipts are collected for delivered files on every run.
//!
//! Exactly once: a file whose receipt said SUCCESS is never uploaded again unless
//! it is reissued (which gives it a new `SendersFileId`). A run that died after its
//! upload but before recording it finds the trigger or the receipt on the server and
//! does not upload a second time.
//!
//! Nothing on the platform is overwritten: before an upload the server is searched
//! for evidence that the name belongs to another file (other bytes in `OUT/`, a
//! trigger or a receipt of a delivery this file never had), and such a file is
//! refused as [`DeliveryResult::NameTaken`], recording nothing (exit code 11).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::outbox::{sync_dir, write_bytes_atomically};
use super::reconstruct::{put_back, reconstruct};
use super::ExportError;
use crate::domain::{
    BusinessReceiptReceived, Event, FileAcceptance, FileUploaded, Kommune, ReceiptErrorCode,
    TechnicalReceiptReceived,
};
use crate::ledger::Ledger;
use crate::ledger::{DeliveryState, DeliveryStatus, OfficialFile};
use crate::transport::{
    await_receipt, business_receipts, business_receipts_via, compare_with_server,
    parse_in_document, run_limited, upload, DeliveryOutcome, FoundBusinessReceipt, InDocument,
    OutgoingFile, RemotePaths, ServerCopy, SftpClient, SftpConfig, TransportError,
    RECEIPT_BYTES_MAX,
};

/// Where receipts are archived, inside the data directory.
pub(super) const RECEIPT_ARCHIVE_DIR: &str = "receipts";

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
        errors: Vec<ReceiptErrorCode>,
    },
    /// A business receipt for a file delivered earlier: the recipient's verdict.
    Business {
        acceptance: FileAcceptance,
        recipient: String,
        reason: Option<String>,
    },
    /// Not delivered, and never will be by itself: the platform already holds
    /// another file under this name, or a receipt of a delivery this file never
    /// had. Nothing was uploaded or recorded; an operator must agree the
    /// correction with UDK (exit code 11).
    NameTaken {
        /// What is on the server and what to do, for the operator.
        reason: String,
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

/// The official files in the scope of `request` (one kommune, one løbenummer, or
/// all), each with its delivery status.
pub fn files_in_scope(
    ledger: &Ledger,
    request: &DeliverRequest,
) -> Result<Vec<(OfficialFile, DeliveryStatus)>, ExportError> {
    let mut files = Vec::new();
    for file in ledger.official_files(request.kommune)? {
        if request
            .sequence
            .is_some_and(|sequence| sequence != file.sequence)
        {
            continue;
        }
        let status = ledger.delivery_status(file.kommune, file.sequence, file.file_id)?;
        files.push((file, status));
    }
    Ok(files)
}

/// Files that are exported or reissued and not yet accepted, plus uploaded ones
/// still waiting for a receipt. Rejected files wait for an operator's reissue.
pub fn pending_deliveries(
    ledger: &Ledger,
    request: &DeliverRequest,
) -> Result<Vec<PendingDelivery>, ExportError> {
    let mut pending = Vec::new();
    for (file, status) in files_in_scope(ledger, request)? {
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
        archive: ledger.dir().join(RECEIPT_ARCHIVE_DIR),
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
    let mut reports = runtime.block_on(run_limited(config.concurrency, pending, |item| {
        let shared = &shared;
        async move {
            let result = deliver_one(config, shared, &item)
                .await
                .unwrap_or_else(|error| failed(&item.file.file_name, error));
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
    let business = runtime.block_on(collect_business_receipts(config, &shared, request))?;
    for report in &business {
        on_done(report);
    }
    reports.extend(business);
    let ledger = shared
        .ledger
        .into_inner()
        .map_err(|error| ExportError::Worker(error.to_string()))?;
    Ok((ledger, reports))
}

/// What became of a delivery that stopped with `error`.
fn failed(file_name: &str, error: StepError) -> DeliveryResult {
    match error {
        StepError::NameTaken(evidence) => name_taken(file_name, &evidence),
        StepError::Transport(transport) if transport.is_name_taken() => {
            name_taken(file_name, &transport.to_string())
        }
        error => DeliveryResult::Failed {
            reason: error.to_string(),
            host_key_mismatch: matches!(
                &error,
                StepError::Transport(transport) if transport.is_host_key_mismatch()
            ),
        },
    }
}

fn name_taken(file_name: &str, evidence: &str) -> DeliveryResult {
    DeliveryResult::NameTaken {
        reason: format!(
            "{file_name} is not delivered: the platform already has another file under this \
             name ({evidence}); nothing was uploaded or recorded. Never overwrite it: contact \
             UDK/KOMBIT and compare the two files (docs/operations.md, \"The platform holds \
             another file under this name\")"
        ),
    }
}

/// What the concurrent deliveries share: the ledger (one writer), the outbox and the
/// receipt archive.
struct Shared {
    ledger: Mutex<Ledger>,
    outbox: PathBuf,
    archive: PathBuf,
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

    /// Keeps a receipt's bytes, exactly as read, under a name that holds the data
    /// file's name, the receipt kind and the start of its SHA-256; written
    /// atomically, fsynced, owner-only. Returns the archive name.
    fn archive(&self, file_name: &str, kind: &str, bytes: &[u8]) -> Result<String, ExportError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{file_name}.{short}.{kind}");
        write_bytes_atomically(&self.archive, &name, bytes)?;
        sync_dir(&self.archive)?;
        Ok(name)
    }

    /// What the log says about a file's receipts so far.
    fn recorded(&self, kommune: Kommune, sequence: u32) -> Result<Recorded, ExportError> {
        self.with_ledger(|ledger| recorded_receipts(ledger, kommune, sequence))
    }
}

/// The receipts of one file already in the log.
#[derive(Default)]
struct Recorded {
    /// SHA-256 of every receipt recorded (technical and business).
    hashes: HashSet<[u8; 32]>,
    /// (FileTransferUUID, SendersFileId) of every technical receipt recorded.
    transfers: Vec<(String, [u8; 16])>,
    /// Every SendersFileId the log gives this file: its first, each reissue's,
    /// and those uploads and receipts name.
    deliveries: HashSet<[u8; 16]>,
}

fn recorded_receipts(
    ledger: &Ledger,
    kommune: Kommune,
    sequence: u32,
) -> Result<Recorded, ExportError> {
    let mut recorded = Recorded::default();
    for position in ledger.delivery_positions(kommune, sequence)? {
        match ledger.event_at(position)?.event()? {
            Event::ReceiptReceived(r) => {
                recorded.deliveries.insert(r.senders_file_id);
                recorded
                    .transfers
                    .push((r.file_transfer_uuid, r.senders_file_id));
            }
            Event::TechnicalReceiptReceived(r) => {
                recorded.hashes.insert(r.receipt_sha256);
                recorded.deliveries.insert(r.senders_file_id);
                recorded
                    .transfers
                    .push((r.file_transfer_uuid, r.senders_file_id));
            }
            Event::BusinessReceiptReceived(r) => {
                recorded.hashes.insert(r.receipt_sha256);
                recorded.deliveries.insert(r.senders_file_id);
            }
            Event::FileUploaded(r) => {
                recorded.deliveries.insert(r.senders_file_id);
            }
            Event::FileReissued(r) => {
                recorded.deliveries.insert(r.delivery_id);
            }
            _ => {}
        }
    }
    Ok(recorded)
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
    /// Evidence on the server that the name belongs to another file.
    #[error("{0}")]
    NameTaken(String),
}

/// Uploads the file of `item` unless an earlier run that died before recording it
/// already did, then records `FileUploaded` either way.
async fn upload_once(
    config: &SftpConfig,
    shared: &Shared,
    item: &PendingDelivery,
) -> Result<(), StepError> {
    let file = &item.file;
    let bytes = outbox_bytes(shared, file)?;
    let uploaded_before = match probe_earlier_upload(config, shared, item, &bytes).await? {
        Probe::Nothing => false,
        Probe::AlreadyUploaded => {
            tracing::warn!(file = %file.file_name, "found this delivery on the server from a run that died before recording it; not uploading again");
            true
        }
        Probe::NameTaken(evidence) => return Err(StepError::NameTaken(evidence)),
    };
    let size_bytes = crate::transport::byte_count(&bytes);
    let remote_path = if uploaded_before {
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
    Ok(())
}

async fn deliver_one(
    config: &SftpConfig,
    shared: &Shared,
    item: &PendingDelivery,
) -> Result<DeliveryResult, StepError> {
    let file = &item.file;
    if !item.awaiting_receipt {
        upload_once(config, shared, item).await?;
    }
    let recorded = shared.recorded(file.kommune, file.sequence)?;
    let received = await_receipt(
        config,
        &file.file_name,
        item.senders_file_id,
        &recorded.hashes,
    )
    .await?;
    let archive_name = shared.archive(&file.file_name, "sftpreceipt", &received.bytes)?;
    let (accepted, file_transfer_uuid, errors) = match received.outcome() {
        DeliveryOutcome::Accepted { file_transfer_uuid } => (true, file_transfer_uuid, Vec::new()),
        DeliveryOutcome::Rejected {
            file_transfer_uuid,
            errors,
        } => (false, file_transfer_uuid, errors),
    };
    shared.append(Event::TechnicalReceiptReceived(TechnicalReceiptReceived {
        kommune: file.kommune,
        sequence: file.sequence,
        senders_file_id: *item.senders_file_id.as_bytes(),
        receipt_named_senders_file_id: received.receipt.senders_file_id.is_some(),
        file_transfer_uuid: file_transfer_uuid.clone(),
        accepted,
        errors: errors.clone(),
        receipt_sha256: received.sha256,
        archive_name,
    }))?;
    remove_remote(config, &RemotePaths::new(config, &file.file_name).receipt).await;
    Ok(if accepted {
        DeliveryResult::Accepted { file_transfer_uuid }
    } else {
        DeliveryResult::Rejected { errors }
    })
}

/// Records every business receipt in `IN/` for the files of `request` that have a
/// technical receipt, matched by `Filename` and the recorded `FileTransferUUID`;
/// archives each, records it, then removes it from `IN/`. A business receipt whose
/// FileTransferUUID the log does not know is left where it is, with a warning.
async fn collect_business_receipts(
    config: &SftpConfig,
    shared: &Shared,
    request: &DeliverRequest,
) -> Result<Vec<DeliveryReport>, ExportError> {
    let files: Vec<OfficialFile> = shared.with_ledger(|ledger| {
        Ok(files_in_scope(ledger, request)?
            .into_iter()
            .filter(|(_, status)| {
                matches!(
                    status.state,
                    DeliveryState::Accepted | DeliveryState::Rejected { .. }
                )
            })
            .map(|(file, _)| file)
            .collect())
    })?;
    let names: Vec<String> = files.iter().map(|f| f.file_name.clone()).collect();
    let found = match business_receipts(config, &names).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "could not look for business receipts; a later `deliver` looks again");
            return Ok(Vec::new());
        }
    };
    let mut reports = Vec::new();
    for receipt in found {
        let Some(file) = files
            .iter()
            .find(|f| f.file_name == receipt.receipt.file_name)
        else {
            continue;
        };
        if let Some(report) = record_business(config, shared, file, receipt).await? {
            reports.push(report);
        }
    }
    Ok(reports)
}

async fn record_business(
    config: &SftpConfig,
    shared: &Shared,
    file: &OfficialFile,
    found: FoundBusinessReceipt,
) -> Result<Option<DeliveryReport>, ExportError> {
    let recorded = shared.recorded(file.kommune, file.sequence)?;
    if recorded.hashes.contains(&found.sha256) {
        // Recorded by an earlier run whose removal failed.
        remove_remote(config, &found.path).await;
        return Ok(None);
    }
    let receipt = &found.receipt;
    let Some((_, senders_file_id)) = recorded
        .transfers
        .iter()
        .find(|(transfer, _)| *transfer == receipt.file_transfer_uuid)
    else {
        tracing::warn!(path = %found.path, file_transfer_uuid = %receipt.file_transfer_uuid,
            "business receipt names a FileTransferUUID no recorded technical receipt has; left in place");
        return Ok(None);
    };
    let archive_name = shared.archive(&file.file_name, "businessreceipt", &found.bytes)?;
    shared.append(Event::BusinessReceiptReceived(BusinessReceiptReceived {
        kommune: file.kommune,
        sequence: file.sequence,
        senders_file_id: *senders_file_id,
        file_transfer_uuid: receipt.file_transfer_uuid.clone(),
        recipient: receipt.recipient.clone(),
        acceptance: receipt.acceptance,
        reason: receipt.reason.clone(),
        receipt_sha256: found.sha256,
        archive_name,
    }))?;
    remove_remote(config, &found.path).await;
    Ok(Some(DeliveryReport {
        kommune: file.kommune,
        sequence: file.sequence,
        file_name: file.file_name.clone(),
        senders_file_id: Uuid::from_bytes(*senders_file_id),
        result: DeliveryResult::Business {
            acceptance: receipt.acceptance,
            recipient: receipt.recipient.clone(),
            reason: receipt.reason.clone(),
        },
    }))
}

enum Probe {
    Nothing,
    /// Our trigger is still waiting in `OUT/`, or our receipt is already in `IN/`.
    AlreadyUploaded,
    /// The name belongs to another file (see [`foreign_evidence`]).
    NameTaken(String),
}

/// Looks on the server for traces of an upload of this delivery that the ledger
/// does not know about (the process died between the upload and its event), and,
/// when there are none, for evidence that the name belongs to another file.
async fn probe_earlier_upload(
    config: &SftpConfig,
    shared: &Shared,
    item: &PendingDelivery,
    bytes: &[u8],
) -> Result<Probe, StepError> {
    let file = &item.file;
    let id = item.senders_file_id;
    let paths = RemotePaths::new(config, &file.file_name);
    let client = SftpClient::connect(config).await?;
    let mut recorded = shared.recorded(file.kommune, file.sequence)?;
    recorded.deliveries.insert(file.file_id);
    recorded.deliveries.insert(*id.as_bytes());
    let ours = look_for_our_upload(&client, &paths, id, &recorded).await;
    let result = match ours {
        Ok(Probe::Nothing) => foreign_evidence(&client, config, &paths, bytes, &recorded)
            .await
            .map(|found| found.map_or(Probe::Nothing, Probe::NameTaken)),
        other => other,
    };
    client.close().await;
    Ok(result?)
}

/// Our own trigger or receipt. Receipt, trigger, receipt again: the platform
/// removes the trigger before it writes the receipt, so a delivery it is
/// processing right now shows up in the second look at the receipt.
async fn look_for_our_upload(
    client: &SftpClient,
    paths: &RemotePaths,
    id: Uuid,
    recorded: &Recorded,
) -> Result<Probe, TransportError> {
    let recorded = &recorded.hashes;
    if our_receipt(client, &paths.receipt, id, recorded).await? {
        return Ok(Probe::AlreadyUploaded);
    }
    if client.exists(&paths.trigger).await? {
        let trigger = client
            .read_at_most(&paths.trigger, RECEIPT_BYTES_MAX)
            .await?;
        if String::from_utf8_lossy(&trigger).contains(&id.to_string()) {
            return Ok(Probe::AlreadyUploaded);
        }
    }
    if our_receipt(client, &paths.receipt, id, recorded).await? {
        return Ok(Probe::AlreadyUploaded);
    }
    Ok(Probe::Nothing)
}

/// Evidence that the name on the server belongs to another file than this one
/// (a ledger restored from an older backup gave the same løbenummer to other
/// bytes): other bytes in `OUT/`, a trigger of a delivery this file never had, a
/// technical receipt naming such a SendersFileId, or a business receipt naming
/// a FileTransferUUID the log does not know. Receipts whose SHA-256 the log
/// holds are ours. `IN/` is looked at before and after `OUT/`: the platform
/// takes the data file and trigger away before it writes the receipt, so a
/// delivery it is processing meanwhile still shows in one of the looks.
///
/// A trigger of an earlier delivery of this file (a reissue while it waited) is
/// removed, as it points the platform at bytes we are about to send again.
async fn foreign_evidence(
    client: &SftpClient,
    config: &SftpConfig,
    paths: &RemotePaths,
    bytes: &[u8],
    recorded: &Recorded,
) -> Result<Option<String>, TransportError> {
    if let Some(found) = foreign_technical_receipt(client, &paths.receipt, recorded).await? {
        return Ok(Some(found));
    }
    let copy = compare_with_server(client, &paths.data, bytes).await?;
    if matches!(copy, ServerCopy::Different { .. }) {
        return Ok(Some(format!(
            "{} holds {}; ours has {} bytes, SHA-256 {}",
            paths.data,
            copy.describe(),
            bytes.len(),
            hex(&Sha256::digest(bytes))
        )));
    }
    if let Some(found) = foreign_trigger(client, &paths.trigger, recorded).await? {
        return Ok(Some(found));
    }
    if let Some(found) = foreign_technical_receipt(client, &paths.receipt, recorded).await? {
        return Ok(Some(found));
    }
    let name = paths.data.rsplit('/').next().unwrap_or(&paths.data);
    for found in business_receipts_via(client, config, &[name.to_owned()]).await? {
        let known = recorded.hashes.contains(&found.sha256)
            || recorded
                .transfers
                .iter()
                .any(|(transfer, _)| *transfer == found.receipt.file_transfer_uuid);
        if !known {
            return Ok(Some(format!(
                "{} is a business receipt for FileTransferUUID {}, which no recorded delivery of this file has",
                found.path, found.receipt.file_transfer_uuid
            )));
        }
    }
    Ok(None)
}

/// The bytes at `path` on the server (at most [`RECEIPT_BYTES_MAX`]), if
/// anything is there.
async fn read_if_present(
    client: &SftpClient,
    path: &str,
) -> Result<Option<Vec<u8>>, TransportError> {
    if !client.exists(path).await? {
        return Ok(None);
    }
    Ok(Some(client.read_at_most(path, RECEIPT_BYTES_MAX).await?))
}

/// A technical receipt at `path` that the log has not recorded and that names a
/// SendersFileId none of this file's deliveries has.
async fn foreign_technical_receipt(
    client: &SftpClient,
    path: &str,
    recorded: &Recorded,
) -> Result<Option<String>, TransportError> {
    let Some(bytes) = read_if_present(client, path).await? else {
        return Ok(None);
    };
    if recorded
        .hashes
        .contains(&<[u8; 32]>::from(Sha256::digest(&bytes)))
    {
        return Ok(None);
    }
    Ok(match parse_in_document(&bytes) {
        Ok(InDocument::Technical(receipt)) => receipt
            .senders_file_id
            .filter(|id| !recorded.deliveries.contains(id.as_bytes()))
            .map(|id| {
                format!("{path} answers a delivery with SendersFileId {id}, which is not one of this file's deliveries")
            }),
        _ => None,
    })
}

/// A trigger at `path` for a delivery this file never had; one of an earlier
/// delivery of this file is removed.
async fn foreign_trigger(
    client: &SftpClient,
    path: &str,
    recorded: &Recorded,
) -> Result<Option<String>, TransportError> {
    if !client.exists(path).await? {
        return Ok(None);
    }
    let text = match client.read_at_most(path, RECEIPT_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(TransportError::TooLarge { .. }) => {
            return Ok(Some(format!("{path} is larger than any trigger we write")))
        }
        Err(error) => return Err(error),
    };
    let ours = recorded
        .deliveries
        .iter()
        .any(|id| text.contains(&Uuid::from_bytes(*id).to_string()));
    if !ours {
        return Ok(Some(format!(
            "{path} is a trigger for a delivery with none of this file's SendersFileIds"
        )));
    }
    tracing::warn!(%path, "removing the trigger of an earlier delivery of this file");
    client.remove(path).await?;
    Ok(None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when a receipt for `id` is at `path`: one naming `id`, or one naming no
/// SendersFileId that the log has not recorded already.
async fn our_receipt(
    client: &SftpClient,
    path: &str,
    id: Uuid,
    recorded: &HashSet<[u8; 32]>,
) -> Result<bool, TransportError> {
    let Some(bytes) = read_if_present(client, path).await? else {
        return Ok(false);
    };
    if recorded.contains(&<[u8; 32]>::from(Sha256::digest(&bytes))) {
        return Ok(false);
    }
    Ok(match parse_in_document(&bytes) {
        Ok(InDocument::Technical(receipt)) => {
            receipt.senders_file_id.is_none_or(|named| named == id)
        }
        _ => false,
    })
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
    // Put back as an export would, if no export is running now; else the next
    // export puts back a missing file, and `verify` names a changed one.
    let put = shared.with_ledger(|ledger| {
        put_back(
            ledger,
            &shared.outbox,
            &file.file_name,
            &rebuilt.bytes,
            std::time::Duration::ZERO,
        )
    });
    if let Err(error) = put {
        tracing::warn!(file = %file.file_name, %error, "delivering the bytes rendered from the log; could not put them back into the outbox");
    }
    Ok(rebuilt.bytes)
}

/// Removes a receipt once it is archived and recorded; a failure only leaves it
/// there (a later run recognises it by its recorded SHA-256 and ignores it).
async fn remove_remote(config: &SftpConfig, path: &str) {
    match SftpClient::connect(config).await {
        Ok(client) => {
            if let Err(error) = client.remove(path).await {
                tracing::warn!(%path, %error, "could not remove the recorded receipt");
            }
            client.close().await;
        }
        Err(error) => {
            tracing::warn!(%path, %error, "could not connect to remove the recorded receipt")
        }
    }
}
