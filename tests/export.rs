//! The exporter end to end: official files, corrections in later files, as-of
//! reproduction, reconstruction, reissue and tamper detection.

mod support;

use sf2520::domain::EntryKind;
use sf2520::export::{
    default_outbox, reconstruct, reissue, render_as_of, run_batch, ExportRequest, Quiet,
};
use support::backend::open_ledger;
use support::export::*;
use support::ledger::*;

fn export(t: &mut TestLedger) -> Vec<sf2520::export::ExportedFile> {
    let outbox = default_outbox(&t.data_dir());
    run_batch(&mut t.ledger, &ExportRequest::default(), &outbox, &Quiet).unwrap()
}

/// Two kommuner, two agreements each with one withholding.
fn given_two_kommuner() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", "0751", CPR, "2026-01-01"),
        agreement("BA2", "0101", CPR, "2026-01-01"),
        withholding("KY-1", "BA1", "0751", "2026-10-01", "1000.00"),
        withholding("KY-2", "BA2", "0101", "2026-10-01", "250.50"),
    ]));
    t
}

#[test]
fn corrections_after_an_export_land_in_the_next_file_with_sign_code_and_reference() {
    let mut t = given_two_kommuner();
    let first = export(&mut t);
    assert_eq!(first.len(), 2);
    t.given(&lines(&[
        correction("KO-1", "KY-1", "0751", "-200.00"),
        correction("KO-2", "KY-1", "0751", "50.00"),
    ]));
    let second = export(&mut t);
    assert_eq!(second.len(), 1, "only 0751 has new entries");
    let outbox = default_outbox(&t.data_dir());
    let parsed = read_checked(&second[0].written.path);
    assert_eq!(parsed.header.sequence, 2);
    let details: Vec<_> = parsed.details.iter().map(|d| &d.record).collect();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0].kind, EntryKind::Correction);
    assert_eq!(details[0].amount.ore(), -20_000);
    assert_eq!(details[0].corrects.as_ref().unwrap().as_str(), "KY-1");
    assert_eq!(
        details[0].payout_date.to_string(),
        "2026-10-01",
        "a correction carries its withholding's payout date"
    );
    assert_eq!(details[1].amount.ore(), 5_000);
    assert_eq!(
        (
            parsed.end.plus_ore,
            parsed.end.minus_ore,
            parsed.end.net_ore
        ),
        (5_000, 20_000, -15_000)
    );
    assert_eq!(assert_exactly_once(&t.ledger, &outbox), 3);
}

#[test]
fn a_file_reconstructed_after_later_events_is_unchanged() {
    let mut t = given_two_kommuner();
    let first = export(&mut t);
    let original = std::fs::read(&first[0].written.path).unwrap();
    t.given(&lines(&[
        correction("KO-1", "KY-2", "0101", "-0.50"),
        withholding("KY-3", "BA1", "0751", "2026-11-01", "7.00"),
    ]));
    export(&mut t);
    let file = &first[0];
    let rebuilt = reconstruct(
        &t.ledger,
        file.planned.range.kommune,
        file.planned.header.sequence,
    )
    .unwrap();
    assert!(rebuilt.matches());
    assert_eq!(rebuilt.bytes, original);
}

#[test]
fn export_as_of_a_files_creation_time_reproduces_it_byte_for_byte() {
    let mut t = given_two_kommuner();
    let first = export(&mut t);
    t.given(&lines(&[withholding(
        "KY-3",
        "BA1",
        "0751",
        "2026-11-01",
        "7.00",
    )]));
    let second = export(&mut t);
    t.given(&lines(&[withholding(
        "KY-4",
        "BA1",
        "0751",
        "2026-11-01",
        "8.00",
    )]));
    for official in first.iter().chain(&second) {
        let created = official.planned.header.created_at.and_utc();
        let dir = t.dir.path().join(format!("as-of-{}", created.timestamp()));
        let files = render_as_of(
            &t.ledger,
            &ExportRequest::default(),
            created,
            false,
            &dir,
            &Quiet,
        )
        .unwrap();
        let same = files
            .iter()
            .find(|f| f.planned.file_name == official.planned.file_name)
            .expect("the file is reproduced");
        assert_eq!(
            std::fs::read(&same.written.path).unwrap(),
            std::fs::read(&official.written.path).unwrap()
        );
    }
}

