//! The SQLite backend (the embedded default): opening the database file in the
//! data directory owner-only, WAL with `synchronous=FULL`, read-only opens that
//! survive a read-only directory or a full disk, bounded waits for the write
//! lock, and SQLite's errors that mean "the disk is full".

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::datadir;
use super::LedgerError;

/// SQLite's own wait per attempt; [`super::Ledger::write`] tries again until its
/// bound, saying who it waits for.
pub(crate) const BUSY_ATTEMPT_MS: i32 = 1_000;

/// Prepared statements kept per connection: every statement of the shared SQL
/// (`ledger::sql`) stays prepared, rather than being prepared again per row.
const STATEMENT_CACHE: usize = 64;

/// Opens the database file of a data directory for writing (it exists: see
/// [`prepare_database_file`]) and configures it.
pub(crate) fn open_for_writing(
    path: &Path,
    dir: &Path,
    wait: Duration,
) -> Result<Connection, LedgerError> {
    let open_error = |source: rusqlite::Error| {
        if is_cant_open(&source) && !writable(dir) {
            return LedgerError::ReadOnlyDirectory {
                path: dir.to_path_buf(),
            };
        }
        LedgerError::Open {
            path: path.to_path_buf(),
            source,
        }
    };
    let conn = Connection::open(path).map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    configure_waiting(&conn, wait).map_err(|error| {
        match disk_full(error, dir, "opening the ledger") {
            LedgerError::Sqlite(error) => open_error(error),
            other => other,
        }
    })?;
    Ok(conn)
}

/// Whether this process may create files in `dir` (its effective ids, a
/// read-only mount included), so that SQLite's "unable to open database file"
/// can be told apart from a directory that is read-only for us.
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: `path` is a NUL-terminated string that outlives the call;
    // faccessat only reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

/// Opens a copy of a ledger (a backup, a file about to be restored) read-only.
pub(crate) fn open_copy(path: &Path) -> Result<Connection, LedgerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|error| LedgerError::Open {
        path: path.to_path_buf(),
        source: error,
    })?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that two processes opening a new ledger at once wait for each
    // other (switching to WAL takes an exclusive lock) instead of failing.
    conn.pragma_update(None, "busy_timeout", BUSY_ATTEMPT_MS)?;
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsynced,
    // so an acknowledged write survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Up to 32 MiB of pages (negative: KiB). Ingest writes at the ends of the log
    // and of each kommune's entries, so its working set is small: at 1M entries
    // 16, 32 and 64 MiB ingest at the same speed (issue 24, benches/peers: 9.5-10
    // s each), and the peak resident set is 60, 77 and 112 MB; 256 MiB was no
    // faster either and peaked at 326 MB. The cache grows only as pages are read.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // Checkpoint the WAL into the database every 64 MiB rather than every 4 MiB: a
    // page changed by several batches between checkpoints (the end of the log, the
    // end of each kommune's entries) is copied into the database once, not each
    // time. Every commit still fsyncs the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    // Deleted and overwritten content is zeroed, in pages and the freelist alike,
    // so that a destroyed data key (retention) leaves no stale copy in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Copies the whole WAL into the database and truncates it to nothing, so that
/// no page image written before (a destroyed data key among them) stays in it.
/// A reader that keeps the WAL in use is waited for (the busy timeout), then
/// reported.
pub(crate) fn checkpoint_truncate(conn: &Connection) -> Result<(), LedgerError> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
    if busy != 0 {
        return Err(LedgerError::Busy {
            holder: "a reader of the ledger kept the WAL in use, so the old pages of the \
                     destroyed keys are still in ledger.sqlite3-wal; run `sf2520 retention \
                     --apply` again when nothing else reads the ledger"
                .into(),
            waited_s: 0,
        });
    }
    Ok(())
}

/// [`configure`], tried again while SQLite reports the database busy, up to
/// `wait`. Switching a new database to WAL needs an exclusive lock, and when two
/// processes open a new ledger at once SQLite may refuse one at once, without
/// waiting its busy timeout (it would otherwise deadlock): that one tries again.
pub(crate) fn configure_waiting(conn: &Connection, wait: Duration) -> rusqlite::Result<()> {
    let started = Instant::now();
    loop {
        match configure(conn) {
            Err(error)
                if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < wait =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Creates the database file owner-only before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the same mode); refuses an existing one others can read.
pub(crate) fn prepare_database_file(path: &Path) -> Result<(), LedgerError> {
    let open_error = |source: std::io::Error| LedgerError::Open {
        path: path.to_path_buf(),
        source: rusqlite::Error::ToSqlConversionFailure(Box::new(source)),
    };
    match fs::metadata(path) {
        Ok(metadata) => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(LedgerError::InsecurePermissions {
                    path: path.to_path_buf(),
                    mode,
                    directory: false,
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => Ok(()),
                // Another process created it between the two calls: check its mode.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    prepare_database_file(path)
                }
                Err(error) => Err(open_error(error)),
            }
        }
        Err(error) => Err(open_error(error)),
    }
}

/// The schema version of a database, `None` for a new (empty) one.
pub(crate) fn read_meta_if_any(conn: &Connection) -> Result<Option<i64>, LedgerError> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?)
}

