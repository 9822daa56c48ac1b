//! A ledger in a temporary directory, fed JSON Lines the way `sf2520 ingest` is,
//! on the backend `SF2520_TEST_BACKEND` names (`support::backend`).

use serde_json::json;
use sf2520::ingest::{ingest_lines, IngestOutcome};
use sf2520::ledger::{IngestMode, IngestReport, Ledger, DEFAULT_TOTALS_BLOCK};
use tempfile::TempDir;

use super::backend::{sql, Sql, Store};

// Tests tamper through `support::ledger` as they always did.
#[allow(unused_imports)]
pub(crate) use super::backend::tamper_database;

/// Dropped in this order: the ledger's connection, its database, the directory.
pub(crate) struct TestLedger {
    pub ledger: Ledger,
    pub store: Store,
    pub dir: TempDir,
}

/// A clock a test moves by hand (the ledger takes a `Clock`): recorded-at times
/// and as-of points without waiting on the wall clock.
#[derive(Clone)]
pub(crate) struct TestClock(std::sync::Arc<std::sync::Mutex<chrono::DateTime<chrono::Utc>>>);

impl TestClock {
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }

    pub(crate) fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl sf2520::ledger::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        TestClock::now(self)
    }
}

impl TestLedger {
    /// Takes this ledger's time from a [`TestClock`] from now on, starting at the
    /// wall clock's time (so after every event recorded so far).
    pub(crate) fn with_test_clock(&mut self) -> TestClock {
        let clock = TestClock(std::sync::Arc::new(std::sync::Mutex::new(
            chrono::Utc::now(),
        )));
        self.ledger.set_clock(Box::new(clock.clone()));
        clock
    }

    pub(crate) fn new() -> TestLedger {
        TestLedger::with_totals_block(DEFAULT_TOTALS_BLOCK)
    }

    /// A new ledger whose totals blocks are `block` positions long.
    pub(crate) fn with_totals_block(block: u64) -> TestLedger {
        TestLedger::on(super::backend::backend(), block)
    }

    /// A new ledger on `backend`, whatever this process's is, with totals blocks
    /// of `block` positions.
    pub(crate) fn on(backend: super::backend::Backend, block: u64) -> TestLedger {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::on(&dir.path().join("data"), backend);
        let ledger = store.open_with(block);
        TestLedger { ledger, store, dir }
    }

    /// A new ledger on the PostgreSQL database `database`.
    #[allow(dead_code)]
    pub(crate) fn on_database(database: super::postgres::TestDatabase) -> TestLedger {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::with_database(&dir.path().join("data"), database);
        let ledger = store.open();
        TestLedger { ledger, store, dir }
    }

