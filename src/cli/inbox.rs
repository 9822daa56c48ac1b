//! `sf2520 ingest --inbox DIR`: every complete KY file waiting in a directory,
//! in name order; accepted files move to `DIR/archive/`, rejected ones to
//! `DIR/rejected/` with their errors beside them.
//!
//! KY's group can write the inbox, so nothing in it is trusted:
//! - Only complete files are taken. A writer should write `.NAME.jsonl.tmp` (a
//!   hidden name, never read) and rename it to `NAME.jsonl` when it is whole. A
//!   file written in place is taken only when it ends with a newline and is
//!   unchanged (size, modification time and the SHA-256 of what was read) from
//!   the read to the move; otherwise it is left for the next run, and one that
//!   stays without its final newline for [`INCOMPLETE_STUCK_AFTER`] is moved to
//!   `rejected/` and reported.
//! - A symbolic link, FIFO, directory or anything else named `*.jsonl` that is
//!   not a regular file is never opened (a FIFO would block the run): it is moved
//!   to `rejected/` and reported.
//! - Nothing is followed: the lock file, `archive/` and `rejected/` planted as
//!   links are refused (`ledger::nofollow`), and moves go through directory
//!   handles. Names are escaped when printed (`output::for_terminal`).
//!
//! One run at a time: `DIR/.sf2520-inbox.lock` is locked (flock) for the run and
//! holds the holder's pid and start time, which a second run quotes. A crash
//! between a file's commit and its move leaves it in the inbox; the next run
//! finds every line already recorded (duplicates) and archives it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::bail;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::ingest::{ingest_lines, IngestOutcome};
use crate::ledger::{nofollow, try_lock_named, HeldLock, IngestMode, Ledger, LockAttempt};

use super::exit::Exit;
use super::ingest::{ingest_error, os_error, outcome_json, print_outcome};
use super::output::{for_terminal as printable, time_us};
use super::IngestArgs;

/// The lock file inside the inbox.
pub(super) const LOCK_FILE: &str = ".sf2520-inbox.lock";

/// How long a file may stay without its final newline before it counts as
/// abandoned (its writer died) and is set aside in `rejected/`.
pub(super) const INCOMPLETE_STUCK_AFTER: Duration = Duration::from_secs(60 * 60);

/// Archived or rejected names tried (`NAME`, `NAME.1`, …) before giving up.
const FREE_NAMES_MAX: u32 = 10_000;

/// Takes the inbox's lock without waiting; a held lock is an error naming the
/// holder as it wrote itself into the lock file.
fn lock(dir: &Path) -> anyhow::Result<HeldLock> {
    let path = dir.join(LOCK_FILE);
    match try_lock_named(&path).map_err(|error| os_error("lock", &path, "write", &error))? {
        LockAttempt::Taken(lock) => Ok(lock),
        LockAttempt::Busy { holder } => bail!(
            "another `sf2520 ingest --inbox` is working on {} (lock {} held by {}); \
             nothing was done. Run again when it has finished",
            printable(&dir.display().to_string()),
            printable(&path.display().to_string()),
            printable(&holder)
        ),
    }
}

/// One name in the inbox that ends in `.jsonl` and does not start with a dot.
struct Waiting {
    name: OsString,
    /// What it is when it is not a regular file ("a symbolic link", …).
    not_a_file: Option<&'static str>,
}

impl Waiting {
    /// The name as text (for JSON, which escapes it itself).
    fn raw(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    /// The name as printed: escaped, whatever bytes it holds.
    fn shown(&self) -> String {
        printable(&self.raw())
    }
}

/// What a directory entry is, when it is not a regular file.
fn kind_of(file_type: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        None
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    }
}

/// Every `*.jsonl` name not starting with a dot, in byte order, with what it is
/// (from the directory listing: nothing is followed or opened).
fn waiting_entries(dir: &Path) -> anyhow::Result<Vec<Waiting>> {
    let entries = fs::read_dir(dir).map_err(|error| os_error("list", dir, "read", &error))?;
    let mut waiting = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| os_error("list", dir, "read", &error))?;
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".jsonl") {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|error| os_error("inspect", &entry.path(), "read", &error))?;
        waiting.push(Waiting {
            not_a_file: kind_of(file_type),
            name,
        });
    }
    waiting.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(waiting)
}

/// The inbox and its two folders, opened without following links.
struct Inbox {
    dir: PathBuf,
    handle: File,
    archive: File,
    rejected: File,
}

