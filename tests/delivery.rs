//! Delivery of official files end to end: ledger → export → SFTP to a real sshd →
//! the platform stand-in's receipt → events in the ledger.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sf2520::domain::{
    BusinessReceiptReceived, Event, FileAcceptance, Kommune, ReceiptError, ReceiptReceived,
    TechnicalReceiptReceived,
};
use sf2520::export::{
    default_outbox, deliver, reissue, run_batch, DeliverRequest, DeliveryResult, ExportRequest,
    Quiet,
};
use sf2520::ledger::{decode_payload, DeliveryState, Ledger};
use sf2520::transport::SftpConfig;
use sha2::{Digest, Sha256};
use support::ledger::*;
use support::platform::{business_receipt_xml, Answer, Platform};
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
    for file in t.ledger.official_files(None).unwrap() {
        let sent = platform
            .picked_up(&file.file_name)
            .expect("the platform got the file");
        let local = std::fs::read(outbox.join(&file.file_name)).unwrap();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&sent)),
            <[u8; 32]>::from(Sha256::digest(&local))
        );
        assert_eq!(
            t.ledger
                .delivery_state(file.kommune, file.sequence)
                .unwrap(),
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
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "TechnicalReceiptReceived")
            .count(),
        3
    );
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
                code: 4711,
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
    assert_eq!(errors[0].code, 4711);
    let state = t.ledger.delivery_state(rejected.kommune, 1).unwrap();
    assert_eq!(
        state,
        DeliveryState::Rejected {
            errors: "4711 Ukendt modtager: Modtager findes ikke".into()
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
    let file = &t.ledger.official_files(None).unwrap()[0];
    assert_eq!(
        t.ledger.delivery_state(file.kommune, 1).unwrap(),
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
    for file in t.ledger.official_files(None).unwrap() {
        assert_eq!(
            t.ledger
                .delivery_state(file.kommune, file.sequence)
                .unwrap(),
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
    let file = t.ledger.official_files(None).unwrap().remove(0);
    let outbox = default_outbox(&t.data_dir());
    let done = reissue(
        &mut t.ledger,
        file.kommune,
        1,
        &outbox,
        std::time::Duration::ZERO,
    )
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
        let output = with_config(&data_dir, &config, args);
        (output.status.success(), stdout_of(&output))
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

/// `sf2520 --data-dir DATA_DIR --config CONFIG ARGS...`, run to its end.
fn with_config(
    data_dir: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `deliver --kommune` and `reissue` speak of what was asked: the kommune or the
/// file is accepted, while another kommune's file still only uploaded is named as
/// outside what was asked and never claimed accepted.
#[test]
fn deliver_for_one_kommune_and_reissue_claim_only_what_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let input = dir.path().join("input.jsonl");
    std::fs::write(
        &input,
        lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "5.00"),
            agreement("BA2", "0101", CPR, "2026-01-01"),
            withholding("KY-2", "BA2", "0101", "2026-10-01", "7.00"),
        ]),
    )
    .unwrap();
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |name| {
        if name.contains("_0101_") {
            Answer::Silent
        } else {
            Answer::Success
        }
    });
    let config = sshd.write_sf2520_config(dir.path(), "receipt_timeout_secs = 1\n");
    let run = |args: &[&str]| {
        let output = with_config(&data_dir, &config, args);
        (output.status.code(), stdout_of(&output))
    };
    assert_eq!(run(&["init"]).0, Some(0));
    assert_eq!(run(&["ingest", input.to_str().unwrap()]).0, Some(0));
    let (code, out) = run(&["export", "--deliver"]);
    assert_eq!(code, Some(7), "0101's file waits for its receipt: {out}");
    let (code, out) = run(&["deliver", "--kommune", "0751"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("every official file is accepted"), "{out}");
    assert!(
        out.contains("every official file of kommune 0751 Aarhus is accepted; 1 other official file(s) not accepted"),
        "{out}"
    );
    let (code, out) = run(&["reissue", "--kommune", "0751", "--seq", "1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("every official file is accepted"), "{out}");
    assert!(out.contains("deliver: 1 of 1 file(s) accepted"), "{out}");
    assert!(
        out.contains("kommune 0751 Aarhus løbenummer 1 is accepted; 1 other official file(s)"),
        "{out}"
    );
    let (code, out) = run(&["deliver", "--kommune", "0101"]);
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("deliver: 1 official file(s) not accepted"),
        "{out}"
    );
}

/// Every event of the test ledger, decoded.
fn events(t: &TestLedger) -> Vec<Event> {
    let mut events = Vec::new();
    t.ledger
        .for_each_event(1, t.head(), |e| {
            events.push(e.event().unwrap());
            Ok(())
        })
        .unwrap();
    events
}

fn technical_receipts(t: &TestLedger) -> Vec<TechnicalReceiptReceived> {
    events(t)
        .into_iter()
        .filter_map(|e| match e {
            Event::TechnicalReceiptReceived(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The archived receipt is the platform's bytes, owner-only, and its SHA-256 is the
/// one recorded.
fn assert_archived(t: &TestLedger, archive_name: &str, sha256: [u8; 32]) {
    let path = t.data_dir().join("receipts").join(archive_name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), sha256);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

/// Regression: a receipt without SendersFileId (optional in KOMBIT's schema) was
/// refused as malformed, so the delivery never completed.
#[test]
fn a_success_receipt_without_senders_file_id_is_matched_by_name_and_accepted() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |_| Answer::SuccessWithoutId);
    let reports = deliver_all(&mut t, &sshd.config());
    assert_eq!(accepted(&reports), 1, "{reports:?}");
    let receipts = technical_receipts(&t);
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].accepted);
    assert!(!receipts[0].receipt_named_senders_file_id);
    assert_archived(&t, &receipts[0].archive_name, receipts[0].receipt_sha256);
    assert!(std::fs::read_dir(sshd.in_dir()).unwrap().next().is_none());
    assert!(t.ledger.verify(|_| {}).unwrap().is_ok());
}

/// Regression: an error receipt without SendersFileId hid every code it listed.
#[test]
fn an_error_receipt_without_senders_file_id_is_recorded_rejected_with_every_code() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |_| Answer::RejectWithoutId {
        codes: vec![17, -3, 42],
    });
    let reports = deliver_all(&mut t, &sshd.config());
    let DeliveryResult::Rejected { errors } = &reports[0].result else {
        panic!("{reports:?}")
    };
    assert_eq!(
        errors.iter().map(|e| e.code).collect::<Vec<_>>(),
        [17, -3, 42]
    );
    let receipts = technical_receipts(&t);
    assert_eq!(receipts.len(), 1);
    assert!(!receipts[0].accepted);
    assert_eq!(
        receipts[0]
            .errors
            .iter()
            .map(|e| e.code)
            .collect::<Vec<_>>(),
        [17, -3, 42]
    );
    assert_archived(&t, &receipts[0].archive_name, receipts[0].receipt_sha256);
    let file = &t.ledger.official_files(None).unwrap()[0];
    assert!(matches!(
        t.ledger.delivery_state(file.kommune, 1).unwrap(),
        DeliveryState::Rejected { errors } if errors.contains("17 Fejl") && errors.contains("42 Fejl")
    ));
}

/// A business receipt that arrives after the technical one is recorded against the
/// delivery whose FileTransferUUID it names, archived, and removed from IN/.
#[test]
fn a_business_receipt_is_recorded_archived_and_removed() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    assert_eq!(accepted(&deliver_all(&mut t, &sshd.config())), 1);
    let file = &t.ledger.official_files(None).unwrap()[0];
    let transfer = platform.seen()[0].file_transfer_uuid.clone().unwrap();
    let xml = business_receipt_xml(
        &transfer,
        &file.file_name,
        "UDK",
        "REJECTED",
        Some("ukendt aftale"),
    );
    let path = sshd
        .in_dir()
        .join(format!("{}.businessreceipt", file.file_name));
    std::fs::write(&path, &xml).unwrap();
    // A business receipt naming a transfer the log does not know stays where it is.
    let stranger = sshd
        .in_dir()
        .join(format!("{}.other.businessreceipt", file.file_name));
    std::fs::write(
        &stranger,
        business_receipt_xml("not-ours", &file.file_name, "UDK", "ACCEPTED", None),
    )
    .unwrap();

    let reports = deliver_all(&mut t, &sshd.config());

    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(matches!(
        &reports[0].result,
        DeliveryResult::Business { acceptance: FileAcceptance::Rejected, recipient, reason: Some(reason) }
            if recipient == "UDK" && reason == "ukendt aftale"
    ));
    let business: Vec<BusinessReceiptReceived> = events(&t)
        .into_iter()
        .filter_map(|e| match e {
            Event::BusinessReceiptReceived(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(business.len(), 1);
    assert_eq!(business[0].file_transfer_uuid, transfer);
    assert_eq!(business[0].senders_file_id, file.file_id);
    assert_eq!(
        business[0].receipt_sha256,
        <[u8; 32]>::from(Sha256::digest(xml.as_bytes()))
    );
    assert_archived(&t, &business[0].archive_name, business[0].receipt_sha256);
    assert!(
        !path.exists(),
        "a recorded business receipt is removed from IN/"
    );
    assert!(
        stranger.exists(),
        "an unknown business receipt is left alone"
    );
    assert!(deliver_all(&mut t, &sshd.config()).is_empty());
    assert!(t.ledger.verify(|_| {}).unwrap().is_ok());
}

/// A receipt already recorded whose removal from IN/ failed carries no
/// SendersFileId, so only its recorded SHA-256 tells it from the answer to a later
/// delivery of the same name: it must not be taken for that answer.
#[test]
fn a_recorded_receipt_left_in_in_is_not_taken_for_the_next_delivery() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _platform = Platform::start(&sshd.root(), {
        let silent = std::sync::Arc::clone(&silent);
        move |_| {
            if silent.load(std::sync::atomic::Ordering::SeqCst) {
                Answer::Silent
            } else {
                Answer::SuccessWithoutId
            }
        }
    });
    assert_eq!(accepted(&deliver_all(&mut t, &sshd.config())), 1);
    let first = technical_receipts(&t).remove(0);
    let file = t.ledger.official_files(None).unwrap().remove(0);
    std::fs::copy(
        t.data_dir().join("receipts").join(&first.archive_name),
        sshd.in_dir()
            .join(format!("{}.sftpreceipt", file.file_name)),
    )
    .unwrap();
    silent.store(true, std::sync::atomic::Ordering::SeqCst);
    let outbox = default_outbox(&t.data_dir());
    reissue(
        &mut t.ledger,
        file.kommune,
        1,
        &outbox,
        std::time::Duration::ZERO,
    )
    .unwrap()
    .unwrap();
    let mut config = sshd.config();
    config.receipt_timeout_secs = 1;
    let reports = deliver_all(&mut t, &config);
    assert!(
        matches!(&reports[0].result, DeliveryResult::Failed { reason, .. } if reason.contains("no receipt")),
        "{reports:?}"
    );
    assert_eq!(technical_receipts(&t).len(), 1);
}

/// Old ledgers hold `ReceiptReceived` (variant 7) with string error codes; those
/// bytes must still decode exactly as before. The payload is written out by hand:
/// Envelope::V1 (0), Event::ReceiptReceived (7), kommune 101 as a varint (0x65),
/// sequence 1, 16 id bytes, FileTransferUUID "t", accepted false, one error
/// ("E1", "d", "x").
#[test]
fn a_receipt_received_encoded_the_old_way_still_decodes() {
    let mut payload = vec![0u8, 7, 0x65, 1];
    payload.extend_from_slice(&[0xAB; 16]);
    payload.extend_from_slice(&[1, b't', 0, 1, 2, b'E', b'1', 1, b'd', 1, b'x']);
    let event = decode_payload(1, &payload).unwrap();
    assert_eq!(
        event,
        Event::ReceiptReceived(ReceiptReceived {
            kommune: Kommune::from_number(101).unwrap(),
            sequence: 1,
            senders_file_id: [0xAB; 16],
            file_transfer_uuid: "t".into(),
            accepted: false,
            errors: vec![ReceiptError {
                code: "E1".into(),
                code_description: "d".into(),
                description: "x".into(),
            }],
        })
    );
}

/// The payload bytes the ledger stores for `event`.
fn stored_payload(event: Event) -> Vec<u8> {
    let mut t = TestLedger::new();
    let position = t.ledger.write(|appender| appender.append(&event)).unwrap();
    t.ledger.event_at(position).unwrap().payload
}

/// The new events' layout, pinned byte for byte (see docs/log-format.md):
/// TechnicalReceiptReceived is variant 8, BusinessReceiptReceived variant 9.
#[test]
fn the_new_receipt_events_have_the_documented_layout() {
    let mut technical = vec![0u8, 8, 0x65, 1];
    technical.extend_from_slice(&[0xAB; 16]);
    // receipt_named_senders_file_id false, FileTransferUUID "t", accepted false,
    // one error: code -3 (zigzag varint 5), "d", "x"; then the SHA-256 and "a".
    technical.extend_from_slice(&[0, 1, b't', 0, 1, 5, 1, b'd', 1, b'x']);
    technical.extend_from_slice(&[0xCD; 32]);
    technical.extend_from_slice(&[1, b'a']);
    let Event::TechnicalReceiptReceived(r) = decode_payload(1, &technical).unwrap() else {
        panic!("not variant 8")
    };
    assert_eq!((r.errors[0].code, r.archive_name.as_str()), (-3, "a"));
    assert_eq!(r.receipt_sha256, [0xCD; 32]);
    assert_eq!(
        stored_payload(Event::TechnicalReceiptReceived(r)),
        technical
    );

    let mut business = vec![0u8, 9, 0x65, 1];
    business.extend_from_slice(&[0xAB; 16]);
    // "t", recipient "U", acceptance COULD_NOT_NOTIFY_RECIPIENT (2), reason Some("r").
    business.extend_from_slice(&[1, b't', 1, b'U', 2, 1, 1, b'r']);
    business.extend_from_slice(&[0xCD; 32]);
    business.extend_from_slice(&[1, b'a']);
    let Event::BusinessReceiptReceived(b) = decode_payload(1, &business).unwrap() else {
        panic!("not variant 9")
    };
    assert_eq!(b.acceptance, FileAcceptance::CouldNotNotifyRecipient);
    assert_eq!(b.reason.as_deref(), Some("r"));
    assert_eq!(stored_payload(Event::BusinessReceiptReceived(b)), business);
}

/// `config check` warns when `sender` is not the SFTP user, and fails, naming
/// `remote_in_dir`, when the receipt directory cannot be listed.
#[test]
fn config_check_warns_about_sender_and_checks_remote_in_dir() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start();
    let check = |extra: &str| {
        let config = sshd.write_sf2520_config(dir.path(), extra);
        let output = Command::new(env!("CARGO_BIN_EXE_sf2520"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .args(["config", "check"])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = check("");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("warning: [sftp] sender \"KY-TEST\" differs from user"),
        "{out}"
    );
    assert!(out.contains("IN is readable"), "{out}");
    let (ok, out, err) = check("remote_in_dir = \"NO_SUCH_DIR\"\n");
    assert!(!ok, "{out}");
    assert!(
        err.contains("remote_in_dir \"NO_SUCH_DIR\" cannot be listed"),
        "{err}"
    );
}

/// A data directory with one withholding of kommune 0751, a real sshd with the
/// platform stand-in answering `answer`, and the command line against them.
struct HostileSite {
    dir: tempfile::TempDir,
    sshd: Sshd,
    _platform: Platform,
    config: std::path::PathBuf,
}

impl HostileSite {
    fn new(answer: impl Fn(&str) -> Answer + Send + 'static) -> HostileSite {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start();
        let platform = Platform::start(&sshd.root(), answer);
        let config = sshd.write_sf2520_config(dir.path(), "receipt_timeout_secs = 5\n");
        let site = HostileSite {
            dir,
            sshd,
            _platform: platform,
            config,
        };
        site.run(&["init"]).expect_success("init");
        let input = site.dir.path().join("input.jsonl");
        std::fs::write(
            &input,
            lines(&[
                agreement("BA1", "0751", CPR, "2026-01-01"),
                withholding("KY-1", "BA1", "0751", "2026-10-01", "5.00"),
            ]),
        )
        .unwrap();
        site.run(&["ingest", input.to_str().unwrap()])
            .expect_success("ingest");
        site
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str]) -> support::cli::Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        support::cli::sf2520(&self.data_dir(), all)
    }

    /// The names in `<data-dir>/receipts/` (none when it does not exist).
    fn archived(&self) -> Vec<String> {
        std::fs::read_dir(self.data_dir().join("receipts"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Raw terminal controls in what a run printed: ESC (which starts ANSI
/// sequences) and the C1 controls (CSI U+009B among them).
fn terminal_controls(run: &support::cli::Run) -> Vec<char> {
    run.stdout
        .chars()
        .chain(run.stderr.chars())
        .filter(|c| *c == '\u{1b}' || ('\u{80}'..='\u{9f}').contains(c))
        .collect()
}

/// Regression: a TechnicalReceipt whose ErrorDescription was 100,000 characters
/// made `export --deliver` panic ("Formatting argument out of range", exit 101)
/// after recording it, and `files` panicked on every later run. A receipt larger
/// than the limit (64 KiB, docs/operations.md) is refused without being read
/// whole: not recorded, not archived, left in IN/ and reported with the limit.
#[test]
fn a_receipt_over_the_size_limit_is_refused_and_nothing_panics() {
    let site = HostileSite::new(|_| Answer::Reject {
        code: 4711,
        code_description: "Ukendt modtager".into(),
        description: "x".repeat(100_000),
    });
    let run = site
        .run(&["export", "--deliver"])
        .expect_code(7, "export --deliver with an oversized receipt");
    assert!(
        run.stdout.contains("larger than") && run.stdout.contains("65536 bytes"),
        "{}",
        run.stdout
    );
    assert!(site.archived().is_empty(), "{:?}", site.archived());
    let files = site.run(&["files"]).expect_success("files");
    assert!(files.stdout.contains("uploaded"), "{}", files.stdout);
    let left: Vec<_> = std::fs::read_dir(site.sshd.in_dir()).unwrap().collect();
    assert_eq!(left.len(), 1, "the receipt stays in IN/ for the operator");
    site.run(&["deliver"])
        .expect_code(7, "deliver reports it again");
}

/// Regression: ESC in a receipt's text, raw or as `&#27;`, reached the terminal
/// from `export --deliver`, `files` and `status`. XML 1.0 forbids the character,
/// so the receipt is refused as not well-formed, and nothing raw is printed.
#[test]
fn a_receipt_with_escape_characters_is_refused_as_not_well_formed() {
    for description in ["red \u{1b}[31m text", "clear &#27;[2J screen"] {
        let site = HostileSite::new(move |_| Answer::Reject {
            code: 4711,
            code_description: "Ukendt modtager".into(),
            description: description.into(),
        });
        let run = site
            .run(&["export", "--deliver"])
            .expect_code(7, "export --deliver with ESC in the receipt");
        assert!(run.stdout.contains("not well-formed"), "{}", run.stdout);
        for run in [
            run,
            site.run(&["files"]).expect_success("files"),
            site.run(&["status"]).expect_success("status"),
            site.run(&["deliver"]).expect_code(7, "deliver"),
        ] {
            assert!(
                terminal_controls(&run).is_empty(),
                "{description:?}: {}{}",
                run.stdout,
                run.stderr
            );
        }
        assert!(site.archived().is_empty(), "{:?}", site.archived());
    }
}

/// Regression: C1 controls (CSI, U+009B, is one; XML 1.0 allows them) in a
/// receipt reached the terminal raw. The receipt is recorded as it came, and
/// every command prints the text escaped (`\u{9b}`).
#[test]
fn c1_controls_in_a_recorded_receipt_are_printed_escaped() {
    let site = HostileSite::new(|_| Answer::Reject {
        code: 4711,
        code_description: "Ukendt\u{9b}2J modtager".into(),
        description: "findes &#155;31m ikke".into(),
    });
    let mut runs = vec![site
        .run(&["export", "--deliver"])
        .expect_code(7, "export --deliver")];
    runs.push(site.run(&["files"]).expect_success("files"));
    runs.push(site.run(&["status"]).expect_success("status"));
    runs.push(
        site.run(&["status", "--check"])
            .expect_code(2, "status --check"),
    );
    runs.push(site.run(&["deliver"]).expect_code(7, "deliver"));
    runs.push(site.run(&["log"]).expect_success("log"));
    for run in &runs {
        assert!(
            terminal_controls(run).is_empty(),
            "{}{}",
            run.stdout,
            run.stderr
        );
        assert!(run.stdout.contains("\\u{9b}"), "{}", run.stdout);
    }
    assert_eq!(site.archived().len(), 1);
}

/// Runs `command` to its end (bounded by `support::process::PATIENCE`) and
/// returns its exit code and its peak resident memory in KiB, from `wait4`'s
/// resource usage of that one child.
// The child is reaped by `wait4`, which `Child::wait` cannot replace: only it
// gives the child's own resource usage.
#[allow(clippy::zombie_processes)]
fn run_measuring_peak_memory(mut command: Command) -> (Option<i32>, i64) {
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let started = std::time::Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for writes; `pid` is our child.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        assert_eq!(reaped, 0, "wait4 failed");
        assert!(
            started.elapsed() < support::process::PATIENCE,
            "sf2520 did not finish within {:?}",
            support::process::PATIENCE
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss)
}

/// A 300 MiB receipt in IN/ (the issue measured 2.5 GB of memory, 600 MB more
/// ledger and 300 MB in `receipts/`): `export --deliver` refuses it by its size,
/// stays under 100 MB of memory, and neither the ledger nor `receipts/` grows.
#[test]
fn a_receipt_of_300_mib_is_refused_with_memory_bounded() {
    let site = HostileSite::new(|_| Answer::Oversized {
        size_bytes: 300 << 20,
    });
    let mut command = support::cli::command(
        &site.data_dir(),
        [
            "--config",
            site.config.to_str().unwrap(),
            "export",
            "--deliver",
        ],
    );
    command.env("RUST_LOG", "warn");
    let (code, peak_kib) = run_measuring_peak_memory(command);
    assert_eq!(code, Some(7), "the delivery is not complete");
    assert!(peak_kib < 100 * 1024, "peak resident memory {peak_kib} KiB");
    assert!(site.archived().is_empty(), "{:?}", site.archived());
    let ledger_bytes = size_if_any(&site.data_dir().join("ledger.sqlite3"))
        + size_if_any(&site.data_dir().join("ledger.sqlite3-wal"));
    assert!(
        ledger_bytes < 10 << 20,
        "the ledger holds {ledger_bytes} bytes"
    );
    let files = site.run(&["files"]).expect_success("files");
    assert!(files.stdout.contains("uploaded"), "{}", files.stdout);
}

/// The size of the file at `path`, or 0 when there is none (a WAL checkpointed
/// away, a ledger kept in PostgreSQL).
fn size_if_any(path: &std::path::Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

// ---- Never overwrite a file on the platform (exit code 11) -------------------

/// The one official file of `kommune` with løbenummer `sequence` in the
/// outbox of `data_dir`: its name.
fn outbox_name(data_dir: &std::path::Path, kommune: &str, sequence: u32) -> String {
    let suffix = format!("_{sequence:06}.txt");
    std::fs::read_dir(default_outbox(data_dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&format!("SF2520_{kommune}_")) && name.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no file {kommune} {sequence} in the outbox"))
}

/// The delivery state `files --json` gives one file.
fn state_of(data_dir: &std::path::Path, config: &std::path::Path, name: &str) -> String {
    let output = with_config(data_dir, config, &["files", "--json"]);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let files = document["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{document}"));
    let file = files
        .iter()
        .find(|f| f["file_name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {document}"));
    file["delivery"]["state"].as_str().unwrap().to_owned()
}

/// Regression (issue 22, item 3): after a restore from an older backup, the next
/// export gave løbenummer 2 to new bytes and `export --deliver` overwrote the
/// older file 2 still waiting on the server. Now the delivery of that file is
/// refused with exit code 11, the server's copy stays byte for byte, nothing is
/// recorded for it, and the run's other files are delivered; once the platform
/// has taken the older file, its receipt (another SendersFileId) refuses it too.
#[test]
fn a_ledger_restored_from_an_older_backup_never_overwrites_its_older_file_on_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let sshd = Sshd::start();
    let config = sshd.write_sf2520_config(dir.path(), "receipt_timeout_secs = 1\n");
    let run = |args: &[&str]| support::cli::Run::from(with_config(&data_dir, &config, args));
    let ingest = |name: &str, batch: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines(batch)).unwrap();
        run(&["ingest", path.to_str().unwrap()]).expect_success(name);
    };
    run(&["init"]).expect_success("init");
    ingest(
        "a.jsonl",
        &[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "5.00"),
        ],
    );
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    run(&["export", "--deliver"]).expect_code(0, "file 1 accepted");
    drop(platform);
    let backup = dir.path().join("older.sqlite3");
    run(&["backup", backup.to_str().unwrap()]).expect_success("backup");

    // The night the platform does not answer: file 2 waits in OUT/ with its trigger.
    ingest(
        "b.jsonl",
        &[withholding("KY-2", "BA1", "0751", "2026-11-01", "20.00")],
    );
    run(&["export", "--deliver"]).expect_code(7, "file 2 uploaded, no receipt");
    let name = outbox_name(&data_dir, "0751", 2);
    let out = sshd.out_dir();
    let older = std::fs::read(out.join(&name)).unwrap();
    let older_trigger = std::fs::read(out.join(format!("{name}.trigger"))).unwrap();

    // The data directory is lost (its outbox with it) and restored from the
    // older backup.
    std::fs::remove_dir_all(default_outbox(&data_dir)).unwrap();
    run(&["restore", "--force", backup.to_str().unwrap()]).expect_success("restore");
    ingest(
        "c.jsonl",
        &[
            withholding("KY-3", "BA1", "0751", "2026-11-02", "99.00"),
            agreement("BA2", "0147", CPR, "2026-01-01"),
            withholding("KY-4", "BA2", "0147", "2026-11-02", "7.00"),
        ],
    );
    let refused = run(&["export", "--deliver"]).expect_code(11, "file 2 refused");
    assert_ne!(
        std::fs::read(default_outbox(&data_dir).join(&name)).unwrap(),
        older,
        "the restored ledger gave løbenummer 2 to other bytes"
    );
    assert!(refused.stdout.contains("REFUSED"), "{}", refused.stdout);
    assert!(
        refused.stdout.contains(&format!("{name} is not delivered")),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .contains("1 file(s) refused, the platform holding another file under the name"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("exit code 11"),
        "{}",
        refused.stdout
    );
    assert_eq!(std::fs::read(out.join(&name)).unwrap(), older);
    assert_eq!(
        std::fs::read(out.join(format!("{name}.trigger"))).unwrap(),
        older_trigger
    );
    assert_eq!(state_of(&data_dir, &config, &name), "exported");
    let other = outbox_name(&data_dir, "0147", 1);
    assert_eq!(
        state_of(&data_dir, &config, &other),
        "uploaded",
        "the run's other file went on"
    );

    // The platform takes the older file 2 and answers it; its receipt refuses ours.
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while platform.seen().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the platform did not take the two waiting files: {:?}",
            platform.seen()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let again = run(&["deliver"]).expect_code(11, "receipt of another SendersFileId");
    assert!(again.stdout.contains("SendersFileId"), "{}", again.stdout);
    assert_eq!(platform.seen().len(), 2, "nothing more was uploaded");
    assert_eq!(platform.picked_up(&name).unwrap(), older);
    assert_eq!(state_of(&data_dir, &config, &name), "exported");
    assert_eq!(state_of(&data_dir, &config, &other), "accepted");
}

/// A receipt in IN/ for the name that answers a delivery this file never had
/// refuses its upload (exit 11) until the operator has dealt with it: a business
/// receipt whose FileTransferUUID the log does not know, a technical receipt
/// with another SendersFileId. Without them the file is delivered.
#[test]
fn a_receipt_of_another_delivery_of_the_name_refuses_the_upload() {
    let site = HostileSite::new(|_| Answer::Success);
    site.run(&["export"]).expect_success("export");
    let name = outbox_name(&site.data_dir(), "0751", 1);
    let business = site.sshd.in_dir().join(format!("{name}.businessreceipt"));
    std::fs::write(
        &business,
        business_receipt_xml("not-ours", &name, "UDK", "ACCEPTED", None),
    )
    .unwrap();
    let refused = site.run(&["deliver"]).expect_code(11, "business receipt");
    assert!(refused.stdout.contains("not-ours"), "{}", refused.stdout);
    assert!(business.exists());
    std::fs::remove_file(&business).unwrap();

    let technical = site.sshd.in_dir().join(format!("{name}.sftpreceipt"));
    let stranger = uuid::Uuid::new_v4();
    std::fs::write(
        &technical,
        support::platform::receipt_xml("old-transfer", &stranger.to_string(), &Answer::Success),
    )
    .unwrap();
    let refused = site
        .run(&["deliver", "--json"])
        .expect_code(11, "technical receipt");
    let document: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(
        document["deliveries"][0]["state"], "name_taken",
        "{document}"
    );
    let reason = document["deliveries"][0]["detail"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains(&stranger.to_string()), "{reason}");
    assert!(site._platform.seen().is_empty(), "nothing was uploaded");
    std::fs::remove_file(&technical).unwrap();

    site.run(&["deliver"])
        .expect_code(0, "delivered once the name is free");
    assert_eq!(site._platform.seen().len(), 1);
}

/// Guard: a delivery that died after its data file took its name, before the
/// trigger, is finished: the bytes there are ours, so they are not refused.
#[test]
fn a_delivery_that_died_before_its_trigger_is_finished() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let file = t.ledger.official_files(None).unwrap().remove(0);
    let outbox = default_outbox(&t.data_dir());
    let bytes = std::fs::read(outbox.join(&file.file_name)).unwrap();
    std::fs::write(sshd.out_dir().join(&file.file_name), &bytes).unwrap();
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let reports = deliver_all(&mut t, &sshd.config());
    assert_eq!(accepted(&reports), 1, "{reports:?}");
    assert_eq!(platform.seen().len(), 1);
    assert_eq!(platform.picked_up(&file.file_name).unwrap(), bytes);
}

/// Guard: a reissue while the earlier delivery's trigger still waits in OUT/
/// (same name, same bytes, a SendersFileId the log recorded) replaces that
/// trigger of ours and is delivered.
#[test]
fn a_reissue_while_the_earlier_trigger_waits_is_delivered() {
    let mut t = given_exported(1);
    let sshd = Sshd::start();
    let mut config = sshd.config();
    config.receipt_timeout_secs = 1;
    let first = deliver_all(&mut t, &config);
    assert!(
        matches!(&first[0].result, DeliveryResult::Failed { .. }),
        "{first:?}"
    );
    let file = t.ledger.official_files(None).unwrap().remove(0);
    let trigger = sshd.out_dir().join(format!("{}.trigger", file.file_name));
    assert!(std::fs::read_to_string(&trigger)
        .unwrap()
        .contains(&first[0].senders_file_id.to_string()));
    let outbox = default_outbox(&t.data_dir());
    let done = reissue(
        &mut t.ledger,
        file.kommune,
        1,
        &outbox,
        std::time::Duration::ZERO,
    )
    .unwrap()
    .unwrap();
    let second = deliver_all(&mut t, &config);
    assert!(
        matches!(&second[0].result, DeliveryResult::Failed { .. }),
        "{second:?}"
    );
    assert!(std::fs::read_to_string(&trigger)
        .unwrap()
        .contains(&done.delivery_id.to_string()));
    let platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let third = deliver_all(&mut t, &sshd.config());
    assert_eq!(accepted(&third), 1, "{third:?}");
    assert_eq!(platform.seen().len(), 1);
    assert_eq!(
        platform.seen()[0].senders_file_id,
        done.delivery_id.to_string()
    );
}
