//! The files register: official files as the log recorded them, and the delivery
//! state of each.
//!
//! The `FileExported` event is the authority. The `files` projection is only an
//! index from (kommune, løbenummer) to the event's position: every register row is
//! the event found there plus its position. A projection row that disagrees with
//! its event, points at another event, or is missing is reported as a
//! [`ProjectionDamage`] on the file (the file itself still comes from the log);
//! a row with no `FileExported` event anywhere in the log is an error.

use std::fmt;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::source::EntryRange;
use super::ExportError;
use crate::domain::{Event, FileExported, Kommune};
use crate::ledger::{decode_payload, StoredEvent};

/// An official file: its `FileExported` event and the event's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfficialFile {
    pub kommune: Kommune,
    pub sequence: u32,
    /// Position of the `FileExported` event.
    pub position: u64,
    pub file_id: [u8; 16],
    pub file_name: String,
    pub created_at_us: i64,
    pub previous_cutoff_position: u64,
    pub cutoff_position: u64,
    pub test_marker: bool,
    pub record_count: u64,
    pub plus_ore: i64,
    pub minus_ore: i64,
    pub sha256: [u8; 32],
    /// Set when the `files` projection disagreed with the event; the fields above
    /// are the event's all the same.
    pub damage: Option<ProjectionDamage>,
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
            kommune: event.kommune,
            sequence: event.sequence,
            position,
            file_id: event.file_id,
            file_name: event.file_name.clone(),
            created_at_us: event.created_at_us,
            previous_cutoff_position: event.previous_cutoff_position,
            cutoff_position: event.cutoff_position,
            test_marker: event.test_marker,
            record_count: event.record_count,
            plus_ore: event.plus_ore,
            minus_ore: event.minus_ore,
            sha256: event.sha256,
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

fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Blob,
        what.to_string().into(),
    )
}

/// A `files` projection row, read as it stands (not yet checked against its event).
fn from_row(row: &Row<'_>) -> rusqlite::Result<OfficialFile> {
    let kommune: u16 = row.get(0)?;
    let unsigned = |column: usize| -> rusqlite::Result<u64> {
        u64::try_from(row.get::<_, i64>(column)?).map_err(|_| corrupt(column, "negative number"))
    };
    let file_id: Vec<u8> = row.get(3)?;
    let sha256: Vec<u8> = row.get(12)?;
    Ok(OfficialFile {
        kommune: Kommune::from_number(kommune).ok_or_else(|| corrupt(0, "unknown kommune"))?,
        sequence: row.get(1)?,
        position: unsigned(2)?,
        file_id: file_id
            .try_into()
            .map_err(|_| corrupt(3, "file id is not 16 bytes"))?,
        file_name: row.get(4)?,
        created_at_us: row.get(5)?,
        previous_cutoff_position: unsigned(6)?,
        cutoff_position: unsigned(7)?,
        test_marker: row.get(8)?,
        record_count: unsigned(9)?,
        plus_ore: row.get(10)?,
        minus_ore: row.get(11)?,
        sha256: sha256
            .try_into()
            .map_err(|_| corrupt(12, "sha256 is not 32 bytes"))?,
        damage: None,
    })
}

/// The `FileExported` event of file `sequence` of `kommune` stored at `position`,
/// if that position holds it.
fn file_event_at(
    conn: &Connection,
    position: u64,
    kommune: Kommune,
    sequence: u32,
) -> Result<Option<OfficialFile>, ExportError> {
    let Ok(sql_position) = i64::try_from(position) else {
        return Ok(None);
    };
    let stored = conn
        .prepare_cached(&format!(
            "SELECT {} FROM events WHERE position = ?1",
            StoredEvent::COLUMNS
        ))?
        .query_row(params![sql_position], StoredEvent::from_row)
        .optional()?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    Ok(match decode_payload(stored.position, &stored.payload)? {
        Event::FileExported(event) if event.kommune == kommune && event.sequence == sequence => {
            Some(OfficialFile::from_event(position, &event))
        }
        _ => None,
    })
}

/// Searches the whole log for the `FileExported` event of a file, by its stream.
/// Only taken when the projection is damaged: the log has no index by stream.
fn find_file_event(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
) -> Result<Option<OfficialFile>, ExportError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {} FROM events WHERE stream = ?1 AND event_type = 'FileExported' ORDER BY position",
        StoredEvent::COLUMNS
    ))?;
    let mut rows = statement.query(params![file_stream(kommune, sequence)])?;
    while let Some(row) = rows.next()? {
        let stored = StoredEvent::from_row(row)?;
        if let Event::FileExported(event) = decode_payload(stored.position, &stored.payload)? {
            if event.kommune == kommune && event.sequence == sequence {
                return Ok(Some(OfficialFile::from_event(stored.position, &event)));
            }
        }
    }
    Ok(None)
}

