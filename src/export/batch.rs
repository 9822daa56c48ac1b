//! The batch export and its time machine: plan the next file of each kommune from
//! the log up to a cut-off, render them in parallel into temporary files, and
//! either publish them (`--as-of`, `--test`) or, for an official run, read each
//! back, record a `FileExported` event for each, and only then publish them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use uuid::Uuid;

use super::entries::{for_each_record, for_each_record_in};
use super::outbox::{
    sha256_of, sync_dir, Leftover, Outbox, PartialFile, StagedFile, Staging, WrittenFile,
};
use super::reconstruct::reconstruct;
use super::ExportError;
use crate::domain::{Event, FileExported, Kommune};
use crate::ledger::{EntryRange, Ledger, OfficialFile};
use crate::sf2520::{check_file, file_name, DetailRecord, FileHeader, FileSummary, FileWriter};

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct ExportRequest {
    /// Only these kommuner (all 98 when empty).
    pub kommuner: Vec<Kommune>,
    /// Also write start+end-only files for kommuner with nothing new.
    pub include_empty: bool,
    /// How long an official run waits for another that holds the export lock.
    pub lock_wait: Duration,
}

/// One file the run will render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub header: FileHeader,
    pub file_name: String,
    pub range: EntryRange,
    /// The entries in the range, from the kommune's totals.
    pub record_count: u64,
    /// Their net sum (withholdings plus signed corrections), from the same totals:
    /// what the rendered file must add up to.
    pub net_ore: i64,
}

/// A file rendered under its temporary name, not yet published.
pub struct RenderedFile {
    pub planned: PlannedFile,
    pub summary: FileSummary,
    pub staged: StagedFile,
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
    /// A file of `records` records was rendered.
    fn rendered(&self, _records: u64) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

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
        let previous = ledger.last_file_through(kommune, cutoff)?;
        let range = EntryRange {
            kommune,
            after_position: previous.as_ref().map_or(0, |file| file.cutoff_position),
            through_position: cutoff,
        };
        let totals = ledger.kommune_range_totals(kommune, range.after_position, cutoff)?;
        if totals.entries == 0 && !request.include_empty {
            continue;
        }
        let sequence = previous.map_or(1, |file| file.sequence + 1);
        let render_error = |source| ExportError::Render {
            kommune: kommune.code(),
            sequence,
            source,
        };
        planned.push(PlannedFile {
            header: FileHeader::exported(kommune, sequence, created_at, test_marker),
            file_name: file_name(kommune, created_at.date(), sequence).map_err(render_error)?,
            range,
            record_count: totals.entries,
            net_ore: totals.net_ore,
        });
    }
    Ok(planned)
}

/// Renders one planned file into `out` from the log.
pub fn render_into<W: Write>(
    ledger: &Ledger,
    planned: &PlannedFile,
    out: W,
) -> Result<(W, FileSummary), ExportError> {
    let render_error = |source| ExportError::Render {
        kommune: planned.range.kommune.code(),
        sequence: planned.header.sequence,
        source,
    };
    let mut writer = FileWriter::new(out, planned.header.clone()).map_err(render_error)?;
    for_each_record(ledger, planned.range, |record| {
        writer.write_detail(&record).map_err(render_error)
    })?;
    writer.finish().map_err(render_error)
}

