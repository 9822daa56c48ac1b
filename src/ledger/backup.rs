//! Backup and restore: an owner-only, verified copy of the ledger taken with
//! SQLite's online backup API while other processes may be writing, and an atomic
//! restore that checks the copy first and never silently discards newer history.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode};
use thiserror::Error;

use super::store::{create_private_dir, create_private_file};
use super::{Ledger, LedgerError, VerifyFailure, VerifyReport, DATABASE_FILE};

/// Pages a backup copies between checks for a signal's stop (16 MiB of 4 KiB pages).
const COPY_STEP_PAGES: i32 = 4_096;

/// How long a backup waits, in all, for a source that is briefly busy.
const SOURCE_BUSY_WAIT_MS_MAX: u64 = 10_000;
const SOURCE_BUSY_RETRY_MS: u64 = 50;

/// How long a restore waits for other connections to the ledger to close before
/// it calls the ledger in use.
const IN_USE_WAIT_MS: u32 = 2_000;

/// Why a backup or restore was refused or failed. Every refusal leaves the
/// destination (backup) or the ledger (restore) as it was.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error(
        "the ledger is in PostgreSQL ({target}), which `restore` does not replace: restore \
         the database with PostgreSQL's own tools (pg_basebackup and point-in-time \
         recovery), or load a backup file that `sf2520 backup` wrote into an empty \
         database with `sf2520 migrate --from BACKUP --to URL`. Nothing was changed"
    )]
    OnPostgres { target: String },

    #[error("no ledger in {dir}: nothing to back up (check --data-dir)")]
    NoLedger { dir: PathBuf },

    #[error("{path} already exists; name another file, or add --force to replace it")]
    DestinationExists { path: PathBuf },

    #[error(
        "{path} is the ledger's own database (or its WAL); a backup must be written \
         elsewhere"
    )]
    DestinationIsLedger { path: PathBuf },

    #[error(
        "the copy of the ledger fails verification at {failure}: the ledger itself is \
         damaged, run `sf2520 verify`. No backup was written"
    )]
    LedgerDamaged { failure: VerifyFailure },

    #[error(
        "the copy of the ledger fails SQLite's integrity check ({problems}): the ledger \
         file itself may be damaged, run `sf2520 verify`. No backup was written"
    )]
    CopyCorrupt { problems: String },

    #[error("backup {path} is damaged: {failure}. Nothing was restored")]
    BackupDamaged {
        path: PathBuf,
        failure: VerifyFailure,
    },

    #[error("backup {path} cannot be read: {reason}. Nothing was restored")]
    BackupUnreadable { path: PathBuf, reason: String },

    #[error(
        "the ledger has {current} event(s), the backup only {backup}: restoring would \
         lose the {} newest (positions {}..={current}: {lost}). Nothing was restored; \
         add --force to restore anyway",
        current - backup, backup + 1
    )]
    LedgerIsNewer {
        current: u64,
        backup: u64,
        lost: String,
    },

    #[error(
        "the ledger and the backup hold different histories from position {position} on \
         (ledger: {current} event(s), backup: {backup}); restoring would replace the \
         ledger's events from there ({lost}). Nothing was restored; add --force to \
         restore anyway"
    )]
    HistoriesDiffer {
        position: u64,
        current: u64,
        backup: u64,
        lost: String,
    },

    #[error(
        "the current ledger {path} cannot be read ({reason}), so what a restore would \
         lose is unknown. Nothing was restored; add --force to replace it (it is kept \
         beside it)"
    )]
    CurrentUnreadable { path: PathBuf, reason: String },

    #[error(
        "the ledger {path} is open in another process; stop every other sf2520 process \
         and try again. Nothing was restored"
    )]
    InUse { path: PathBuf },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Ledger(#[from] LedgerError),

    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored ledger, as verified before it was put in place.
    pub restored: VerifyReport,
    /// Events the replaced ledger had (`None` when there was none).
    pub previous_events: Option<u64>,
    /// Events of the replaced ledger that are not in the restored one (only with
    /// `force`).
    pub discarded_events: u64,
    /// Where the replaced ledger was kept, when a forced restore discarded events.
    pub kept_aside: Option<PathBuf>,
}

/// A file that is removed when dropped, unless it was put in place.
struct Staged(Option<PathBuf>);

