//! The data directory's own files beside the database: who may use a directory
//! (its owner, nobody else), the export lock with its holder, the mark of the
//! last committed head kept outside the database, and the note naming the
//! current writer for anyone left waiting on it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use super::nofollow;
use super::store::Head;
use super::LedgerError;

/// The lock every run that writes official files holds for its whole length.
pub const EXPORT_LOCK_FILE: &str = "export.lock";
/// The last head this data directory committed (see [`advance_mark`]).
pub const HEAD_MARK_FILE: &str = "ledger.head";
/// Who holds the database's write lock now (see [`note_writer`]).
pub const WRITER_NOTE_FILE: &str = "ledger.writer";
/// The outcome of the last `sf2520 verify`, for `status --check`.
pub const VERIFY_RECORD_FILE: &str = "verify.last";

/// The most of a small record file [`read_small_file`] reads.
const SMALL_FILE_MAX: u64 = 64 * 1024;

/// How often a waiting run tries a held lock again, and says that it waits.
const LOCK_RETRY: Duration = Duration::from_millis(100);
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(5);

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError {
    let path = path.to_path_buf();
    move |source| LedgerError::Io {
        action,
        path,
        source,
    }
}

/// The effective user id of this process.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

/// Refuses a directory that the running user does not own, or that group or
/// others may use: the ledger and the outbox hold full CPR numbers, and a
/// directory owned by someone else (root running a command in the service
/// user's directory, say) would leave files behind that the owner cannot open.
pub fn check_private_dir(path: &Path) -> Result<(), LedgerError> {
    let metadata = fs::metadata(path).map_err(io_error("inspect", path))?;
    if !metadata.is_dir() {
        return Err(LedgerError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let (owner, uid) = (metadata.uid(), effective_uid());
    if owner != uid {
        return Err(LedgerError::NotOwner {
            path: path.to_path_buf(),
            owner,
            uid,
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LedgerError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            directory: true,
        });
    }
    Ok(())
}

/// This host's name, for lock holders and writer notes.
pub(crate) fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An `flock` on a lock file that names its holder; released when dropped (the
/// process ending releases it too: there is no stale lock to remove).
#[derive(Debug)]
pub struct HeldLock {
    _file: File,
}

/// What one try for a named lock found.
#[derive(Debug)]
pub enum LockAttempt {
    Taken(HeldLock),
    /// Another process holds it; its holder line as that process wrote it.
    Busy {
        holder: String,
    },
}

/// Tries once to lock `path` (created `0600` if missing; a symbolic link there
/// is refused, never written through). Taken, the file is rewritten to name
/// this process: pid, host, start time and command.
pub fn try_lock_named(path: &Path) -> std::io::Result<LockAttempt> {
    let mut file = nofollow::open(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
    )?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "it is not a regular file; move it away and run again",
        ));
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Ok(LockAttempt::Busy {
                holder: read_holder(&mut file),
            })
        }
        Err(fs::TryLockError::Error(error)) => return Err(error),
    }
    let holder = format!(
        "pid {} on {}, since {}: {}",
        std::process::id(),
        host_name(),
        now_text(),
        command_line()
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))?;
    Ok(LockAttempt::Taken(HeldLock { _file: file }))
}

/// Takes the export lock of the data directory `dir`, waiting up to `wait` for a
/// run that holds it; a refusal quotes the holder.
pub(super) fn lock_exports(dir: &Path, wait: Duration) -> Result<HeldLock, LedgerError> {
    let path = dir.join(EXPORT_LOCK_FILE);
    let started = Instant::now();
    let mut reported: Option<Instant> = None;
    loop {
        let holder = match try_lock_named(&path).map_err(io_error("lock", &path))? {
            LockAttempt::Taken(lock) => return Ok(lock),
            LockAttempt::Busy { holder } => holder,
        };
        if started.elapsed() >= wait {
            return Err(LedgerError::ExportRunning {
                holder,
                waited_s: started.elapsed().as_secs(),
            });
        }
        if reported.is_none_or(|at| at.elapsed() >= WAIT_REPORT_EVERY) {
            tracing::warn!(%holder, "another export is running; waiting for it to finish");
            reported = Some(Instant::now());
        }
        crate::interrupt::check()?;
        std::thread::sleep(LOCK_RETRY.min(wait.saturating_sub(started.elapsed())));
    }
}

/// The holder a lock file names (its text as the holder wrote it).
fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.rewind().and_then(|()| file.read_to_string(&mut text)) {
        Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
        // Between a holder's lock and its note, or a holder that could not write.
        _ => "a process that has not yet said who it is".into(),
    }
}

