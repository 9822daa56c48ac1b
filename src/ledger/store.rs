//! The `Ledger`: opening the database, appending events in durable transactions,
//! idempotent batch ingest, and reading the log and its projections.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use rusqlite::{
    params, CachedStatement, Connection, OpenFlags, OptionalExtension, Transaction,
    TransactionBehavior,
};
use uuid::Uuid;

use super::codec::{self, StoredEvent, CURRENT_SCHEMA_VERSION, GENESIS_HASH};
use super::datadir::{self, ExportLock};
use super::projection::{self, Projector, RangeTotals, Totals};
use super::schema::{
    DEFAULT_TOTALS_BLOCK, LOG_TABLES, PROJECTION_ORDER, PROJECTION_TABLES, SCHEMA_VERSION,
};
use super::view::{AgreementMemo, SqlView};
use super::{LedgerError, LineError};
use crate::domain::{decide, Command, Decision, Event, Kommune};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "ledger.sqlite3";

/// The last event of the log (position 0 and the genesis hash when empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: [u8; 32],
    /// µs since the Unix epoch, UTC; 0 for an empty log.
    pub recorded_at_us: i64,
}

/// A point in the log to read projections at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    Head,
    Position(u64),
    /// The last event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// What became of one input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineOutcome {
    Appended {
        position: u64,
        event_type: &'static str,
    },
    Duplicate,
}

/// The result of a committed (durable) ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestReport {
    /// (1-based line number, outcome), in input order.
    pub lines: Vec<(usize, LineOutcome)>,
    pub head: Head,
}

impl IngestReport {
    pub fn appended(&self) -> usize {
        self.lines
            .iter()
            .filter(|(_, outcome)| matches!(outcome, LineOutcome::Appended { .. }))
            .count()
    }

    pub fn duplicates(&self) -> usize {
        self.lines.len() - self.appended()
    }
}

pub struct Ledger {
    conn: Connection,
    dir: PathBuf,
    memo: Memo,
    /// Positions per totals block (`meta.totals_block`, see `schema`).
    totals_block: u64,
    /// How long a write waits, in all, for another process's write transaction.
    busy_wait: Duration,
    /// Whether commits move the data directory's head mark (not for a copy).
    marks_head: bool,
}

/// How long a write waits for another process's write transaction by default.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(60);

/// The busy wait of ledgers opened from now on, in seconds: [`DEFAULT_BUSY_WAIT`]
/// unless the process set another (the CLI's `--busy-timeout`).
static BUSY_WAIT_S: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_BUSY_WAIT.as_secs());

/// Sets the busy wait of every ledger this process opens from now on (see
/// [`Ledger::set_busy_wait`] for one ledger).
pub fn set_default_busy_wait(wait: Duration) {
    BUSY_WAIT_S.store(wait.as_secs(), std::sync::atomic::Ordering::Relaxed);
}

fn default_busy_wait() -> Duration {
    Duration::from_secs(BUSY_WAIT_S.load(std::sync::atomic::Ordering::Relaxed))
}

/// SQLite's own wait per attempt; [`Ledger::write`] tries again until its bound,
/// saying who it waits for.
const BUSY_ATTEMPT_MS: i32 = 1_000;

/// A cut-off fixed for a batch export (see [`Ledger::fix_cutoff`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cutoff {
    /// The last position the export includes.
    pub position: u64,
    /// The files' creation time, whole seconds: later than every event through
    /// `position`, earlier than every event after it.
    pub created_at: DateTime<Utc>,
}

/// What the write path remembers between statements and between transactions:
/// the agreement states the rules asked for, so that each withholding does not
/// read and decode its agreement's registration again.
///
/// It is trusted only while the log's head is the one this ledger left after its
/// own last commit. Every projection change comes with an appended event, so an
/// unchanged head means no other connection touched the projections; any other
/// head, a rollback or a failure makes it forget everything.
#[derive(Default)]
struct Memo {
    /// The head after this ledger's last commit; `None` while not trusted.
    valid_at: Option<Head>,
    agreements: AgreementMemo,
}

