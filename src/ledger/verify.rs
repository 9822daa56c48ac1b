//! `verify`: walks the hash chain from position 1 and checks that the projections
//! equal a replay of the log into an empty database.

use std::fs;

use rusqlite::Connection;

use super::codec::GENESIS_HASH;
use super::projection::Projector;
use super::schema::{PROJECTION_ORDER, PROJECTION_TABLES};
use super::{Ledger, LedgerError};

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head_hash: [u8; 32],
    /// Projection rows compared against the replay.
    pub projection_rows: u64,
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
        let replay_path = self
            .dir()
            .join(format!("verify-replay-{}.sqlite3", std::process::id()));
        let _ = fs::remove_file(&replay_path);
        let result = self.verify_into(&replay_path, &mut progress);
        let _ = fs::remove_file(&replay_path);
        result
    }

    fn verify_into(
        &self,
        replay_path: &std::path::Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Result<VerifyReport, VerifyFailure>, LedgerError> {
        let replay = Connection::open(replay_path)?;
        // The replay is scratch work: no durability needed.
        replay.pragma_update(None, "journal_mode", "OFF")?;
        replay.pragma_update(None, "synchronous", "OFF")?;
        // The replay inserts totals rows of random agreements, like ingest: give it
        // the ledger's page cache rather than SQLite's default of 2 MiB.
        replay.pragma_update(None, "cache_size", -262_144)?;
        replay.execute_batch(PROJECTION_TABLES)?;
        replay.execute_batch("BEGIN")?;
        let mut previous = GENESIS_HASH;
        let mut previous_time = i64::MIN;
        let mut expected_position = 1;
        let mut failure = None;
        // One projector for the whole replay: the scratch database has no other writer.
        let mut projector = Projector::default();
        let head = self.head()?.position;
        self.for_each_event(1, head.max(1), |stored| {
            if failure.is_some() {
                return Ok(());
            }
            let position = stored.position;
            let fail = |what: String| Some(VerifyFailure::Log { position, what });
            if position != expected_position {
                failure = fail(format!(
                    "expected position {expected_position} (a gap in the log)"
                ));
            } else if stored.expected_hash(&previous) != stored.hash {
                failure =
                    fail("hash chain broken: the event or the one before it was altered".into());
            } else if stored.recorded_at_us < previous_time {
                failure = fail("recorded-at goes back in time".into());
            } else {
                match stored.event() {
                    Err(error) => failure = fail(error.to_string()),
                    Ok(event) => projector.apply(&replay, position, &event)?,
                }
            }
            previous = stored.hash;
            previous_time = stored.recorded_at_us;
            expected_position += 1;
            progress(position);
            Ok(())
        })?;
        if let Some(failure) = failure {
            return Ok(Err(failure));
        }
        replay.execute_batch("COMMIT")?;
        drop(replay);
        let projection_rows = match self.compare_projections(replay_path)? {
            Ok(rows) => rows,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(Ok(VerifyReport {
            events: head,
            head_hash: previous,
            projection_rows,
        }))
    }

    /// Compares every projection table with the replayed one, both ways.
    fn compare_projections(
        &self,
        replay_path: &std::path::Path,
    ) -> Result<Result<u64, VerifyFailure>, LedgerError> {
        let conn = self.connection();
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
}
