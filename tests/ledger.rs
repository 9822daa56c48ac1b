//! The ledger: every rule of docs/input-format.md and decision 0004, duplicates and conflicts, all-or-nothing
//! batches, totals as of past points, tamper detection and file permissions.

mod support;

use std::os::unix::fs::PermissionsExt;

use sf2520::domain::DomainError;
use sf2520::ingest::{ingest_lines, IngestOutcome, RejectedLine};
use sf2520::ledger::{IngestMode, LineError};
use support::backend::open_ledger;
use support::ledger::*;

const K: &str = "0751";

/// An agreement BA1 of kommune 0751, valid from 2026-01-01, with withholding KY-1
/// of 1,000.00 kr paid out 2026-10-01.
fn given_one_withholding() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        withholding("KY-1", "BA1", K, "2026-10-01", "1000.00"),
    ]));
    t
}

/// Asserts the batch is rejected, that exactly the given lines fail with reasons
/// containing the given texts, and that nothing was written.
fn assert_rejected(t: &mut TestLedger, jsonl: &str, expected: &[(usize, &str)]) {
    let head_before = t.ledger.head().unwrap();
    let errors = t.ingest(jsonl).expect_err("the batch must be rejected");
    assert_eq!(errors.len(), expected.len(), "rejections: {errors:?}");
    for ((line, reason), (expected_line, expected_text)) in errors.iter().zip(expected) {
        assert_eq!(line, expected_line, "{reason}");
        assert!(
            reason.contains(expected_text),
            "line {line}: {reason:?} lacks {expected_text:?}"
        );
    }
    assert_eq!(
        t.ledger.head().unwrap(),
        head_before,
        "a rejected batch changed the log"
    );
}

#[test]
fn accepts_the_design_example_and_totals_it() {
    let mut t = given_one_withholding();
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-200.00")]));
    let totals = t.ledger.agreement_totals("BA1", t.head()).unwrap().unwrap();
    assert_eq!(totals.withheld_ore, 100_000);
    assert_eq!(totals.corrected_ore, -20_000);
    assert_eq!(totals.net_ore, 80_000);
    assert_eq!(totals.entries, 2);
    assert_eq!(totals.last_payout_date.unwrap().to_string(), "2026-10-01");
}

#[test]
fn rejects_values_that_are_not_valid() {
    let mut t = TestLedger::new();
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA1", "0411", CPR, "2026-01-01")]),
        &[(1, "kommune \"0411\"")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA1", "9999", CPR, "2026-01-01")]),
        &[(1, "not one of the 98")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA1", K, "3102901234", "2026-01-01")]),
        &[(1, "CPR 310290-xxxx is invalid")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("", K, CPR, "2026-01-01")]),
        &[(1, "must not be empty")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA0123456789ABCD", K, CPR, "2026-01-01")]),
        &[(1, "at most 15")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement(" BA1", K, CPR, "2026-01-01")]),
        &[(1, "leading or trailing")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA€1", K, CPR, "2026-01-01")]),
        &[(1, "not printable ISO-8859-1")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA1", K, CPR, "2026-02-30")]),
        &[(1, "valid_from")],
    );
}

#[test]
fn error_messages_never_show_a_full_cpr() {
    let mut t = given_one_withholding();
    let other_cpr = "0202902345";
    let line = withholding("KY-9", "BA1", K, "2026-10-01", "1.00").replace(CPR, other_cpr);
    let errors = t.ingest(&lines(&[line])).unwrap_err();
    assert!(errors[0].1.contains("020290-xxxx"), "{errors:?}");
    assert!(
        !errors[0].1.contains(other_cpr) && !errors[0].1.contains(CPR),
        "{errors:?}"
    );
}

#[test]
fn a_withholding_needs_a_matching_active_agreement() {
    let mut t = given_one_withholding();
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA9", K, "2026-10-01", "1.00")]),
        &[(1, "agreement BA9 is not registered")],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", "0101", "2026-10-01", "1.00")]),
        &[(1, "belongs to kommune 0751, not 0101")],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2025-12-31", "1.00")]),
        &[(1, "not active on payout date 2025-12-31")],
    );
    t.given(&lines(&[agreement_ended("BA1", K, "2026-10-31")]));
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2026-11-01", "1.00")]),
        &[(1, "valid 2026-01-01 to 2026-10-31")],
    );
    t.given(&lines(&[withholding(
        "KY-2",
        "BA1",
        K,
        "2026-10-31",
        "1.00",
    )]));
}

