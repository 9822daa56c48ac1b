//! Crash safety: `sf2520 ingest` is killed with SIGKILL at random moments; after
//! each kill every batch it reported as committed is present, no batch is
//! partially visible, and `verify` passes. On PostgreSQL a kill leaves the
//! killed process's transaction open on the server until the server sees the
//! connection gone and aborts it: it must stay invisible, and hold up no later run.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sf2520::demo::SplitMix64;
use sf2520::ledger::Ledger;
use support::backend::{sql, Store};
use support::cli::binary;
use support::ledger::*;

const BATCHES: usize = 150;
const WITHHOLDINGS_PER_BATCH: usize = 15;
const KILLS: usize = 50;

/// Batch k registers agreement BA-k and records withholdings KY-k-1 … KY-k-15.
fn write_batches(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    (0..BATCHES)
        .map(|k| {
            let mut batch = vec![agreement(&format!("BA-{k}"), "0751", CPR, "2026-01-01")];
            for i in 1..=WITHHOLDINGS_PER_BATCH {
                batch.push(withholding(
                    &format!("KY-{k}-{i}"),
                    &format!("BA-{k}"),
                    "0751",
                    "2026-10-01",
                    "100.00",
                ));
            }
            let path = dir.join(format!("batch-{k:04}.jsonl"));
            std::fs::write(&path, lines(&batch)).unwrap();
            path
        })
        .collect()
}

/// Runs `sf2520 ingest` over every batch and kills it after `delay` (if it is
/// still running). Returns the batch files it reported as committed.
fn run_and_kill(
    data_dir: &std::path::Path,
    batches: &[std::path::PathBuf],
    delay: Option<Duration>,
) -> Vec<String> {
    let mut child = binary(data_dir, ["ingest".as_ref()].into_iter().chain(batches.iter().map(|b| b.as_os_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sf2520");
    let reported = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&reported);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((file, rest)) = line.split_once(": ") {
                if rest.contains("event(s)") {
                    sink.lock().unwrap().push(file.to_string());
                }
            }
        }
    });
    match delay {
        Some(delay) => {
            std::thread::sleep(delay);
            child.kill().ok(); // SIGKILL; it may already have finished
        }
        None => assert!(
            child.wait().unwrap().success(),
            "the final run must succeed"
        ),
    }
    child.wait().unwrap();
    reader.join().unwrap();
    let reported = reported.lock().unwrap().clone();
    reported
}

/// (agreement present, number of withholdings present) of batch k.
fn batch_state(ledger: &Ledger, k: usize) -> (bool, usize) {
    let mut conn = sql(ledger.dir());
    let agreement = conn.query_int(
        "SELECT COUNT(*) FROM agreements WHERE agreement = ?1",
        &[format!("BA-{k}").into()],
    );
    let entries = conn.query_int(
        "SELECT COUNT(*) FROM entries WHERE reference LIKE ?1",
        &[format!("KY-{k}-%").into()],
    );
    (agreement == 1, usize::try_from(entries).unwrap())
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_nor_shows_half_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = Store::new(&data_dir);
    let batches = write_batches(dir.path());
    let mut rng = SplitMix64::new(42);
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut kills = 0;
    while kills < KILLS {
        let delay = Duration::from_millis(5 + rng.below(60));
        acknowledged.extend(run_and_kill(&data_dir, &batches, Some(delay)));
        kills += 1;
        let ledger = store.open();
        for (k, batch) in batches.iter().enumerate() {
            let state = batch_state(&ledger, k);
            let name = batch.display().to_string();
            assert!(
                state == (false, 0) || state == (true, WITHHOLDINGS_PER_BATCH),
                "kill {kills}: batch {k} is partially visible: {state:?}"
            );
            if acknowledged.contains(&name) {
                assert_eq!(
                    state,
                    (true, WITHHOLDINGS_PER_BATCH),
                    "kill {kills}: acknowledged batch {k} lost"
                );
            }
        }
        let verified = ledger.verify(|_| {}).unwrap();
        assert!(verified.is_ok(), "kill {kills}: {verified:?}");
    }
    run_and_kill(&data_dir, &batches, None);
    let ledger = store.open();
    for k in 0..BATCHES {
        assert_eq!(
            batch_state(&ledger, k),
            (true, WITHHOLDINGS_PER_BATCH),
            "batch {k} after the final run"
        );
    }
    assert_eq!(
        ledger.head().unwrap().position,
        (BATCHES * (1 + WITHHOLDINGS_PER_BATCH)) as u64
    );
    println!(
        "crash test: {kills} SIGKILLs, {} batches acknowledged before the final run",
        acknowledged.len()
    );
}
