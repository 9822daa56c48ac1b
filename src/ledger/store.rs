//! The `Ledger`: opening the database, appending events in durable transactions,
//! idempotent batch ingest, and reading the log and its projections.

use std::fs::{self, DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{
    params, CachedStatement, Connection, OpenFlags, OptionalExtension, Transaction,
    TransactionBehavior,
};
use uuid::Uuid;

use super::codec::{self, StoredEvent, CURRENT_SCHEMA_VERSION, GENESIS_HASH};
use super::projection::{self, Projector, Totals};
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
    // WAL with synchronous=FULL: a commit returns only after the WAL is fsynced,
    // so an acknowledged write survives power loss (DESIGN.md §7.1).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 10_000)?;
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

/// Creates the directory owner-only if it is missing.
pub fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LedgerError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
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
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .map_err(open_error),
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
        create_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        prepare_database_file(&path)?;
        let open_error = |source| LedgerError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_error)?;
        configure(&conn).map_err(open_error)?;
        conn.execute_batch(LOG_TABLES).map_err(open_error)?;
        match read_meta(&conn, "schema_version")? {
            None => {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(PROJECTION_TABLES)?;
                write_meta(&tx, "schema_version", SCHEMA_VERSION)?;
                write_meta(&tx, "totals_block", block_sql(new_totals_block))?;
                tx.commit()?;
            }
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
        let totals_block = read_totals_block(&conn, &path)?;
        Ok(Ledger {
            conn,
            dir: dir.to_path_buf(),
            memo: Memo::default(),
            totals_block,
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
        let totals_block = read_totals_block(&conn, path)?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Ledger {
            conn,
            dir,
            memo: Memo::default(),
            totals_block,
        })
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
        self.transact(work, true)
    }

    /// Like [`Ledger::write`], but rolls back when `commit` is false.
    fn transact<T>(
        &mut self,
        work: impl FnOnce(&mut Appender<'_>) -> Result<T, LedgerError>,
        commit: bool,
    ) -> Result<T, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = read_head(&tx)?;
        // Untrusted from here until this transaction commits (see `Memo`).
        if self.memo.valid_at.take() != Some(head) {
            self.memo.forget();
        }
        let mut appender = Appender {
            tx: &tx,
            head,
            memo: &mut self.memo,
            projector: Projector::new(&tx, self.totals_block),
            insert_event: None,
        };
        let result = work(&mut appender)?;
        let head = appender.head;
        // It holds statements of the transaction.
        drop(appender);
        if commit {
            tx.commit()?;
            self.memo.valid_at = Some(head);
        } else {
            tx.rollback()?;
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
        self.transact(
            |appender| {
                let mut lines = Vec::with_capacity(commands.len());
                let mut rejected = Vec::new();
                for (line, command) in commands {
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

    /// How many entries one kommune has at positions `after + 1..=through`, from its
    /// totals (no entry is read but those of the blocks the range starts and ends in).
    pub fn kommune_entries_between(
        &self,
        kommune: Kommune,
        after: u64,
        through: u64,
    ) -> Result<u64, LedgerError> {
        Ok(projection::kommune_entries_between(
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
        // so "as of a time" is always a prefix of the log.
        let recorded_at_us = Utc::now().timestamp_micros().max(self.head.recorded_at_us);
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