#[test]
fn a_withholding_needs_a_positive_amount_and_an_ordered_period() {
    let mut t = given_one_withholding();
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2026-10-01", "0.00")]),
        &[(1, "must be greater than 0")],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2026-10-01", "-5.00")]),
        &[(1, "must be greater than 0")],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2026-10-01", "1.001")]),
        &[(1, "more than two decimals")],
    );
    let reversed = withholding("KY-2", "BA1", K, "2026-10-01", "1.00").replace(
        "\"period_from\":\"2026-09-01\"",
        "\"period_from\":\"2026-10-01\"",
    );
    assert_rejected(
        &mut t,
        &lines(&[reversed]),
        &[(1, "period_from 2026-10-01 is after period_to 2026-09-30")],
    );
}

#[test]
fn a_correction_must_keep_the_net_at_or_above_zero() {
    let mut t = given_one_withholding();
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-2", "KY-1", K, "-1000.01")]),
        &[(
            1,
            "would bring withholding KY-1 below 0 (its net is 1000.00)",
        )],
    );
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-600.00")]));
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-3", "KY-1", K, "-400.01")]),
        &[(1, "its net is 400.00")],
    );
    // A reversal to exactly zero is allowed, and an increase after it too.
    t.given(&lines(&[
        correction("KY-3", "KY-1", K, "-400.00"),
        correction("KY-4", "KY-1", K, "50.00"),
    ]));
    assert_eq!(
        t.ledger
            .agreement_totals("BA1", t.head())
            .unwrap()
            .unwrap()
            .net_ore,
        5_000
    );
}

#[test]
fn a_correction_must_name_a_withholding_of_its_kommune() {
    let mut t = given_one_withholding();
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-2", "KY-404", K, "-1.00")]),
        &[(1, "which is no withholding of kommune 0751")],
    );
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-2", "KY-1", "0101", "-1.00")]),
        &[(1, "which is no withholding of kommune 0101")],
    );
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-2", "KY-1", K, "0.00")]),
        &[(1, "amount must not be 0")],
    );
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-1.00")]));
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-3", "KY-2", K, "-1.00")]),
        &[(1, "which is itself a correction")],
    );
}

#[test]
fn the_same_content_again_is_a_duplicate_and_other_content_a_conflict() {
    let mut t = given_one_withholding();
    t.given(&lines(&[
        correction("KY-2", "KY-1", K, "-1.00"),
        agreement_ended("BA1", K, "2026-12-31"),
    ]));
    let head = t.head();
    let again = lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        withholding("KY-1", "BA1", K, "2026-10-01", "1000.00"),
        correction("KY-2", "KY-1", K, "-1.00"),
        agreement_ended("BA1", K, "2026-12-31"),
    ]);
    let report = t.given(&again);
    assert_eq!((report.appended(), report.duplicates()), (0, 4));
    assert_eq!(t.head(), head, "duplicates append nothing");
    assert_rejected(
        &mut t,
        &lines(&[agreement("BA1", K, CPR, "2026-02-01")]),
        &[(1, "already registered with different content")],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-1", "BA1", K, "2026-10-01", "1000.01")]),
        &[(
            1,
            "KY-1 already exists in kommune 0751 with different content",
        )],
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-2", "BA1", K, "2026-10-01", "1.00")]),
        &[(1, "KY-2 already exists")],
    );
    assert_rejected(
        &mut t,
        &lines(&[correction("KY-2", "KY-1", K, "-2.00")]),
        &[(1, "KY-2 already exists")],
    );
    assert_rejected(
        &mut t,
        &lines(&[agreement_ended("BA1", K, "2026-11-30")]),
        &[(1, "already ended on 2026-12-31")],
    );
    // The same reference in another kommune is another entry.
    t.given(&lines(&[
        agreement("BA2", "0101", CPR, "2026-01-01"),
        withholding("KY-1", "BA2", "0101", "2026-10-01", "5.00"),
    ]));
}