impl Staged {
    fn create(path: PathBuf) -> Result<Staged, BackupError> {
        // A file of this name is left by a run that died; it never became a backup.
        let _ = fs::remove_file(&path);
        drop(create_private_file(&path)?);
        Ok(Staged(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a staged file is present until placed")
    }

    /// Hands the path over: from now on the file is not removed on drop.
    fn keep(mut self) -> PathBuf {
        self.0
            .take()
            .expect("a staged file is present until placed")
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Copies the database behind `source` into the empty file `target` in one step
/// of SQLite's online backup API: one read transaction, so the copy is the log as
/// of one commit even while another process appends (WAL readers do not block
/// writers). The copy is left in rollback-journal mode, a single self-contained
/// file, and fsynced.
fn copy_database(source: &Connection, target: &Path) -> Result<(), BackupError> {
    let mut copy = Connection::open(target)?;
    {
        let backup = Backup::new(source, &mut copy)?;
        let mut waited_ms = 0;
        loop {
            // In steps, so that a signal's stop is heard between them. The backup
            // restarts by itself if another connection writes meanwhile, so the
            // copy is still the log as of one commit.
            crate::interrupt::check().map_err(LedgerError::from)?;
            match backup.step(COPY_STEP_PAGES)? {
                StepResult::Done => break,
                StepResult::More => {}
                _ if waited_ms < SOURCE_BUSY_WAIT_MS_MAX => {
                    std::thread::sleep(Duration::from_millis(SOURCE_BUSY_RETRY_MS));
                    waited_ms += SOURCE_BUSY_RETRY_MS;
                }
                _ => return Err(rusqlite::Error::SqliteFailure(busy(), None).into()),
            }
        }
    }
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    copy.close().map_err(|(_, error)| error)?;
    fs::File::open(target)
        .and_then(|file| file.sync_all())
        .map_err(io_error("fsync", target))
}

/// SQLite's own check of the file's structure (pages, b-trees, indexes), which a
/// replay does not cover: an index can disagree with its table unnoticed.
fn integrity_problems(copy: &Ledger) -> Result<Option<String>, BackupError> {
    let mut statement = copy
        .sqlite_connection()?
        .prepare("PRAGMA integrity_check(10)")?;
    let lines: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

fn busy() -> rusqlite::ffi::Error {
    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY)
}

/// Makes renames and links in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

impl Ledger {
    /// Writes a verified copy of the ledger to `destination`, owner-only (`0600`).
    /// The copy is staged beside it and verified (hash chain and projections)
    /// before it takes the name, so `destination` is never a partial or
    /// unverified file. An existing `destination` is refused unless `overwrite`.
    pub fn backup_to(
        &self,
        destination: &Path,
        overwrite: bool,
    ) -> Result<VerifyReport, BackupError> {
        refuse_existing(destination, overwrite)?;
        let dir = parent_dir(destination);
        create_private_dir(dir)?;
        let name = destination
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        super::datadir::remove_stale(dir, &format!(".{name}."), ".partial");
        let staged = Staged::create(dir.join(format!(".{name}.{}.partial", std::process::id())))?;
        match self.sqlite() {
            Some(conn) => copy_database(conn, staged.path())?,
            // PostgreSQL: a logical copy of the log into an SQLite ledger file.
            None => super::migrate::logical_copy(self, staged.path())?,
        }
        let copy = Ledger::open_copy(staged.path())?;
        if let Some(problems) = integrity_problems(&copy)? {
            return Err(BackupError::CopyCorrupt { problems });
        }
        let report = match copy.verify(|_| {})? {
            Ok(report) => report,
            Err(failure) => return Err(BackupError::LedgerDamaged { failure }),
        };
        drop(copy);
        place(staged, destination, overwrite)?;
        sync_dir(dir)?;
        // The backup names a head: a database that later lacks it is refused here.
        self.witness_head()?;
        tracing::info!(events = report.events, "backup written and verified");
        Ok(report)
    }
}

fn refuse_existing(destination: &Path, overwrite: bool) -> Result<(), BackupError> {
    // symlink_metadata: a dangling symlink is an existing name too.
    if !overwrite && fs::symlink_metadata(destination).is_ok() {
        return Err(BackupError::DestinationExists {
            path: destination.to_path_buf(),
        });
    }
    Ok(())
}

/// Gives the staged file its final name. Without `overwrite` a hard link is used,
/// which fails if the name was taken meanwhile, so nothing is ever replaced.
fn place(staged: Staged, destination: &Path, overwrite: bool) -> Result<(), BackupError> {
    if overwrite {
        fs::rename(staged.path(), destination).map_err(io_error("rename into", destination))?;
        staged.keep();
        return Ok(());
    }
    match fs::hard_link(staged.path(), destination) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::DestinationExists {
                path: destination.to_path_buf(),
            })
        }
        Err(error) => Err(io_error("link into", destination)(error)),
    }
}

/// `sf2520 backup`: a verified copy of the ledger in `data_dir` at `destination`.
pub fn backup(
    data_dir: &Path,
    destination: &Path,
    overwrite: bool,
) -> Result<VerifyReport, BackupError> {
    let database = data_dir.join(DATABASE_FILE);
    if super::store::Location::of(data_dir).database.is_some() {
        // PostgreSQL: a logical copy of the log into an SQLite ledger file.
        return Ledger::open_read_only(data_dir)?.backup_to(destination, overwrite);
    }
    if !database.is_file() {
        return Err(BackupError::NoLedger {
            dir: data_dir.to_path_buf(),
        });
    }
    if is_ledger_file(&database, destination) {
        return Err(BackupError::DestinationIsLedger {
            path: destination.to_path_buf(),
        });
    }
    Ledger::open_read_only(data_dir)?.backup_to(destination, overwrite)
}

/// True when `destination` names the database or one of its `-wal`/`-shm`/
/// `-journal` files: with --force, a backup there would be renamed over the live
/// file under the feet of every process that has it open.
fn is_ledger_file(database: &Path, destination: &Path) -> bool {
    let canonical_dir = |path: &Path| fs::canonicalize(parent_dir(path)).ok();
    let (Some(ours), Some(theirs)) = (canonical_dir(database), canonical_dir(destination)) else {
        return false;
    };
    let name = destination
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    ours == theirs && name.starts_with(DATABASE_FILE)
}

/// What the current ledger is, compared with the backup.
enum Current {
    Missing,
    /// Readable; `first_difference` is the first position where the two differ
    /// (`None` when one is a prefix of the other), `lost` describes the events
    /// from there on (or after the backup's last one).
    Readable {
        // Boxed: a ledger (with its write-path memo) dwarfs the other variants.
        ledger: Box<Ledger>,
        events: u64,
        first_difference: Option<u64>,
        lost: String,
    },
    Unreadable {
        reason: String,
    },
}

/// `sf2520 restore`: replaces the ledger in `data_dir` with the backup `source`.
///
/// The backup is copied into the data directory and verified first; a damaged one
/// is refused, naming the first bad position. Without `force`, a restore that
/// would lose events is refused: a ledger longer than the backup, one whose
/// history differs from it, or one that cannot be read. The swap is a rename, so
/// the ledger is always either the old or the new file; a ledger open in another
/// process is refused. When `force` discards events, the old file is kept beside
/// the new one as `ledger.sqlite3.replaced-<UTC time>`.
pub fn restore(data_dir: &Path, source: &Path, force: bool) -> Result<RestoreReport, BackupError> {
    if let Some(url) = super::store::Location::of(data_dir).database {
        return Err(BackupError::OnPostgres {
            target: url.describe(),
        });
    }
    super::store::ensure_private_dir(data_dir)?;
    // No export may write files from the ledger being replaced.
    let _exports = super::datadir::lock_exports(data_dir, Duration::ZERO)?;
    let staged =
        Staged::create(data_dir.join(format!(".restore-{}.sqlite3.partial", std::process::id())))?;
    super::datadir::remove_stale(data_dir, ".restore-", ".sqlite3.partial");
    let restored = stage_and_verify(source, staged.path())?;
    let database = data_dir.join(DATABASE_FILE);
    let staged_copy = Ledger::open_copy(staged.path())?;
    let current = inspect_current(data_dir, &database, &staged_copy)?;
    drop(staged_copy);
    let discarded_events = refuse_losses(&current, &database, &restored, force)?;
    let previous_events = match &current {
        Current::Readable { events, .. } => Some(*events),
        _ => None,
    };
    // The rollback is on purpose: the data directory's mark of its last committed
    // head is set to the restored head first (a mark that lags is safe; one ahead
    // of the database would refuse it), then the copy is put in place.
    let restored_copy = Ledger::open_copy(staged.path())?;
    // A backup whose CPRs are sealed is put in place only where its key file is:
    // without it, the restored ledger could not be opened.
    super::store::keyring(restored_copy.db(), data_dir, source)?;
    let restored_head = restored_copy.head()?;
    drop(restored_copy);
    super::datadir::reset_mark(data_dir, &restored_head)?;
    let kept_aside = install(current, staged, &database, discarded_events > 0)?;
    let reopened = Ledger::open(data_dir)?.head()?;
    debug_assert_eq!(reopened.hash, restored.head_hash);
    if discarded_events > 0 {
        tracing::warn!(
            discarded_events,
            "forced restore discarded events of the replaced ledger"
        );
    }
    tracing::info!(events = restored.events, "ledger restored from a backup");
    Ok(RestoreReport {
        restored,
        previous_events,
        discarded_events,
        kept_aside,
    })
}

/// Copies the backup into `staged` and verifies the copy (what is verified is what
/// will be put in place).
fn stage_and_verify(source: &Path, staged: &Path) -> Result<VerifyReport, BackupError> {
    let unreadable = |reason: String| BackupError::BackupUnreadable {
        path: source.to_path_buf(),
        reason,
    };
    match copy_database(Ledger::open_copy(source)?.sqlite_connection()?, staged) {
        Err(BackupError::Sqlite(error)) => return Err(unreadable(error.to_string())),
        other => other?,
    }
    let copy = Ledger::open_copy(staged)?;
    match integrity_problems(&copy) {
        Ok(None) => {}
        Ok(Some(problems)) => {
            return Err(unreadable(format!(
                "SQLite's integrity check finds: {problems}"
            )))
        }
        Err(error) => return Err(unreadable(error.to_string())),
    }
    match copy.verify(|_| {}) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(failure)) => Err(BackupError::BackupDamaged {
            path: source.to_path_buf(),
            failure,
        }),
        Err(error @ LedgerError::Interrupted(_)) => Err(error.into()),
        Err(error) => Err(unreadable(error.to_string())),
    }
}

