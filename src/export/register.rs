//! The files register: official files as the log recorded them, and the delivery
//! state of each.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::source::EntryRange;
use super::ExportError;
use crate::domain::Kommune;

/// An official file, from its `FileExported` event.
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
}

impl OfficialFile {
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
    })
}

/// Every official file, by kommune and løbenummer (one kommune if given).
pub fn official_files(
    conn: &Connection,
    kommune: Option<Kommune>,
) -> Result<Vec<OfficialFile>, ExportError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE ?1 IS NULL OR kommune = ?1 ORDER BY kommune, sequence"
    ))?;
    let rows = statement.query_map(params![kommune.map(Kommune::number)], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One official file, or an error saying how many the kommune has.
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
    match found {
        Some(file) => Ok(file),
        None => {
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
    }
}

/// The kommune's last official file recorded at or before `position`, if any.
pub fn last_file_through(
    conn: &Connection,
    kommune: Kommune,
    position: u64,
) -> Result<Option<OfficialFile>, ExportError> {
    Ok(conn
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
        .optional()?)
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
