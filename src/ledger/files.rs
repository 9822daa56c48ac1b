//! The files register: official files as the log recorded them, and the delivery
//! state of each, read through the ledger.
//!
//! The `FileExported` event is the authority. The `files` projection is only an
//! index from (kommune, løbenummer) to the event's position: every register row is
//! the event found there plus its position. A projection row that disagrees with
//! its event, points at another event, or is missing is reported as a
//! [`ProjectionDamage`] on the file (the file itself still comes from the log);
//! a row with no `FileExported` event anywhere in the log is an error.

use std::fmt;

use serde::Serialize;

use super::codec::{decode as decode_payload, StoredEvent};
use super::entries::EntryRange;
use super::sql::{self, args, Row, Source};
use super::{Ledger, LedgerError};
use crate::domain::{Event, FileExported, Kommune};

/// An official file: its `FileExported` event and the event's position. The
/// event's fields read through it (`file.sha256`), as the file is that event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfficialFile {
    /// Position of the `FileExported` event.
    pub position: u64,
    pub event: FileExported,
    /// Set when the `files` projection disagreed with the event; the event is the
    /// log's all the same.
    pub damage: Option<ProjectionDamage>,
}

impl std::ops::Deref for OfficialFile {
    type Target = FileExported;

    fn deref(&self) -> &FileExported {
        &self.event
    }
}

/// How the `files` projection row of a file disagreed with its `FileExported` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectionDamage {
    /// Position of the `FileExported` event the file was taken from.
    pub position: u64,
    /// What disagreed, e.g. "sha256 differs" or "no row".
    pub what: String,
}

impl fmt::Display for ProjectionDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "damaged projection at position {}: {}; the file was taken from the log. Run `sf2520 verify`",
            self.position, self.what
        )
    }
}

impl OfficialFile {
    /// The register row of the `FileExported` event at `position`.
    pub fn from_event(position: u64, event: &FileExported) -> OfficialFile {
        OfficialFile {
            position,
            event: event.clone(),
            damage: None,
        }
    }

    pub fn net_ore(&self) -> i64 {
        self.plus_ore - self.minus_ore
    }

    pub fn range(&self) -> EntryRange {
        EntryRange {
            kommune: self.kommune,
            after_position: self.previous_cutoff_position,
            through_position: self.cutoff_position,
        }
    }

    /// The names of the fields in which `row` (from the projection) differs.
    fn differing_fields(&self, row: &OfficialFile) -> Vec<&'static str> {
        let checks = [
            ("position", self.position == row.position),
            ("file_id", self.file_id == row.file_id),
            ("file_name", self.file_name == row.file_name),
            ("created_at_us", self.created_at_us == row.created_at_us),
            (
                "previous_cutoff_position",
                self.previous_cutoff_position == row.previous_cutoff_position,
            ),
            (
                "cutoff_position",
                self.cutoff_position == row.cutoff_position,
            ),
            ("test_marker", self.test_marker == row.test_marker),
            ("record_count", self.record_count == row.record_count),
            ("plus_ore", self.plus_ore == row.plus_ore),
            ("minus_ore", self.minus_ore == row.minus_ore),
            ("sha256", self.sha256 == row.sha256),
        ];
        checks
            .into_iter()
            .filter(|(_, equal)| !equal)
            .map(|(name, _)| name)
            .collect()
    }
}

/// The stream name of a file's events (see docs/log-format.md).
pub fn file_stream(kommune: Kommune, sequence: u32) -> String {
    format!("file/{kommune}/{sequence:06}")
}

const FILE_COLUMNS: &str = "kommune, sequence, position, file_id, file_name, created_at_us,
    previous_cutoff_position, cutoff_position, test_marker, record_count, plus_ore, minus_ore, sha256";

const FILES: Source = Source { table: "files" };
const DELIVERIES: Source = Source {
    table: "deliveries",
};

/// A `files` projection row, read as it stands (not yet checked against its event).
fn from_row(row: &Row<'_>) -> Result<OfficialFile, LedgerError> {
    let number: u16 = row.narrow(FILES, 0)?;
    let event = FileExported {
        kommune: Kommune::from_number(number).ok_or_else(|| LedgerError::CorruptLedger {
            position: None,
            what: format!("files column 0: {number} is no kommune number"),
        })?,
        sequence: row.narrow(FILES, 1)?,
        file_id: row.bytes(FILES, 3)?,
        file_name: row.text(FILES, 4)?.to_string(),
        created_at_us: row.int(FILES, 5)?,
        previous_cutoff_position: row.unsigned(FILES, 6)?,
        cutoff_position: row.unsigned(FILES, 7)?,
        test_marker: row.flag(FILES, 8)?,
        record_count: row.unsigned(FILES, 9)?,
        plus_ore: row.int(FILES, 10)?,
        minus_ore: row.int(FILES, 11)?,
        sha256: row.bytes(FILES, 12)?,
    };
    Ok(OfficialFile::from_event(row.unsigned(FILES, 2)?, &event))
}

