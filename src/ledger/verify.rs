//! `verify`: walks the hash chain from position 1 and checks that the projections
//! equal a replay of the log into an empty database. The walk also collects every
//! `FileExported` event, so that the caller can check the outbox against the log
//! rather than against a projection.

use std::fs;

use super::codec::{StoredEvent, GENESIS_HASH};
use super::projection::Projector;
use super::schema::{PROJECTION_ORDER, PROJECTION_TABLES};
use super::sql::{self, Db, Source, Value};
use super::store::create_private_file;
use super::{Ledger, LedgerError};
use crate::domain::{Event, FileExported, FileRef};

/// The walk along the hash chain: what the next event must follow.
struct ChainWalk {
    previous: [u8; 32],
    previous_time: i64,
    expected_position: u64,
    failure: Option<VerifyFailure>,
    /// Every `FileExported` event met so far, with its position.
    files: Vec<(u64, FileExported)>,
    /// Files whose outbox copies `retention --apply` removed.
    retired: Vec<FileRef>,
    /// Events that hold a CPR in plain (a ledger written before sealing).
    plain_cprs: u64,
}

impl Default for ChainWalk {
    fn default() -> Self {
        ChainWalk {
            previous: GENESIS_HASH,
            previous_time: i64::MIN,
            expected_position: 1,
            failure: None,
            files: Vec::new(),
            retired: Vec::new(),
            plain_cprs: 0,
        }
    }
}

impl ChainWalk {
    /// Remembers what the audit needs of a verified event.
    fn note(&mut self, position: u64, event: Event) {
        if event
            .personal_cpr()
            .is_some_and(|(_, cpr)| !cpr.is_sealed())
        {
            self.plain_cprs += 1;
        }
        match event {
            Event::FileExported(file) => self.files.push((position, file)),
            Event::RetentionApplied(retention) => self.retired.extend(retention.files),
            _ => {}
        }
    }

    fn fail(&mut self, position: u64, what: String) {
        self.failure
            .get_or_insert(VerifyFailure::Log { position, what });
    }

    /// Checks one event against the chain so far; its decoded event if it holds.
    fn check(&mut self, stored: &StoredEvent) -> Option<Event> {
        let position = stored.position;
        let event = if position != self.expected_position {
            let expected = self.expected_position;
            self.fail(
                position,
                format!("expected position {expected} (a gap in the log)"),
            );
            None
        } else if stored.expected_hash(&self.previous) != stored.hash {
            let what = "hash chain broken: the event or the one before it was altered";
            self.fail(position, what.into());
            None
        } else if stored.recorded_at_us < self.previous_time {
            self.fail(position, "recorded-at goes back in time".into());
            None
        } else {
            match stored.event() {
                Ok(event) => Some(event),
                Err(error) => {
                    self.fail(position, error.to_string());
                    None
                }
            }
        };
        self.previous = stored.hash;
        self.previous_time = stored.recorded_at_us;
        self.expected_position += 1;
        event
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head_hash: [u8; 32],
    /// Projection rows compared against the replay.
    pub projection_rows: u64,
    /// Every official file's `FileExported` event, with its position, in log order.
    pub files: Vec<(u64, FileExported)>,
    /// Official files whose outbox copies `retention --apply` removed (recorded by
    /// `RetentionApplied`): not missing, gone on purpose.
    pub retired: Vec<FileRef>,
    /// Events that hold a CPR in plain: a ledger written before sealing (0 in a
    /// sealed one). `verify` warns while there are any.
    pub plain_cprs: u64,
}

/// Where and how the ledger failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    #[error("position {position}: {what}")]
    Log { position: u64, what: String },
    #[error("projection table {table} differs from a replay of the log ({rows} row(s) differ)")]
    Projection { table: &'static str, rows: u64 },
}

impl Ledger {
    /// Verifies the whole ledger. `progress` is called with each verified position.
    /// `Ok(Err(..))` names the first damage found; `Err` is a failure to read at all.
    pub fn verify(
        &self,
        mut progress: impl FnMut(u64),
    ) -> Result<Result<VerifyReport, VerifyFailure>, LedgerError> {
        let replay_path = self.create_replay_file()?;
        // Removed however the replay ends: done, damage found, an error, or a
        // signal's stop (`interrupt::check` in the walk).
        let result = self.verify_into(&replay_path, &mut progress);
        let _ = fs::remove_file(&replay_path);
        result
    }

