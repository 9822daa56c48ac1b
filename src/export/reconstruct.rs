//! Audit reconstruction and reissue: render an official file again from the log
//! and prove it is the file that was recorded.

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::batch::{render_into, PlannedFile};
use super::outbox::{Outbox, WrittenFile};
use super::register::official_files;
use super::register::{official_file, OfficialFile};
use super::ExportError;
use crate::domain::{Event, FileReissued, Kommune};
use crate::ledger::Ledger;
use crate::sf2520::FileHeader;

/// An official file rendered again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconstruction {
    pub file: OfficialFile,
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

impl Reconstruction {
    /// True when the bytes hash to what the `FileExported` event recorded.
    pub fn matches(&self) -> bool {
        self.sha256 == self.file.sha256
    }
}

/// The plan that renders an official file: its recorded header and entry range.
pub fn plan_of(file: &OfficialFile) -> PlannedFile {
    let created_at = chrono::DateTime::from_timestamp_micros(file.created_at_us)
        .map(|time| time.naive_utc())
        .unwrap_or(NaiveDateTime::MIN);
    PlannedFile {
        header: FileHeader {
            kommune: file.kommune,
            sequence: file.sequence,
            created_at,
            cutoff_at: created_at,
            test_marker: file.test_marker,
        },
        file_name: file.file_name.clone(),
        range: file.range(),
        record_count: file.record_count,
        net_ore: file.net_ore(),
    }
}

/// Renders official file `sequence` of `kommune` from the log. The cost follows
/// the file's size, not the log's: entries are found through the
/// (kommune, position) index.
pub fn reconstruct(
    ledger: &Ledger,
    kommune: Kommune,
    sequence: u32,
) -> Result<Reconstruction, ExportError> {
    let file = official_file(ledger.connection(), kommune, sequence)?;
    let capacity =
        usize::try_from(file.record_count.saturating_add(2).saturating_mul(130)).unwrap_or(0);
    let (bytes, _) = render_into(
        ledger.connection(),
        &plan_of(&file),
        Vec::with_capacity(capacity),
    )?;
    let sha256 = Sha256::digest(&bytes).into();
    Ok(Reconstruction {
        file,
        bytes,
        sha256,
    })
}

/// What a reissue did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reissue {
    pub written: WrittenFile,
    /// The new `SendersFileId` under which the file will be delivered again.
    pub delivery_id: Uuid,
    pub position: u64,
}

/// Puts official file `sequence` back into the outbox, byte for byte, and records
/// a `FileReissued`. Refuses (changing nothing) when the file rendered from the log
/// no longer matches its recorded SHA-256. Writes into the outbox as an export
/// does: under the export lock (waiting up to `lock_wait`), into an outbox this
/// ledger claims.
pub fn reissue(
    ledger: &mut Ledger,
    kommune: Kommune,
    sequence: u32,
    outbox: &std::path::Path,
    lock_wait: std::time::Duration,
) -> Result<Result<Reissue, Reconstruction>, ExportError> {
    let reconstruction = reconstruct(ledger, kommune, sequence)?;
    if !reconstruction.matches() {
        return Ok(Err(reconstruction));
    }
    let written = put_back(
        ledger,
        outbox,
        &reconstruction.file.file_name,
        &reconstruction.bytes,
        lock_wait,
    )?;
    let delivery_id = Uuid::new_v4();
    let position = ledger.write(|appender| {
        appender.append(&Event::FileReissued(FileReissued {
            kommune,
            sequence,
            delivery_id: *delivery_id.as_bytes(),
        }))
    })?;
    Ok(Ok(Reissue {
        written,
        delivery_id,
        position,
    }))
}

/// Puts an official file's bytes (already checked against its event) back into
/// the outbox under its official name, as an export writes: under the export lock
/// (waiting up to `lock_wait`), into an outbox this ledger claims.
pub(super) fn put_back(
    ledger: &mut Ledger,
    outbox: &std::path::Path,
    name: &str,
    bytes: &[u8],
    lock_wait: std::time::Duration,
) -> Result<WrittenFile, ExportError> {
    let lock = ledger.lock_exports(lock_wait)?;
    let ledger_id = ledger.ledger_id()?;
    let recorded = official_files(ledger.connection(), None)?
        .into_iter()
        .map(|file| (file.file_name, file.sha256))
        .collect();
    Outbox::claim(outbox, ledger_id, &lock, &recorded)?.put(name, bytes)
}
