//! Delivery of official files end to end: ledger → export → SFTP to a real sshd →
//! the platform stand-in's receipt → events in the ledger.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sf2520::domain::Kommune;
use sf2520::export::{
    default_outbox, deliver, delivery_state, official_files, reissue, run_batch, DeliverRequest,
    DeliveryResult, DeliveryState, ExportRequest, Quiet,
};
use sf2520::ledger::Ledger;
use sf2520::transport::SftpConfig;
use sha2::{Digest, Sha256};
use support::ledger::*;
use support::platform::{Answer, Platform};
use support::sshd::Sshd;

/// A ledger with one withholding in each of `kommuner` kommuner, exported.
fn given_exported(kommuner: usize) -> TestLedger {
    let mut t = TestLedger::new();
    let mut batch = Vec::new();
    for (index, kommune) in Kommune::all().take(kommuner).enumerate() {
        let code = kommune.code();
        batch.push(agreement(&format!("BA{index}"), &code, CPR, "2026-01-01"));
        batch.push(withholding(
            &format!("KY-{index}"),
            &format!("BA{index}"),
            &code,
            "2026-10-01",
            "100.00",
        ));
    }
    t.given(&lines(&batch));
    let outbox = default_outbox(&t.data_dir());
    run_batch(&mut t.ledger, &ExportRequest::default(), &outbox, &Quiet).unwrap();
    t
}

/// Runs `deliver` on the test ledger (which it takes and gives back).
fn deliver_all(t: &mut TestLedger, config: &SftpConfig) -> Vec<sf2520::export::DeliveryReport> {
    let ledger = std::mem::replace(
        &mut t.ledger,
        Ledger::open(&t.dir.path().join("scratch")).unwrap(),
    );
    let outbox = default_outbox(&t.data_dir());
    let (ledger, reports) =
        deliver(ledger, config, &DeliverRequest::default(), &outbox, &|_| {}).unwrap();
    t.ledger = ledger;
    reports
}

fn accepted(reports: &[sf2520::export::DeliveryReport]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r.result, DeliveryResult::Accepted { .. }))
        .count()
}

#[test]
fn delivered_bytes_equal_the_outbox_and_every_step_is_recorded() {
    let mut t = given_exported(3);
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let reports = deliver_all(&mut t, &sshd.config());
    assert_eq!(accepted(&reports), 3, "{reports:?}");
    let outbox = default_outbox(&t.data_dir());
    for file in official_files(t.ledger.connection(), None).unwrap() {
        let sent = platform
            .picked_up(&file.file_name)
            .expect("the platform got the file");
        let local = std::fs::read(outbox.join(&file.file_name)).unwrap();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&sent)),
            <[u8; 32]>::from(Sha256::digest(&local))
        );
        assert_eq!(
            delivery_state(t.ledger.connection(), file.kommune, file.sequence).unwrap(),
            DeliveryState::Accepted
        );
    }
    assert!(
        platform.seen().iter().all(|seen| seen.data_was_complete()),
        "a trigger came before its data file"
    );
    let types: Vec<String> = {
        let mut types = Vec::new();
        t.ledger
            .for_each_event(1, t.head(), |e| {
                types.push(e.event_type);
                Ok(())
            })
            .unwrap();
        types
    };
    assert_eq!(types.iter().filter(|t| *t == "FileUploaded").count(), 3);
    assert_eq!(types.iter().filter(|t| *t == "ReceiptReceived").count(), 3);
    assert!(
        std::fs::read_dir(sshd.in_dir()).unwrap().next().is_none(),
        "recorded receipts are removed from IN/"
    );
    assert!(
        deliver_all(&mut t, &sshd.config()).is_empty(),
        "an accepted file is never uploaded again"
    );
    assert_eq!(platform.seen().len(), 3);
    assert!(t.ledger.verify(|_| {}).unwrap().is_ok());
}

#[test]
fn a_rejected_receipt_is_recorded_with_the_platforms_code_and_not_retried() {
    let mut t = given_exported(2);
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |name| {
        if name.contains("_0101_") {
            Answer::Reject {
                code: "E4711".into(),
                code_description: "Ukendt modtager".into(),
                description: "Modtager findes ikke".into(),
            }
        } else {
            Answer::Success
        }
    });
    let reports = deliver_all(&mut t, &sshd.config());
    let rejected = reports.iter().find(|r| r.kommune.code() == "0101").unwrap();
    let DeliveryResult::Rejected { errors } = &rejected.result else {
        panic!("{rejected:?}")
    };
    assert_eq!(errors[0].code, "E4711");
    let state = delivery_state(t.ledger.connection(), rejected.kommune, 1).unwrap();
    assert_eq!(
        state,
        DeliveryState::Rejected {
            errors: "E4711 Ukendt modtager: Modtager findes ikke".into()
        }
    );
    assert!(
        deliver_all(&mut t, &sshd.config()).is_empty(),
        "a rejected file waits for a reissue"
    );
}

