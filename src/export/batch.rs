//! The batch export and its time machine: plan the next file of each kommune from
//! the log up to a cut-off, render them in parallel, write them atomically, and
//! (for an official run) record a `FileExported` event for each.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use super::outbox::{remove_orphans, sync_dir, PartialFile, WrittenFile};
use super::register::{last_file_through, official_files};
use super::source::{for_each_record, for_each_record_in, EntryRange};
use super::ExportError;
use crate::domain::{Event, FileExported, Kommune};
use crate::ledger::{Ledger, DATABASE_FILE};
use crate::sf2520::{file_name, DetailRecord, FileHeader, FileSummary, FileWriter};

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct ExportRequest {
    /// Only these kommuner (all 98 when empty).
    pub kommuner: Vec<Kommune>,
    /// Also write start+end-only files for kommuner with nothing new.
    pub include_empty: bool,
}

/// One file the run will render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub header: FileHeader,
    pub file_name: String,
    pub range: EntryRange,
    pub record_count: u64,
}

/// One file the run wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedFile {
    pub planned: PlannedFile,
    pub summary: FileSummary,
    pub written: WrittenFile,
    /// Set for official files: the file's UUID, recorded in its `FileExported`.
    pub file_id: Option<Uuid>,
}

/// Progress of the rendering, for a progress bar.
pub trait Progress: Sync {
    fn planned(&self, _files: usize, _records: u64) {}
    fn rendered(&self, _file: &ExportedFile) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

fn to_naive(time_us: i64) -> NaiveDateTime {
    DateTime::<Utc>::from_timestamp_micros(time_us)
        .unwrap_or_default()
        .naive_utc()
}

/// Plans the next file of each requested kommune: entries after the kommune's last
/// file recorded at or before `cutoff`, through `cutoff`.
pub fn plan(
    ledger: &Ledger,
    request: &ExportRequest,
    cutoff: u64,
    created_at: NaiveDateTime,
    test_marker: bool,
) -> Result<Vec<PlannedFile>, ExportError> {
    let kommuner: Vec<Kommune> = if request.kommuner.is_empty() {
        Kommune::all().collect()
    } else {
        request.kommuner.clone()
    };
    let mut planned = Vec::new();
    for kommune in kommuner {
        let previous = last_file_through(ledger.connection(), kommune, cutoff)?;
        let range = EntryRange {
            kommune,
            after_position: previous.as_ref().map_or(0, |file| file.cutoff_position),
            through_position: cutoff,
        };
        let record_count = ledger.kommune_entries_between(kommune, range.after_position, cutoff)?;
        if record_count == 0 && !request.include_empty {
            continue;
        }
        let sequence = previous.map_or(1, |file| file.sequence + 1);
        let render_error = |source| ExportError::Render {
            kommune: kommune.code(),
            sequence,
            source,
        };
        planned.push(PlannedFile {
            header: FileHeader {
                kommune,
                sequence,
                created_at,
                // The file holds what was recorded before its creation time.
                cutoff_at: created_at,
                test_marker,
            },
            file_name: file_name(kommune, created_at.date(), sequence).map_err(render_error)?,
            range,
            record_count,
        });
    }
    Ok(planned)
}

/// Renders one planned file into `out` from the log.
pub fn render_into<W: Write>(
    conn: &Connection,
    planned: &PlannedFile,
    out: W,
) -> Result<(W, FileSummary), ExportError> {
    let render_error = |source| ExportError::Render {
        kommune: planned.range.kommune.code(),
        sequence: planned.header.sequence,
        source,
    };
    let mut writer = FileWriter::new(out, planned.header.clone()).map_err(render_error)?;
    for_each_record(conn, planned.range, |record| {
        writer.write_detail(&record).map_err(render_error)
    })?;
    writer.finish().map_err(render_error)
}

/// Opens another read-only connection to the ledger's database, for a worker.
pub fn open_reader(data_dir: &Path) -> Result<Connection, ExportError> {
    let conn = Connection::open_with_flags(
        data_dir.join(DATABASE_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "busy_timeout", 10_000)?;
    Ok(conn)
}

/// Renders the planned files into `dir`, in parallel: one group of files per two
/// cores, balanced by record count. Each group is rendered in one sequential pass
/// over the log (see [`for_each_record_in`]) rather than file by file, by two
/// threads: one reads and decodes the log, the other renders, hashes and writes.
pub fn render_all(
    data_dir: &Path,
    planned: Vec<PlannedFile>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ExportedFile>, ExportError> {
    // Each group scans the whole log, so fewer groups read less; two threads per
    // group keep two cores busy with one scan.
    let groups = std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, planned.len().max(1));
    let groups = balance(&planned, groups);
    let results = Mutex::new(Vec::with_capacity(planned.len()));
    let failure: Mutex<Option<ExportError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for group in &groups {
            let (results, failure) = (&results, &failure);
            scope.spawn(move || {
                let outcome = (|| -> Result<(), ExportError> {
                    let exported = render_group(data_dir, group, dir)?;
                    for file in &exported {
                        progress.rendered(file);
                    }
                    results
                        .lock()
                        .map_err(|e| ExportError::Worker(e.to_string()))?
                        .extend(exported);
                    Ok(())
                })();
                if let Err(error) = outcome {
                    if let Ok(mut slot) = failure.lock() {
                        slot.get_or_insert(error);
                    }
                }
            });
        }
    });
    if let Some(error) = failure
        .into_inner()
        .map_err(|e| ExportError::Worker(e.to_string()))?
    {
        return Err(error);
    }
    let mut results = results
        .into_inner()
        .map_err(|e| ExportError::Worker(e.to_string()))?;
    results.sort_by_key(|file| file.planned.range.kommune);
    Ok(results)
}

