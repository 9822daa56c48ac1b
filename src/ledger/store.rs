//! The `Ledger`: opening the database, appending events in durable transactions,
//! idempotent batch ingest, and reading the log and its projections.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

use super::codec::{self, StoredEvent, GENESIS_HASH};
use super::datadir::{self, HeldLock};
use super::keys::{self, KeyFile, Keyring, KEY_ID_META};
use super::postgres::{self, DatabaseUrl, Session};
use super::projection::{self, Projector, RangeTotals, Totals};
use super::schema::{
    DEFAULT_TOTALS_BLOCK, KEYS_TABLES, LOG_TABLES, PROJECTION_ORDER, PROJECTION_TABLES,
    SCHEMA_VERSION,
};
use super::sql::{self, args, Db, Source};
use super::sqlite;
use super::view::{self, AgreementMemo, EntryMemo, SqlView};
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

/// What became of every line of an accepted batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestReport {
    /// (1-based line number, outcome), in input order.
    pub lines: Vec<(usize, LineOutcome)>,
    /// The head after the batch: committed, or in a dry run the head it would have
    /// had (nothing was written).
    pub head: Head,
}

/// Whether an accepted batch is kept or only checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestMode {
    /// Commit durably when every line is accepted.
    Commit,
    /// Check every line exactly as a commit would, then roll everything back.
    DryRun,
}

/// What the rules made of a batch. A refusal is an answer, not a failure: the
/// ledger works as it should, and the input is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a batch may have been rejected"]
pub enum BatchOutcome {
    /// Every line accepted (and, with [`IngestMode::Commit`], durable).
    Accepted(IngestReport),
    /// The lines the rules refused, in input order; nothing was written.
    Rejected(Vec<LineError>),
}