fn inspect_current(
    data_dir: &Path,
    database: &Path,
    backup: &Ledger,
) -> Result<Current, BackupError> {
    if fs::symlink_metadata(database).is_err() {
        return Ok(Current::Missing);
    }
    let compared = Ledger::open(data_dir).and_then(|ledger| {
        let events = ledger.head()?.position;
        let first_difference = first_difference(&ledger, backup)?;
        let backup_events = backup.head()?.position;
        let lost_from = first_difference.unwrap_or(backup_events + 1);
        let lost = describe_events_from(&ledger, lost_from)?;
        Ok((ledger, events, first_difference, lost))
    });
    Ok(match compared {
        Ok((ledger, events, first_difference, lost)) => Current::Readable {
            ledger: Box::new(ledger),
            events,
            first_difference,
            lost,
        },
        Err(error) => Current::Unreadable {
            reason: error.to_string(),
        },
    })
}

/// The first position at which the two logs hold different events (by hash, which
/// covers the event and everything before it), within their common length.
fn first_difference(current: &Ledger, backup: &Ledger) -> Result<Option<u64>, LedgerError> {
    let query = "SELECT position, hash FROM events ORDER BY position";
    let mut current_rows = current.sqlite_connection()?.prepare(query)?;
    let mut backup_rows = backup.sqlite_connection()?.prepare(query)?;
    let mut current_rows = current_rows.query([])?;
    let mut backup_rows = backup_rows.query([])?;
    while let (Some(ours), Some(theirs)) = (current_rows.next()?, backup_rows.next()?) {
        let (position, our_hash): (i64, Vec<u8>) = (ours.get(0)?, ours.get(1)?);
        let (their_position, their_hash): (i64, Vec<u8>) = (theirs.get(0)?, theirs.get(1)?);
        if position != their_position || our_hash != their_hash {
            let first = position.min(their_position);
            return u64::try_from(first)
                .map(Some)
                .map_err(|_| LedgerError::CorruptLedger {
                    position: None,
                    what: format!("events: the position {first} is negative"),
                });
        }
    }
    Ok(None)
}

