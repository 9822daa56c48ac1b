//! Crash safety of the batch export: `sf2520 export` is killed with SIGKILL at
//! random moments across many kommuner while new entries keep arriving; after a
//! final run every entry is in exactly one official file, løbenumre are gapless,
//! and every file passes `check` and `reconstruct`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use sf2520::demo::{demo_month, SplitMix64};
use sf2520::domain::{Agreement, Amount, Command as LedgerCommand, KyRef, Withholding};
use sf2520::export::default_outbox;
use sf2520::ledger::Ledger;
use support::export::assert_exactly_once;

const KILLS: usize = 30;

fn export_process(data_dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("export")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sf2520 export")
}

/// New withholdings for 30 random agreements of the demo month.
fn more_withholdings(
    rng: &mut SplitMix64,
    agreements: &[Agreement],
    round: usize,
) -> Vec<(usize, LedgerCommand)> {
    (0..30)
        .map(|i| {
            let agreement =
                &agreements[usize::try_from(rng.below(agreements.len() as u64)).unwrap()];
            let command = LedgerCommand::RecordWithholding(Withholding {
                reference: KyRef::parse(&format!("KY-R{round}-{i}")).unwrap(),
                agreement: agreement.agreement.clone(),
                kommune: agreement.kommune,
                cpr: agreement.cpr,
                payout_date: chrono::NaiveDate::from_ymd_opt(2026, 10, 20).unwrap(),
                period_from: chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
                period_to: chrono::NaiveDate::from_ymd_opt(2026, 10, 19).unwrap(),
                amount: Amount::from_ore(10_000 + i64::try_from(rng.below(90_000)).unwrap())
                    .unwrap(),
            });
            (i + 1, command)
        })
        .collect()
}

#[test]
fn sigkilled_exports_finish_with_every_entry_in_exactly_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let month = demo_month(7);
    let agreements: Vec<Agreement> = month
        .iter()
        .filter_map(|c| match c {
            LedgerCommand::RegisterAgreement(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    Ledger::open(&data_dir)
        .unwrap()
        .ingest(month.into_iter().enumerate().collect())
        .unwrap();
    let mut rng = SplitMix64::new(2520);
    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        assert!(round < 200, "could not kill an export {KILLS} times");
        Ledger::open(&data_dir)
            .unwrap()
            .ingest(more_withholdings(&mut rng, &agreements, round))
            .unwrap();
        let mut child = export_process(&data_dir);
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        export_process(&data_dir).wait().unwrap().success(),
        "the final export must succeed"
    );
    let ledger = Ledger::open(&data_dir).unwrap();
    let files = assert_exactly_once(&ledger, &default_outbox(&data_dir));
    assert!(ledger.verify(|_| {}).unwrap().is_ok());
    println!("export crash test: {round} rounds, {kills} SIGKILLs, {files} official files checked");
}