/// Splits the files into at most `workers` groups of about equal record counts:
/// largest first, each into the lightest group so far.
fn balance(planned: &[PlannedFile], workers: usize) -> Vec<Vec<&PlannedFile>> {
    let mut by_size: Vec<&PlannedFile> = planned.iter().collect();
    by_size.sort_by_key(|file| std::cmp::Reverse(file.record_count));
    let mut groups: Vec<(u64, Vec<&PlannedFile>)> = vec![(0, Vec::new()); workers.max(1)];
    for file in by_size {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(records, _)| *records) {
            lightest.0 += file.record_count;
            lightest.1.push(file);
        }
    }
    groups
        .into_iter()
        .map(|(_, files)| files)
        .filter(|files| !files.is_empty())
        .collect()
}

/// Buffer per open file when a worker renders many at once: 98 files stay well
/// within the export's memory budget, and each buffer still takes ~500 records.
const GROUP_BUFFER_BYTES: usize = 64 * 1024;

/// Detail records a reader hands the renderer at a time, and how many such
/// chunks may wait: enough to keep both threads busy, small in memory (~100 KiB).
const CHUNK_RECORDS: usize = 512;
const CHUNKS_IN_FLIGHT: usize = 2;

/// A chunk of detail records, each with the index of the file it belongs to.
type Chunk = Vec<(usize, DetailRecord)>;

