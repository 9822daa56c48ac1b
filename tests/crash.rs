//! Crash safety: `sf2520 ingest` is killed with SIGKILL at random moments; after
//! each kill every batch it reported as committed is present, no batch is
//! partially visible, and `verify` passes. On PostgreSQL a kill leaves the
//! killed process's transaction open on the server until the server sees the
//! connection gone and aborts it: it must stay invisible, and the final run must
//! still succeed.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use sf2520::demo::SplitMix64;
use support::backend::{sql, Sql, Store};
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

/// When to kill a run: `delay` after it has reported `after_reports` batches.
#[derive(Clone, Copy)]
struct Kill {
    after_reports: usize,
    delay: Duration,
}

/// Runs `sf2520 ingest` over every batch and, with a `kill`, kills it then (if it
/// is still running). Returns the batch files it reported as committed (appended
/// or already there), and whether the kill came before the run ended.
fn run_and_kill(
    data_dir: &std::path::Path,
    batches: &[std::path::PathBuf],
    kill: Option<Kill>,
) -> (Vec<String>, bool) {
    let mut child = binary(
        data_dir,
        ["ingest".as_ref()]
            .into_iter()
            .chain(batches.iter().map(|b| b.as_os_str())),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("start sf2520");
    let (sink, reports) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((file, rest)) = line.split_once(": ") {
                if rest.contains("event(s)") {
                    let _ = sink.send(file.to_string());
                }
            }
        }
    });
    let mut reported = Vec::new();
    let mut killed = false;
    match kill {
        Some(kill) => {
            // Until the run has reported `after_reports` batches, or ended.
            while reported.len() < kill.after_reports {
                match reports.recv() {
                    Ok(file) => reported.push(file),
                    Err(_) => break,
                }
            }
            // Polled, so that a run that ends first is not waited for any longer.
            let from = std::time::Instant::now();
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if from.elapsed() >= kill.delay {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None => assert!(
            child.wait().unwrap().success(),
            "the final run must succeed"
        ),
    }
    child.wait().unwrap();
    reader.join().unwrap();
    reported.extend(reports.try_iter());
    (reported, killed)
}

/// (agreement present, number of withholdings present) of batch k.
fn batch_state(conn: &mut Sql, k: usize) -> (bool, usize) {
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
    // Runs killed after they had acknowledged a new batch: kills among commits.
    let mut among_commits = 0;
    // A ledger to ingest into from the first run on.
    drop(store.open());
    while kills < KILLS {
        // Each run first passes the batches already acknowledged (duplicates now),
        // which takes the longer the more there are, and longer on PostgreSQL (a
        // round trip per statement). The kill comes at a random moment after the
        // run has reported them all, among the commits of new batches (or of the
        // batch a previous kill left committed but unacknowledged).
        let kill = Kill {
            after_reports: acknowledged.len(),
            delay: Duration::from_millis(5 + rng.below(30)),
        };
        let before = acknowledged.len();
        let (reported, killed) = run_and_kill(&data_dir, &batches, Some(kill));
        acknowledged.extend(reported);
        if killed && acknowledged.len() > before {
            among_commits += 1;
        }
        kills += 1;
        let ledger = store.open();
        let mut conn = sql(&data_dir);
        for (k, batch) in batches.iter().enumerate() {
            let state = batch_state(&mut conn, k);
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
    let mut conn = sql(&data_dir);
    for k in 0..BATCHES {
        assert_eq!(
            batch_state(&mut conn, k),
            (true, WITHHOLDINGS_PER_BATCH),
            "batch {k} after the final run"
        );
    }
    assert_eq!(
        ledger.head().unwrap().position,
        (BATCHES * (1 + WITHHOLDINGS_PER_BATCH)) as u64
    );
    assert!(
        among_commits >= KILLS / 5,
        "only {among_commits} of {KILLS} kills came after a new batch was acknowledged"
    );
    println!(
        "crash test: {kills} SIGKILLs ({among_commits} after a new batch was acknowledged), \
         {} batches acknowledged before the final run",
        acknowledged.len()
    );
}