impl Inbox {
    fn open(dir: &Path) -> anyhow::Result<Inbox> {
        let folder = |name: &str| -> anyhow::Result<File> {
            let path = dir.join(name);
            nofollow::private_dir(&path)
                .and_then(|()| nofollow::open_dir(&path))
                .map_err(|error| os_error("use", &path, "write", &error))
        };
        Ok(Inbox {
            handle: File::open(dir).map_err(|error| os_error("open", dir, "read", &error))?,
            archive: folder("archive")?,
            rejected: folder("rejected")?,
            dir: dir.to_path_buf(),
        })
    }

    /// Moves `name` into `folder` (`archive` or `rejected`) under a name not yet
    /// taken there (`NAME`, else `NAME.1`, …: nothing archived is overwritten),
    /// and makes the move durable. Returns the new name.
    fn move_into(&self, name: &OsStr, folder: &str) -> anyhow::Result<OsString> {
        let target_dir = if folder == "archive" {
            &self.archive
        } else {
            &self.rejected
        };
        let from = self.dir.join(name);
        for counter in 0..FREE_NAMES_MAX {
            let mut target = name.to_os_string();
            if counter > 0 {
                target.push(format!(".{counter}"));
            }
            match nofollow::move_no_replace(&self.handle, name, target_dir, &target) {
                Ok(()) => {
                    for synced in [target_dir, &self.handle] {
                        synced
                            .sync_all()
                            .map_err(|error| os_error("sync", &self.dir, "read", &error))?;
                    }
                    return Ok(target);
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(os_error("move", &from, "write", &error)),
            }
        }
        bail!(
            "cannot move {} into {folder}/: {FREE_NAMES_MAX} names taken there",
            printable(&from.display().to_string())
        )
    }

    /// `DIR/folder/name`, for messages.
    fn path(&self, folder: &str, name: &OsStr) -> PathBuf {
        self.dir.join(folder).join(name)
    }

    /// Writes `NAME.errors.txt` and `NAME.errors.json` beside a rejected file.
    fn write_errors(&self, rejected: &OsStr, text: &str, json: &Value) -> anyhow::Result<()> {
        for (suffix, content) in [
            (".errors.txt", text.to_owned()),
            (".errors.json", format!("{json}\n")),
        ] {
            let mut name = rejected.to_os_string();
            name.push(suffix);
            nofollow::create_in(&self.rejected, &name)
                .and_then(|mut file| file.write_all(content.as_bytes()))
                .map_err(|error| {
                    os_error("write", &self.path("rejected", &name), "write", &error)
                })?;
        }
        Ok(())
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += u64::try_from(read).map_err(io::Error::other)?;
        Ok(read)
    }
}

/// What was read of a file: its size and modification time when it was opened,
/// and the SHA-256 of the bytes read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReadState {
    size: u64,
    modified: SystemTime,
    sha256: [u8; 32],
}

/// The SHA-256 and length of everything `file` holds now, from its start.
fn hash_now(file: &File) -> io::Result<([u8; 32], u64)> {
    let mut reader = file;
    reader.rewind()?;
    let mut hashing = Hashing {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
    };
    io::copy(&mut hashing, &mut io::sink())?;
    Ok((hashing.hasher.finalize().into(), hashing.bytes))
}

/// Whether `file` is still what was read: the same size and modification time,
/// and the same bytes (a writer that keeps the size, or sets the time back, is
/// caught by the hash).
fn unchanged(file: &File, read: &ReadState) -> io::Result<bool> {
    let metadata = file.metadata()?;
    if metadata.len() != read.size || metadata.modified()? != read.modified {
        return Ok(false);
    }
    let (sha256, bytes) = hash_now(file)?;
    Ok(bytes == read.size && sha256 == read.sha256)
}

/// Whether a file of `size` bytes ends with a newline (an empty one does not).
fn ends_with_newline(file: &File, size: u64) -> io::Result<bool> {
    let Some(last) = size.checked_sub(1) else {
        return Ok(false);
    };
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, last)?;
    Ok(byte[0] == b'\n')
}