/// Renders a group of files in one pass over the log: all are open at once, a
/// reader thread decodes the log into detail records, this thread writes each to
/// its file's writer; then each file is fsynced and renamed into place and the
/// directory fsynced once.
fn render_group(
    data_dir: &Path,
    files: &[&PlannedFile],
    dir: &Path,
) -> Result<Vec<ExportedFile>, ExportError> {
    // The kommune's code is formatted only on an error, not for every record.
    let render_error = |file: &PlannedFile| {
        let (kommune, sequence) = (file.range.kommune, file.header.sequence);
        move |source| ExportError::Render {
            kommune: kommune.code(),
            sequence,
            source,
        }
    };
    let mut partials = files
        .iter()
        .map(|file| PartialFile::create(dir, &file.file_name, GROUP_BUFFER_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    let mut writers = partials
        .iter_mut()
        .zip(files)
        .map(|(partial, file)| {
            FileWriter::new(partial.writer(), file.header.clone()).map_err(render_error(file))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ranges: Vec<EntryRange> = files.iter().map(|file| file.range).collect();
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let ranges = &ranges;
        let reader = scope.spawn(move || read_records(data_dir, ranges, &sender));
        let rendered = receiver.iter().try_for_each(|chunk| {
            chunk.into_iter().try_for_each(|(index, record)| {
                writers[index]
                    .write_detail(&record)
                    .map_err(render_error(files[index]))
            })
        });
        // A failed renderer stops the reader: its next send finds no receiver.
        drop(receiver);
        let read = reader
            .join()
            .map_err(|_| ExportError::Worker("the log reader panicked".into()))?;
        rendered.and(read)
    })?;
    let summaries = writers
        .into_iter()
        .zip(files)
        .map(|(writer, file)| {
            writer
                .finish()
                .map(|(_, summary)| summary)
                .map_err(render_error(file))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut exported = Vec::with_capacity(files.len());
    for ((partial, file), summary) in partials.into_iter().zip(files).zip(summaries) {
        exported.push(ExportedFile {
            planned: (*file).clone(),
            summary,
            written: partial.commit()?,
            file_id: None,
        });
    }
    sync_dir(dir)?;
    Ok(exported)
}

/// The reader of [`render_group`]: the ranges' detail records, in chunks.
fn read_records(
    data_dir: &Path,
    ranges: &[EntryRange],
    sender: &std::sync::mpsc::SyncSender<Chunk>,
) -> Result<(), ExportError> {
    let stopped = || ExportError::Worker("the renderer stopped".into());
    let conn = open_reader(data_dir)?;
    let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
    for_each_record_in(&conn, ranges, |index, record| {
        chunk.push((index, record));
        if chunk.len() == CHUNK_RECORDS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS));
            sender.send(full).map_err(|_| stopped())?;
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        sender.send(chunk).map_err(|_| stopped())?;
    }
    Ok(())
}

/// Waits, holding the write lock, until the wall clock is in a later whole second
/// than the last event, and returns that second as the creation time and the head
/// as the cut-off. Every event recorded later gets a later recorded-at (the clock
/// has passed the creation time and recorded-at never decreases), so "events
/// recorded at or before the creation time" is exactly the log up to the cut-off:
/// `export --as-of <creation time>` sees what this run saw.
fn fix_cutoff(ledger: &mut Ledger) -> Result<(u64, NaiveDateTime), ExportError> {
    Ok(ledger.write(|appender| {
        let head = appender.head();
        loop {
            let now = Utc::now();
            let second = now.with_nanosecond(0).unwrap_or(now);
            let second_us = second.timestamp_micros();
            if second_us > head.recorded_at_us && now.timestamp_micros() > second_us {
                return Ok((head.position, second.naive_utc()));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })?)
}

/// The official batch export: fixes the cut-off, removes unrecorded files from the
/// outbox, renders the next file of each kommune with new entries (løbenummer =
/// previous + 1) and records a `FileExported` for each in one durable transaction.
/// Killed at any moment, a re-run finishes the job: files not yet recorded are
/// orphans that the re-run removes and renders again.
pub fn run_batch(
    ledger: &mut Ledger,
    request: &ExportRequest,
    outbox: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ExportedFile>, ExportError> {
    let (cutoff, created_at) = fix_cutoff(ledger)?;
    let registered: HashSet<String> = official_files(ledger.connection(), None)?
        .into_iter()
        .map(|file| file.file_name)
        .collect();
    remove_orphans(outbox, &registered)?;
    let planned = plan(ledger, request, cutoff, created_at, false)?;
    progress.planned(planned.len(), planned.iter().map(|p| p.record_count).sum());
    let mut exported = render_all(ledger.dir(), planned, outbox, progress)?;
    record(ledger, &mut exported, cutoff)?;
    Ok(exported)
}

/// Appends a `FileExported` for each file, refusing if another run got there first.
fn record(
    ledger: &mut Ledger,
    exported: &mut [ExportedFile],
    cutoff: u64,
) -> Result<(), ExportError> {
    ledger.write(|appender| {
        for file in exported.iter_mut() {
            let kommune = file.planned.range.kommune;
            let sequence = file.planned.header.sequence;
            let taken: bool = appender.connection().query_row(
                "SELECT EXISTS (SELECT 1 FROM files WHERE kommune = ?1 AND sequence >= ?2)",
                rusqlite::params![kommune.number(), sequence],
                |row| row.get(0),
            )?;
            if taken {
                return Err(crate::ledger::LedgerError::Concurrent {
                    what: format!("kommune {kommune} løbenummer {sequence}"),
                });
            }
            let file_id = Uuid::new_v4();
            appender.append(&Event::FileExported(FileExported {
                file_id: *file_id.as_bytes(),
                kommune,
                sequence,
                file_name: file.planned.file_name.clone(),
                created_at_us: file.planned.header.created_at.and_utc().timestamp_micros(),
                previous_cutoff_position: file.planned.range.after_position,
                cutoff_position: cutoff,
                test_marker: file.planned.header.test_marker,
                record_count: file.summary.record_count,
                plus_ore: file.summary.plus_ore,
                minus_ore: file.summary.minus_ore,
                sha256: file.written.sha256,
            }))?;
            file.file_id = Some(file_id);
        }
        Ok(())
    })?;
    Ok(())
}

/// Renders what a batch run at `time` would have produced, into `dir`, recording
/// nothing: the log as recorded up to `time`, the files recorded by then, and
/// `time` (whole seconds) as the creation time. With `test_marker` the files carry
/// `T` — `export --test` uses this with the current time.
pub fn render_as_of(
    ledger: &Ledger,
    request: &ExportRequest,
    time: DateTime<Utc>,
    test_marker: bool,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ExportedFile>, ExportError> {
    let time = time.with_nanosecond(0).unwrap_or(time);
    let cutoff = ledger.resolve(crate::ledger::AsOf::Time(time))?;
    let planned = plan(
        ledger,
        request,
        cutoff,
        to_naive(time.timestamp_micros()),
        test_marker,
    )?;
    progress.planned(planned.len(), planned.iter().map(|p| p.record_count).sum());
    render_all(ledger.dir(), planned, dir, progress)
}

/// The default outbox of a data directory.
pub fn default_outbox(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox")
}