#[test]
fn a_wrong_host_key_is_refused_before_anything_is_uploaded() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let other = Sshd::start();
    let mut config = sshd.config();
    config.host_key = other.host_key_line().parse().unwrap();
    let reports = deliver_all(&mut t, &config);
    let DeliveryResult::Failed { reason, .. } = &reports[0].result else {
        panic!("{reports:?}")
    };
    assert!(
        reason.contains(&sshd.host_key_fingerprint()),
        "the error shows the offered key: {reason}"
    );
    assert!(
        std::fs::read_dir(sshd.out_dir()).unwrap().next().is_none(),
        "nothing may reach OUT/"
    );
    let file = &official_files(t.ledger.connection(), None).unwrap()[0];
    assert_eq!(
        delivery_state(t.ledger.connection(), file.kommune, 1).unwrap(),
        DeliveryState::Exported
    );
}

#[test]
fn sshd_killed_in_the_middle_then_a_rerun_accepts_every_file_once() {
    let mut t = given_exported(12);
    let mut sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let mut config = sshd.config();
    config.concurrency = 2;
    config.retry.max_attempts = 2;
    config.receipt_timeout_secs = 3;
    let ledger = std::mem::replace(
        &mut t.ledger,
        Ledger::open(&t.dir.path().join("scratch")).unwrap(),
    );
    let outbox = default_outbox(&t.data_dir());
    let (ledger, first) = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            deliver(
                ledger,
                &config,
                &DeliverRequest::default(),
                &outbox,
                &|_| {},
            )
            .unwrap()
        });
        while platform.seen().len() < 3 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sshd.stop();
        run.join().unwrap()
    });
    t.ledger = ledger;
    let failed = first
        .iter()
        .filter(|r| matches!(r.result, DeliveryResult::Failed { .. }))
        .count();
    assert!(
        failed > 0,
        "stopping sshd must interrupt the run: {first:?}"
    );
    sshd.restart();
    let second = deliver_all(&mut t, &sshd.config());
    assert_eq!(
        accepted(&first) + accepted(&second),
        12,
        "first {first:?} second {second:?}"
    );
    for file in official_files(t.ledger.connection(), None).unwrap() {
        assert_eq!(
            delivery_state(t.ledger.connection(), file.kommune, file.sequence).unwrap(),
            DeliveryState::Accepted
        );
    }
    let mut triggers: HashMap<String, usize> = HashMap::new();
    for seen in platform.seen() {
        *triggers.entry(seen.name).or_default() += 1;
    }
    assert_eq!(triggers.len(), 12);
    assert!(
        triggers.values().all(|&count| count == 1),
        "each file picked up once: {triggers:?}"
    );
}

#[test]
fn a_reissued_file_is_delivered_again_with_a_new_senders_file_id() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    assert_eq!(accepted(&deliver_all(&mut t, &sshd.config())), 1);
    let file = official_files(t.ledger.connection(), None)
        .unwrap()
        .remove(0);
    let outbox = default_outbox(&t.data_dir());
    let done = reissue(&mut t.ledger, file.kommune, 1, &outbox)
        .unwrap()
        .unwrap();
    let reports = deliver_all(&mut t, &sshd.config());
    assert_eq!(accepted(&reports), 1);
    assert_eq!(reports[0].senders_file_id, done.delivery_id);
    let seen = platform.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].senders_file_id, seen[1].senders_file_id);
    assert_eq!(
        platform.picked_up(&file.file_name).unwrap(),
        std::fs::read(outbox.join(&file.file_name)).unwrap()
    );
}

#[test]
fn export_deliver_and_config_check_through_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let input = dir.path().join("input.jsonl");
    std::fs::write(
        &input,
        lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "5.00"),
        ]),
    )
    .unwrap();
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let config = sshd.write_sf2520_config(dir.path(), "receipt_timeout_secs = 10\n");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sf2520"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&["config", "check"]);
    assert!(ok && out.contains("host key matches"), "{out}");
    assert!(run(&["init"]).0);
    assert!(run(&["ingest", input.to_str().unwrap()]).0);
    let (ok, out) = run(&["export", "--deliver"]);
    assert!(ok, "{out}");
    assert!(out.contains("deliver: 1 of 1 file(s) accepted"), "{out}");
    assert_eq!(platform.seen().len(), 1);
    let (ok, out) = run(&["files"]);
    assert!(ok && out.contains("accepted"), "{out}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _) = run(&["config", "check"]);
    assert!(!ok, "a config readable by others is refused");
}