/// Renders the planned files into `dir`, in parallel: one group of files per core
/// (per two cores on PostgreSQL), balanced by record count. Each group is
/// rendered in one sequential pass over the log (see [`for_each_record_in`])
/// rather than file by file, by two threads: one reads and decodes the log, the
/// other renders, hashes and writes.
pub fn render_all(
    ledger: &Ledger,
    planned: Vec<PlannedFile>,
    staging: &Staging,
    progress: &dyn Progress,
) -> Result<Vec<RenderedFile>, ExportError> {
    // Each group scans the whole log with two threads (reader and renderer). On
    // SQLite a group's reader skips other groups' events by their stream before
    // decoding them, so a group per core costs one more pass of stepping rows
    // (~7 % of the export's CPU) and halves each reader's decoding and opening,
    // which is what bounds the export (issue 24: 1.80 → 1.61 s, paired runs). On
    // PostgreSQL every group's query brings every row over the socket: one scan
    // for both cores there.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cores_per_group = if ledger.backend() == "PostgreSQL" {
        2
    } else {
        1
    };
    let groups = (cores / cores_per_group).clamp(1, planned.len().max(1));
    // A group with two cores to itself reads on one thread and renders on
    // another; a group with one core does both on its thread, without handing
    // each record over (issue 24: the hand-over cost more than it overlapped).
    let pipelined = cores >= 2 * groups;
    let groups = balance(&planned, groups, |file| file.record_count);
    // Each group's reader has a connection of its own.
    let readers = groups
        .iter()
        .map(|_| ledger.reader())
        .collect::<Result<Vec<_>, _>>()?;
    let results = Mutex::new(Vec::with_capacity(planned.len()));
    let failure: Mutex<Option<ExportError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for (group, reader) in groups.iter().zip(readers) {
            let (results, failure) = (&results, &failure);
            scope.spawn(move || {
                let outcome = (|| -> Result<(), ExportError> {
                    let exported = render_group(reader, group, staging, pipelined)?;
                    for file in &exported {
                        progress.rendered(file.summary.record_count);
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

/// Splits `items` into at most `workers` groups of about equal weight (records):
/// largest first, each into the lightest group so far.
fn balance<T>(items: &[T], workers: usize, weight: impl Fn(&T) -> u64) -> Vec<Vec<&T>> {
    let mut by_size: Vec<&T> = items.iter().collect();
    by_size.sort_by_key(|item| std::cmp::Reverse(weight(item)));
    /// One worker's share: its items and their summed weight.
    struct Group<'t, T> {
        weight: u64,
        items: Vec<&'t T>,
    }
    let mut groups: Vec<Group<'_, T>> = (0..workers.max(1))
        .map(|_| Group {
            weight: 0,
            items: Vec::new(),
        })
        .collect();
    for item in by_size {
        if let Some(lightest) = groups.iter_mut().min_by_key(|group| group.weight) {
            // Saturating: the weight only orders the groups, and a sum of record
            // counts beyond u64 cannot be rendered anyway.
            lightest.weight = lightest.weight.saturating_add(weight(item));
            lightest.items.push(item);
        }
    }
    groups
        .into_iter()
        .map(|group| group.items)
        .filter(|items| !items.is_empty())
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

/// Renders a group of files in one pass over the log: all are open at once, the
/// log is decoded into detail records, and each is written to its file's writer
/// (`pipelined`: a reader thread decodes, this thread writes); then each file is
/// fsynced under its temporary name.
fn render_group(
    ledger: Ledger,
    files: &[&PlannedFile],
    staging: &Staging,
    pipelined: bool,
) -> Result<Vec<RenderedFile>, ExportError> {
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
        .map(|file| PartialFile::create(staging, &file.file_name, GROUP_BUFFER_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    let mut writers = partials
        .iter_mut()
        .zip(files)
        .map(|(partial, file)| {
            FileWriter::new(partial.writer(), file.header.clone()).map_err(render_error(file))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ranges: Vec<(EntryRange, u64)> = files
        .iter()
        .map(|file| (file.range, file.record_count))
        .collect();
    let write = |index: usize, record: DetailRecord| {
        writers[index]
            .write_detail(&record)
            .map_err(render_error(files[index]))
    };
    if pipelined {
        read_on_a_thread(ledger, &ranges, write)?;
    } else {
        ledger.reading(|ledger| read_records(ledger, &ranges, write))?;
    }
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
    let mut rendered = Vec::with_capacity(files.len());
    for ((partial, file), summary) in partials.into_iter().zip(files).zip(summaries) {
        rendered.push(RenderedFile {
            planned: (*file).clone(),
            summary,
            staged: partial.finish()?,
        });
    }
    Ok(rendered)
}

/// [`read_records`] on a thread of its own, handing `write` (on this thread)
/// the records in chunks.
fn read_on_a_thread(
    ledger: Ledger,
    ranges: &[(EntryRange, u64)],
    mut write: impl FnMut(usize, DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
            ledger.reading(|ledger| {
                read_records(ledger, ranges, |index, record| {
                    chunk.push((index, record));
                    if chunk.len() == CHUNK_RECORDS {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS));
                        sender.send(full).map_err(|_| renderer_stopped())?;
                    }
                    Ok(())
                })
            })?;
            sender.send(chunk).map_err(|_| renderer_stopped())
        });
        let rendered = receiver.iter().try_for_each(|chunk| {
            chunk
                .into_iter()
                .try_for_each(|(index, record)| write(index, record))
        });
        // A failed renderer stops the reader: its next send finds no receiver.
        drop(receiver);
        let read = reader
            .join()
            .map_err(|_| ExportError::Worker("the log reader panicked".into()))?;
        rendered.and(read)
    })
}

/// The reader of [`render_group`]: the ranges' detail records, to `emit`. Ranges
/// whose few entries lie far back in the log are read through the index (see
/// [`by_index`]); the rest in one sequential pass.
fn read_records(
    ledger: &Ledger,
    ranges: &[(EntryRange, u64)],
    mut emit: impl FnMut(usize, DetailRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut since_check = 0usize;
    let mut emit = |index: usize, record: DetailRecord| -> Result<(), ExportError> {
        since_check += 1;
        if since_check == CHUNK_RECORDS {
            since_check = 0;
            crate::interrupt::check()?;
        }
        emit(index, record)
    };
    let indexed = by_index(ranges);
    let mut shared = Vec::new();
    let mut shared_index = Vec::new();
    for (index, (range, _)) in ranges.iter().enumerate() {
        if indexed.contains(&index) {
            for_each_record(ledger, *range, |record| emit(index, record))?;
        } else {
            shared.push(*range);
            shared_index.push(index);
        }
    }
    for_each_record_in(ledger, &shared, |at, record| emit(shared_index[at], record))
}

fn renderer_stopped() -> ExportError {
    ExportError::Worker("the renderer stopped".into())
}

/// How many log positions a sequential pass reads in the time one entry takes
/// through the (kommune, position) index (an index lookup, then its event by
/// position): measured with `cargo bench --bench peers` (the quiet kommune case)
/// at about 5-10; the lower bound keeps a busy range in the shared pass.
const INDEX_COST_IN_POSITIONS: u64 = 8;

/// Which of `ranges` (range, entries) to read through the index rather than in
/// the shared pass: the pass reads every position from the oldest range's start,
/// so a kommune quiet for a long time (its previous file long ago) would make it
/// read years of log for a few entries. Taking the oldest range out saves the
/// positions between its start and the next one's (or its whole span when it is
/// the last); it is taken out while that saving is worth more than its entries
/// read one by one.
fn by_index(ranges: &[(EntryRange, u64)]) -> Vec<usize> {
    let start = |index: usize| {
        let (range, _) = &ranges[index];
        range.after_position
    };
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&index| start(index));
    let through = ranges
        .iter()
        .map(|(range, _)| range.through_position)
        .fold(0, u64::max);
    let mut chosen = Vec::new();
    for (at, &index) in order.iter().enumerate() {
        let (range, entries) = &ranges[index];
        let next_start = order.get(at + 1).map_or(through, |&next| start(next));
        let saved = next_start.saturating_sub(range.after_position);
        if entries.saturating_mul(INDEX_COST_IN_POSITIONS) < saved {
            chosen.push(index);
        } else {
            break;
        }
    }
    chosen
}

/// The official batch export, under the data directory's export lock for its
/// whole length:
/// 1. fix the cut-off ([`Ledger::fix_cutoff`], a write: it waits for any write in
///    flight, so the register read next is complete);
/// 2. claim the outbox (refused if another ledger's, or if it holds SF2520 files
///    this ledger did not write) and finish what interrupted runs left;
/// 3. render the next file of each kommune with new entries (løbenummer =
///    previous + 1) under temporary names, fsynced;
/// 4. read each back through the strict reader and compare it with the ledger;
/// 5. record a `FileExported` for each in one durable transaction;
/// 6. only then rename each to its official name.
///
/// Killed at any moment, the outbox holds under official names only recorded
/// files with their recorded bytes; a re-run publishes what step 6 did not reach
/// and renders afresh what step 5 did not record.
pub fn run_batch(
    ledger: &mut Ledger,
    request: &ExportRequest,
    outbox_dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ExportedFile>, ExportError> {
    let lock = ledger.lock_exports(request.lock_wait)?;
    let ledger_id = ledger.ledger_id()?;
    // First: fixing the cut-off is a write, so it waits for any write still in
    // flight, such as a killed run's record whose commit outlives its client on
    // PostgreSQL (a COMMIT waiting for a synchronous standby). Only then does the
    // register below list every file an earlier run recorded; read before, it
    // could miss some, and their files would be quarantined.
    let cutoff = ledger.fix_cutoff()?;
    let recorded: HashMap<String, [u8; 32]> = ledger
        .official_files(None)?
        .into_iter()
        .map(|file| (file.event.file_name, file.event.sha256))
        .collect();
    let mut outbox = Outbox::claim(outbox_dir, ledger_id, &lock, &recorded)?;
    finish_interrupted(ledger, &mut outbox)?;
    crate::interrupt::check()?;
    let planned = plan(
        ledger,
        request,
        cutoff.position,
        cutoff.created_at.naive_utc(),
        false,
    )?;
    progress.planned(planned.len(), planned.iter().map(|p| p.record_count).sum());
    let mut rendered = render_all(ledger, planned, outbox.staging(), progress)?;
    crate::interrupt::check()?;
    read_back_all(&rendered)?;
    crate::interrupt::check()?;
    let file_ids = record_settled(ledger, &mut rendered, cutoff.position)?;
    // Recorded: from here on the run finishes, whatever signal arrives; a kill
    // or a failed rename leaves temporary files that the next run publishes.
    let exported = publish(rendered, file_ids.into_iter().map(Some))?;
    sync_dir(outbox.dir())?;
    Ok(exported)
}

/// Publishes rendered files under their official names.
fn publish(
    rendered: Vec<RenderedFile>,
    file_ids: impl Iterator<Item = Option<Uuid>>,
) -> Result<Vec<ExportedFile>, ExportError> {
    rendered
        .into_iter()
        .zip(file_ids)
        .map(|(file, file_id)| {
            Ok(ExportedFile {
                planned: file.planned,
                summary: file.summary,
                written: file.staged.publish()?,
                file_id,
            })
        })
        .collect()
}

/// Records the rendered files ([`record`]), and settles a record that failed by
/// asking the register whether it was written: not written, the temporary files
/// are removed as the error returns; written after all (a commit whose answer
/// was lost with the connection), the run goes on to publish them; unknown (the
/// register cannot be read either), the temporary files are kept, and the next
/// run publishes or quarantines them by what the register says then. A recorded
/// file's temporary file is never removed unpublished: it is how the next run
/// tells a file still to publish from one published and since taken away.
fn record_settled(
    ledger: &mut Ledger,
    rendered: &mut [RenderedFile],
    cutoff: u64,
) -> Result<Vec<Uuid>, ExportError> {
    for file in rendered.iter_mut() {
        file.staged.keep_when_dropped(true);
    }
    let error = match record(ledger, rendered, cutoff) {
        Ok(ids) => return Ok(ids),
        Err(error) => error,
    };
    match recorded_ids(ledger, rendered) {
        Ok(Some(ids)) if ids.is_empty() => {
            for file in rendered.iter_mut() {
                file.staged.keep_when_dropped(false);
            }
            Err(error)
        }
        Ok(Some(ids)) => {
            tracing::warn!(%error, "recording the files reported an error, but the register holds them: publishing them");
            Ok(ids)
        }
        unknown => {
            let check = unknown.err().map(|check| check.to_string());
            tracing::warn!(%error, ?check, "recording the files failed and the register cannot tell whether the record was written; their temporary files stay for the next export to publish (if recorded) or quarantine");
            Err(error)
        }
    }
}

/// The ids of the rendered files if the register holds every one of them (by
/// name and SHA-256), an empty list if it holds none, and `None` if it holds
/// some but not all (which one transaction cannot leave: the outcome is unknown).
fn recorded_ids(
    ledger: &Ledger,
    rendered: &[RenderedFile],
) -> Result<Option<Vec<Uuid>>, ExportError> {
    let register: HashMap<String, ([u8; 32], [u8; 16])> = ledger
        .official_files(None)?
        .into_iter()
        .map(|file| {
            (
                file.event.file_name,
                (file.event.sha256, file.event.file_id),
            )
        })
        .collect();
    let found: Vec<Uuid> = rendered
        .iter()
        .filter_map(|file| match register.get(&file.planned.file_name) {
            Some((sha256, id)) if *sha256 == file.staged.sha256 => Some(Uuid::from_bytes(*id)),
            _ => None,
        })
        .collect();
    Ok((found.is_empty() || found.len() == rendered.len()).then_some(found))
}

/// Finishes what this ledger's interrupted runs left in the outbox. Only a
/// run's own temporary files say what is unfinished: a recorded file whose
/// temporary file is still there was never published, and is published from it
/// when it holds the recorded bytes (a run killed between recording and
/// renaming), or else rendered again from the log and checked against its event;
/// a leftover never recorded goes to quarantine. A recorded file with no
/// temporary file was published, and if it is not in the outbox it was taken
/// away after (a transfer agent, an operator archiving): it is not put back
/// (`verify --outbox` and `status` name it; `reissue` puts it back on purpose).
fn finish_interrupted(ledger: &Ledger, outbox: &mut Outbox<'_>) -> Result<(), ExportError> {
    let leftovers = outbox.take_leftovers();
    if leftovers.is_empty() {
        return Ok(());
    }
    let recorded: HashMap<String, OfficialFile> = ledger
        .official_files(None)?
        .into_iter()
        .map(|file| (file.file_name.clone(), file))
        .collect();
    for leftover in leftovers {
        let unpublished = recorded
            .get(&leftover.name)
            .filter(|file| !outbox.dir().join(&file.file_name).exists());
        match unpublished {
            Some(file) => finish_recorded(ledger, outbox, &leftover, file)?,
            None => {
                outbox.quarantine(&leftover.path)?;
            }
        }
    }
    sync_dir(outbox.dir())
}

/// Publishes a recorded file that an interrupted run left under its temporary
/// name: from that file if it holds the recorded bytes, else rendered again from
/// the log and checked against its event (the damaged temporary file goes to
/// quarantine).
fn finish_recorded(
    ledger: &Ledger,
    outbox: &Outbox<'_>,
    leftover: &Leftover,
    file: &OfficialFile,
) -> Result<(), ExportError> {
    if sha256_of(&leftover.path)? == file.sha256 {
        outbox.publish_leftover(&leftover.path, &leftover.name)?;
        tracing::warn!(file = %leftover.name, "published an official file that an interrupted run had recorded but not yet renamed");
        return Ok(());
    }
    let rebuilt = reconstruct(ledger, file.kommune, file.sequence)?;
    if !rebuilt.matches() {
        return Err(ExportError::ReadBack {
            kommune: file.kommune.code(),
            sequence: file.sequence,
            what: "recorded but never published, its temporary file damaged, and the log no longer renders its recorded SHA-256; run `sf2520 verify`".into(),
        });
    }
    outbox.put(&file.file_name, &rebuilt.bytes)?;
    tracing::warn!(file = %file.file_name, "an interrupted run recorded this file but its temporary file was damaged; rendered it again from the log (the same SHA-256 as recorded) and published it");
    outbox.quarantine(&leftover.path)?;
    Ok(())
}

/// Reads every rendered file back ([`read_back`]) on all cores, the files
/// balanced by record count.
fn read_back_all(rendered: &[RenderedFile]) -> Result<(), ExportError> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shares = balance(rendered, workers, |file| file.planned.record_count);
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .map(|files| scope.spawn(move || files.iter().try_for_each(|file| read_back(file))))
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle
                .join()
                .map_err(|_| ExportError::Worker("a read-back worker panicked".into()))?
        })
    })
}

/// Reads a rendered file back through the strict reader (as UDK would) and
/// checks it against the plan, which came from the ledger's totals: the whole
/// start record (so both its times are the creation time, decision 0009),
/// record count and net sum, and the writer's own sums.
fn read_back(file: &RenderedFile) -> Result<(), ExportError> {
    let planned = &file.planned;
    let mismatch = |what: String| ExportError::ReadBack {
        kommune: planned.range.kommune.code(),
        sequence: planned.header.sequence,
        what,
    };
    let path = file.staged.temporary();
    let bytes = std::fs::read(path).map_err(ExportError::io("cannot read back", path))?;
    let parsed = check_file(&bytes)
        .map_err(|errors| mismatch(format!("it fails the strict reader: {errors}")))?;
    let (header, end) = (&parsed.header, &parsed.end);
    if *header != planned.header {
        return Err(mismatch(format!(
            "the start record reads {header:?}, but the plan is {:?}",
            planned.header
        )));
    }
    // The header's kommune and løbenummer are checked above, with the rest of it.
    let checks: [(&str, i128, i128); 5] = [
        (
            "record count",
            end.record_count.into(),
            planned.record_count.into(),
        ),
        (
            "detail records",
            parsed.detail_records.into(),
            planned.record_count.into(),
        ),
        ("net øre", end.net_ore.into(), planned.net_ore.into()),
        (
            "plus øre",
            end.plus_ore.into(),
            file.summary.plus_ore.into(),
        ),
        (
            "minus øre",
            end.minus_ore.into(),
            file.summary.minus_ore.into(),
        ),
    ];
    for (what, read, expected) in checks {
        if read != expected {
            return Err(mismatch(format!(
                "{what}: the file says {read}, the ledger {expected}"
            )));
        }
    }
    Ok(())
}

/// Appends a `FileExported` for each file in one transaction, refusing if
/// another run recorded one of their løbenumre first. Returns the files' ids.
fn record(
    ledger: &mut Ledger,
    rendered: &[RenderedFile],
    cutoff: u64,
) -> Result<Vec<Uuid>, ExportError> {
    let mut ids = Vec::with_capacity(rendered.len());
    let refused = ledger.write(|appender| {
        // A repeat after a lost connection (PostgreSQL) starts over: the ids of a
        // try that did not commit were never recorded.
        ids.clear();
        for file in rendered {
            let kommune = file.planned.range.kommune;
            let sequence = file.planned.header.sequence;
            if appender.sequence_taken(kommune, sequence)? {
                return Ok(Some((kommune, sequence)));
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
                sha256: file.staged.sha256,
            }))?;
            ids.push(file_id);
        }
        Ok(None)
    })?;
    match refused {
        Some((kommune, sequence)) => Err(ExportError::ConcurrentExport {
            kommune: kommune.code(),
            sequence,
        }),
        None => Ok(ids),
    }
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
    let staging = Staging::plain(dir)?;
    let planned = plan(ledger, request, cutoff, time.naive_utc(), test_marker)?;
    progress.planned(planned.len(), planned.iter().map(|p| p.record_count).sum());
    let rendered = render_all(ledger, planned, &staging, progress)?;
    let written = publish(rendered, std::iter::repeat(None))?;
    sync_dir(dir)?;
    Ok(written)
}

