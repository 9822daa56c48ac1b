//! Audit reconstruction and reissue: render an official file again from the log
//! and prove it is the file that was recorded.
//!
//! Everything comes from the file's `FileExported` event (see `register`): its
//! range, header and SHA-256. The event's own link in the hash chain (its hash
//! from the one before, and the next event's hash from it) is checked too, so an
//! edited event is caught here without a full `verify`.
//!
//! The entries are found through the `entries` projection (the (kommune,
//! position) index), which the chain does not protect. When the bytes rendered
//! that way do not hash to the event's SHA-256, the file is rendered again from a
//! plain walk of the log, using no projection at all; if that matches, the file is
//! good and the `entries` projection is reported as damaged.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::batch::{render_into, PlannedFile};
use std::collections::HashMap;

use super::entries::{opened, withholding_record};
use super::outbox::{Outbox, WrittenFile};
use super::ExportError;
use crate::domain::{EntryKind, Event, FileReissued, Kommune, Withholding};
use crate::ledger::{Ledger, GENESIS_HASH};
use crate::ledger::{OfficialFile, ProjectionDamage};
use crate::sf2520::{DetailRecord, FileHeader, FileWriter};

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
/// A creation time no calendar can show is damage in the event, named as such.
pub fn plan_of(file: &OfficialFile) -> Result<PlannedFile, ExportError> {
    let created_at = chrono::DateTime::from_timestamp_micros(file.created_at_us)
        .map(|time| time.naive_utc())
        .ok_or(ExportError::CreationTimeOutOfRange {
            kommune: file.kommune.code(),
            sequence: file.sequence,
            position: file.position,
            created_at_us: file.created_at_us,
        })?;
    Ok(PlannedFile {
        header: FileHeader::exported(file.kommune, file.sequence, created_at, file.test_marker),
        file_name: file.file_name.clone(),
        range: file.range(),
        record_count: file.record_count,
        net_ore: file.net_ore(),
    })
}

/// Renders official file `sequence` of `kommune` from the log. The cost follows
/// the file's size, not the log's: entries are found through the
/// (kommune, position) index.
pub fn reconstruct(
    ledger: &Ledger,
    kommune: Kommune,
    sequence: u32,
) -> Result<Reconstruction, ExportError> {
    let mut file = ledger.official_file(kommune, sequence)?;
    // The indexed rendering fails outright when the index points at a non-entry
    // or misses a corrected withholding; both are damage the walk gets around.
    let plan = plan_of(&file)?;
    let indexed = match render_into(ledger, &plan, Vec::new()) {
        Ok((bytes, _)) => Some(bytes),
        Err(ExportError::NotAnEntry { .. } | ExportError::MissingWithholding { .. }) => None,
        Err(other) => return Err(other),
    };
    let mut sha256 = indexed.as_deref().map(|bytes| Sha256::digest(bytes).into());
    let mut bytes = indexed.unwrap_or_default();
    if sha256 != Some(file.sha256) {
        let walked = render_by_walking_the_log(ledger, &plan)?;
        let walked_sha256: [u8; 32] = Sha256::digest(&walked).into();
        if walked_sha256 == file.sha256 || sha256.is_none() {
            if walked_sha256 == file.sha256 {
                file.damage.get_or_insert(ProjectionDamage {
                    position: file.position,
                    what: format!(
                        "the entries projection does not list the entries of kommune {} in positions ({}, {}] as the log holds them",
                        file.kommune, file.previous_cutoff_position, file.cutoff_position
                    ),
                });
            }
            bytes = walked;
            sha256 = Some(walked_sha256);
        }
    }
    let sha256 = sha256.expect("one of the two renderings ran");
    let broken_link = chain_link(ledger, file.position)?;
    Ok(Reconstruction {
        file,
        bytes,
        sha256,
        broken_link,
    })
}

/// Renders a planned file from a walk of the log from position 1 to its cut-off,
/// reading no projection: the slow path, taken only when the indexed rendering
/// does not match. Withholdings of the kommune are remembered by reference, for
/// the corrections that take their CPR, agreement and dates.
fn render_by_walking_the_log(
    ledger: &Ledger,
    planned: &PlannedFile,
) -> Result<Vec<u8>, ExportError> {
    let range = planned.range;
    let render_error = |source| ExportError::Render {
        kommune: range.kommune.code(),
        sequence: planned.header.sequence,
        source,
    };
    let mut writer = FileWriter::new(Vec::new(), planned.header.clone()).map_err(render_error)?;
    let mut withholdings: HashMap<String, Withholding> = HashMap::new();
    let mut failure = None;
    ledger.for_each_event(1, range.through_position, |stored| {
        if failure.is_some() {
            return Ok(());
        }
        let position = stored.position;
        let in_file = position > range.after_position;
        let record = match stored.event()? {
            Event::WithholdingRecorded(w) if w.kommune == range.kommune => {
                withholdings.insert(w.reference.as_str().to_string(), w.clone());
                if !in_file {
                    return Ok(());
                }
                opened_record(ledger, position, w)
            }
            Event::WithholdingCorrected(c) if c.kommune == range.kommune && in_file => {
                let Some(original) = withholdings.get(c.corrects.as_str()).cloned() else {
                    failure = Some(ExportError::MissingWithholding {
                        position,
                        corrects: c.corrects.to_string(),
                        kommune: range.kommune.code(),
                    });
                    return Ok(());
                };
                opened_record(ledger, position, original).map(|record| DetailRecord {
                    kind: EntryKind::Correction,
                    amount: c.amount,
                    reference: c.reference,
                    corrects: Some(c.corrects),
                    ..record
                })
            }
            _ => return Ok(()),
        };
        match record {
            Ok(record) => {
                if let Err(error) = writer.write_detail(&record) {
                    failure = Some(render_error(error));
                }
            }
            Err(error) => failure = Some(error),
        }
        Ok(())
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    let (bytes, _summary) = writer.finish().map_err(render_error)?;
    Ok(bytes)
}

/// The detail record of withholding `w` (at `position`), its CPR opened.
fn opened_record(
    ledger: &Ledger,
    position: u64,
    w: Withholding,
) -> Result<DetailRecord, ExportError> {
    withholding_record(position, opened(ledger, w)?)
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
    let recorded = ledger
        .official_files(None)?
        .into_iter()
        .map(|file| (file.event.file_name, file.event.sha256))
        .collect();
    Outbox::claim(outbox, ledger_id, &lock, &recorded)?.put(name, bytes)
}