#[test]
fn a_batch_is_all_or_nothing_and_reports_every_bad_line() {
    let mut t = given_one_withholding();
    let batch = lines(&[
        agreement("BA2", K, CPR, "2026-01-01"),
        withholding("KY-10", "BA2", K, "2026-10-01", "10.00"),
        withholding("KY-11", "BA404", K, "2026-10-01", "10.00"),
        "{\"type\":\"withholding\",".to_string(),
        correction("KY-12", "KY-10", K, "-10.00"),
        correction("KY-13", "KY-10", K, "-0.01"),
    ]);
    assert_rejected(
        &mut t,
        &batch,
        &[
            (3, "BA404 is not registered"),
            (4, "not valid JSON"),
            (6, "below 0"),
        ],
    );
    assert!(t
        .ledger
        .agreement_totals("BA2", t.head())
        .unwrap()
        .is_none());
}

// The ingest policy itself (`sf2520::ingest::ingest_lines`), typed, as the CLI
// and `TestLedger` use it.

/// Runs the policy on `jsonl` and asserts the log did not move.
fn when_ingested_writing_nothing(
    t: &mut TestLedger,
    jsonl: &str,
    mode: IngestMode,
) -> IngestOutcome {
    let head_before = t.ledger.head().unwrap();
    let outcome = t.ingest_outcome(jsonl, mode);
    assert_eq!(
        t.ledger.head().unwrap(),
        head_before,
        "the log moved: {outcome:?}"
    );
    outcome
}

#[test]
fn the_policy_keeps_good_lines_out_when_one_line_does_not_parse() {
    let mut t = TestLedger::new();
    let file = lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        "{\"type\":\"agreement\",".to_string(),
    ]);
    let outcome = when_ingested_writing_nothing(&mut t, &file, IngestMode::Commit);
    let IngestOutcome::Rejected { total_lines, lines } = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(total_lines, 2);
    assert!(
        matches!(&lines[..], [RejectedLine::Parse(error)] if error.line == 2),
        "{lines:?}"
    );
}

#[test]
fn the_policy_checks_every_line_and_reports_parse_and_rule_rejections_by_line() {
    let mut t = TestLedger::new();
    // The refused line comes before the unparseable one: the policy collects parse
    // errors first, so only its sort puts line 2 before line 4.
    let file = lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        withholding("KY-1", "BA404", K, "2026-10-01", "10.00"),
        String::new(),
        "not json".to_string(),
    ]);
    let outcome = when_ingested_writing_nothing(&mut t, &file, IngestMode::Commit);
    let IngestOutcome::Rejected { total_lines, lines } = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(total_lines, 3, "a blank line is not counted");
    assert!(
        matches!(
            &lines[..],
            [
                RejectedLine::Rule(LineError {
                    line: 2,
                    error: DomainError::UnknownAgreement { agreement },
                }),
                RejectedLine::Parse(parse),
            ] if agreement == "BA404" && parse.line == 4
        ),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().map(RejectedLine::line).collect::<Vec<_>>(),
        [2, 4]
    );
}

#[test]
fn a_dry_run_of_a_good_file_checks_it_and_commits_nothing() {
    let mut t = TestLedger::new();
    let file = lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        withholding("KY-1", "BA1", K, "2026-10-01", "10.00"),
    ]);
    let outcome = when_ingested_writing_nothing(&mut t, &file, IngestMode::DryRun);
    let IngestOutcome::Checked(checked) = outcome else {
        panic!("expected a passed dry run, got {outcome:?}");
    };
    assert_eq!((checked.appended(), checked.duplicates()), (2, 0));
    // Committed now, the same lines are new rather than duplicates: the dry run
    // left nothing behind, not even in the write path's memos.
    let outcome = t.ingest_outcome(&file, IngestMode::Commit);
    let IngestOutcome::Committed(committed) = outcome else {
        panic!("expected a commit, got {outcome:?}");
    };
    assert_eq!(committed.lines, checked.lines);
    assert_eq!(t.head(), committed.head.position);
}