    /// The scratch database of the replay: in the data directory, or, where that
    /// cannot be written (a read-only one), in the system's temporary directory.
    /// The replay holds the projections (agreements, amounts): owner-only, like the
    /// ledger itself.
    fn create_replay_file(&self) -> Result<std::path::PathBuf, LedgerError> {
        let name = format!("verify-replay-{}.sqlite3", std::process::id());
        super::datadir::remove_stale(self.dir(), "verify-replay-", ".sqlite3");
        let in_data_dir = self.dir().join(&name);
        let _ = fs::remove_file(&in_data_dir);
        match create_private_file(&in_data_dir) {
            Ok(_) => Ok(in_data_dir),
            Err(LedgerError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                let elsewhere = std::env::temp_dir()
                    .join(format!("sf2520-{}-{name}", uuid::Uuid::new_v4().simple()));
                create_private_file(&elsewhere)?;
                Ok(elsewhere)
            }
            Err(error) => Err(error),
        }
    }

    fn verify_into(
        &self,
        replay_path: &std::path::Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Result<VerifyReport, VerifyFailure>, LedgerError> {
        let replay = rusqlite::Connection::open(replay_path)?;
        // The replay is scratch work: no durability needed.
        replay.pragma_update(None, "journal_mode", "OFF")?;
        replay.pragma_update(None, "synchronous", "OFF")?;
        // The replay writes what ingest writes: give it the ledger's page cache
        // rather than SQLite's default of 2 MiB.
        replay.pragma_update(None, "cache_size", -65_536)?;
        replay.execute_batch(PROJECTION_TABLES)?;
        replay.execute_batch("BEGIN")?;
        let head = self.head()?.position;
        let replay = Db::Sqlite(replay);
        let chain = self.walk_chain(&replay, progress)?;
        let ChainWalk {
            failure,
            previous,
            files,
            retired,
            plain_cprs,
            ..
        } = chain;
        if let Some(failure) = failure {
            return Ok(Err(failure));
        }
        if let Some(failure) = self.check_head_row(head, &previous)? {
            return Ok(Err(failure));
        }
        replay.batch("COMMIT")?;
        let projection_rows = match self.compare_projections(&replay, replay_path)? {
            Ok(rows) => rows,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(Ok(VerifyReport {
            events: head,
            head_hash: previous,
            projection_rows,
            files,
            retired,
            plain_cprs,
        }))
    }

    /// On PostgreSQL, the `ledger_head` row that every write locks and moves must
    /// name the log's last event: a log truncated or rewritten past the row would
    /// otherwise verify as a shorter, consistent one. (SQLite has no such row.)
    fn check_head_row(
        &self,
        head: u64,
        hash: &[u8; 32],
    ) -> Result<Option<VerifyFailure>, LedgerError> {
        const HEAD_ROW: Source = Source {
            table: "ledger_head",
        };
        let Db::Postgres(_) = self.db() else {
            return Ok(None);
        };
        let row = self.db().query_opt(
            "SELECT position, hash FROM ledger_head WHERE id = 1",
            &[],
            |row| Ok((row.unsigned(HEAD_ROW, 0)?, row.bytes::<32>(HEAD_ROW, 1)?)),
        )?;
        Ok(match row {
            Some((position, row_hash)) if position == head && row_hash == *hash => None,
            Some((position, _)) => Some(VerifyFailure::Log {
                position: head,
                what: format!(
                    "the ledger_head row does not name the log's last event (it names position {position}): events were removed or rewritten after the last write"
                ),
            }),
            None => Some(VerifyFailure::Log {
                position: head,
                what: "the ledger_head row is missing".into(),
            }),
        })
    }

    /// Walks the log from position 1, checking the chain and applying each event to
    /// the replay; stops at the first damage.
    fn walk_chain(
        &self,
        replay: &Db,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ChainWalk, LedgerError> {
        const EVENTS: Source = Source { table: "events" };
        let mut chain = ChainWalk::default();
        // One projector for the whole replay: the scratch database has no other writer.
        let mut projector = Projector::new(replay, self.totals_block());
        let mut after = 0u64;
        loop {
            // A row that cannot even be read (a column of the wrong type or size)
            // is damage at that position, not a failure to verify.
            let rows = self.db().query_vec(
                &format!(
                    "SELECT {} FROM events WHERE position > ?1 ORDER BY position LIMIT {WALK_WINDOW}",
                    StoredEvent::COLUMNS
                ),
                &[sql::position(after)?],
                |row| Ok((row.int(EVENTS, 0), StoredEvent::from_row(row))),
            )?;
            if rows.is_empty() {
                return Ok(chain);
            }
            for (position, stored) in rows {
                let stored = match (position, stored) {
                    (_, Ok(stored)) => stored,
                    (position, Err(error)) => {
                        let at = position.ok().and_then(|p| u64::try_from(p).ok());
                        chain.fail(
                            at.unwrap_or(chain.expected_position),
                            format!("the stored row cannot be read: {error}"),
                        );
                        return Ok(chain);
                    }
                };
                if stored.position % 4096 == 0 {
                    crate::interrupt::check()?;
                }
                if let Some(event) = chain.check(&stored) {
                    projector.apply(stored.position, &event)?;
                    chain.note(stored.position, event);
                }
                progress(stored.position);
                if chain.failure.is_some() {
                    return Ok(chain);
                }
                after = stored.position;
            }
        }
    }

    /// Compares every projection table with the replayed one, both ways: on
    /// SQLite by attaching the replay; on PostgreSQL row by row, each row looked up
    /// in the replay by its key.
    fn compare_projections(
        &self,
        replay: &Db,
        replay_path: &std::path::Path,
    ) -> Result<Result<u64, VerifyFailure>, LedgerError> {
        let Some(conn) = self.sqlite() else {
            return self.compare_rows(replay);
        };
        conn.execute(
            "ATTACH DATABASE ?1 AS replay",
            [replay_path.to_string_lossy().as_ref()],
        )?;
        let result = (|| {
            let mut total = 0u64;
            for (table, _) in PROJECTION_ORDER {
                let differing: u64 = conn.query_row(
                    &format!(
                        "SELECT (SELECT COUNT(*) FROM (SELECT * FROM main.{table} EXCEPT SELECT * FROM replay.{table}))
                              + (SELECT COUNT(*) FROM (SELECT * FROM replay.{table} EXCEPT SELECT * FROM main.{table}))"
                    ),
                    [],
                    |row| row.get(0),
                )?;
                if differing > 0 {
                    return Ok(Err(VerifyFailure::Projection {
                        table,
                        rows: differing,
                    }));
                }
                let rows: u64 =
                    conn.query_row(&format!("SELECT COUNT(*) FROM main.{table}"), [], |row| {
                        row.get(0)
                    })?;
                total += rows;
            }
            Ok(Ok(total))
        })();
        conn.execute("DETACH DATABASE replay", [])?;
        result
    }

    /// [`Ledger::compare_projections`] for a database the replay cannot be
    /// attached to: every row of each table is looked up in the replay by its key
    /// and compared column by column; rows of the replay that the table lacks are
    /// counted from the difference of the row counts.
    fn compare_rows(&self, replay: &Db) -> Result<Result<u64, VerifyFailure>, LedgerError> {
        let mut total = 0u64;
        for (table, key) in PROJECTION_ORDER {
            let source = Source { table };
            let key_columns: Vec<&str> = key.split(", ").collect();
            // The key columns first, so that a row's key is its first values.
            let lookup = format!(
                "SELECT {key}, * FROM {table} WHERE {}",
                key_columns
                    .iter()
                    .enumerate()
                    .map(|(at, column)| format!("{column} = ?{}", at + 1))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            );
            let mut differing = 0u64;
            let mut rows = 0u64;
            self.db()
                .query_each(&format!("SELECT {key}, * FROM {table}"), &[], |row| {
                    rows += 1;
                    let ours = row.owned_values(source)?;
                    let args: Vec<Value<'_>> = ours[..key_columns.len()]
                        .iter()
                        .map(sql::Owned::as_value)
                        .collect();
                    let theirs =
                        replay.query_opt(&lookup, &args, |row| row.owned_values(source))?;
                    if theirs.as_ref() != Some(&ours) {
                        differing += 1;
                    }
                    Ok(())
                })?;
            let replayed =
                replay.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[], |row| {
                    row.unsigned(source, 0)
                })?;
            // Keys are unique on both sides: rows here that equal one of the
            // replay's, and the replay's rows that no row here equals.
            let equal = rows - differing;
            differing += replayed.saturating_sub(equal);
            if differing > 0 {
                return Ok(Err(VerifyFailure::Projection {
                    table,
                    rows: differing,
                }));
            }
            total += rows;
        }
        Ok(Ok(total))
    }
}

/// Events read per query by the chain walk.
const WALK_WINDOW: u64 = 16_384;