impl Ledger {
    /// The `FileExported` event of file `sequence` of `kommune` stored at
    /// `position`, if that position holds it.
    fn file_event_at(
        &self,
        position: u64,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<Option<OfficialFile>, LedgerError> {
        let Ok(at) = sql::position(position) else {
            return Ok(None);
        };
        let stored = self.db().query_opt(
            &format!(
                "SELECT {} FROM events WHERE position = ?1",
                StoredEvent::COLUMNS
            ),
            &[at],
            StoredEvent::from_row,
        )?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        Ok(match decode_payload(stored.position, &stored.payload)? {
            Event::FileExported(event)
                if event.kommune == kommune && event.sequence == sequence =>
            {
                Some(OfficialFile::from_event(position, &event))
            }
            _ => None,
        })
    }

    /// Searches the whole log for the `FileExported` event of a file, by its stream.
    /// Only taken when the projection is damaged: the log has no index by stream.
    fn find_file_event(
        &self,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<Option<OfficialFile>, LedgerError> {
        let candidates = self.db().query_vec(
            &format!(
                "SELECT {} FROM events WHERE stream = ?1 AND event_type = 'FileExported' ORDER BY position",
                StoredEvent::COLUMNS
            ),
            &args![&file_stream(kommune, sequence)],
            StoredEvent::from_row,
        )?;
        for stored in candidates {
            if let Event::FileExported(event) = decode_payload(stored.position, &stored.payload)? {
                if event.kommune == kommune && event.sequence == sequence {
                    return Ok(Some(OfficialFile::from_event(stored.position, &event)));
                }
            }
        }
        Ok(None)
    }

    /// The register row for a projection row: its event, with any disagreement noted.
    fn authoritative(&self, row: OfficialFile) -> Result<OfficialFile, LedgerError> {
        if let Some(mut file) = self.file_event_at(row.position, row.kommune, row.sequence)? {
            let differing = file.differing_fields(&row);
            if !differing.is_empty() {
                file.damage = Some(ProjectionDamage {
                    position: file.position,
                    what: format!(
                        "the files row of kommune {} løbenummer {} differs from its event in {}",
                        row.kommune,
                        row.sequence,
                        differing.join(", ")
                    ),
                });
            }
            return Ok(file);
        }
        match self.find_file_event(row.kommune, row.sequence)? {
            Some(mut file) => {
                file.damage = Some(ProjectionDamage {
                    position: file.position,
                    what: format!(
                        "the files row of kommune {} løbenummer {} points at position {}, which does not hold its FileExported event",
                        row.kommune, row.sequence, row.position
                    ),
                });
                Ok(file)
            }
            None => Err(LedgerError::FileWithoutEvent {
                kommune: row.kommune.code(),
                sequence: row.sequence,
                position: row.position,
            }),
        }
    }

    /// A file the projection has no row for, found in the log.
    fn missing_row(
        &self,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<Option<OfficialFile>, LedgerError> {
        Ok(self.find_file_event(kommune, sequence)?.map(|mut file| {
            file.damage = Some(ProjectionDamage {
                position: file.position,
                what: format!(
                    "the files table has no row for kommune {kommune} løbenummer {sequence}"
                ),
            });
            file
        }))
    }

    /// Every official file, by kommune and løbenummer (one kommune if given), each
    /// from its `FileExported` event. A løbenummer missing from the projection
    /// between two it holds is looked up in the log (løbenumre are gapless from 1).
    pub fn official_files(
        &self,
        kommune: Option<Kommune>,
    ) -> Result<Vec<OfficialFile>, LedgerError> {
        let rows = self.db().query_vec(
            &format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE kommune = COALESCE(?1, kommune) ORDER BY kommune, sequence"
            ),
            &args![kommune.map(Kommune::number)],
            from_row,
        )?;
        let mut files: Vec<OfficialFile> = Vec::with_capacity(rows.len());
        for row in rows {
            let next = match files.last() {
                Some(last) if last.kommune == row.kommune => last.sequence + 1,
                _ => 1,
            };
            for sequence in next..row.sequence {
                if let Some(file) = self.missing_row(row.kommune, sequence)? {
                    files.push(file);
                }
            }
            files.push(self.authoritative(row)?);
        }
        Ok(files)
    }

    /// One official file from its `FileExported` event, or an error saying how
    /// many the kommune has.
    pub fn official_file(
        &self,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<OfficialFile, LedgerError> {
        let found = self.db().query_opt(
            &format!("SELECT {FILE_COLUMNS} FROM files WHERE kommune = ?1 AND sequence = ?2"),
            &args![kommune.number(), sequence],
            from_row,
        )?;
        if let Some(row) = found {
            return self.authoritative(row);
        }
        if let Some(file) = self.missing_row(kommune, sequence)? {
            return Ok(file);
        }
        let count: u32 = self.db().query_one(
            "SELECT COUNT(*) FROM files WHERE kommune = ?1",
            &args![kommune.number()],
            |row| row.narrow(FILES, 0),
        )?;
        Err(LedgerError::NoSuchFile {
            kommune: kommune.code(),
            sequence,
            count,
        })
    }

    /// The kommune's last official file recorded at or before `position`, if any,
    /// from its `FileExported` event.
    pub fn last_file_through(
        &self,
        kommune: Kommune,
        position: u64,
    ) -> Result<Option<OfficialFile>, LedgerError> {
        let row = self.db().query_opt(
            &format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE kommune = ?1 AND position <= ?2
                 ORDER BY sequence DESC LIMIT 1"
            ),
            &[kommune.number().into(), sql::position(position)?],
            from_row,
        )?;
        row.map(|row| self.authoritative(row)).transpose()
    }

    /// Positions of a file's delivery events (uploads, receipts, reissues), in log order.
    pub fn delivery_positions(
        &self,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<Vec<u64>, LedgerError> {
        self.db().query_vec(
            "SELECT position FROM deliveries WHERE kommune = ?1 AND sequence = ?2 ORDER BY position",
            &args![kommune.number(), sequence],
            |row| row.unsigned(DELIVERIES, 0),
        )
    }

    /// The delivery state of one file: the last of its delivery events decides.
    pub fn delivery_state(
        &self,
        kommune: Kommune,
        sequence: u32,
    ) -> Result<DeliveryState, LedgerError> {
        Ok(self.delivery_status(kommune, sequence, [0; 16])?.state)
    }

    /// The delivery status of one file whose first `SendersFileId` is `file_id`.
    pub fn delivery_status(
        &self,
        kommune: Kommune,
        sequence: u32,
        file_id: [u8; 16],
    ) -> Result<DeliveryStatus, LedgerError> {
        let rows = self.db().query_vec(
            "SELECT kind, detail, accepted, senders_file_id FROM deliveries
             WHERE kommune = ?1 AND sequence = ?2 ORDER BY position",
            &args![kommune.number(), sequence],
            |row| {
                Ok((
                    row.text(DELIVERIES, 0)?.to_string(),
                    row.text(DELIVERIES, 1)?.to_string(),
                    row.opt_flag(DELIVERIES, 2)?,
                    row.bytes::<16>(DELIVERIES, 3)?,
                ))
            },
        )?;
        let mut status = DeliveryStatus {
            state: DeliveryState::Exported,
            senders_file_id: file_id,
            uploads: 0,
            business: None,
        };
        for (kind, detail, accepted, id) in rows {
            status.state = match (kind.as_str(), accepted) {
                ("uploaded", _) => {
                    status.uploads += 1;
                    DeliveryState::Uploaded {
                        attempt: status.uploads,
                    }
                }
                ("receipt", Some(true)) => DeliveryState::Accepted,
                ("receipt", _) => DeliveryState::Rejected { errors: detail },
                // A business receipt adds the recipient's verdict; the technical
                // state (accepted by the platform) stays what it was.
                ("business", _) => {
                    status.business = Some(detail);
                    continue;
                }
                ("reissued", _) => {
                    status.senders_file_id = id;
                    status.business = None;
                    DeliveryState::Reissued
                }
                (other, _) => {
                    return Err(LedgerError::CorruptLedger {
                        position: None,
                        what: format!("deliveries: unknown delivery kind {other:?}"),
                    })
                }
            };
        }
        Ok(status)
    }
}

/// Where a file stands on its way to UDK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// In the outbox; never uploaded.
    Exported,
    /// Uploaded with its trigger; no receipt yet.
    Uploaded { attempt: u32 },
    /// The platform's receipt said SUCCESS.
    Accepted,
    /// The platform's receipt listed errors.
    Rejected { errors: String },
    /// Put back into the outbox to be delivered again.
    Reissued,
}

impl DeliveryState {
    pub fn label(&self) -> String {
        match self {
            DeliveryState::Exported => "exported".into(),
            DeliveryState::Uploaded { attempt } => format!("uploaded (attempt {attempt})"),
            DeliveryState::Accepted => "accepted".into(),
            DeliveryState::Rejected { errors } => format!("rejected: {errors}"),
            DeliveryState::Reissued => "reissued".into(),
        }
    }
}

/// A file's delivery state and the `SendersFileId` its current delivery uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    pub state: DeliveryState,
    /// The file's UUID for its first delivery; a reissue's new id after a reissue.
    pub senders_file_id: [u8; 16],
    /// Uploads recorded so far, across all deliveries of the file.
    pub uploads: u32,
    /// The latest business receipt of the current delivery: the recipient's
    /// verdict and who gave it (`ACCEPTED by UDK`); `None` until one arrives.
    pub business: Option<String>,
}