#[test]
fn totals_can_be_read_as_of_any_position_and_time() {
    let mut t = given_one_withholding();
    let first = t.head();
    let clock = t.with_test_clock();
    clock.advance(chrono::Duration::milliseconds(5));
    let between = clock.now();
    clock.advance(chrono::Duration::milliseconds(5));
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-250.00")]));
    let second = t.head();
    t.given(&lines(&[withholding(
        "KY-3",
        "BA1",
        K,
        "2026-11-01",
        "500.00",
    )]));
    let third = t.head();
    let net = |at: u64| {
        t.ledger
            .agreement_totals("BA1", at)
            .unwrap()
            .map(|x| x.net_ore)
    };
    assert_eq!(net(1), None);
    assert_eq!(net(first), Some(100_000));
    assert_eq!(net(second), Some(75_000));
    assert_eq!(net(third), Some(125_000));
    let at_time = t
        .ledger
        .resolve(sf2520::ledger::AsOf::Time(between))
        .unwrap();
    assert_eq!(at_time, first);
    let kommune = t.ledger.kommune_totals(second).unwrap();
    assert_eq!(kommune.len(), 1);
    assert_eq!((kommune[0].1.entries, kommune[0].1.net_ore), (2, 75_000));
    assert!(t
        .ledger
        .resolve(sf2520::ledger::AsOf::Position(third + 1))
        .is_err());
}

#[test]
fn verify_passes_on_a_healthy_ledger() {
    let mut t = given_one_withholding();
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-1.00")]));
    let report = t.ledger.verify(|_| {}).unwrap().unwrap();
    assert_eq!(report.events, 3);
    assert!(report.projection_rows > 0);
}

#[test]
fn verify_names_the_position_of_a_byte_changed_in_the_database_file() {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", K, CPR, "2026-01-01"),
        withholding("KY-1", "BA1", K, "2026-10-01", "1.00"),
    ]));
    t.given(&lines(&[withholding(
        "KY-TAMPER-ME",
        "BA1",
        K,
        "2026-10-01",
        "2.00",
    )]));
    t.given(&lines(&[withholding(
        "KY-3",
        "BA1",
        K,
        "2026-10-01",
        "3.00",
    )]));
    let data_dir = t.data_dir();
    drop(t.ledger); // closing checkpoints the WAL into the main file
    let changed = tamper_database(&data_dir, b"KY-TAMPER-ME");
    assert!(changed > 0, "the reference must be found in the database");
    let ledger = open_ledger(&data_dir);
    let failure = ledger.verify(|_| {}).unwrap().unwrap_err();
    assert_eq!(
        failure,
        sf2520::ledger::VerifyFailure::Log {
            position: 3,
            what: "hash chain broken: the event or the one before it was altered".into()
        }
    );
}

#[test]
fn verify_notices_a_projection_that_differs_from_the_log() {
    let t = given_one_withholding();
    let changed = t
        .sql()
        .execute("UPDATE entries SET net_ore = net_ore + 1", &[]);
    assert!(changed > 0);
    let failure = t.ledger.verify(|_| {}).unwrap().unwrap_err();
    assert!(
        matches!(
            failure,
            sf2520::ledger::VerifyFailure::Projection {
                table: "entries",
                ..
            }
        ),
        "{failure}"
    );
}

/// The error a read must give once KY-1's `entries.kind` says 7.
fn assert_unknown_kind(result: Result<impl std::fmt::Debug, sf2520::ledger::LedgerError>) {
    match result {
        Err(sf2520::ledger::LedgerError::UnknownEntryKind { found: 7, location }) => {
            assert!(!location.is_empty(), "the error must say where");
        }
        other => panic!("expected UnknownEntryKind {{ found: 7 }}, got {other:?}"),
    }
}