/// Opens a database read-only. SQLite keeps the index of a WAL database's log in
/// a shared-memory file (`-shm`); where that can be neither opened nor created nor
/// grown, it falls back:
/// - with no `-wal` file (a read-only directory after a clean shutdown), nothing
///   is writing, and the file is opened as immutable;
/// - with one (a full disk after a failed commit), the index is built in this
///   process's memory under an exclusive lock (`locking_mode=EXCLUSIVE`), which
///   writers wait for; the connection still writes nothing (`query_only`).
pub(crate) fn open_for_reading(path: &Path) -> Result<Connection, LedgerError> {
    let open_error = |source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let readable = |conn: &Connection| {
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        })
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.pragma_update(None, "busy_timeout", BUSY_ATTEMPT_MS)
        .map_err(open_error)?;
    let error = match readable(&conn) {
        Ok(_) => {
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            return Ok(conn);
        }
        Err(error) if is_cant_open(&error) => error,
        Err(error) => return Err(open_error(error)),
    };
    drop(conn);
    let conn = if wal_file(path).exists() {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        conn.pragma_update(None, "busy_timeout", BUSY_ATTEMPT_MS)
            .and_then(|()| conn.pragma_update(None, "locking_mode", "EXCLUSIVE"))
            .and_then(|()| conn.pragma_update(None, "query_only", true))
            .map_err(open_error)?;
        conn
    } else {
        let uri = format!("file:{}?immutable=1", uri_path(path));
        Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(open_error)?
    };
    tracing::debug!(first = %error, "opened the ledger without its shared-memory file");
    readable(&conn).map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// SQLite could not open, create or grow a file it needs beside the database:
/// its shared memory on a read-only directory or a full disk.
fn is_cant_open(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
    ) || is_shared_memory_failure(error)
}

fn is_shared_memory_failure(error: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_IOERR_SHMMAP, SQLITE_IOERR_SHMOPEN, SQLITE_IOERR_SHMSIZE};
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if [SQLITE_IOERR_SHMMAP, SQLITE_IOERR_SHMOPEN, SQLITE_IOERR_SHMSIZE]
                .contains(&failure.extended_code)
    )
}

/// An SQLite error, or [`LedgerError::DiskFull`] when it says the disk is full
/// (SQLite reports a shared-memory file it cannot grow as an I/O error).
pub(crate) fn disk_full(error: rusqlite::Error, dir: &Path, during: &'static str) -> LedgerError {
    if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        || is_shared_memory_failure(&error)
    {
        return LedgerError::DiskFull {
            dir: dir.to_path_buf(),
            during,
        };
    }
    LedgerError::Sqlite(error)
}

pub(crate) fn full_while(error: LedgerError, dir: &Path) -> LedgerError {
    match error {
        LedgerError::Sqlite(error) => disk_full(error, dir, "appending"),
        other => other,
    }
}

pub(crate) fn wal_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// A path as the path part of an SQLite `file:` URI (`?`, `#` and `%` escaped).
fn uri_path(path: &Path) -> String {
    let mut text = String::new();
    for character in path.to_string_lossy().chars() {
        match character {
            '?' => text.push_str("%3f"),
            '#' => text.push_str("%23"),
            '%' => text.push_str("%25"),
            other => text.push(other),
        }
    }
    text
}

/// Begins a write transaction, waiting up to `wait` in all for another process's:
/// SQLite waits [`BUSY_ATTEMPT_MS`] per attempt, and between attempts the wait is
/// logged with the holder its writer note names.
pub(crate) fn begin_immediate(
    conn: &Connection,
    dir: &Path,
    wait: Duration,
) -> Result<(), LedgerError> {
    let started = Instant::now();
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => return Ok(()),
            Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                let holder = datadir::current_writer(dir);
                if started.elapsed() >= wait {
                    return Err(LedgerError::Busy {
                        holder,
                        waited_s: started.elapsed().as_secs(),
                    });
                }
                tracing::warn!(%holder, waited_s = started.elapsed().as_secs(), "the ledger is busy; waiting for it");
                crate::interrupt::check()?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