/// What became of one waiting name.
enum Taken {
    /// Read whole and ingested (committed or rejected); the file is unchanged.
    Ingested(IngestOutcome),
    /// Not a regular file: never opened.
    NotAFile(&'static str),
    /// Without its final newline, last modified at that time.
    Incomplete(SystemTime),
    /// Changed between the read and the move: read again by the next run.
    Changed(IngestOutcome),
}

/// Opens, checks and ingests one waiting file (see the module's doc).
fn take(ledger: &mut Ledger, path: &Path) -> anyhow::Result<Taken> {
    let file = match nofollow::open(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        // Swapped for a link since the listing.
        Err(error) if nofollow::is_link_refusal(&error) => {
            return Ok(Taken::NotAFile("a symbolic link"))
        }
        Err(error) => return Err(os_error("open", path, "read", &error)),
    };
    let metadata = file
        .metadata()
        .map_err(|error| os_error("inspect", path, "read", &error))?;
    if let Some(kind) = kind_of(metadata.file_type()) {
        return Ok(Taken::NotAFile(kind));
    }
    let read_error = |error: io::Error| os_error("read", path, "read", &error);
    let modified = metadata.modified().map_err(read_error)?;
    let size = metadata.len();
    if !ends_with_newline(&file, size).map_err(read_error)? {
        return Ok(Taken::Incomplete(modified));
    }
    let mut reader = BufReader::new(Hashing {
        inner: (&file).take(size),
        hasher: Sha256::new(),
        bytes: 0,
    });
    let outcome = ingest_lines(ledger, &mut reader, IngestMode::Commit)
        .map_err(|error| ingest_error(path, error))?;
    // Whatever the parser left unread counts too: the hash is of the whole file.
    io::copy(&mut reader, &mut io::sink()).map_err(read_error)?;
    let read = ReadState {
        size,
        modified,
        sha256: reader.into_inner().hasher.finalize().into(),
    };
    let taken = if unchanged(&file, &read).map_err(read_error)? {
        Taken::Ingested(outcome)
    } else {
        Taken::Changed(outcome)
    };
    Ok(taken)
}

/// Counts of one run, for the summary line and the exit code.
#[derive(Default)]
struct Counts {
    names: usize,
    accepted: usize,
    rejected: usize,
    left: usize,
}

/// The text and JSON of one name's outcome, and where it went.
struct Report {
    text: Vec<u8>,
    document: Value,
}

impl Report {
    fn line(waiting: &Waiting, outcome: &str, what: String) -> Report {
        Report {
            text: format!("{}: {what}\n", waiting.shown()).into_bytes(),
            document: json!({"file": waiting.raw(), "outcome": outcome, "reason": what}),
        }
    }
}

fn age(modified: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO)
}

fn time_text(time: SystemTime) -> String {
    let us = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_micros()).ok());
    us.map_or_else(|| "an unknown time".into(), time_us)
}

/// What to do with one waiting name: its report, and the folder it moves to
/// (`None`: it stays in the inbox for the next run).
fn decide(
    ledger: &mut Ledger,
    inbox: &Inbox,
    waiting: &Waiting,
    verbose: bool,
) -> anyhow::Result<(Report, Option<&'static str>)> {
    let taken = match waiting.not_a_file {
        Some(kind) => Taken::NotAFile(kind),
        None => take(ledger, &inbox.dir.join(&waiting.name))?,
    };
    Ok(match taken {
        Taken::NotAFile(kind) => (
            Report::line(
                waiting,
                "not_a_file",
                format!("not a regular file but {kind}; never opened, nothing ingested"),
            ),
            Some("rejected"),
        ),
        Taken::Incomplete(modified) => {
            let why = format!(
                "incomplete: it does not end with a newline (last written {})",
                time_text(modified)
            );
            if age(modified) < INCOMPLETE_STUCK_AFTER {
                let why = format!("{why}; nothing ingested, left in the inbox for the next run");
                (Report::line(waiting, "incomplete", why), None)
            } else {
                let why = format!(
                    "{why}, unchanged for over {} min: its writer seems to have stopped; nothing ingested",
                    INCOMPLETE_STUCK_AFTER.as_secs() / 60
                );
                (Report::line(waiting, "incomplete", why), Some("rejected"))
            }
        }
        Taken::Changed(outcome) => {
            let mut report = outcome_report(waiting, &outcome, verbose)?;
            let why = "changed while it was read (size, time or content): left in the inbox; \
                       the next run reads it again, and lines already recorded are duplicates";
            report
                .text
                .extend_from_slice(format!("{}: {why}\n", waiting.shown()).as_bytes());
            report.document["left_in_inbox"] = json!(why);
            (report, None)
        }
        Taken::Ingested(outcome) => {
            let folder = match outcome {
                IngestOutcome::Committed(_) => "archive",
                _ => "rejected",
            };
            (outcome_report(waiting, &outcome, verbose)?, Some(folder))
        }
    })
}

