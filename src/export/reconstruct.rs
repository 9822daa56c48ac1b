//! Audit reconstruction and reissue: render an official file again from the log
//! and prove it is the file that was recorded.
//!
//! Everything comes from the file's `FileExported` event (see `register`): its
//! range, header and SHA-256. The event's own link in the hash chain (its hash
//! from the one before, and the next event's hash from it) is checked too, so an
//! edited event is caught here without a full `verify`.

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::batch::{render_into, PlannedFile};
use super::outbox::{write_bytes_atomically, WrittenFile};
use super::register::{official_file, OfficialFile};
use super::ExportError;
use crate::domain::{Event, FileReissued, Kommune};
use crate::ledger::{Ledger, GENESIS_HASH};
use crate::sf2520::FileHeader;

/// An official file rendered again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconstruction {
    pub file: OfficialFile,
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
    /// Set when the `FileExported` event's link in the hash chain is broken: the
    /// event (or one beside it) was altered, so its SHA-256 proves nothing.
    pub broken_link: Option<String>,
}

impl Reconstruction {
    /// True when the bytes hash to what the `FileExported` event recorded and the
    /// event sits intact in the hash chain.
    pub fn matches(&self) -> bool {
        self.sha256 == self.file.sha256 && self.broken_link.is_none()
    }
}

/// Checks the event at `position` against its neighbours in the hash chain: its
/// hash must follow from the previous event's, and the next event's from its.
fn chain_link(ledger: &Ledger, position: u64) -> Result<Option<String>, ExportError> {
    let event = ledger.event_at(position)?;
    let previous = match position {
        0 | 1 => GENESIS_HASH,
        _ => ledger.event_at(position - 1)?.hash,
    };
    if event.expected_hash(&previous) != event.hash {
        return Ok(Some(format!(
            "the hash of the FileExported event at position {position} does not follow from the event before it: the event was altered"
        )));
    }
    if position < ledger.head()?.position {
        let next = ledger.event_at(position + 1)?;
        if next.expected_hash(&event.hash) != next.hash {
            return Ok(Some(format!(
                "the hash of the event at position {} does not follow from the FileExported event at position {position}: one of them was altered",
                position + 1
            )));
        }
    }
    Ok(None)
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
    let broken_link = chain_link(ledger, file.position)?;
    Ok(Reconstruction {
        file,
        bytes,
        sha256,
        broken_link,
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
/// no longer matches its recorded SHA-256.
pub fn reissue(
    ledger: &mut Ledger,
    kommune: Kommune,
    sequence: u32,
    outbox: &std::path::Path,
) -> Result<Result<Reissue, Reconstruction>, ExportError> {
    let reconstruction = reconstruct(ledger, kommune, sequence)?;
    if !reconstruction.matches() {
        return Ok(Err(reconstruction));
    }
    let written = write_bytes_atomically(
        outbox,
        &reconstruction.file.file_name,
        &reconstruction.bytes,
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