impl Memo {
    fn forget(&mut self) {
        self.agreements.forget();
    }

    /// Keeps what is remembered in step with an event just appended.
    fn appended(&mut self, event: &Event) {
        match event {
            Event::AgreementRegistered(agreement) => self.agreements.changed(&agreement.agreement),
            Event::AgreementEnded(end) => self.agreements.changed(&end.agreement),
            _ => {}
        }
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that two processes opening a new ledger at once wait for each
    // other (switching to WAL takes an exclusive lock) instead of failing.
    conn.pragma_update(None, "busy_timeout", BUSY_ATTEMPT_MS)?;
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsynced,
    // so an acknowledged write survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Up to 64 MiB of pages (negative: KiB). Ingest writes at the ends of the log
    // and of each kommune's entries, so its working set is small; 256 MiB was no
    // faster at 1M entries (benches/peers) and peaked at 326 MB instead of 93 MB.
    // The cache grows only as pages are read.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Checkpoint the WAL into the database every 64 MiB rather than every 4 MiB: a
    // page changed by several batches between checkpoints (the end of the log, the
    // end of each kommune's entries) is copied into the database once, not each
    // time. Every commit still fsyncs the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    Ok(())
}

/// [`configure`], tried again while SQLite reports the database busy, up to
/// `wait`. Switching a new database to WAL needs an exclusive lock, and when two
/// processes open a new ledger at once SQLite may refuse one at once, without
/// waiting its busy timeout (it would otherwise deadlock): that one tries again.
fn configure_waiting(conn: &Connection, wait: Duration) -> rusqlite::Result<()> {
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

/// Creates the directory owner-only if it is missing (an existing one is left as
/// it is: a backup may go into a shared directory; the file itself is `0600`).
pub fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    if !dir.exists() {
        // Recursive: a directory another process created meanwhile is no error.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LedgerError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Creates the directory owner-only if it is missing, and refuses an existing one
/// that is not the running user's own or that group or others may use
/// ([`datadir::check_private_dir`]): for a data directory and an outbox, which hold
/// full CPR numbers and must stay usable by their owner.
pub fn ensure_private_dir(dir: &Path) -> Result<(), LedgerError> {
    create_private_dir(dir)?;
    datadir::check_private_dir(dir)
}

/// Creates a new file readable and writable by the owner only; fails if it exists.
/// SQLite would create a missing database file `0644`, so every database this
/// program makes (ledger, backup, scratch) is created here first.
pub(crate) fn create_private_file(path: &Path) -> Result<fs::File, LedgerError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LedgerError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        })
}