impl BatchOutcome {
    /// The report of an accepted batch, or the refused lines as the error: for a
    /// caller that has no use for a refusal but to fail on it.
    pub fn accepted(self) -> Result<IngestReport, Vec<LineError>> {
        match self {
            BatchOutcome::Accepted(report) => Ok(report),
            BatchOutcome::Rejected(lines) => Err(lines),
        }
    }
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
    db: Db,
    dir: PathBuf,
    clock: Box<dyn Clock>,
    memo: Memo,
    /// Positions per totals block (`meta.totals_block`, see `schema`).
    totals_block: u64,
    /// How long a write waits, in all, for another process's write transaction.
    busy_wait: Duration,
    /// Whether commits move the data directory's head mark (not for a copy).
    marks_head: bool,
    /// Whether heads this ledger hands to the outside world are recorded in the
    /// data directory's mark ([`Ledger::witness_head`]): a node's own ledger,
    /// read-only ones on PostgreSQL included; not a copy or a reader.
    witnesses: bool,
    /// The key file and data keys of a ledger that seals personal data; `None`
    /// for a ledger written before sealing (plain CPRs) and for a copy opened
    /// only to be checked.
    keys: Option<std::sync::Arc<Keyring>>,
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

/// Where the ledger's time comes from: the system clock, or in tests a fixed or
/// stepping one, so that recorded-at, cut-off seconds and as-of need no waiting.
pub trait Clock: Send {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The database of every ledger this process opens by data directory, from the
/// CLI's `--database-url` (or `SF2520_DATABASE_URL`, or `[database] url`): `None`
/// for SQLite in the data directory.
static DATABASE_URL: Mutex<Option<DatabaseUrl>> = Mutex::new(None);

/// Puts this process's ledgers in the PostgreSQL database at `url` (`None`: SQLite
/// in each data directory, the default).
pub fn set_database_url(url: Option<DatabaseUrl>) {
    *DATABASE_URL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = url;
}

fn database_url() -> Option<DatabaseUrl> {
    DATABASE_URL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Held while a run writes official files: the data directory's `export.lock` on
/// SQLite, or on PostgreSQL a session-level advisory lock, held by a connection of
/// its own, that serializes exports on every node using the database.
pub enum ExportLock {
    File(HeldLock),
    Database(Box<::postgres::Client>),
}

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
///
/// The entries memo lasts one transaction: it is forgotten when the next begins.
#[derive(Default)]
struct Memo {
    /// The head after this ledger's last commit; `None` while not trusted.
    valid_at: Option<Head>,
    agreements: AgreementMemo,
    entries: EntryMemo,
}

impl Memo {
    fn forget(&mut self) {
        self.agreements.forget();
        self.entries.forget();
    }

    /// Keeps what is remembered in step with an event just appended.
    fn appended(&mut self, event: &Event) {
        self.agreements.appended(event);
        self.entries.appended(event);
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

/// Where a ledger lives: always a data directory (config, keys, outbox, the head
/// mark), and the database either SQLite in that directory or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Location {
    pub dir: PathBuf,
    pub database: Option<DatabaseUrl>,
}

impl Location {
    /// The data directory with this process's database (see [`set_database_url`]).
    pub fn of(dir: &Path) -> Location {
        Location {
            dir: dir.to_path_buf(),
            database: database_url(),
        }
    }

    /// SQLite in the data directory, whatever the process's default.
    pub fn embedded(dir: &Path) -> Location {
        Location {
            dir: dir.to_path_buf(),
            database: None,
        }
    }

    /// For messages: the database file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.database {
            None => self.dir.join(DATABASE_FILE).display().to_string(),
            Some(url) => url.describe(),
        }
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
    /// `--data-dir` is an error rather than a new, empty one.
    pub fn open_existing(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_at(&Location::of(dir), false, DEFAULT_TOTALS_BLOCK)
    }

    /// [`Ledger::open`], creating a new ledger with totals blocks of
    /// `new_totals_block` positions (an existing ledger keeps its own). Small
    /// blocks let tests cross many block ends; production uses the default.
    pub fn open_with(dir: &Path, new_totals_block: u64) -> Result<Ledger, LedgerError> {
        Ledger::open_at(&Location::of(dir), true, new_totals_block)
    }

    /// Opens the ledger at `location` for reading and writing; `create` makes a
    /// new one where there is none (else that is [`LedgerError::NoLedger`]).
    pub fn open_at(
        location: &Location,
        create: bool,
        new_totals_block: u64,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_checking(location, create, new_totals_block, true)
    }

    /// [`Ledger::open_at`]; `check` refuses a database that lacks this node's
    /// head mark (every open but `accept-loss`'s).
    fn open_checking(
        location: &Location,
        create: bool,
        new_totals_block: u64,
        check: bool,
    ) -> Result<Ledger, LedgerError> {
        match &location.database {
            None => Ledger::open_sqlite_at(&location.dir, create, new_totals_block, check),
            Some(url) => {
                Ledger::open_postgres_at(&location.dir, url, create, new_totals_block, check)
            }
        }
    }

    /// Opens the existing ledger in `dir` even if its database lacks history
    /// this node acknowledged (its head mark), for `sf2520 accept-loss` alone:
    /// with the refusal any other command would get, if there is one. Its writes
    /// are not checked against the mark; [`Ledger::accept_loss`] moves the mark.
    pub fn open_for_loss(dir: &Path) -> Result<(Ledger, Option<LedgerError>), LedgerError> {
        let location = Location::of(dir);
        let mut ledger = Ledger::open_checking(&location, false, DEFAULT_TOTALS_BLOCK, false)?;
        let refusal = check_mark(&ledger.db, dir, None).err();
        if refusal.is_some() {
            ledger.marks_head = false;
        }
        Ok((ledger, refusal))
    }

    /// Records that the loss of the history this node's head mark names is
    /// accepted (`event`), then moves the mark back to the database's head, this
    /// event included. Killed between the two, the mark still refuses, and a
    /// second `accept-loss` records the acceptance again.
    pub fn accept_loss(&mut self, event: crate::domain::LossAccepted) -> Result<Head, LedgerError> {
        // The mark names the lost head: this write neither checks nor moves it.
        self.marks_head = false;
        let head = self.write(|appender| {
            appender.append(&Event::LossAccepted(event.clone()))?;
            Ok(appender.head())
        })?;
        datadir::reset_mark(&self.dir, &head)?;
        self.marks_head = true;
        Ok(head)
    }

    /// [`Ledger::open_at`] for the SQLite file in `dir`; a ledger of an older
    /// schema has its projections rebuilt from its log.
    fn open_sqlite_at(
        dir: &Path,
        create: bool,
        new_totals_block: u64,
        check: bool,
    ) -> Result<Ledger, LedgerError> {
        if !create {
            refuse_missing_database(dir)?;
        }
        ensure_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        sqlite::prepare_database_file(&path)?;
        let conn = sqlite::open_for_writing(&path, dir, default_busy_wait())?;
        let found = sqlite::read_meta_if_any(&conn)?;
        let db = Db::Sqlite(conn);
        match found {
            None => initialize(&db, dir, new_totals_block, Some(new_key_file(dir)?.id()))?,
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) if (1..SCHEMA_VERSION).contains(&found) => {
                tracing::info!(
                    from = found,
                    to = SCHEMA_VERSION,
                    "rebuilding the projections of an older ledger from its log"
                );
                rebuild_projections(&db, DEFAULT_TOTALS_BLOCK)?;
            }
            Some(found) => {
                return Err(LedgerError::SchemaVersion {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        if check {
            check_mark(&db, dir, None)?;
        }
        Ledger::assemble(db, &path, dir, true, true)
    }

    /// [`Ledger::open_at`] for the PostgreSQL database at `url`, with this node's
    /// data directory `dir`.
    fn open_postgres_at(
        dir: &Path,
        url: &DatabaseUrl,
        create: bool,
        new_totals_block: u64,
        check: bool,
    ) -> Result<Ledger, LedgerError> {
        if dir.is_dir() {
            datadir::check_private_dir(dir)?;
        } else if !create {
            return Err(LedgerError::NoLedger {
                path: dir.to_path_buf(),
            });
        }
        ensure_private_dir(dir)?;
        let db = Db::Postgres(Box::new(Session::connect(url)?));
        match postgres_schema_version(&db)? {
            None if create => {
                initialize(&db, dir, new_totals_block, Some(new_key_file(dir)?.id()))?;
            }
            None => {
                return Err(LedgerError::NoLedger {
                    path: PathBuf::from(url.describe()),
                })
            }
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(LedgerError::SchemaVersion {
                    path: PathBuf::from(url.describe()),
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        if check {
            check_mark(&db, dir, None)?;
        }
        Ledger::assemble(db, Path::new(&url.describe()), dir, true, true)
    }

    /// Opens the existing ledger in `dir` for reading only: nothing is created or
    /// changed (a read-only data directory, or one on a read-only mount, works).
    /// A missing ledger is an error, not a new one.
    pub fn open_read_only(dir: &Path) -> Result<Ledger, LedgerError> {
        let location = Location::of(dir);
        if location.database.is_some() {
            // PostgreSQL's reads take no lock and change nothing; only the head
            // mark is not moved.
            let mut ledger = Ledger::open_at(&location, false, DEFAULT_TOTALS_BLOCK)?;
            ledger.marks_head = false;
            ledger.witnesses = true;
            return Ok(ledger);
        }
        let path = dir.join(DATABASE_FILE);
        if dir.is_dir() {
            datadir::check_private_dir(dir)?;
        }
        if !path.is_file() {
            return Err(LedgerError::NoLedger {
                path: dir.to_path_buf(),
            });
        }
        sqlite::prepare_database_file(&path)?;
        let db = Db::Sqlite(sqlite::open_for_reading(&path)?);
        match read_meta(&db, "schema_version")? {
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
        check_mark(&db, dir, None)?;
        Ledger::assemble(db, &path, dir, false, true)
    }

    /// Runs `read` in one read transaction on SQLite: every statement reads the
    /// same snapshot, and none begins and ends a transaction of its own (for the
    /// export's reader, which asks a point query per correction and per data
    /// key, that was a twentieth of its time: issue 24). On PostgreSQL each
    /// statement runs as before. `read` must not write.
    pub fn reading<T, E: From<LedgerError>>(
        &self,
        read: impl FnOnce(&Ledger) -> Result<T, E>,
    ) -> Result<T, E> {
        if !matches!(self.db, Db::Sqlite(_)) {
            return read(self);
        }
        self.db.batch("BEGIN")?;
        let outcome = read(self);
        // Ending a read transaction cannot lose anything; a failure to end it
        // is reported only if the reading itself went well.
        let ended = self.db.batch("COMMIT");
        let value = outcome?;
        ended?;
        Ok(value)
    }

    /// A second connection to the same ledger, for reading on another thread (the
    /// export's reader). It never writes.
    pub fn reader(&self) -> Result<Ledger, LedgerError> {
        let db = match &self.db {
            Db::Sqlite(conn) => {
                let path =
                    conn.path()
                        .map(PathBuf::from)
                        .ok_or_else(|| LedgerError::NotALedger {
                            path: self.dir.clone(),
                            why: "the database has no file to open again".into(),
                        })?;
                Db::Sqlite(sqlite::open_for_reading(&path)?)
            }
            Db::Postgres(session) => Db::Postgres(Box::new(Session::connect(session.url())?)),
        };
        Ok(Ledger {
            db,
            dir: self.dir.clone(),
            clock: Box::new(SystemClock),
            memo: Memo::default(),
            totals_block: self.totals_block,
            busy_wait: self.busy_wait,
            marks_head: false,
            witnesses: false,
            // A cache of data keys of its own: a reader looks one up per record.
            keys: self
                .keys
                .as_deref()
                .map(|keys| std::sync::Arc::new(keys.fresh())),
        })
    }

    /// A ledger over an open, checked connection to the database at `path`, whose
    /// scratch files go into `dir`; `marks_head` for the data directory's own.
    /// `with_keys`: load the key file of a ledger that seals personal data (every
    /// ledger but a copy opened only to be checked).
    fn assemble(
        db: Db,
        path: &Path,
        dir: &Path,
        marks_head: bool,
        with_keys: bool,
    ) -> Result<Ledger, LedgerError> {
        let totals_block = read_totals_block(&db, path)?;
        let keys = if with_keys {
            keyring(&db, dir, path)?
        } else {
            None
        };
        Ok(Ledger {
            db,
            dir: dir.to_path_buf(),
            clock: Box::new(SystemClock),
            memo: Memo::default(),
            totals_block,
            busy_wait: default_busy_wait(),
            marks_head,
            witnesses: marks_head,
            keys,
        })
    }

    /// Whether this ledger seals personal data (its `meta` names a key file).
    pub fn seals_personal_data(&self) -> Result<bool, LedgerError> {
        Ok(read_meta(&self.db, KEY_ID_META)?.is_some())
    }

    /// The key file this ledger was opened with, if it seals personal data.
    pub fn key_file(&self) -> Option<&Path> {
        self.keys.as_deref().map(|keys| keys.file().path())
    }

    /// The keys of a ledger that seals personal data, for the storage layer.
    pub(crate) fn keyring(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// Opens the CPR `event` carries (if it is sealed) with its agreement's data
    /// key. An erased subject is [`LedgerError::PersonalDataErased`].
    pub fn open_personal_data(&self, event: &mut Event) -> Result<(), LedgerError> {
        open_event(&self.db, self.keys.as_deref(), event)
    }

    /// Takes the ledger's time from `clock` from now on (tests: a fixed or
    /// stepping clock).
    pub fn set_clock(&mut self, clock: Box<dyn Clock>) {
        self.clock = clock;
    }

    /// How long a write waits, in all, for another process's write transaction
    /// before it fails with [`LedgerError::Busy`] naming the holder.
    /// How long a write waits for another process (see [`Ledger::set_busy_wait`]).
    pub(crate) fn busy_wait(&self) -> Duration {
        self.busy_wait
    }

    pub fn set_busy_wait(&mut self, wait: Duration) {
        self.busy_wait = wait;
    }

    /// Which database holds the ledger: "SQLite" or "PostgreSQL".
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// Takes the ledger's export lock, waiting up to `wait` for a run that holds
    /// it (see [`ExportLock`]).
    pub fn lock_exports(&self, wait: Duration) -> Result<ExportLock, LedgerError> {
        match &self.db {
            Db::Sqlite(_) => datadir::lock_exports(&self.dir, wait).map(ExportLock::File),
            Db::Postgres(session) => {
                let holder = format!(
                    "sf2520 export (pid {}, host {}, since {})",
                    std::process::id(),
                    datadir::host_name(),
                    Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                );
                postgres::lock_exports(session.url(), &holder, wait)
                    .map(|client| ExportLock::Database(Box::new(client)))
            }
        }
    }

    /// The ledger's identity, which claims an outbox for it. Made when the ledger is
    /// created (or, for a ledger made before identities, at its first export).
    pub fn ledger_id(&mut self) -> Result<u64, LedgerError> {
        if let Some(id) = read_meta(&self.db, LEDGER_ID_KEY)? {
            return Ok(u64::from_ne_bytes(id.to_ne_bytes()));
        }
        self.write(|appender| {
            if let Some(id) = read_meta(appender.db, LEDGER_ID_KEY)? {
                return Ok(u64::from_ne_bytes(id.to_ne_bytes()));
            }
            let id = new_ledger_id();
            write_meta(
                appender.db,
                LEDGER_ID_KEY,
                i64::from_ne_bytes(id.to_ne_bytes()),
            )?;
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
            let now = appender.now;
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
                write_meta(appender.db, FLOOR_KEY, floor_us)?;
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
        let db = Db::Sqlite(sqlite::open_copy(path)?);
        // Any SQLite file opens; only one with our schema version is a ledger.
        let found = read_meta(&db, "schema_version")
            .map_err(|error| not_a_ledger(error.to_string()))?
            .ok_or_else(|| not_a_ledger("it has no schema version".into()))?;
        if found != SCHEMA_VERSION {
            return Err(LedgerError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Ledger::assemble(db, path, dir, false, false)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The connection, for the storage layer's own modules (`ledger::files`,
    /// `ledger::entries`, verify, backup).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The SQLite connection, for what only SQLite has (online backup, pragmas).
    pub(crate) fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.db {
            Db::Sqlite(conn) => Some(conn),
            Db::Postgres(_) => None,
        }
    }

    /// The SQLite connection of a ledger that must be an SQLite file (a backup,
    /// a copy being restored).
    pub(crate) fn sqlite_connection(&self) -> Result<&rusqlite::Connection, LedgerError> {
        self.sqlite().ok_or_else(|| LedgerError::NotALedger {
            path: self.dir.clone(),
            why: "this operation needs an SQLite ledger file".into(),
        })
    }

    pub fn head(&self) -> Result<Head, LedgerError> {
        read_head(&self.db)
    }

    /// On PostgreSQL, what the primary says of its standbys (see
    /// [`postgres::Replication`]) and whether this ledger requires a synchronous
    /// one (`[database] require_synchronous`); `None` on SQLite.
    pub fn replication(&self) -> Result<Option<(postgres::Replication, bool)>, LedgerError> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(session) => Ok(Some((
                postgres::replication(session)?,
                session.url().requires_synchronous(),
            ))),
        }
    }

    /// The head, for handing to the outside world (printed after an export or a
    /// delivery, signed into a checkpoint, named by a backup): it is recorded in
    /// this node's head mark too, so that a database that later lacks it (a
    /// lossy failover) is refused by this node before it writes ([`check_mark`]).
    /// A mark that cannot be moved only lags, with a warning.
    pub fn witness_head(&self) -> Result<Head, LedgerError> {
        let head = read_head(&self.db)?;
        self.witness(&head);
        Ok(head)
    }

    /// Records `head`, which this ledger read from its database, in the node's
    /// head mark (see [`Ledger::witness_head`]).
    pub fn witness(&self, head: &Head) {
        if self.witnesses {
            if let Err(error) = datadir::advance_mark(&self.dir, head) {
                tracing::warn!(%error, "could not record the head in ledger.head (it lags, which is safe; the next commit moves it)");
            }
        }
    }

    /// Positions per totals block of this ledger.
    pub fn totals_block(&self) -> u64 {
        self.totals_block
    }

    /// Runs `work` in one write transaction and commits durably. `work` appends
    /// through the [`Appender`]; if it fails, nothing is written. On PostgreSQL a
    /// lost connection is ridden out (see [`Ledger::transact`]), so `work` may run
    /// more than once: each run starts from what the database holds then.
    pub fn write<T>(
        &mut self,
        work: impl FnMut(&mut Appender<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.transact(work, |_| true, "a write")
    }

    /// Like [`Ledger::write`], but rolls back unless `commit` says, of what `work`
    /// returned, to keep it. `activity` names the work for a process left waiting
    /// on it.
    ///
    /// On PostgreSQL a connection lost before or during the commit (the primary
    /// gone, a failover under way) is not the end: the ledger connects again
    /// through the URL's hosts (waiting up to `[database] failover_wait_secs` for
    /// a primary that accepts writes), and a commit whose answer was lost is
    /// settled by the chain itself: if the database holds this transaction's last
    /// event at its position with its hash, the commit happened; otherwise the
    /// work is repeated from the start (up to [`UNKNOWN_OUTCOME_RETRIES`] times),
    /// where the rules make anything already written a duplicate.
    fn transact<T>(
        &mut self,
        mut work: impl FnMut(&mut Appender<'_>) -> Result<T, LedgerError>,
        commit: impl Fn(&T) -> bool,
        activity: &str,
    ) -> Result<T, LedgerError> {
        let mut attempt = 0;
        loop {
            let error = match self.transact_once(&mut work, &commit, activity) {
                Ok(result) => return Ok(result),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Lost(error)) => {
                    self.reconnect()?;
                    error
                }
                Err(Attempt::Reconnected(error)) => error,
            };
            attempt += 1;
            if attempt > UNKNOWN_OUTCOME_RETRIES {
                return Err(error);
            }
            tracing::warn!(%error, attempt, "the connection to PostgreSQL was lost during {activity}; connected again (to the new primary, after a failover) and repeating it from the start: what the lost commit wrote, if anything, is found as duplicates");
        }
    }

    /// One try of [`Ledger::transact`].
    fn transact_once<T>(
        &mut self,
        work: &mut impl FnMut(&mut Appender<'_>) -> Result<T, LedgerError>,
        commit: &impl Fn(&T) -> bool,
        activity: &str,
    ) -> Result<T, Attempt> {
        crate::interrupt::check().map_err(|stop| Attempt::Failed(stop.into()))?;
        let tx = match WriteTx::begin(&self.db, &self.dir, self.busy_wait) {
            Ok(tx) => tx,
            Err(error) => return Err(self.attempt(error)),
        };
        if self.marks_head {
            datadir::note_writer(&self.dir, activity);
        }
        let head = tx.head;
        let floor_us = match self.check_before_writing(head) {
            Ok(floor_us) => floor_us,
            Err(error) => {
                drop(tx);
                return Err(self.attempt(error));
            }
        };
        // Untrusted from here until this transaction commits (see `Memo`).
        if self.memo.valid_at.take() != Some(head) {
            self.memo.forget();
        }
        self.memo.entries.forget();
        let mut appender = Appender {
            db: &self.db,
            keys: self.keys.as_deref(),
            head,
            floor_us,
            now: self.clock.now(),
            memo: &mut self.memo,
            projector: Projector::new(&self.db, self.totals_block),
        };
        let result = work(&mut appender).map_err(|error| sqlite::full_while(error, &self.dir));
        let new_head = appender.head;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                drop(tx);
                return Err(self.attempt(error));
            }
        };
        let advanced = new_head != head;
        if !commit(&result) {
            tx.rollback().map_err(|error| self.attempt(error))?;
            return Ok(result);
        }
        // The last safe point: a stop asked for now leaves nothing written.
        crate::interrupt::check().map_err(|stop| Attempt::Failed(stop.into()))?;
        if let Err(error) = tx.commit(new_head, &self.dir) {
            let attempt = self.attempt(error);
            self.settle_commit(attempt, advanced.then_some(new_head), activity)?;
        }
        self.memo.valid_at = Some(new_head);
        if advanced && self.marks_head {
            // Durable now: a mark that fails to move only lags, which is safe.
            self.witness(&new_head);
        }
        Ok(result)
    }

    /// After a COMMIT that failed: if the connection was lost with the answer,
    /// connects again and asks the chain whether the transaction's last event
    /// (`written`, if it appended any) is there. `Ok` when it is: the commit
    /// happened.
    fn settle_commit(
        &mut self,
        attempt: Attempt,
        written: Option<Head>,
        activity: &str,
    ) -> Result<(), Attempt> {
        let Attempt::Lost(error) = attempt else {
            return Err(attempt);
        };
        self.reconnect().map_err(Attempt::Failed)?;
        let committed = match written {
            Some(head) => self.holds(head).map_err(Attempt::Failed)?,
            None => false,
        };
        if !committed {
            return Err(Attempt::Reconnected(error));
        }
        tracing::warn!(%error, "the connection to PostgreSQL was lost during the commit of {activity}; connected again, and the database holds its last event with its hash: it was committed");
        Ok(())
    }

    /// What a write checks under the write lock, before it writes anything: that
    /// the database holds every head this node acknowledged (its mark), and, on a
    /// PostgreSQL that must be, that a synchronous standby is attached.
    /// Every write, not once per connection: a database can lose history under
    /// an open connection too (an older copy put in place behind a pooler or a
    /// virtual address). Returns the recorded-at floor (`meta`).
    fn check_before_writing(&self, head: Head) -> Result<i64, LedgerError> {
        if self.marks_head {
            check_mark(&self.db, &self.dir, Some(head))?;
        }
        if let Db::Postgres(session) = &self.db {
            if session.url().requires_synchronous() {
                if let Some(why) = postgres::replication(session)?.shortfall() {
                    return Err(LedgerError::NoSynchronousStandby {
                        database: session.url().describe(),
                        why,
                    });
                }
            }
        }
        // tidy: allow(unwrap-or): absent until the first export fixes a cut-off, and no floor then.
        let floor_us = read_meta(&self.db, FLOOR_KEY)?.unwrap_or(0);
        Ok(floor_us)
    }

    /// Whether the database's log holds `head`'s event at its position with its
    /// hash (so a commit whose answer was lost did happen).
    fn holds(&self, head: Head) -> Result<bool, LedgerError> {
        let hash: Option<[u8; 32]> = self.db.query_opt(
            "SELECT hash FROM events WHERE position = ?1",
            &[sql::position(head.position)?],
            |row| row.bytes(EVENTS, 0),
        )?;
        Ok(hash == Some(head.hash))
    }

    /// Which kind of failure `error` is for [`Ledger::transact`].
    fn attempt(&self, error: LedgerError) -> Attempt {
        let lost = match (&self.db, &error) {
            (Db::Postgres(session), LedgerError::Postgres(cause)) => {
                session.is_closed() || postgres::connection_ended(cause)
            }
            _ => false,
        };
        if lost {
            Attempt::Lost(error)
        } else {
            Attempt::Failed(error)
        }
    }

    /// Ingests a batch of commands, all or nothing. Every line is checked against
    /// the ledger plus the batch's earlier lines; if any is refused, the outcome
    /// lists every refused line and nothing is written. With
    /// [`IngestMode::Commit`] an accepted batch is durable when this returns; with
    /// [`IngestMode::DryRun`] every line is checked exactly as in a real ingest,
    /// then everything is rolled back.
    ///
    /// On PostgreSQL a connection lost before the commit was acknowledged is
    /// ridden out as [`Ledger::transact`] says: a commit found on the chain is
    /// reported as written; otherwise the batch is tried again on a new
    /// connection, and the rules make every line a lost commit did write a
    /// duplicate.
    pub fn ingest(
        &mut self,
        commands: Vec<(usize, Command)>,
        mode: IngestMode,
    ) -> Result<BatchOutcome, LedgerError> {
        let activity = format!("an ingest of {} line(s)", commands.len());
        // A repeat after a lost connection needs the batch again (PostgreSQL only).
        let spare = matches!(self.db, Db::Postgres(_)).then(|| commands.clone());
        let mut first = Some(commands);
        self.transact(
            |appender| {
                let commands = match (first.take(), &spare) {
                    (Some(commands), _) => commands,
                    (None, Some(spare)) => spare.clone(),
                    (None, None) => Vec::new(),
                };
                view::prefetch(
                    appender.db,
                    appender.keys,
                    &commands,
                    &appender.memo.agreements,
                    &mut appender.memo.entries,
                )?;
                let mut lines = Vec::with_capacity(commands.len());
                let mut rejected = Vec::new();
                for (index, (line, command)) in commands.into_iter().enumerate() {
                    if index % 4096 == 0 {
                        crate::interrupt::check()?;
                    }
                    let view = SqlView {
                        conn: appender.db,
                        keys: appender.keys,
                        agreements: &appender.memo.agreements,
                        entries: &appender.memo.entries,
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
                    return Ok(BatchOutcome::Rejected(rejected));
                }
                Ok(BatchOutcome::Accepted(IngestReport {
                    lines,
                    head: appender.head,
                }))
            },
            // A refused line rolls back the lines before it that were appended.
            |outcome| mode == IngestMode::Commit && matches!(outcome, BatchOutcome::Accepted(_)),
            &activity,
        )
    }

    /// Connects again after the connection was lost, waiting for a primary up to
    /// the URL's failover wait.
    fn reconnect(&mut self) -> Result<(), LedgerError> {
        self.memo.valid_at = None;
        self.memo.forget();
        match &self.db {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(session) => {
                session.reconnect(std::time::Instant::now() + session.url().failover_wait())
            }
        }
    }

    /// The position `as_of` stands for: the head, a checked position, or the last
    /// event recorded at or before a time (0 if none).
    pub fn resolve(&self, as_of: AsOf) -> Result<u64, LedgerError> {
        let head = self.head()?.position;
        match as_of {
            AsOf::Head => Ok(head),
            AsOf::Position(position) if position <= head => Ok(position),
            AsOf::Position(position) => Err(LedgerError::NoSuchPosition { position, head }),
            AsOf::Time(time) => position_at_time(&self.db, time.timestamp_micros()),
        }
    }

    /// Calls `visit` for every event in `from..=to`, in order. The events are read
    /// in windows of positions, so `visit` may read the ledger too.
    pub fn for_each_event(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(StoredEvent) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut start = from;
        while start <= to {
            let end = start.saturating_add(EVENT_WINDOW - 1).min(to);
            let events = self.db.query_vec(
                &format!(
                    "SELECT {} FROM events WHERE position BETWEEN ?1 AND ?2 ORDER BY position",
                    StoredEvent::COLUMNS
                ),
                &[sql::position(start)?, sql::position(end)?],
                StoredEvent::from_row,
            )?;
            for event in events {
                visit(event)?;
            }
            if end == u64::MAX {
                break;
            }
            start = end + 1;
        }
        Ok(())
    }

    /// The stored event at `position`.
    pub fn event_at(&self, position: u64) -> Result<StoredEvent, LedgerError> {
        let head = self.head()?.position;
        let Ok(at) = sql::position(position) else {
            return Err(LedgerError::NoSuchPosition { position, head });
        };
        self.db
            .query_opt(
                &format!(
                    "SELECT {} FROM events WHERE position = ?1",
                    StoredEvent::COLUMNS
                ),
                &[at],
                StoredEvent::from_row,
            )?
            .ok_or(LedgerError::NoSuchPosition { position, head })
    }

    /// One agreement's totals as of a position.
    pub fn agreement_totals(
        &self,
        agreement: &str,
        at: u64,
    ) -> Result<Option<Totals>, LedgerError> {
        projection::agreement_totals(&self.db, self.totals_block, agreement, at)
    }

    /// The kommune of an agreement registered at or before position `at`;
    /// [`LedgerError::UnknownAgreement`] if there is none.
    pub fn agreement_kommune(&self, agreement: &str, at: u64) -> Result<Kommune, LedgerError> {
        let unknown = || LedgerError::UnknownAgreement {
            agreement: agreement.to_owned(),
            position: at,
        };
        let number = projection::agreement_kommune(&self.db, agreement, at)?.ok_or_else(unknown)?;
        Kommune::from_number(number).ok_or_else(|| LedgerError::CorruptLedger {
            position: None,
            what: format!("agreement {agreement} has the unknown kommune number {number}"),
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
        projection::kommune_range_totals(&self.db, self.totals_block, kommune, after, through)
    }

    /// Every kommune's totals as of a position (kommuner without entries left out).
    pub fn kommune_totals(&self, at: u64) -> Result<Vec<(Kommune, Totals)>, LedgerError> {
        projection::kommune_totals(&self.db, self.totals_block, at)
    }

    /// The agreements of one kommune with their totals as of a position.
    pub fn agreements_of_kommune(
        &self,
        kommune: Kommune,
        at: u64,
    ) -> Result<Vec<(String, Totals)>, LedgerError> {
        projection::agreements_of_kommune(&self.db, self.totals_block, kommune, at)
    }
}

/// How many times an ingest whose commit's outcome is unknown is repeated.
pub const UNKNOWN_OUTCOME_RETRIES: u32 = 3;

/// Events read per query when walking the log (bounded memory on both backends).
const EVENT_WINDOW: u64 = 8_192;

/// A missing SQLite ledger in `dir` is [`LedgerError::NoLedger`], and nothing is
/// created.
fn refuse_missing_database(dir: &Path) -> Result<(), LedgerError> {
    let missing = || LedgerError::NoLedger {
        path: dir.to_path_buf(),
    };
    // A directory that is someone else's says so, rather than "no ledger".
    if dir.is_dir() {
        datadir::check_private_dir(dir)?;
    }
    match fs::metadata(dir.join(DATABASE_FILE)) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(missing()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(missing()),
        // Not "missing": a directory we may not read is its own error.
        Err(source) => Err(LedgerError::Io {
            action: "read",
            path: dir.join(DATABASE_FILE),
            source,
        }),
    }
}

/// An open write transaction: rolled back when dropped uncommitted.
struct WriteTx<'d> {
    db: &'d Db,
    /// The head when the transaction began, read under the write lock.
    head: Head,
    open: bool,
}

impl<'d> WriteTx<'d> {
    /// Begins a write transaction and takes the ledger's write lock: SQLite's
    /// `BEGIN IMMEDIATE` (waiting up to `wait`), or on PostgreSQL the row of
    /// `ledger_head` locked `FOR UPDATE`, so that writers on every node take turns
    /// and each appends at the head the previous one committed.
    fn begin(db: &'d Db, dir: &Path, wait: Duration) -> Result<WriteTx<'d>, LedgerError> {
        match db {
            Db::Sqlite(conn) => sqlite::begin_immediate(conn, dir, wait)?,
            Db::Postgres(_) => db.batch("BEGIN ISOLATION LEVEL READ COMMITTED")?,
        }
        // From here on, dropping `tx` rolls back.
        let mut tx = WriteTx {
            db,
            head: Head::EMPTY,
            open: true,
        };
        if let Db::Postgres(_) = db {
            tx.lock_head_row(wait)?;
        }
        tx.head = read_head(db)?;
        Ok(tx)
    }

    /// Locks the one row of `ledger_head` (PostgreSQL), waiting up to `wait` for a
    /// writer on another connection, and checks it against the log's tail.
    fn lock_head_row(&self, wait: Duration) -> Result<(), LedgerError> {
        let db = self.db;
        db.batch(&format!(
            "SET LOCAL lock_timeout = {}",
            wait.as_millis().max(1)
        ))?;
        let locked = db.query_opt(
            "SELECT position FROM ledger_head WHERE id = 1 FOR UPDATE",
            &[],
            |row| row.unsigned(HEAD_ROW, 0),
        );
        let locked = match locked {
            Err(LedgerError::Postgres(error))
                if error.code() == Some(&::postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                return Err(LedgerError::Busy {
                    holder: "a write on another connection (see pg_stat_activity)".into(),
                    waited_s: wait.as_secs(),
                })
            }
            other => other?,
        };
        let locked = locked.ok_or_else(|| LedgerError::CorruptLedger {
            position: None,
            what: "the ledger_head row is missing".into(),
        })?;
        let tail = read_head(db)?.position;
        if tail != locked {
            return Err(LedgerError::CorruptLedger {
                position: Some(tail),
                what: format!("ledger_head says position {locked}, the log ends at {tail}"),
            });
        }
        // Statements after the lock wait as long as they need.
        db.batch("SET LOCAL lock_timeout = 0")
    }

    fn rollback(mut self) -> Result<(), LedgerError> {
        self.open = false;
        self.db.rollback()
    }

    /// Commits durably; on PostgreSQL moves the head row to `head` first.
    fn commit(mut self, head: Head, dir: &Path) -> Result<(), LedgerError> {
        if let Db::Postgres(_) = self.db {
            if head != self.head {
                self.db.execute(
                    "UPDATE ledger_head SET position = ?1, hash = ?2, recorded_at_us = ?3 WHERE id = 1",
                    &[sql::position(head.position)?, (&head.hash).into(), head.recorded_at_us.into()],
                )?;
            }
        }
        self.open = false;
        match self.db {
            Db::Sqlite(conn) => conn
                .execute_batch("COMMIT")
                .map_err(|error| sqlite::disk_full(error, dir, "committing")),
            Db::Postgres(_) => self.db.batch("COMMIT"),
        }
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(error) = self.db.rollback() {
                tracing::debug!(%error, "rolling back a failed write");
            }
        }
    }
}

/// How one try of a write transaction failed.
enum Attempt {
    /// For good: the error is the answer.
    Failed(LedgerError),
    /// The connection is gone; nothing is known to be written. Connect again and
    /// repeat.
    Lost(LedgerError),
    /// The connection was lost and is back; the transaction did not commit.
    /// Repeat.
    Reconnected(LedgerError),
}

const HEAD_ROW: Source = Source {
    table: "ledger_head",
};
const EVENTS: Source = Source { table: "events" };
const META: Source = Source { table: "meta" };

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        position: 0,
        hash: GENESIS_HASH,
        recorded_at_us: 0,
    };
}

/// Appends events inside a [`Ledger::write`] transaction.
pub struct Appender<'t> {
    db: &'t Db,
    /// Seals each event's CPR before it is stored (`None`: a ledger written
    /// before sealing, which stays plain until it is sealed as a whole).
    keys: Option<&'t Keyring>,
    head: Head,
    /// No event is stamped earlier than this (`meta.recorded_at_floor_us`, set by
    /// [`Ledger::fix_cutoff`]); µs since the Unix epoch.
    floor_us: i64,
    /// The clock's time when the transaction began.
    now: DateTime<Utc>,
    memo: &'t mut Memo,
    projector: Projector<'t>,
}

impl Appender<'_> {
    pub fn head(&self) -> Head {
        self.head
    }

    /// Whether `kommune` already has an official file with løbenummer `sequence`
    /// or a later one, as this transaction sees it.
    pub fn sequence_taken(&self, kommune: Kommune, sequence: u32) -> Result<bool, LedgerError> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM files WHERE kommune = ?1 AND sequence >= ?2 LIMIT 1",
                &args![kommune.number(), sequence],
                |_| Ok(()),
            )?
            .is_some())
    }

    /// Appends one event at the next position, chains its hash and applies it to
    /// the projections. Returns its position.
    pub fn append(&mut self, event: &Event) -> Result<u64, LedgerError> {
        let position = self.head.position + 1;
        // Recorded-at never decreases along the log, even if the clock steps back,
        // so "as of a time" is always a prefix of the log; and it is later than the
        // creation time of every export whose cut-off came before it.
        let recorded_at_us = self
            .now
            .timestamp_micros()
            .max(self.head.recorded_at_us)
            .max(self.floor_us);
        let event_id = Uuid::new_v4();
        let stream = event.stream();
        let event_type = event.type_name();
        let (payload, schema_version) = self.stored_form(event)?;
        let hash = codec::chain_hash(
            &self.head.hash,
            position,
            &event_id,
            &stream,
            event_type,
            schema_version,
            recorded_at_us,
            &payload,
        );
        let stored = StoredEvent {
            position,
            event_id,
            stream,
            event_type: event_type.to_string(),
            schema_version,
            recorded_at_us,
            payload,
            hash,
        };
        insert_event(self.db, &stored)?;
        let corrected_agreement = self.memo.entries.corrected_agreement(event);
        self.projector
            .apply_knowing(position, event, corrected_agreement.as_deref())?;
        self.memo.appended(event);
        self.head = Head {
            position,
            hash,
            recorded_at_us,
        };
        Ok(position)
    }
}

impl Appender<'_> {
    /// The payload and schema version `event` is stored as: with its CPR sealed
    /// when this ledger seals personal data.
    fn stored_form(&self, event: &Event) -> Result<(Vec<u8>, u16), LedgerError> {
        let plain_cpr = event
            .personal_cpr()
            .is_some_and(|(_, cpr)| !cpr.is_sealed());
        match self.keys {
            Some(keys) if plain_cpr => {
                let mut sealed = event.clone();
                keys.seal(self.db, &mut sealed)?;
                Ok((codec::encode(&sealed), codec::schema_version(&sealed)))
            }
            _ => Ok((codec::encode(event), codec::schema_version(event))),
        }
    }

    /// Destroys the data keys of `agreements` in this transaction (retention).
    pub(crate) fn erase_data_keys(
        &mut self,
        agreements: &[crate::domain::AgreementRef],
        erased_position: u64,
    ) -> Result<(), LedgerError> {
        let keys = self.keys.ok_or_else(|| LedgerError::NotALedger {
            path: PathBuf::from("(this ledger)"),
            why: "it holds plain CPRs, which retention cannot erase by key; seal it first \
                  (docs/operations.md, \"Sealing an older ledger\")"
                .into(),
        })?;
        keys.erase(
            self.db,
            agreements,
            self.head.recorded_at_us,
            erased_position,
        )
    }
}

/// Opens the CPR of `event` if it is sealed; a sealed CPR in a ledger opened
/// without its keys (a copy being checked) is an error saying so.
pub(crate) fn open_event(
    db: &Db,
    keys: Option<&Keyring>,
    event: &mut Event,
) -> Result<(), LedgerError> {
    match keys {
        Some(keys) => keys.open(db, event),
        None if event.personal_cpr().is_some_and(|(_, cpr)| cpr.is_sealed()) => {
            Err(LedgerError::NotALedger {
                path: PathBuf::from("(a copy)"),
                why: "its CPRs are sealed and it was opened without its key file; open it as \
                      a data directory's ledger"
                    .into(),
            })
        }
        None => Ok(()),
    }
}

/// The key file of a new ledger: the configured one if it exists already (an
/// operator may provision it first, e.g. through systemd's `LoadCredential=`),
/// else a new one.
fn new_key_file(dir: &Path) -> Result<KeyFile, LedgerError> {
    KeyFile::load_or_create(&keys::key_file_path(dir))
}

/// The keys of the ledger in `db` (at `path`, for messages) with data directory
/// `dir`: `None` if it stores plain CPRs, else its key file, which must be the one
/// whose identity `meta` holds.
pub(super) fn keyring(
    db: &Db,
    dir: &Path,
    path: &Path,
) -> Result<Option<std::sync::Arc<Keyring>>, LedgerError> {
    let Some(expected) = read_meta(db, KEY_ID_META)? else {
        return Ok(None);
    };
    let key_path = keys::key_file_path(dir);
    let file = KeyFile::load(&key_path)?;
    if file.id() != expected {
        return Err(LedgerError::KeyFileMismatch {
            path: key_path,
            ledger: path.display().to_string(),
            expected: u64::from_ne_bytes(expected.to_ne_bytes()),
            found: u64::from_ne_bytes(file.id().to_ne_bytes()),
        });
    }
    Ok(Some(std::sync::Arc::new(Keyring::new(file))))
}

/// Writes one stored event as it is (its position, id, time and hash).
pub(crate) fn insert_event(db: &Db, stored: &StoredEvent) -> Result<(), LedgerError> {
    db.insert_later(
        "INSERT INTO events (position, event_id, stream, event_type, schema_version, recorded_at_us, payload, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        &[
            sql::position(stored.position)?,
            stored.event_id.as_bytes().into(),
            (&stored.stream).into(),
            (&stored.event_type).into(),
            stored.schema_version.into(),
            stored.recorded_at_us.into(),
            stored.payload.as_slice().into(),
            (&stored.hash).into(),
        ],
    )
}

pub(crate) fn read_head(db: &Db) -> Result<Head, LedgerError> {
    let row = db.query_opt(
        "SELECT position, hash, recorded_at_us FROM events ORDER BY position DESC LIMIT 1",
        &[],
        |row| {
            Ok(Head {
                position: row.unsigned(EVENTS, 0)?,
                hash: row.bytes(EVENTS, 1)?,
                recorded_at_us: row.int(EVENTS, 2)?,
            })
        },
    )?;
    Ok(row.unwrap_or(Head::EMPTY))
}

/// The last position recorded at or before `time_us` (0 if none).
///
/// Recorded-at never decreases along the log (`Appender::append` makes it so and
/// `verify` checks it), so this is a binary search over positions: about 24
/// lookups by position at 10M events, and no index on time to keep up at ingest.
pub(crate) fn position_at_time(db: &Db, time_us: i64) -> Result<u64, LedgerError> {
    let at = |position: u64| -> Result<i64, LedgerError> {
        db.query_one(
            "SELECT recorded_at_us FROM events WHERE position = ?1",
            &[sql::position(position)?],
            |row| row.int(EVENTS, 0),
        )
    };
    // Invariant: every position <= `low` is at or before the time (0 stands for
    // "none"); every position > `high` is after it.
    let (mut low, mut high) = (0u64, read_head(db)?.position);
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

pub(crate) fn read_meta(db: &Db, key: &str) -> Result<Option<i64>, LedgerError> {
    db.query_opt(
        "SELECT value FROM meta WHERE key = ?1",
        &args![key],
        |row| row.int(META, 0),
    )
}

pub(crate) fn write_meta(db: &Db, key: &str, value: i64) -> Result<(), LedgerError> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &args![key, value],
    )?;
    Ok(())
}

fn read_totals_block(db: &Db, path: &Path) -> Result<u64, LedgerError> {
    let found = read_meta(db, "totals_block")?;
    found
        .and_then(|block| u64::try_from(block).ok())
        .filter(|block| *block >= 1)
        .ok_or_else(|| LedgerError::NotALedger {
            path: path.to_path_buf(),
            why: format!("meta.totals_block is {found:?}, not a positive number"),
        })
}

/// Drops every projection table and builds them again by replaying the log, in
/// one transaction: how a ledger of an older schema version is brought up to date.
/// The events, their bytes and their hash chain are not touched; `verify` checks
/// those as always.
fn rebuild_projections(db: &Db, totals_block: u64) -> Result<(), LedgerError> {
    db.batch("BEGIN IMMEDIATE")?;
    let rebuilt = (|| {
        // Version 1 kept an index on recorded-at; lookups by time now search positions.
        db.batch("DROP INDEX IF EXISTS events_by_time")?;
        for (table, _) in PROJECTION_ORDER {
            db.batch(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
        db.batch(PROJECTION_TABLES)?;
        replay_into(db, db, totals_block, 1)?;
        let block = i64::try_from(totals_block).map_err(|_| LedgerError::PositionOutOfRange {
            position: totals_block,
        })?;
        write_meta(db, "totals_block", block)?;
        write_meta(db, "schema_version", SCHEMA_VERSION)
    })();
    db.finish(rebuilt)
}

/// Applies the events of `source` from position `from` to the projections of
/// `target` (the same database when projections are rebuilt in place).
pub(crate) fn replay_into(
    source: &Db,
    target: &Db,
    totals_block: u64,
    from: u64,
) -> Result<u64, LedgerError> {
    let mut projector = Projector::new(target, totals_block);
    let mut start = from;
    let mut applied = 0;
    loop {
        let events = source.query_vec(
            &format!(
                "SELECT {} FROM events WHERE position >= ?1 ORDER BY position LIMIT {EVENT_WINDOW}",
                StoredEvent::COLUMNS
            ),
            &[sql::position(start)?],
            StoredEvent::from_row,
        )?;
        let Some(last) = events.last().map(|event| event.position) else {
            return Ok(applied);
        };
        for stored in events {
            projector.apply(stored.position, &stored.event()?)?;
            applied += 1;
        }
        start = last + 1;
    }
}

/// `meta` key of the ledger's identity (64 random bits).
pub(crate) const LEDGER_ID_KEY: &str = "ledger_id";
/// `meta` key of the earliest recorded-at a new event may have (see
/// [`Ledger::fix_cutoff`]).
pub(crate) const FLOOR_KEY: &str = "recorded_at_floor_us";

fn new_ledger_id() -> u64 {
    let bytes = Uuid::new_v4().into_bytes();
    let mut half = [0u8; 8];
    half.copy_from_slice(&bytes[..8]);
    u64::from_ne_bytes(half)
}

/// The schema version of a PostgreSQL ledger, `None` for an empty database.
pub(crate) fn postgres_schema_version(db: &Db) -> Result<Option<i64>, LedgerError> {
    let has_meta = db.query_one("SELECT to_regclass('meta') IS NOT NULL", &[], |row| {
        row.flag(META, 0)
    })?;
    if !has_meta {
        return Ok(None);
    }
    read_meta(db, "schema_version")
}

/// Creates the tables of a new ledger in one write transaction; a process that
/// lost the race to create them finds them made and leaves them be.
pub(crate) fn initialize(
    db: &Db,
    dir: &Path,
    totals_block: u64,
    key_file_id: Option<i64>,
) -> Result<(), LedgerError> {
    let block =
        i64::try_from(totals_block.max(1)).map_err(|_| LedgerError::PositionOutOfRange {
            position: totals_block,
        })?;
    match db {
        // Immediate: the write lock is taken before looking, so two processes
        // creating the same ledger do it one after the other.
        Db::Sqlite(conn) => sqlite::begin_immediate(conn, dir, default_busy_wait())?,
        // Nodes creating the ledger at once take turns on a transaction lock.
        Db::Postgres(_) => {
            db.batch("BEGIN")?;
            db.batch(&format!(
                "SELECT pg_advisory_xact_lock({})",
                postgres::INIT_LOCK_KEY
            ))?;
        }
    }
    let created = (|| {
        let (log, projections) = match db {
            Db::Sqlite(_) => (LOG_TABLES, PROJECTION_TABLES),
            Db::Postgres(_) => (postgres::SCHEMA, postgres::PROJECTION_SCHEMA),
        };
        db.batch(log)?;
        if read_meta(db, "schema_version")?.is_none() {
            db.batch(projections)?;
            if let Db::Postgres(_) = db {
                db.execute(
                    "INSERT INTO ledger_head (id, position, hash, recorded_at_us) VALUES (1, 0, ?1, 0)",
                    &args![&GENESIS_HASH],
                )?;
            }
            write_meta(db, "schema_version", SCHEMA_VERSION)?;
            write_meta(db, "totals_block", block)?;
            write_meta(
                db,
                LEDGER_ID_KEY,
                i64::from_ne_bytes(new_ledger_id().to_ne_bytes()),
            )?;
            if let Some(id) = key_file_id {
                db.batch(match db {
                    Db::Sqlite(_) => KEYS_TABLES,
                    Db::Postgres(_) => postgres::KEYS_SCHEMA,
                })?;
                write_meta(db, KEY_ID_META, id)?;
            }
        }
        Ok(())
    })();
    db.finish(created)
}

/// Refuses a database that is behind, or has another history than, the head
/// this data directory last acknowledged ([`datadir::advance_mark`]): on SQLite a
/// lost WAL or an older copy put in place, on PostgreSQL a failover to a standby
/// that had not received this node's last commits. `head` is the database's
/// head if the caller has read it (under the write lock). The cost: a small
/// file read, and an indexed lookup when the database's head is past the mark.
fn check_mark(db: &Db, dir: &Path, head: Option<Head>) -> Result<(), LedgerError> {
    let Some(mark) = datadir::read_mark(dir)? else {
        return Ok(());
    };
    let head = match head {
        Some(head) => head,
        None => read_head(db)?,
    };
    let (cause, remedy) = match db {
        Db::Sqlite(_) => (
            "as when ledger.sqlite3-wal is deleted after a crash or an older copy of the \
             database is put in place",
            "Put the missing file back, or `sf2520 restore` the newest backup (which records \
             the rollback)",
        ),
        Db::Postgres(_) => (
            "as after a failover to a standby that had not received them, or a restore of \
             an older backup",
            "Bring the lost events back if the old primary's data still exists. Only if the \
             loss is accepted (with UDK, for files already delivered), run `sf2520 \
             accept-loss` on this node: docs/operations.md, \"A failover that lost writes\"",
        ),
    };
    let database = match db {
        Db::Sqlite(_) => dir.join(DATABASE_FILE).display().to_string(),
        Db::Postgres(session) => session.url().describe(),
    };
    let lost = |head_position| super::error::LostHistory {
        dir: dir.to_path_buf(),
        database: database.clone(),
        head_position,
        mark_position: mark.position,
        mark_hash: hex(&mark.hash),
        cause,
        remedy,
    };
    if head.position < mark.position {
        return Err(LedgerError::BehindMark(Box::new(lost(head.position))));
    }
    let hash: Option<[u8; 32]> = if head.position == mark.position {
        Some(head.hash)
    } else {
        db.query_opt(
            "SELECT hash FROM events WHERE position = ?1",
            &[sql::position(mark.position)?],
            |row| row.bytes(EVENTS, 0),
        )?
    };
    let matches = match hash {
        Some(hash) if mark.position > 0 => hash == mark.hash,
        _ => mark.position == 0 && mark.hash == GENESIS_HASH,
    };
    if !matches {
        return Err(LedgerError::MarkMismatch(Box::new(lost(head.position))));
    }
    Ok(())
}

/// Lower-case hex, for messages.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_micros(time_us: i64) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::<Utc>::from_timestamp_micros(time_us).ok_or(LedgerError::Clock {
        what: "the head's recorded-at",
    })
}

/// The UTC date of a time in µs since the Unix epoch, for messages.
pub(crate) fn date_text(time_us: i64) -> String {
    from_micros(time_us).map_or_else(
        |_| format!("{time_us} µs"),
        |time| time.date_naive().to_string(),
    )
}

fn time_text(time_us: i64) -> String {
    from_micros(time_us).map_or_else(|_| format!("{time_us} µs"), |time| time.to_rfc3339())
}