// Regression: the kind was compared with `== KIND_WITHHOLDING` and anything else
// counted as a correction, so a damaged kind turned a withholding into a
// correction in the totals instead of being reported.
#[test]
fn given_a_damaged_entry_kind_when_totals_or_the_rules_read_it_then_it_is_an_error_naming_it() {
    let mut t = given_one_withholding();
    let changed = t
        .sql()
        .execute("UPDATE entries SET kind = 7 WHERE reference = 'KY-1'", &[]);
    assert_eq!(changed, 1);
    let head = t.head();
    assert_unknown_kind(t.ledger.agreement_totals("BA1", head));
    assert_unknown_kind(t.ledger.kommune_totals(head));
    let kommune = sf2520::domain::Kommune::parse(K).unwrap();
    assert_unknown_kind(t.ledger.kommune_range_totals(kommune, 0, head));
    let parsed =
        sf2520::input::parse_lines(lines(&[correction("KY-2", "KY-1", K, "-1.00")]).as_bytes())
            .expect("reading from memory");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_unknown_kind(
        t.ledger
            .ingest(parsed.commands, sf2520::ledger::IngestMode::Commit),
    );
    assert_eq!(t.head(), head, "nothing was written");
}

#[test]
fn the_data_directory_and_database_are_owner_only() {
    let t = TestLedger::new();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.data_dir()), 0o700);
    let file = t.data_dir().join(sf2520::ledger::DATABASE_FILE);
    if support::backend::on_postgres() {
        // The database is the server's; the data directory holds no SQLite file.
        assert!(!file.exists(), "{} on PostgreSQL", file.display());
        return;
    }
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn a_database_readable_by_others_is_refused() {
    if support::backend::on_postgres() {
        // SQLite only: what is refused is the database file's mode, and a
        // PostgreSQL ledger has no file (who may read its database is the
        // server's to grant).
        return;
    }
    let t = TestLedger::new();
    let path = t.data_dir().join(sf2520::ledger::DATABASE_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = sf2520::ledger::Ledger::open(&t.data_dir())
        .err()
        .expect("must refuse");
    assert!(error.to_string().contains("chmod 600"), "{error}");
}

/// Ingests through another `Ledger` on the same database, as a second process would.
fn ingest_elsewhere(t: &TestLedger, jsonl: &str) {
    let mut other = open_ledger(&t.data_dir());
    let outcome = ingest_lines(&mut other, jsonl.as_bytes(), IngestMode::Commit).unwrap();
    assert!(
        matches!(outcome, IngestOutcome::Committed(_)),
        "{outcome:?}"
    );
}

// Regression guard for the write path's memo (agreement states and latest totals
// kept between transactions): another writer's events must make it forget.
#[test]
fn a_ledger_sees_what_another_connection_appended() {
    let mut t = given_one_withholding();
    ingest_elsewhere(
        &t,
        &lines(&[
            withholding("KY-2", "BA1", K, "2026-10-01", "500.00"),
            agreement_ended("BA1", K, "2026-10-31"),
        ]),
    );
    assert_rejected(
        &mut t,
        &lines(&[withholding("KY-3", "BA1", K, "2026-11-15", "1.00")]),
        &[(1, "BA1")],
    );
    t.given(&lines(&[withholding(
        "KY-4",
        "BA1",
        K,
        "2026-10-20",
        "2.00",
    )]));
    let totals = t.ledger.agreement_totals("BA1", t.head()).unwrap().unwrap();
    assert_eq!(totals.withheld_ore, 150_200);
    assert_eq!(totals.entries, 3);
    assert!(t.ledger.verify(|_| {}).unwrap().is_ok());
}

// Regression guard for the memo: what a rejected batch applied before it was rolled
// back must not be remembered.
#[test]
fn a_rejected_batch_leaves_nothing_remembered() {
    let mut t = given_one_withholding();
    assert_rejected(
        &mut t,
        &lines(&[
            withholding("KY-2", "BA1", K, "2026-10-01", "300.00"),
            agreement_ended("BA1", K, "2026-10-31"),
            withholding("KY-3", "BA9", K, "2026-10-01", "1.00"),
        ]),
        &[(3, "BA9")],
    );
    t.given(&lines(&[withholding(
        "KY-4",
        "BA1",
        K,
        "2026-11-15",
        "200.00",
    )]));
    let totals = t.ledger.agreement_totals("BA1", t.head()).unwrap().unwrap();
    assert_eq!(totals.withheld_ore, 120_000);
    assert_eq!(totals.entries, 2);
    assert!(t.ledger.verify(|_| {}).unwrap().is_ok());
}

#[test]
fn as_of_a_time_is_the_last_event_recorded_by_then() {
    let mut t = TestLedger::new();
    let clock = t.with_test_clock();
    t.given(&lines(&[agreement("BA1", K, CPR, "2026-01-01")]));
    for batch in 0..6 {
        let batch: Vec<String> = (0..5)
            .map(|i| {
                let reference = format!("KY-{batch}-{i}");
                withholding(&reference, "BA1", K, "2026-10-01", "1.00")
            })
            .collect();
        t.given(&lines(&batch));
        clock.advance(chrono::Duration::milliseconds(2));
    }
    let head = t.head();
    let times: Vec<i64> = (1..=head)
        .map(|position| t.ledger.event_at(position).unwrap().recorded_at_us)
        .collect();
    // The answer a scan of the whole log gives, for every recorded time and the
    // microseconds around it.
    let scan = |time_us: i64| times.iter().filter(|&&at| at <= time_us).count() as u64;
    for &at in &times {
        for time_us in [at - 1, at, at + 1] {
            let time = chrono::DateTime::from_timestamp_micros(time_us).unwrap();
            let found = t.ledger.resolve(sf2520::ledger::AsOf::Time(time)).unwrap();
            assert_eq!(found, scan(time_us), "as of {time_us} µs");
        }
    }
    let before_all = chrono::DateTime::from_timestamp_micros(times[0] - 1).unwrap();
    assert_eq!(
        t.ledger
            .resolve(sf2520::ledger::AsOf::Time(before_all))
            .unwrap(),
        0
    );
}

#[test]
fn an_older_ledger_has_its_projections_rebuilt_from_its_log_on_open() {
    if support::backend::on_postgres() {
        // SQLite only: schema version 1 existed only as SQLite files (the
        // PostgreSQL backend began at version 2, and refuses any other version),
        // and the test rebuilds version 1's SQLite tables and index by hand.
        return;
    }
    let mut t = given_one_withholding();
    t.given(&lines(&[correction("KY-2", "KY-1", K, "-200.00")]));
    let head = t.ledger.head().unwrap();
    let before = t.ledger.agreement_totals("BA1", head.position).unwrap();
    let data_dir = t.data_dir();
    drop(t.ledger);
    {
        // What schema version 1 left behind: its version number, its index on
        // time, and projection rows the new layout does not have.
        let conn = rusqlite::Connection::open(data_dir.join("ledger.sqlite3")).unwrap();
        conn.execute_batch(
            "UPDATE meta SET value = 1 WHERE key = 'schema_version';
             DELETE FROM meta WHERE key = 'totals_block';
             CREATE INDEX events_by_time ON events (recorded_at_us);
             DROP TABLE agreement_totals;
             CREATE TABLE agreement_totals (agreement TEXT, position INTEGER, stale INTEGER);
             INSERT INTO agreement_totals VALUES ('BA1', 2, 1);
             DELETE FROM entries;",
        )
        .unwrap();
    }
    let ledger = sf2520::ledger::Ledger::open(&data_dir).unwrap();
    assert_eq!(ledger.head().unwrap(), head, "the log is untouched");
    assert_eq!(
        ledger.agreement_totals("BA1", head.position).unwrap(),
        before
    );
    assert!(ledger.verify(|_| {}).unwrap().is_ok());
    let (version, time_index): (i64, i64) =
        rusqlite::Connection::open(ledger.dir().join(sf2520::ledger::DATABASE_FILE))
            .unwrap()
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'schema_version'),
                    (SELECT COUNT(*) FROM sqlite_schema WHERE name = 'events_by_time')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
    assert_eq!((version, time_index), (2, 0));
}