/// The default outbox of a data directory.
pub fn default_outbox(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgreementRef, Amount, Cpr, EntryKind, KyRef};

    /// A file of two withholdings rendered under its temporary name, and its plan.
    fn rendered(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> RenderedFile {
        let kommune = Kommune::parse("0101").unwrap();
        let created_at = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        let header = FileHeader::exported(kommune, 3, created_at, false);
        let date = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let record = |reference: &str, ore: i64| DetailRecord {
            cpr: Cpr::parse("0101901234").unwrap(),
            agreement: AgreementRef::parse("BA-1").unwrap(),
            kind: EntryKind::Withholding,
            payout_date: date,
            period_from: date,
            period_to: date,
            amount: Amount::from_ore(ore).unwrap(),
            reference: KyRef::parse(reference).unwrap(),
            corrects: None,
        };
        let mut bytes = Vec::new();
        let mut writer = FileWriter::new(&mut bytes, header.clone()).unwrap();
        writer.write_detail(&record("KY-1", 10_000)).unwrap();
        writer.write_detail(&record("KY-2", 2_550)).unwrap();
        let (_, summary) = writer.finish().unwrap();
        damage(&mut bytes);
        let name = "SF2520_0101_20261201_000003.txt";
        let mut partial = PartialFile::create(&Staging::plain(dir).unwrap(), name, 4096).unwrap();
        partial.writer().write_all(&bytes).unwrap();
        RenderedFile {
            planned: PlannedFile {
                header,
                file_name: name.into(),
                range: EntryRange {
                    kommune,
                    after_position: 0,
                    through_position: 9,
                },
                record_count: 2,
                net_ore: 12_550,
            },
            summary,
            staged: partial.finish().unwrap(),
        }
    }

    #[test]
    fn the_read_back_passes_a_file_that_agrees_with_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        read_back(&rendered(dir.path(), |_| {})).unwrap();
    }

    #[test]
    fn the_read_back_refuses_a_file_that_disagrees_with_the_ledger_or_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = rendered(dir.path(), |_| {});
        file.planned.net_ore += 1;
        let error = read_back(&file).unwrap_err().to_string();
        assert!(
            error.contains("net øre: the file says 12550, the ledger 12551"),
            "{error}"
        );
        let mut file = rendered(dir.path(), |_| {});
        file.planned.record_count = 3;
        let error = read_back(&file).unwrap_err().to_string();
        assert!(error.contains("record count"), "{error}");
        // A byte of the second record's amount changed on its way to the disk.
        let file = rendered(dir.path(), |bytes| {
            let at = bytes.len() - 2 * 130 - 30;
            bytes[at] = b'X';
        });
        let error = read_back(&file).unwrap_err().to_string();
        assert!(error.contains("fails the strict reader"), "{error}");
    }

    // Our files carry their creation time as their as-of time too (decision 0009);
    // a file whose start record says otherwise is valid SF2520 but not the file
    // the ledger planned, so it is never recorded.
    #[test]
    fn the_read_back_refuses_a_file_whose_as_of_time_is_not_its_creation_time() {
        let dir = tempfile::tempdir().unwrap();
        // Positions 37–50 of the start record: 20261201023000 becomes ...022959.
        let file = rendered(dir.path(), |bytes| {
            bytes[36..50].copy_from_slice(b"20261201022959");
        });
        let error = read_back(&file).unwrap_err().to_string();
        assert!(error.contains("the start record reads"), "{error}");
        assert!(error.contains("as_of: 2026-12-01T02:29:59"), "{error}");
    }
}