    /// A direct connection to the ledger's database, past the ledger.
    pub(crate) fn sql(&self) -> Sql {
        sql(&self.data_dir())
    }

    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Ingests JSON Lines by the ingest policy (`sf2520::ingest::ingest_lines`,
    /// as `sf2520 ingest` does); `Err` lists every (line, reason) that was
    /// rejected, in line order.
    pub(crate) fn ingest(&mut self, jsonl: &str) -> Result<IngestReport, Vec<(usize, String)>> {
        match self.ingest_outcome(jsonl, IngestMode::Commit) {
            IngestOutcome::Committed(report) => Ok(report),
            IngestOutcome::Rejected { lines, .. } => Err(lines
                .iter()
                .map(|line| (line.line(), line.reason().to_string()))
                .collect()),
            IngestOutcome::Checked(report) => {
                panic!("a committing ingest came back as a dry run: {report:?}")
            }
        }
    }

    /// Ingests JSON Lines by the ingest policy in `mode`; panics if the ledger
    /// fails (reading from memory cannot).
    pub(crate) fn ingest_outcome(&mut self, jsonl: &str, mode: IngestMode) -> IngestOutcome {
        ingest_lines(&mut self.ledger, jsonl.as_bytes(), mode)
            .unwrap_or_else(|error| panic!("storage failure: {error}"))
    }

    /// Ingests and panics with the reasons if anything was rejected.
    pub(crate) fn given(&mut self, jsonl: &str) -> IngestReport {
        self.ingest(jsonl)
            .unwrap_or_else(|errors| panic!("setup rejected: {errors:?}"))
    }

    pub(crate) fn head(&self) -> u64 {
        self.ledger.head().expect("head").position
    }
}

pub(crate) const CPR: &str = "0101901234";

pub(crate) fn agreement(agreement: &str, kommune: &str, cpr: &str, valid_from: &str) -> String {
    json!({"type": "agreement", "agreement": agreement, "kommune": kommune, "cpr": cpr, "valid_from": valid_from})
        .to_string()
}

pub(crate) fn agreement_ended(agreement: &str, kommune: &str, valid_to: &str) -> String {
    json!({"type": "agreement_ended", "agreement": agreement, "kommune": kommune, "valid_to": valid_to})
        .to_string()
}

/// A withholding for the September period, paid out on `payout_date`.
pub(crate) fn withholding(
    reference: &str,
    agreement: &str,
    kommune: &str,
    payout_date: &str,
    amount: &str,
) -> String {
    json!({
        "type": "withholding", "reference": reference, "agreement": agreement, "kommune": kommune,
        "cpr": CPR, "payout_date": payout_date, "period_from": "2026-09-01", "period_to": "2026-09-30",
        "amount": amount,
    })
    .to_string()
}

pub(crate) fn correction(reference: &str, corrects: &str, kommune: &str, amount: &str) -> String {
    json!({
        "type": "correction", "reference": reference, "corrects": corrects, "kommune": kommune,
        "amount": amount, "reason": "genberegnet",
    })
    .to_string()
}

/// Joins lines into a JSON Lines document.
/// Three agreements `A-0`..`A-2` in kommuner 0101, 0147 and 0751, then `count`
/// withholdings `W-<from>`.. of 12.34 spread over them in turn. A batch repeated
/// with the same `from` is all duplicates.
pub(crate) fn three_kommune_batch(from: usize, count: usize) -> String {
    let kommuner = ["0101", "0147", "0751"];
    let mut out: Vec<String> = kommuner
        .iter()
        .enumerate()
        .map(|(at, kommune)| agreement(&format!("A-{at}"), kommune, CPR, "2026-01-01"))
        .collect();
    for n in from..from + count {
        let at = n % kommuner.len();
        out.push(withholding(
            &format!("W-{n}"),
            &format!("A-{at}"),
            kommuner[at],
            "2026-10-01",
            "12.34",
        ));
    }
    lines(&out)
}

pub(crate) fn lines(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Gives the data directory `to` (made owner-only if missing) a copy of the key
/// file of the ledger in `from`, as an operator does for a restore on a new
/// machine or a second node of a PostgreSQL ledger (docs/operations.md, "The key
/// file").
pub(crate) fn share_key_file(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .unwrap();
    let target = to.join(sf2520::ledger::KEY_FILE);
    std::fs::copy(from.join(sf2520::ledger::KEY_FILE), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `sf2520 accept-loss --apply` with the head mark of `data_dir` typed back, and
/// that head's hash in hex (what the dry run names).
pub(crate) fn accept_loss_args(data_dir: &std::path::Path) -> (Vec<String>, String) {
    let mark = sf2520::ledger::read_mark(data_dir)
        .unwrap()
        .expect("a head mark");
    let hash: String = mark.hash.iter().map(|byte| format!("{byte:02x}")).collect();
    let args = ["accept-loss", "--apply", "--position"]
        .iter()
        .map(|arg| arg.to_string())
        .chain([mark.position.to_string(), "--hash".into(), hash.clone()])
        .collect();
    (args, hash)
}

/// Asserts that `accept-loss`'s dry run (its stdout) names the lost head's `hash`
/// and every one of the `lost` files.
pub(crate) fn assert_loss_named(stdout: &str, hash: &str, lost: &[String]) {
    assert!(stdout.contains(hash), "{stdout}");
    for name in lost {
        assert!(stdout.contains(name.as_str()), "{name}: {stdout}");
    }
}