/// The subcommand this process runs, as the command line's parser named it
/// ([`name_command`]); never a word of argv, which holds paths, values and, in a
/// libpq `key=value` database URL, a password.
static COMMAND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the subcommand this process runs (`export`, `ingest`, …) for lock
/// holders and writer notes. Set once, by the command line; a library user that
/// never sets it is named `sf2520`.
pub fn name_command(subcommand: &'static str) {
    // A second call (tests running several commands in one process) keeps the first.
    let _ = COMMAND.set(subcommand);
}

/// `sf2520 SUBCOMMAND`, for lock holders and writer notes.
fn command_line() -> String {
    match COMMAND.get() {
        Some(subcommand) => format!("sf2520 {subcommand}"),
        None => "sf2520".into(),
    }
}

/// The last head this data directory committed, as written to [`HEAD_MARK_FILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadMark {
    pub position: u64,
    pub hash: [u8; 32],
}

const MARK_MAGIC: &str = "sf2520-head 1";

fn format_mark(head: &Head) -> String {
    let hash: String = head.hash.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{MARK_MAGIC} {} {hash}\n", head.position)
}

fn parse_mark(text: &str) -> Option<HeadMark> {
    let rest = text.strip_prefix(MARK_MAGIC)?.strip_suffix('\n')?;
    let mut words = rest.split(' ');
    let (Some(""), Some(position), Some(hash), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let position: u64 = position.parse().ok()?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hash.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(HeadMark {
        position,
        hash: bytes,
    })
}

/// The mark of the last committed head, if the directory has one. A mark that
/// cannot be read is an error: it is the only witness of a lost commit.
pub fn read_mark(dir: &Path) -> Result<Option<HeadMark>, LedgerError> {
    let path = dir.join(HEAD_MARK_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse_mark(&text)
            .map(Some)
            .ok_or(LedgerError::DamagedMark { path }),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) if error.kind() == ErrorKind::InvalidData => {
            Err(LedgerError::DamagedMark { path })
        }
        Err(error) => Err(io_error("read", &path)(error)),
    }
}

/// Records `head` as the last committed head unless the mark already names a
/// later one (another process committed after us): the mark moves only forward,
/// under an `flock` of the directory, and is replaced by a rename of a fsynced
/// file, so it is always whole. Called after a commit is durable; the mark can lag
/// the database but never lead it.
pub(super) fn advance_mark(dir: &Path, head: &Head) -> Result<(), LedgerError> {
    write_mark(dir, head, false)
}

/// Records `head` as the last committed head even if the mark names a later one:
/// a restore rolls the ledger back on purpose.
pub(super) fn reset_mark(dir: &Path, head: &Head) -> Result<(), LedgerError> {
    write_mark(dir, head, true)
}