/// Handles one waiting name: ingests and moves it, sets it aside, or leaves it.
fn handle(
    ledger: &mut Ledger,
    inbox: &Inbox,
    waiting: &Waiting,
    verbose: bool,
    counts: &mut Counts,
) -> anyhow::Result<Report> {
    let (mut report, folder) = decide(ledger, inbox, waiting, verbose)?;
    let Some(folder) = folder else {
        counts.left += 1;
        return Ok(report);
    };
    let moved = inbox.move_into(&waiting.name, folder)?;
    if folder == "rejected" {
        counts.rejected += 1;
        inbox.write_errors(
            &moved,
            &String::from_utf8_lossy(&report.text),
            &report.document,
        )?;
    } else {
        counts.accepted += 1;
    }
    let moved = inbox.path(folder, &moved).display().to_string();
    report.document["moved_to"] = json!(moved);
    report.text.extend_from_slice(
        format!("{}: moved to {}\n", waiting.shown(), printable(&moved)).as_bytes(),
    );
    Ok(report)
}

fn outcome_report(
    waiting: &Waiting,
    outcome: &IngestOutcome,
    verbose: bool,
) -> anyhow::Result<Report> {
    if matches!(outcome, IngestOutcome::Checked(_)) {
        bail!(
            "{}: an inbox run commits, but its ingest came back as a dry run; \
             this is a bug in sf2520. The file was left in the inbox",
            waiting.shown()
        );
    }
    super::ingest::log_outcome(&waiting.raw(), outcome);
    let mut text = Vec::new();
    // print_outcome escapes the name itself.
    print_outcome(&mut text, &waiting.raw(), outcome, verbose)?;
    Ok(Report {
        text,
        document: outcome_json(&waiting.raw(), outcome, verbose),
    })
}

pub(super) fn run(ledger: &mut Ledger, dir: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let shown_dir = printable(&dir.display().to_string());
    if !dir.is_dir() {
        bail!(
            "inbox {shown_dir} is not a directory; create it (writable by KY's transfer, readable by sf2520)"
        );
    }
    let _lock = lock(dir)?;
    let inbox = Inbox::open(dir)?;
    let mut documents = Vec::new();
    let mut counts = Counts::default();
    for waiting in waiting_entries(dir)? {
        counts.names += 1;
        let report = handle(ledger, &inbox, &waiting, args.verbose, &mut counts)?;
        if !args.json {
            let mut out = io::stdout().lock();
            out.write_all(&report.text)?;
            out.flush()?;
        }
        documents.push(report.document);
    }
    let Counts {
        names,
        accepted,
        rejected,
        left,
    } = counts;
    tracing::info!(
        inbox = %shown_dir,
        files = names,
        accepted,
        rejected,
        left,
        head = %crate::audit::Anchor::of(&ledger.head()?),
        "inbox run finished"
    );
    if args.json {
        writeln!(
            io::stdout().lock(),
            "{}",
            json!({"inbox": dir.display().to_string(), "files": documents,
                   "rejected": rejected, "left_for_next_run": left})
        )?;
    } else {
        writeln!(
            io::stdout().lock(),
            "inbox {shown_dir}: {names} file(s), {accepted} accepted, {rejected} rejected, \
             {left} left for the next run"
        )?;
    }
    Ok(if rejected > 0 {
        Exit::InputRejected.into()
    } else {
        Exit::Success.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file appended to between its read and its move is not taken: the
    /// check compares size, time and the hash of what was read.
    #[test]
    fn a_file_changed_after_it_was_read_is_not_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        fs::write(&path, b"{\"line\": 1}\n").unwrap();
        let file = File::open(&path).unwrap();
        let metadata = file.metadata().unwrap();
        let (sha256, size) = hash_now(&file).unwrap();
        let read = ReadState {
            size,
            modified: metadata.modified().unwrap(),
            sha256,
        };
        assert!(ends_with_newline(&file, size).unwrap());
        assert!(unchanged(&file, &read).unwrap());
        // Appended in place: a larger size.
        let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
        writer.write_all(b"{\"line\": 2}\n").unwrap();
        assert!(!unchanged(&file, &read).unwrap());
        // Rewritten to the same size with the time set back: the hash tells.
        fs::write(&path, b"{\"line\": 9}\n").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(read.modified)
            .unwrap();
        assert_eq!(file.metadata().unwrap().len(), read.size);
        assert!(!unchanged(&file, &read).unwrap());
    }

    #[test]
    fn a_file_without_its_final_newline_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, complete) in [(&b""[..], false), (b"{}", false), (b"{}\n", true)] {
            let path = dir.path().join("a.jsonl");
            fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            let size = file.metadata().unwrap().len();
            assert_eq!(
                ends_with_newline(&file, size).unwrap(),
                complete,
                "{bytes:?}"
            );
        }
    }
}