/// Creates the database file owner-only before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the same mode); refuses an existing one others can read.
fn prepare_database_file(path: &Path) -> Result<(), LedgerError> {
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

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`. A ledger of an older
    /// schema version has its projections rebuilt from its log first.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, DEFAULT_TOTALS_BLOCK)
    }

    /// Opens the ledger in `dir` only if it exists: a missing directory or database
    /// is [`LedgerError::NoLedger`] and nothing is created. Every command but
    /// `init` and `demo` opens the ledger this way, so that a mistyped
    /// `--data-dir` is an error rather than a new, empty ledger.
    pub fn open_existing(dir: &Path) -> Result<Ledger, LedgerError> {
        let missing = || LedgerError::NoLedger {
            path: dir.to_path_buf(),
        };
        // A directory that is someone else's says so, rather than "no ledger".
        if dir.is_dir() {
            datadir::check_private_dir(dir)?;
        }
        match fs::metadata(dir.join(DATABASE_FILE)) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => return Err(missing()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            // Not "missing": a directory we may not read is its own error.
            Err(source) => {
                return Err(LedgerError::Io {
                    action: "read",
                    path: dir.join(DATABASE_FILE),
                    source,
                })
            }
        }
        Ledger::open(dir)
    }

    /// [`Ledger::open`], creating a new ledger with totals blocks of
    /// `new_totals_block` positions (an existing ledger keeps its own). Small
    /// blocks let tests cross many block ends; production uses the default.
    pub fn open_with(dir: &Path, new_totals_block: u64) -> Result<Ledger, LedgerError> {
        ensure_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        prepare_database_file(&path)?;
        let open_error = |source| LedgerError::Open {
            path: path.clone(),
            source,
        };
        let full = |error: rusqlite::Error| disk_full(error, dir, "opening the ledger");
        let conn = Connection::open(&path).map_err(open_error)?;
        configure_waiting(&conn, default_busy_wait()).map_err(|error| match full(error) {
            LedgerError::Sqlite(error) => open_error(error),
            other => other,
        })?;
        match read_meta_if_any(&conn)? {
            None => initialize(&conn, new_totals_block)?,
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) if (1..SCHEMA_VERSION).contains(&found) => {
                tracing::info!(
                    from = found,
                    to = SCHEMA_VERSION,
                    "rebuilding the projections of an older ledger from its log"
                );
                rebuild_projections(&conn, DEFAULT_TOTALS_BLOCK)?;
            }
            Some(found) => {
                return Err(LedgerError::SchemaVersion {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        check_mark(&conn, dir)?;
        Ledger::assemble(conn, &path, dir, true)
    }

    /// Opens the existing ledger in `dir` for reading only: nothing is created or
    /// changed (a read-only data directory, or one on a read-only mount, works).
    /// A missing ledger is an error, not a new one.
    pub fn open_read_only(dir: &Path) -> Result<Ledger, LedgerError> {
        let path = dir.join(DATABASE_FILE);
        if dir.is_dir() {
            datadir::check_private_dir(dir)?;
        }
        if !path.is_file() {
            return Err(LedgerError::NoLedger {
                path: dir.to_path_buf(),
            });
        }
        prepare_database_file(&path)?;
        let conn = open_for_reading(&path)?;
        match read_meta(&conn, "schema_version")? {
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(LedgerError::SchemaVersion {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
            None => {
                return Err(LedgerError::NotALedger {
                    path,
                    why: "it has no schema version".into(),
                })
            }
        }
        check_mark(&conn, dir)?;
        Ledger::assemble(conn, &path, dir, false)
    }

    /// A ledger over an open, checked connection to the database at `path`, whose
    /// scratch files go into `dir`; `marks_head` for the data directory's own.
    fn assemble(
        conn: Connection,
        path: &Path,
        dir: &Path,
        marks_head: bool,
    ) -> Result<Ledger, LedgerError> {
        let totals_block = read_totals_block(&conn, path)?;
        Ok(Ledger {
            conn,
            dir: dir.to_path_buf(),
            memo: Memo::default(),
            totals_block,
            busy_wait: default_busy_wait(),
            marks_head,
        })
    }

    /// How long a write waits, in all, for another process's write transaction
    /// before it fails with [`LedgerError::Busy`] naming the holder.
    pub fn set_busy_wait(&mut self, wait: Duration) {
        self.busy_wait = wait;
    }

    /// Takes the data directory's export lock, waiting up to `wait` for a run
    /// that holds it (see [`ExportLock`]).
    pub fn lock_exports(&self, wait: Duration) -> Result<ExportLock, LedgerError> {
        datadir::lock_exports(&self.dir, wait)
    }

    /// The ledger's identity, which claims an outbox for it. Made when the ledger is
    /// created (or, for a ledger made before identities, at its first export).
    pub fn ledger_id(&mut self) -> Result<u64, LedgerError> {
        if let Some(id) = read_meta(&self.conn, LEDGER_ID_KEY)? {
            return Ok(u64::from_ne_bytes(id.to_ne_bytes()));
        }
        self.write(|appender| {
            let tx = appender.connection();
            if let Some(id) = read_meta(tx, LEDGER_ID_KEY)? {
                return Ok(u64::from_ne_bytes(id.to_ne_bytes()));
            }
            let id = new_ledger_id();
            write_meta(tx, LEDGER_ID_KEY, i64::from_ne_bytes(id.to_ne_bytes()))?;
            Ok(id)
        })
    }

    /// Fixes the cut-off of a batch export: the head now, and a creation time (the
    /// next whole second after both the clock and the head's recorded-at) that
    /// every later append is stamped after, through `meta.recorded_at_floor_us`. So
    /// "events recorded at or before the creation time" is exactly the log up to
    /// the cut-off, and `export --as-of <creation time>` sees what this run saw,
    /// without waiting for the clock. A clock behind the log's newest recorded-at
    /// (stepped back, or the log written with a clock that ran fast) is reported
    /// with both times, and the log's time is used.
    pub fn fix_cutoff(&mut self) -> Result<Cutoff, LedgerError> {
        self.write(|appender| {
            let head = appender.head();
            let now = Utc::now();
            let now_us = now.timestamp_micros();
            if head.recorded_at_us > now_us.saturating_add(1_000_000) {
                tracing::warn!(
                    clock = %now.to_rfc3339(),
                    log = %time_text(head.recorded_at_us),
                    "the clock is behind the log's newest recorded-at; the files are dated from the log's time, and events are stamped no earlier than it until the clock catches up"
                );
            }
            let latest = now.max(from_micros(head.recorded_at_us)?);
            let second = latest.with_nanosecond(0).ok_or(LedgerError::Clock {
                what: "the current second",
            })?;
            let created_at = second + chrono::Duration::seconds(1);
            let floor_us = created_at.timestamp_micros() + 1;
            if appender.floor_us < floor_us {
                write_meta(appender.connection(), FLOOR_KEY, floor_us)?;
                appender.floor_us = floor_us;
            }
            Ok(Cutoff {
                position: head.position,
                created_at,
            })
        })
    }

    /// Opens an existing ledger file read-only, to check a copy (a backup, or a
    /// file about to be restored) without changing it. Scratch files (the replay of
    /// `verify`) go into the file's directory.
    pub fn open_copy(path: &Path) -> Result<Ledger, LedgerError> {
        let not_a_ledger = |why: String| LedgerError::NotALedger {
            path: path.to_path_buf(),
            why,
        };
        if !path.is_file() {
            return Err(not_a_ledger("no such file".into()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|error| LedgerError::Open {
            path: path.to_path_buf(),
            source: error,
        })?;
        // Any SQLite file opens; only one with our schema version is a ledger.
        let found: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .map_err(|error| not_a_ledger(error.to_string()))?;
        if found != SCHEMA_VERSION {
            return Err(LedgerError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Ledger::assemble(conn, path, dir, false)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The connection, for read queries of the other layers (export, CLI).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn head(&self) -> Result<Head, LedgerError> {
        read_head(&self.conn)
    }

    /// Positions per totals block of this ledger.
    pub fn totals_block(&self) -> u64 {
        self.totals_block
    }

    /// Runs `work` in one write transaction and commits durably. `work` appends
    /// through the [`Appender`]; if it fails, nothing is written.
    pub fn write<T>(
        &mut self,
        work: impl FnOnce(&mut Appender<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.transact(work, true, "a write")
    }

    /// Like [`Ledger::write`], but rolls back when `commit` is false. `activity`
    /// names the work for a process left waiting on it.
    fn transact<T>(
        &mut self,
        work: impl FnOnce(&mut Appender<'_>) -> Result<T, LedgerError>,
        commit: bool,
        activity: &str,
    ) -> Result<T, LedgerError> {
        crate::interrupt::check()?;
        let tx = begin_immediate(&self.conn, &self.dir, self.busy_wait)?;
        if self.marks_head {
            datadir::note_writer(&self.dir, activity);
        }
        let head = read_head(&tx)?;
        let floor_us = read_meta(&tx, FLOOR_KEY)?.unwrap_or(0);
        // Untrusted from here until this transaction commits (see `Memo`).
        if self.memo.valid_at.take() != Some(head) {
            self.memo.forget();
        }
        let mut appender = Appender {
            tx: &tx,
            head,
            floor_us,
            memo: &mut self.memo,
            projector: Projector::new(&tx, self.totals_block),
            insert_event: None,
        };
        let result = work(&mut appender).map_err(|error| full_while(error, &self.dir))?;
        let advanced = appender.head != head;
        let head = appender.head;
        // It holds statements of the transaction.
        drop(appender);
        if !commit {
            tx.rollback()?;
            return Ok(result);
        }
        // The last safe point: a stop asked for now leaves nothing written.
        crate::interrupt::check()?;
        tx.commit()
            .map_err(|error| disk_full(error, &self.dir, "committing"))?;
        self.memo.valid_at = Some(head);
        if advanced && self.marks_head {
            // The commit is durable: a mark that fails to move only lags, which is
            // safe; the next commit moves it.
            if let Err(error) = datadir::advance_mark(&self.dir, &head) {
                tracing::warn!(%error, "could not record the new head in ledger.head");
            }
        }
        Ok(result)
    }

    /// Ingests a batch of commands, all or nothing. Every line is checked against
    /// the ledger plus the batch's earlier lines; if any is rejected, every
    /// rejected line is reported and nothing is written. Returns after the commit
    /// is durable.
    pub fn ingest(&mut self, commands: Vec<(usize, Command)>) -> Result<IngestReport, LedgerError> {
        self.ingest_checked(commands, true)
    }

    /// [`Ledger::ingest`], or with `commit` false a dry run: every line is checked
    /// exactly as in a real ingest, then everything is rolled back.
    pub fn ingest_checked(
        &mut self,
        commands: Vec<(usize, Command)>,
        commit: bool,
    ) -> Result<IngestReport, LedgerError> {
        let activity = format!("an ingest of {} line(s)", commands.len());
        self.transact(
            |appender| {
                let mut lines = Vec::with_capacity(commands.len());
                let mut rejected = Vec::new();
                for (index, (line, command)) in commands.into_iter().enumerate() {
                    if index % 4096 == 0 {
                        crate::interrupt::check()?;
                    }
                    let view = SqlView {
                        conn: appender.tx,
                        agreements: &appender.memo.agreements,
                    };
                    match decide(&view, command)? {
                        Ok(Decision::Append(event)) => {
                            let event_type = event.type_name();
                            let position = appender.append(&event)?;
                            lines.push((
                                line,
                                LineOutcome::Appended {
                                    position,
                                    event_type,
                                },
                            ));
                        }
                        Ok(Decision::Duplicate) => lines.push((line, LineOutcome::Duplicate)),
                        Err(error) => rejected.push(LineError { line, error }),
                    }
                }
                if !rejected.is_empty() {
                    return Err(LedgerError::Rejected(rejected));
                }
                Ok(IngestReport {
                    lines,
                    head: appender.head,
                })
            },
            commit,
            &activity,
        )
    }

    /// The position `as_of` stands for: the head, a checked position, or the last
    /// event recorded at or before a time (0 if none).
    pub fn resolve(&self, as_of: AsOf) -> Result<u64, LedgerError> {
        let head = self.head()?.position;
        match as_of {
            AsOf::Head => Ok(head),
            AsOf::Position(position) if position <= head => Ok(position),
            AsOf::Position(position) => Err(LedgerError::NoSuchPosition { position, head }),
            AsOf::Time(time) => position_at_time(&self.conn, time.timestamp_micros()),
        }
    }

    /// Calls `visit` for every event in `from..=to`, in order.
    pub fn for_each_event(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(StoredEvent) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT {} FROM events WHERE position BETWEEN ?1 AND ?2 ORDER BY position",
            StoredEvent::COLUMNS
        ))?;
        let mut rows = statement.query(params![sql_position(from), sql_position(to)])?;
        while let Some(row) = rows.next()? {
            visit(StoredEvent::from_row(row)?)?;
        }
        Ok(())
    }

    /// The stored event at `position`.
    pub fn event_at(&self, position: u64) -> Result<StoredEvent, LedgerError> {
        let head = self.head()?.position;
        self.conn
            .query_row(
                &format!(
                    "SELECT {} FROM events WHERE position = ?1",
                    StoredEvent::COLUMNS
                ),
                params![sql_position(position)],
                StoredEvent::from_row,
            )
            .optional()?
            .ok_or(LedgerError::NoSuchPosition { position, head })
    }

    /// One agreement's totals as of a position.
    pub fn agreement_totals(
        &self,
        agreement: &str,
        at: u64,
    ) -> Result<Option<Totals>, LedgerError> {
        Ok(projection::agreement_totals(
            &self.conn,
            self.totals_block,
            agreement,
            at,
        )?)
    }

    /// The kommune of an agreement registered at or before position `at`;
    /// [`LedgerError::UnknownAgreement`] if there is none.
    pub fn agreement_kommune(&self, agreement: &str, at: u64) -> Result<Kommune, LedgerError> {
        let unknown = || LedgerError::UnknownAgreement {
            agreement: agreement.to_owned(),
            position: at,
        };
        let number =
            projection::agreement_kommune(&self.conn, agreement, at)?.ok_or_else(unknown)?;
        Kommune::from_number(number).ok_or_else(|| LedgerError::NotALedger {
            path: self.dir.join(DATABASE_FILE),
            why: format!("agreement {agreement} has the unknown kommune number {number}"),
        })
    }

    /// How many entries one kommune has at positions `after + 1..=through` and
    /// their net sum, from its totals (no entry is read but those of the blocks the
    /// range starts and ends in).
    pub fn kommune_range_totals(
        &self,
        kommune: Kommune,
        after: u64,
        through: u64,
    ) -> Result<RangeTotals, LedgerError> {
        Ok(projection::kommune_range_totals(
            &self.conn,
            self.totals_block,
            kommune,
            after,
            through,
        )?)
    }

    /// Every kommune's totals as of a position (kommuner without entries left out).
    pub fn kommune_totals(&self, at: u64) -> Result<Vec<(Kommune, Totals)>, LedgerError> {
        Ok(projection::kommune_totals(
            &self.conn,
            self.totals_block,
            at,
        )?)
    }

    /// The agreements of one kommune with their totals as of a position.
    pub fn agreements_of_kommune(
        &self,
        kommune: Kommune,
        at: u64,
    ) -> Result<Vec<(String, Totals)>, LedgerError> {
        Ok(projection::agreements_of_kommune(
            &self.conn,
            self.totals_block,
            kommune,
            at,
        )?)
    }
}

/// Appends events inside a [`Ledger::write`] transaction.
pub struct Appender<'t> {
    tx: &'t Transaction<'t>,
    head: Head,
    /// No event is stamped earlier than this (`meta.recorded_at_floor_us`, set by
    /// [`Ledger::fix_cutoff`]); µs since the Unix epoch.
    floor_us: i64,
    memo: &'t mut Memo,
    projector: Projector<'t>,
    /// The insert every append runs, prepared once per transaction.
    insert_event: Option<CachedStatement<'t>>,
}

impl Appender<'_> {
    /// The transaction, for reads that must see this transaction's appends.
    pub fn connection(&self) -> &Connection {
        self.tx
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Appends one event at the next position, chains its hash and applies it to
    /// the projections. Returns its position.
    pub fn append(&mut self, event: &Event) -> Result<u64, LedgerError> {
        let position = self.head.position + 1;
        // Recorded-at never decreases along the log, even if the clock steps back,
        // so "as of a time" is always a prefix of the log; and it is later than the
        // creation time of every export whose cut-off came before it.
        let recorded_at_us = Utc::now()
            .timestamp_micros()
            .max(self.head.recorded_at_us)
            .max(self.floor_us);
        let event_id = Uuid::new_v4();
        let stream = event.stream();
        let event_type = event.type_name();
        let payload = codec::encode(event);
        let hash = codec::chain_hash(
            &self.head.hash,
            position,
            &event_id,
            &stream,
            event_type,
            CURRENT_SCHEMA_VERSION,
            recorded_at_us,
            &payload,
        );
        let insert = match &mut self.insert_event {
            Some(statement) => statement,
            None => self.insert_event.insert(self.tx.prepare_cached(
                "INSERT INTO events (position, event_id, stream, event_type, schema_version, recorded_at_us, payload, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?),
        };
        insert.execute(params![
            sql_position(position),
            &event_id.as_bytes()[..],
            stream,
            event_type,
            CURRENT_SCHEMA_VERSION,
            recorded_at_us,
            payload,
            &hash[..],
        ])?;
        self.projector.apply(position, event)?;
        self.memo.appended(event);
        self.head = Head {
            position,
            hash,
            recorded_at_us,
        };
        Ok(position)
    }
}

pub(crate) fn sql_position(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

fn read_head(conn: &Connection) -> Result<Head, LedgerError> {
    let row: Option<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT position, hash, recorded_at_us FROM events ORDER BY position DESC LIMIT 1",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let Some((position, hash, recorded_at_us)) = row else {
        return Ok(Head {
            position: 0,
            hash: GENESIS_HASH,
            recorded_at_us: 0,
        });
    };
    let position = u64::try_from(position).unwrap_or(0);
    let hash = hash.try_into().map_err(|_| LedgerError::CorruptPayload {
        position,
        reason: "stored hash is not 32 bytes".into(),
    })?;
    Ok(Head {
        position,
        hash,
        recorded_at_us,
    })
}

/// The last position recorded at or before `time_us` (0 if none).
///
/// Recorded-at never decreases along the log (`Appender::append` makes it so and
/// `verify` checks it), so this is a binary search over positions: about 24
/// lookups by rowid at 10M events, and no index on time to keep up at ingest.
pub(crate) fn position_at_time(conn: &Connection, time_us: i64) -> Result<u64, LedgerError> {
    let mut recorded_at =
        conn.prepare_cached("SELECT recorded_at_us FROM events WHERE position = ?1")?;
    let mut at = |position: u64| -> Result<i64, LedgerError> {
        Ok(recorded_at.query_row(params![sql_position(position)], |row| row.get(0))?)
    };
    // Invariant: every position <= `low` is at or before the time (0 stands for
    // "none"); every position > `high` is after it.
    let (mut low, mut high) = (0u64, read_head(conn)?.position);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if at(middle)? <= time_us {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
}

fn block_sql(block: u64) -> i64 {
    i64::try_from(block.max(1)).unwrap_or(i64::MAX)
}

fn read_meta(conn: &Connection, key: &str) -> Result<Option<i64>, LedgerError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?)
}

fn write_meta(conn: &Connection, key: &str, value: i64) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn read_totals_block(conn: &Connection, path: &Path) -> Result<u64, LedgerError> {
    match read_meta(conn, "totals_block")? {
        Some(block) if block >= 1 => Ok(u64::try_from(block).unwrap_or(1)),
        other => Err(LedgerError::NotALedger {
            path: path.to_path_buf(),
            why: format!("meta.totals_block is {other:?}, not a positive number"),
        }),
    }
}

/// Drops every projection table and builds them again by replaying the log, in
/// one transaction: how a ledger of an older schema version is brought up to date.
/// The events, their bytes and their hash chain are not touched; `verify` checks
/// those as always.
fn rebuild_projections(conn: &Connection, totals_block: u64) -> Result<(), LedgerError> {
    let tx = conn.unchecked_transaction()?;
    // Version 1 kept an index on recorded-at; lookups by time now search positions.
    tx.execute_batch("DROP INDEX IF EXISTS events_by_time")?;
    for (table, _) in PROJECTION_ORDER {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
    }
    tx.execute_batch(PROJECTION_TABLES)?;
    {
        let mut projector = Projector::new(&tx, totals_block);
        let mut statement = tx.prepare(&format!(
            "SELECT {} FROM events ORDER BY position",
            StoredEvent::COLUMNS
        ))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let stored = StoredEvent::from_row(row)?;
            projector.apply(stored.position, &stored.event()?)?;
        }
    }
    write_meta(&tx, "totals_block", block_sql(totals_block))?;
    write_meta(&tx, "schema_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// `meta` key of the ledger's identity (64 random bits).
const LEDGER_ID_KEY: &str = "ledger_id";
/// `meta` key of the earliest recorded-at a new event may have (see
/// [`Ledger::fix_cutoff`]).
const FLOOR_KEY: &str = "recorded_at_floor_us";

fn new_ledger_id() -> u64 {
    let bytes = Uuid::new_v4().into_bytes();
    let mut half = [0u8; 8];
    half.copy_from_slice(&bytes[..8]);
    u64::from_ne_bytes(half)
}

/// The schema version of a database, `None` for a new (empty) one.
fn read_meta_if_any(conn: &Connection) -> Result<Option<i64>, LedgerError> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    read_meta(conn, "schema_version")
}

/// Creates the tables of a new ledger in one write transaction; a process that
/// lost the race to create them finds them made and leaves them be.
fn initialize(conn: &Connection, totals_block: u64) -> Result<(), LedgerError> {
    // Immediate: the write lock is taken before looking, so two processes creating
    // the same ledger do it one after the other.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute_batch(LOG_TABLES)?;
    if read_meta(&tx, "schema_version")?.is_none() {
        tx.execute_batch(PROJECTION_TABLES)?;
        write_meta(&tx, "schema_version", SCHEMA_VERSION)?;
        write_meta(&tx, "totals_block", block_sql(totals_block))?;
        write_meta(
            &tx,
            LEDGER_ID_KEY,
            i64::from_ne_bytes(new_ledger_id().to_ne_bytes()),
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Opens a database read-only. SQLite keeps the index of a WAL database's log in
/// a shared-memory file (`-shm`); where that can be neither opened nor created nor
/// grown, it falls back:
/// - with no `-wal` file (a read-only directory after a clean shutdown), nothing
///   is writing, and the file is opened as immutable;
/// - with one (a full disk after a failed commit), the index is built in this
///   process's memory under an exclusive lock (`locking_mode=EXCLUSIVE`), which
///   writers wait for; the connection still writes nothing (`query_only`).
fn open_for_reading(path: &Path) -> Result<Connection, LedgerError> {
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
        Ok(_) => return Ok(conn),
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
fn disk_full(error: rusqlite::Error, dir: &Path, during: &'static str) -> LedgerError {
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

fn full_while(error: LedgerError, dir: &Path) -> LedgerError {
    match error {
        LedgerError::Sqlite(error) => disk_full(error, dir, "appending"),
        other => other,
    }
}

fn wal_file(path: &Path) -> PathBuf {
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
fn begin_immediate<'c>(
    conn: &'c Connection,
    dir: &Path,
    wait: Duration,
) -> Result<Transaction<'c>, LedgerError> {
    let started = Instant::now();
    loop {
        match Transaction::new_unchecked(conn, TransactionBehavior::Immediate) {
            Ok(tx) => return Ok(tx),
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

/// Refuses a database that is behind, or has another history than, the head
/// this data directory last committed ([`datadir::advance_mark`]).
fn check_mark(conn: &Connection, dir: &Path) -> Result<(), LedgerError> {
    let Some(mark) = datadir::read_mark(dir)? else {
        return Ok(());
    };
    let head = read_head(conn)?;
    if head.position < mark.position {
        return Err(LedgerError::BehindMark {
            dir: dir.to_path_buf(),
            head_position: head.position,
            mark_position: mark.position,
        });
    }
    let hash: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM events WHERE position = ?1",
            params![sql_position(mark.position)],
            |row| row.get(0),
        )
        .optional()?;
    let matches = match hash {
        Some(hash) => hash == mark.hash,
        None => mark.position == 0 && mark.hash == GENESIS_HASH,
    };
    if !matches {
        return Err(LedgerError::MarkMismatch {
            dir: dir.to_path_buf(),
            position: mark.position,
        });
    }
    Ok(())
}

fn from_micros(time_us: i64) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::<Utc>::from_timestamp_micros(time_us).ok_or(LedgerError::Clock {
        what: "the head's recorded-at",
    })
}

fn time_text(time_us: i64) -> String {
    from_micros(time_us).map_or_else(|_| format!("{time_us} µs"), |time| time.to_rfc3339())
}