/// "3 WithholdingRecorded, 1 FileExported" for the events from `from` on, with a
/// warning when files are among them: their løbenumre would be given out again.
fn describe_events_from(ledger: &Ledger, from: u64) -> Result<String, LedgerError> {
    let mut statement = ledger.sqlite_connection()?.prepare(
        "SELECT event_type, COUNT(*) FROM events WHERE position >= ?1
         GROUP BY event_type ORDER BY MIN(position)",
    )?;
    let counts: Vec<(String, i64)> = statement
        .query_map(
            [i64::try_from(from)
                .map_err(|_| LedgerError::PositionOutOfRange { position: from })?],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    if counts.is_empty() {
        return Ok("none".into());
    }
    let mut text = counts
        .iter()
        .map(|(event_type, count)| format!("{count} {event_type}"))
        .collect::<Vec<_>>()
        .join(", ");
    if counts
        .iter()
        .any(|(event_type, _)| event_type.starts_with("File"))
    {
        text.push_str(
            "; SF2520 files were made or sent after the backup, and their løbenumre \
             would be given out again",
        );
    }
    Ok(text)
}

/// Refuses (without `force`) a restore that would lose events; returns how many
/// events of the current ledger the restore discards.
fn refuse_losses(
    current: &Current,
    database: &Path,
    restored: &VerifyReport,
    force: bool,
) -> Result<u64, BackupError> {
    let backup = restored.events;
    let (refusal, discarded) = match current {
        Current::Missing => return Ok(0),
        Current::Unreadable { reason } => (
            BackupError::CurrentUnreadable {
                path: database.to_path_buf(),
                reason: reason.clone(),
            },
            0,
        ),
        Current::Readable {
            events,
            first_difference: Some(position),
            lost,
            ..
        } => (
            BackupError::HistoriesDiffer {
                position: *position,
                current: *events,
                backup,
                lost: lost.clone(),
            },
            events - position + 1,
        ),
        Current::Readable { events, lost, .. } if *events > backup => (
            BackupError::LedgerIsNewer {
                current: *events,
                backup,
                lost: lost.clone(),
            },
            events - backup,
        ),
        Current::Readable { .. } => return Ok(0),
    };
    if force {
        Ok(discarded)
    } else {
        Err(refusal)
    }
}

/// Puts the verified copy in place of `database`. The current ledger must be
/// closed by everyone else: its WAL is folded into the file and journaling
/// switched to a rollback journal, which SQLite allows only to the last connection
/// (so another open connection is detected), then an exclusive lock is held while
/// the copy is renamed over it. Returns where the old file was kept, if it was.
fn install(
    current: Current,
    staged: Staged,
    database: &Path,
    keep_old: bool,
) -> Result<Option<PathBuf>, BackupError> {
    let dir = parent_dir(database);
    let held = match current {
        Current::Readable { ledger, .. } => Some(take_exclusively(*ledger, database)?),
        Current::Unreadable { .. } | Current::Missing => None,
    };
    let unreadable = held.is_none() && fs::symlink_metadata(database).is_ok();
    let aside = if keep_old || unreadable {
        Some(keep_aside(database)?)
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        // After the switch above there are none; an unreadable ledger may have
        // them, and SQLite would apply an old WAL to the new file.
        let stale = PathBuf::from(format!("{}{suffix}", database.display()));
        match fs::remove_file(&stale) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("remove", &stale)(error))
            }
            _ => {}
        }
    }
    fs::rename(staged.path(), database).map_err(io_error("rename into", database))?;
    staged.keep();
    sync_dir(dir)?;
    drop(held);
    Ok(aside)
}