/// The register row for a projection row: its event, with any disagreement noted.
fn authoritative(conn: &Connection, row: OfficialFile) -> Result<OfficialFile, ExportError> {
    if let Some(mut file) = file_event_at(conn, row.position, row.kommune, row.sequence)? {
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
    match find_file_event(conn, row.kommune, row.sequence)? {
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
        None => Err(ExportError::FileWithoutEvent {
            kommune: row.kommune.code(),
            sequence: row.sequence,
            position: row.position,
        }),
    }
}

/// A file the projection has no row for, found in the log.
fn missing_row(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
) -> Result<Option<OfficialFile>, ExportError> {
    Ok(find_file_event(conn, kommune, sequence)?.map(|mut file| {
        file.damage = Some(ProjectionDamage {
            position: file.position,
            what: format!("the files table has no row for kommune {kommune} løbenummer {sequence}"),
        });
        file
    }))
}

/// Every official file, by kommune and løbenummer (one kommune if given), each
/// from its `FileExported` event. A løbenummer missing from the projection between
/// two it holds is looked up in the log (løbenumre are gapless from 1).
pub fn official_files(
    conn: &Connection,
    kommune: Option<Kommune>,
) -> Result<Vec<OfficialFile>, ExportError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE ?1 IS NULL OR kommune = ?1 ORDER BY kommune, sequence"
    ))?;
    let rows: Vec<OfficialFile> = statement
        .query_map(params![kommune.map(Kommune::number)], from_row)?
        .collect::<Result<_, _>>()?;
    let mut files: Vec<OfficialFile> = Vec::with_capacity(rows.len());
    for row in rows {
        let next = match files.last() {
            Some(last) if last.kommune == row.kommune => last.sequence.saturating_add(1),
            _ => 1,
        };
        for sequence in next..row.sequence {
            if let Some(file) = missing_row(conn, row.kommune, sequence)? {
                files.push(file);
            }
        }
        files.push(authoritative(conn, row)?);
    }
    Ok(files)
}

/// One official file from its `FileExported` event, or an error saying how many
/// the kommune has.
pub fn official_file(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
) -> Result<OfficialFile, ExportError> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE kommune = ?1 AND sequence = ?2"
        ))?
        .query_row(params![kommune.number(), sequence], from_row)
        .optional()?;
    if let Some(row) = found {
        return authoritative(conn, row);
    }
    if let Some(file) = missing_row(conn, kommune, sequence)? {
        return Ok(file);
    }
    let count: u32 = conn.query_row(
        "SELECT COUNT(*) FROM files WHERE kommune = ?1",
        params![kommune.number()],
        |row| row.get(0),
    )?;
    Err(ExportError::NoSuchFile {
        kommune: kommune.code(),
        sequence,
        count,
    })
}

/// The kommune's last official file recorded at or before `position`, if any,
/// from its `FileExported` event.
pub fn last_file_through(
    conn: &Connection,
    kommune: Kommune,
    position: u64,
) -> Result<Option<OfficialFile>, ExportError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE kommune = ?1 AND position <= ?2
             ORDER BY sequence DESC LIMIT 1"
        ))?
        .query_row(
            params![
                kommune.number(),
                i64::try_from(position).unwrap_or(i64::MAX)
            ],
            from_row,
        )
        .optional()?;
    row.map(|row| authoritative(conn, row)).transpose()
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

/// Positions of a file's delivery events (uploads, receipts, reissues), in log order.
pub fn delivery_positions(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
) -> Result<Vec<u64>, ExportError> {
    let mut statement = conn.prepare_cached(
        "SELECT position FROM deliveries WHERE kommune = ?1 AND sequence = ?2 ORDER BY position",
    )?;
    let rows = statement.query_map(params![kommune.number(), sequence], |row| {
        let position: i64 = row.get(0)?;
        u64::try_from(position).map_err(|_| corrupt(0, "negative position"))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The delivery state of one file: the last of its delivery events decides.
pub fn delivery_state(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
) -> Result<DeliveryState, ExportError> {
    Ok(delivery_status(conn, kommune, sequence, [0; 16])?.state)
}

/// The delivery status of one file whose first `SendersFileId` is `file_id`.
pub fn delivery_status(
    conn: &Connection,
    kommune: Kommune,
    sequence: u32,
    file_id: [u8; 16],
) -> Result<DeliveryStatus, ExportError> {
    let mut statement = conn.prepare_cached(
        "SELECT kind, detail, accepted, senders_file_id FROM deliveries
         WHERE kommune = ?1 AND sequence = ?2 ORDER BY position",
    )?;
    let mut rows = statement.query(params![kommune.number(), sequence])?;
    let mut status = DeliveryStatus {
        state: DeliveryState::Exported,
        senders_file_id: file_id,
        uploads: 0,
        business: None,
    };
    while let Some(row) = rows.next()? {
        let kind: String = row.get(0)?;
        let detail: String = row.get(1)?;
        let accepted: Option<bool> = row.get(2)?;
        let id: Vec<u8> = row.get(3)?;
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| corrupt(3, "senders file id is not 16 bytes"))?;
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
                return Err(ExportError::from(corrupt(
                    0,
                    &format!("unknown delivery kind {other:?}"),
                )))
            }
        };
    }
    Ok(status)
}
