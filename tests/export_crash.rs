//! Crash safety of the batch export: `sf2520 export` is killed with SIGKILL at
//! random moments across many kommuner while new entries keep arriving; after a
//! final run every entry is in exactly one official file, løbenumre are gapless,
//! and every file passes `check` and `reconstruct`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use sf2520::demo::{demo_month, SplitMix64};
use sf2520::export::default_outbox;
use sf2520::ledger::IngestMode;
use support::backend::Store;
use support::cli::binary;
use support::export::{assert_exactly_once, more_withholdings, registered_agreements};

const KILLS: usize = 30;

fn export_process(data_dir: &std::path::Path) -> std::process::Child {
    binary(data_dir, ["export"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sf2520 export")
}

#[test]
fn sigkilled_exports_finish_with_every_entry_in_exactly_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let month = demo_month(7);
    let agreements = registered_agreements(&month);
    let store = Store::new(&data_dir);
    store
        .open()
        .ingest(month.into_iter().enumerate().collect(), IngestMode::Commit)
        .unwrap()
        .accepted()
        .unwrap();
    let mut rng = SplitMix64::new(2520);
    let mut kills = 0;
    let mut round = 0;
    // The kill comes at a random moment within how long an export takes here,
    // learnt from the runs that finished (an export no longer waits for the clock,
    // so its length depends only on the machine).
    let mut export_ms: u64 = 300;
    while kills < KILLS {
        round += 1;
        assert!(round < 200, "could not kill an export {KILLS} times");
        store
            .open()
            .ingest(
                more_withholdings(&mut rng, &agreements, round, 30),
                IngestMode::Commit,
            )
            .unwrap()
            .accepted()
            .unwrap();
        let started = std::time::Instant::now();
        let kill_at = Duration::from_millis(rng.below(export_ms));
        let mut child = export_process(&data_dir);
        // Polled, so that a run that finishes first tells how long it took.
        loop {
            if child.try_wait().unwrap().is_some() {
                export_ms = u64::try_from(started.elapsed().as_millis())
                    .unwrap()
                    .max(10);
                break;
            }
            if started.elapsed() >= kill_at {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        export_process(&data_dir).wait().unwrap().success(),
        "the final export must succeed"
    );
    let ledger = store.open();
    let files = assert_exactly_once(&ledger, &default_outbox(&data_dir));
    assert!(ledger.verify(|_| {}).unwrap().is_ok());
    println!("export crash test: {round} rounds, {kills} SIGKILLs, {files} official files checked");
}