#[test]
fn export_as_of_a_time_before_any_file_shows_what_the_first_run_would_make() {
    let mut t = given_two_kommuner();
    let clock = t.with_test_clock();
    clock.advance(chrono::Duration::milliseconds(1100));
    let before = clock.now();
    let dir = t.dir.path().join("before");
    let preview = render_as_of(
        &t.ledger,
        &ExportRequest::default(),
        before,
        false,
        &dir,
        &Quiet,
    )
    .unwrap();
    assert!(
        t.ledger.official_files(None).unwrap().is_empty(),
        "as-of records nothing"
    );
    assert_eq!(t.head(), 4, "as-of appends nothing");
    let official = export(&mut t);
    assert_eq!(preview.len(), official.len());
    for (preview, official) in preview.iter().zip(&official) {
        let (a, b) = (
            read_checked(&preview.written.path),
            read_checked(&official.written.path),
        );
        assert_eq!(a.header.sequence, b.header.sequence);
        assert_eq!(a.details, b.details);
        assert_eq!(a.end, b.end);
    }
}

#[test]
fn include_empty_writes_start_and_end_only_files() {
    let mut t = given_two_kommuner();
    let outbox = default_outbox(&t.data_dir());
    let request = ExportRequest {
        include_empty: true,
        ..Default::default()
    };
    let files = run_batch(&mut t.ledger, &request, &outbox, &Quiet).unwrap();
    assert_eq!(files.len(), 98);
    let empty = files
        .iter()
        .find(|f| f.planned.range.kommune.code() == "0147")
        .unwrap();
    assert_eq!(std::fs::read(&empty.written.path).unwrap().len(), 2 * 130);
    assert_exactly_once(&t.ledger, &outbox);
}

#[test]
fn reissue_puts_back_the_same_bytes_and_records_it() {
    let mut t = given_two_kommuner();
    let first = export(&mut t);
    let path = &first[0].written.path;
    let original = std::fs::read(path).unwrap();
    std::fs::remove_file(path).unwrap();
    let outbox = default_outbox(&t.data_dir());
    let kommune = first[0].planned.range.kommune;
    let done = reissue(
        &mut t.ledger,
        kommune,
        1,
        &outbox,
        std::time::Duration::ZERO,
    )
    .unwrap()
    .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), original);
    assert_eq!(done.position, t.head());
    let state = t.ledger.delivery_state(kommune, 1).unwrap();
    assert_eq!(state, sf2520::ledger::DeliveryState::Reissued);
}

#[test]
fn an_unknown_file_is_a_clear_error() {
    let mut t = given_two_kommuner();
    export(&mut t);
    let kommune = sf2520::domain::Kommune::parse("0751").unwrap();
    let error = t.ledger.official_file(kommune, 7).unwrap_err();
    assert_eq!(
        error.to_string(),
        "kommune 0751 has no official file with løbenummer 7 (it has 1 file(s))"
    );
}

#[test]
fn a_payload_changed_in_the_database_fails_verify_and_reconstruct() {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", "0751", CPR, "2026-01-01"),
        withholding("KY-TAMPER-ME", "BA1", "0751", "2026-10-01", "1000.00"),
    ]));
    export(&mut t);
    let data_dir = t.data_dir();
    drop(t.ledger);
    let changed = tamper_database(&data_dir, b"KY-TAMPER-ME");
    assert!(changed > 0);
    let ledger = open_ledger(&data_dir);
    let failure = ledger.verify(|_| {}).unwrap().unwrap_err();
    assert!(failure.to_string().contains("position 2"), "{failure}");
    let kommune = sf2520::domain::Kommune::parse("0751").unwrap();
    let rebuilt = reconstruct(&ledger, kommune, 1).unwrap();
    assert!(
        !rebuilt.matches(),
        "the changed payload must change the rebuilt file"
    );
}