fn write_mark(dir: &Path, head: &Head, backwards: bool) -> Result<(), LedgerError> {
    let directory = File::open(dir).map_err(io_error("open", dir))?;
    directory.lock().map_err(io_error("lock", dir))?;
    if !backwards {
        if let Ok(Some(mark)) = read_mark(dir) {
            if mark.position >= head.position {
                return Ok(());
            }
        }
    }
    let path = dir.join(HEAD_MARK_FILE);
    let staged = dir.join(format!(".{HEAD_MARK_FILE}.{}", std::process::id()));
    let written = nofollow::create_or_truncate(&staged)
        .and_then(|mut file| {
            file.write_all(format_mark(head).as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&staged, &path));
    if let Err(error) = written {
        let _ = fs::remove_file(&staged);
        return Err(io_error("write the head mark", &path)(error));
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes`, whole or not at all: written owner-only
/// (`0600`) under a temporary name of this process, fsynced, renamed over
/// `name` (a link there is replaced, never written through), and the rename
/// made durable.
pub fn replace_small_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LedgerError> {
    let path = dir.join(name);
    let staged = dir.join(format!(".{name}.{}", std::process::id()));
    let written = nofollow::create_or_truncate(&staged)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&staged, &path))
        .and_then(|()| File::open(dir)?.sync_all());
    if let Err(error) = written {
        let _ = fs::remove_file(&staged);
        return Err(io_error("write", &path)(error));
    }
    Ok(())
}

/// The text of `dir/name` (its first 64 KiB), `None` when there is no such
/// file; a link is refused, never followed.
pub fn read_small_file(dir: &Path, name: &str) -> Result<Option<String>, LedgerError> {
    let path = dir.join(name);
    let mut text = String::new();
    match nofollow::open(&path, OpenOptions::new().read(true))
        .and_then(|file| file.take(SMALL_FILE_MAX).read_to_string(&mut text))
    {
        Ok(_) => Ok(Some(text)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("read", &path)(error)),
    }
}

/// Says, in [`WRITER_NOTE_FILE`], that this process holds the database's write
/// lock for `activity`, so that a process kept waiting can say by whom. Only a
/// note: it is not fsynced, and a failure to write it is logged, not fatal.
pub(super) fn note_writer(dir: &Path, activity: &str) {
    let path = dir.join(WRITER_NOTE_FILE);
    let note = format!(
        "{activity} by `{}` (pid {} on {}) since {}",
        command_line(),
        std::process::id(),
        host_name(),
        now_text()
    );
    let written =
        nofollow::create_or_truncate(&path).and_then(|mut file| file.write_all(note.as_bytes()));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "could not write the writer note");
    }
}

/// Who holds the write lock, as its note says, and for how long.
pub(super) fn current_writer(dir: &Path) -> String {
    let path = dir.join(WRITER_NOTE_FILE);
    let mut note = String::new();
    let read = nofollow::open(&path, OpenOptions::new().read(true))
        .and_then(|file| file.take(4096).read_to_string(&mut note));
    if read.is_err() {
        return "another process".into();
    }
    let held = note
        .rsplit_once(" since ")
        .and_then(|(_, since)| DateTime::parse_from_rfc3339(since.trim()).ok())
        .map(|since| (Utc::now() - since.with_timezone(&Utc)).num_seconds());
    match held {
        Some(seconds) if seconds >= 0 => format!("{} (held for {seconds} s)", note.trim()),
        _ => note.trim().to_string(),
    }
}

/// What SQLite keeps beside a database file `NAME` while it writes it: the
/// rollback journal, the WAL and its shared-memory index (pages of the ledger).
const SQLITE_SIDE_FILES: [&str; 4] = ["", "-journal", "-wal", "-shm"];

/// The pid in `name` if it is `{prefix}{pid}{suffix}`, or that followed by one of
/// SQLite's side-file suffixes (`-journal`, `-wal`, `-shm`).
fn stale_pid(name: &str, prefix: &str, suffix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    SQLITE_SIDE_FILES.iter().find_map(|side| {
        rest.strip_suffix(side)
            .and_then(|rest| rest.strip_suffix(suffix))
            .and_then(|pid| pid.parse::<u32>().ok())
    })
}

/// Removes the scratch and staging files named `{prefix}{pid}{suffix}` in `dir`,
/// and SQLite's journal, WAL and shared memory beside them, that a process now
/// gone left behind (killed with SIGKILL, which no handler sees): they are copies
/// of the ledger or of its projections, with CPR numbers. A file of a process
/// still running is left alone.
pub(super) fn remove_stale(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name, prefix, suffix) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::warn!(file = %entry.path().display(), "removed a copy that a killed run left behind")
            }
            Err(error) => {
                tracing::warn!(file = %entry.path().display(), %error, "could not remove a copy that a killed run left behind")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_copy_and_its_sqlite_side_files_are_told_by_their_pid() {
        for (name, pid) in [
            (".b.sqlite3.42.partial", Some(42)),
            (".b.sqlite3.42.partial-journal", Some(42)),
            (".b.sqlite3.42.partial-wal", Some(42)),
            (".b.sqlite3.42.partial-shm", Some(42)),
            (".b.sqlite3.42.partial-other", None),
            (".b.sqlite3.x42.partial", None),
            (".c.sqlite3.42.partial-journal", None),
        ] {
            assert_eq!(stale_pid(name, ".b.sqlite3.", ".partial"), pid, "{name}");
        }
    }

    #[test]
    fn a_mark_reads_back_and_a_damaged_one_is_refused() {
        let head = Head {
            position: 42,
            hash: [0xab; 32],
            recorded_at_us: 0,
        };
        let text = format_mark(&head);
        assert_eq!(
            parse_mark(&text),
            Some(HeadMark {
                position: 42,
                hash: [0xab; 32]
            })
        );
        for damaged in [
            "",
            "sf2520-head 1 42\n",
            &text[..text.len() - 1],
            &text.replace("42", "-1"),
            &text.replace("ab", "zz"),
            &format!("{text}x"),
        ] {
            assert_eq!(parse_mark(damaged), None, "{damaged:?}");
        }
    }
}