/// Folds the WAL into the ledger file and locks it exclusively; `InUse` if
/// another connection has it open.
fn take_exclusively(ledger: Ledger, database: &Path) -> Result<Ledger, BackupError> {
    let in_use = |error: rusqlite::Error| match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => BackupError::InUse {
            path: database.to_path_buf(),
        },
        _ => BackupError::Sqlite(error),
    };
    let conn = ledger.sqlite_connection()?;
    conn.pragma_update(None, "busy_timeout", IN_USE_WAIT_MS)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
        .map_err(in_use)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::InUse {
            path: database.to_path_buf(),
        });
    }
    conn.execute_batch("BEGIN EXCLUSIVE").map_err(in_use)?;
    Ok(ledger)
}

/// Keeps the current ledger file under a new name (a hard link, so the ledger's
/// own name is never missing), and its WAL if an unreadable ledger left one.
fn keep_aside(database: &Path) -> Result<PathBuf, BackupError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let aside = PathBuf::from(format!("{}.replaced-{stamp}", database.display()));
    fs::hard_link(database, &aside).map_err(io_error("keep a copy as", &aside))?;
    let wal = PathBuf::from(format!("{}-wal", database.display()));
    if wal.exists() {
        let wal_aside = PathBuf::from(format!("{}-wal", aside.display()));
        fs::rename(&wal, &wal_aside).map_err(io_error("keep a copy as", &wal_aside))?;
    }
    Ok(aside)
}
