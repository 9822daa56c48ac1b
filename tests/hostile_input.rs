//! Hostile input: every file of `tests/data/hostile/` (plus overlong lines made on
//! the fly) is fed to the real `sf2520 ingest` against a ledger holding known
//! agreements and withholdings. Each must be refused with its line number and
//! reason, leave the log's length and head hash unchanged, never panic, and never
//! print a full CPR number.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sf2520::input::LINE_BYTES_MAX;
use sf2520::ledger::Head;
use support::ledger::TestLedger;

/// (file in tests/data/hostile, the 1-based line that must be refused, a fragment
/// of the reason). Every case has exactly one bad line; the lines around it are
/// valid, so the report must name that line and no other.
const CASES: &[(&str, usize, &str)] = &[
    ("json_truncated_object.jsonl", 2, "EOF while parsing"),
    ("json_trailing_comma.jsonl", 1, "trailing comma"),
    ("json_single_quotes.jsonl", 1, "key must be a string"),
    ("json_unquoted_keys.jsonl", 2, "key must be a string"),
    (
        "json_two_objects_on_one_line.jsonl",
        1,
        "trailing characters",
    ),
    ("json_trailing_garbage.jsonl", 2, "trailing characters"),
    ("json_comment_line.jsonl", 2, "expected value"),
    ("json_missing_colon.jsonl", 1, "expected `:`"),
    ("json_invalid_escape.jsonl", 1, "invalid escape"),
    ("json_lone_surrogate.jsonl", 1, "hex escape"),
    ("json_raw_control_character.jsonl", 2, "control character"),
    (
        "json_deeply_nested_arrays.jsonl",
        1,
        "recursion limit exceeded",
    ),
    (
        "json_deeply_nested_objects.jsonl",
        2,
        "recursion limit exceeded",
    ),
    ("json_number_out_of_range.jsonl", 1, "number out of range"),
    ("json_empty_line_object.jsonl", 2, "missing field type"),
    (
        "json_empty_key.jsonl",
        1,
        "unknown field \"\" for type withholding",
    ),
    ("utf8_invalid_latin1_byte.jsonl", 2, "not UTF-8 at byte 38"),
    ("utf8_overlong_encoding.jsonl", 1, "not UTF-8 at byte 38"),
    ("utf8_truncated_sequence.jsonl", 1, "not UTF-8 at byte 40"),
    ("utf8_surrogate_bytes.jsonl", 1, "not UTF-8 at byte 38"),
    ("utf16le_with_bom.jsonl", 1, "NUL byte at byte 3"),
    ("bom_at_start.jsonl", 1, "byte order mark"),
    ("bom_at_line_3.jsonl", 3, "byte order mark"),
    ("nul_byte_between_fields.jsonl", 2, "NUL byte at byte"),
    ("nul_byte_at_end_of_line.jsonl", 1, "NUL byte at byte"),
    (
        "nul_escaped_in_reference.jsonl",
        1,
        "not printable ISO-8859-1",
    ),
    (
        "cr_only_line_endings.jsonl",
        1,
        "carriage return (CR) at byte",
    ),
    ("cr_inside_line.jsonl", 2, "carriage return (CR) at byte"),
    ("array_instead_of_object.jsonl", 2, "found an array"),
    ("string_instead_of_object.jsonl", 1, "found a string"),
    ("null_instead_of_object.jsonl", 2, "found null"),
    ("number_instead_of_object.jsonl", 1, "found a number"),
    ("type_missing.jsonl", 1, "missing field type"),
    (
        "type_not_a_string.jsonl",
        1,
        "field type: expected a JSON string, found a number",
    ),
    (
        "type_is_an_array.jsonl",
        1,
        "field type: expected a JSON string, found an array",
    ),
    (
        "type_is_null.jsonl",
        2,
        "field type: expected a JSON string, found null",
    ),
    ("type_unknown.jsonl", 1, "unknown type \"Withholding\""),
    (
        "field_unknown.jsonl",
        1,
        "unknown field \"comment\" for type withholding",
    ),
    ("field_misspelt.jsonl", 2, "unknown field \"amout\""),
    ("field_missing.jsonl", 1, "missing field amount"),
    (
        "field_of_another_type.jsonl",
        1,
        "unknown field \"cpr\" for type agreement_ended",
    ),
    (
        "duplicate_key_amount.jsonl",
        1,
        "field \"amount\" appears more than once",
    ),
    (
        "duplicate_key_type.jsonl",
        2,
        "field \"type\" appears more than once",
    ),
    (
        "duplicate_key_same_value.jsonl",
        1,
        "field \"valid_to\" appears more than once",
    ),
    (
        "null_required_value.jsonl",
        1,
        "field kommune: expected a JSON string, found null",
    ),
    (
        "null_optional_value.jsonl",
        1,
        "field valid_to: expected a JSON string, found null",
    ),
    (
        "amount_float_unquoted.jsonl",
        1,
        "field amount: expected a JSON string, found a number",
    ),
    (
        "amount_integer_unquoted.jsonl",
        1,
        "field amount: expected a JSON string, found a number",
    ),
    (
        "amount_exponent_unquoted.jsonl",
        1,
        "field amount: expected a JSON string, found a number",
    ),
    (
        "amount_boolean.jsonl",
        1,
        "field amount: expected a JSON string, found true or false",
    ),
    (
        "amount_object.jsonl",
        1,
        "field amount: expected a JSON string, found an object",
    ),
    (
        "cpr_unquoted_number.jsonl",
        2,
        "field cpr: expected a JSON string, found a number",
    ),
    ("amount_exponent_quoted.jsonl", 1, "expected kroner like"),
    (
        "withholding_negative_zero.jsonl",
        2,
        "must be greater than 0",
    ),
    ("correction_negative_zero.jsonl", 1, "amount must not be 0"),
    ("correction_zero.jsonl", 2, "amount must not be 0"),
    ("withholding_zero.jsonl", 1, "must be greater than 0"),
    ("withholding_negative.jsonl", 1, "must be greater than 0"),
    ("amount_three_decimals.jsonl", 1, "more than two decimals"),
    (
        "amount_three_decimals_zero.jsonl",
        1,
        "more than two decimals",
    ),
    ("amount_huge.jsonl", 1, "larger than 99,999,999,999.99"),
    ("amount_beyond_any_decimal.jsonl", 1, "out of range"),
    ("amount_plus_sign.jsonl", 1, "expected kroner like"),
    ("amount_decimal_comma.jsonl", 1, "expected kroner like"),
    ("amount_leading_space.jsonl", 1, "expected kroner like"),
    ("amount_nan.jsonl", 1, "expected kroner like"),
    ("amount_empty.jsonl", 1, "expected kroner like"),
    (
        "amount_dot_without_decimals.jsonl",
        1,
        "a '.' must be followed",
    ),
    (
        "amount_arabic_indic_digits.jsonl",
        1,
        "expected kroner like",
    ),
    (
        "date_month_13.jsonl",
        1,
        "field payout_date: \"2026-13-01\" is not a date",
    ),
    (
        "date_february_30.jsonl",
        2,
        "field period_to: \"2026-02-30\" is not a date",
    ),
    (
        "date_february_29_non_leap.jsonl",
        1,
        "field period_from: \"2026-02-29\" is not a date",
    ),
    (
        "date_february_29_2100.jsonl",
        1,
        "field valid_from: \"2100-02-29\" is not a date",
    ),
    ("date_day_zero.jsonl", 1, "is not a date"),
    (
        "date_unpadded.jsonl",
        1,
        "field valid_to: \"2026-1-1\" is not a date",
    ),
    ("date_with_time.jsonl", 1, "is not a date"),
    ("date_danish_order.jsonl", 1, "is not a date"),
    (
        "cpr_with_letter.jsonl",
        1,
        "CPR 01019O-xxxx is invalid: must be exactly 10 digits",
    ),
    (
        "cpr_bad_date.jsonl",
        1,
        "CPR 310290-xxxx is invalid: the date part",
    ),
    (
        "cpr_february_29_1901.jsonl",
        1,
        "CPR 290201-xxxx is invalid: the date part",
    ),
    ("cpr_nine_digits.jsonl", 1, "must be exactly 10 digits"),
    ("cpr_with_hyphen.jsonl", 1, "must be exactly 10 digits"),
    (
        "cpr_not_the_agreements.jsonl",
        2,
        "registered for CPR 010190-xxxx, not 150785-xxxx",
    ),
    (
        "kommune_0411_christiansoe.jsonl",
        1,
        "kommune \"0411\" is not one of the 98",
    ),
    (
        "kommune_9999.jsonl",
        2,
        "kommune \"9999\" is not one of the 98",
    ),
    (
        "kommune_three_digits.jsonl",
        1,
        "kommune \"751\" is not one of the 98",
    ),
    (
        "kommune_not_the_agreements.jsonl",
        1,
        "belongs to kommune 0751, not 0101",
    ),
    (
        "kommune_and_cpr_swapped.jsonl",
        1,
        "kommune \"150785-xxxx\" is not one of the 98",
    ),
    (
        "reference_control_character.jsonl",
        1,
        "not printable ISO-8859-1",
    ),
    ("reference_tab.jsonl", 1, "not printable ISO-8859-1"),
    (
        "reference_delete_character.jsonl",
        1,
        "not printable ISO-8859-1",
    ),
    ("reference_c1_control.jsonl", 1, "not printable ISO-8859-1"),
    ("reference_euro_sign.jsonl", 1, "not printable ISO-8859-1"),
    ("reference_too_long.jsonl", 2, "21 characters; at most 20"),
    ("reference_empty.jsonl", 1, "must not be empty"),
    (
        "reference_trailing_space.jsonl",
        1,
        "leading or trailing spaces",
    ),
    (
        "agreement_reference_too_long.jsonl",
        1,
        "16 characters; at most 15",
    ),
    ("reason_too_long.jsonl", 1, "201 characters; at most 200"),
    (
        "reason_control_character.jsonl",
        1,
        "field reason: contains control characters",
    ),
    (
        "correction_unknown_reference.jsonl",
        2,
        "corrects KY-999, which is no withholding of kommune 0751",
    ),
    (
        "correction_other_kommunes_withholding.jsonl",
        1,
        "corrects KY-2, which is no withholding of kommune 0751",
    ),
    (
        "correction_below_zero.jsonl",
        1,
        "would bring withholding KY-1 below 0 (its net is 800.00)",
    ),
    (
        "correction_below_zero_in_batch.jsonl",
        2,
        "would bring withholding KY-1 below 0 (its net is 300.00)",
    ),
    (
        "correction_of_a_correction.jsonl",
        1,
        "which is itself a correction",
    ),
    (
        "agreement_not_active_before_start.jsonl",
        1,
        "not active on payout date 2025-12-31",
    ),
    (
        "agreement_not_active_after_valid_to.jsonl",
        2,
        "not active on payout date 2027-01-01",
    ),
    (
        "agreement_not_active_after_end.jsonl",
        1,
        "not active on payout date 2026-07-01",
    ),
    (
        "agreement_unknown.jsonl",
        1,
        "agreement BA-999 is not registered",
    ),
    (
        "period_reversed.jsonl",
        1,
        "period_from 2026-10-31 is after period_to 2026-10-01",
    ),
    (
        "agreement_ends_before_start.jsonl",
        1,
        "valid_to 2026-05-31 is before valid_from 2026-06-01",
    ),
    (
        "agreement_conflict.jsonl",
        1,
        "agreement BA-100 is already registered with different content",
    ),
    (
        "reference_conflict.jsonl",
        1,
        "reference KY-1 already exists in kommune 0751 with different content",
    ),
    (
        "reference_conflict_in_batch.jsonl",
        2,
        "reference KY-10 already exists in kommune 0751 with different content",
    ),
    (
        "agreement_end_conflict.jsonl",
        1,
        "already ended on 2026-06-30",
    ),
    (
        "agreement_end_unknown.jsonl",
        1,
        "agreement BA-999 is not registered",
    ),
    (
        "agreement_end_before_start.jsonl",
        1,
        "valid_to 2025-12-31 is before valid_from 2026-01-01",
    ),
];

/// The known ledger the cases are checked against: BA-100 (0751, valid through
/// 2026), BA-200 (0101, another debtor), BA-300 (0751, ended 2026-06-30),
/// withholdings KY-1 (1000.00, corrected by KY-3 to a net of 800.00) and KY-2.
const KNOWN_LEDGER: &str = r#"{"type":"agreement","agreement":"BA-100","kommune":"0751","cpr":"0101901234","valid_from":"2026-01-01","valid_to":"2026-12-31"}
{"type":"agreement","agreement":"BA-200","kommune":"0101","cpr":"1507855678","valid_from":"2026-01-01"}
{"type":"agreement","agreement":"BA-300","kommune":"0751","cpr":"0101901234","valid_from":"2026-01-01"}
{"type":"agreement_ended","agreement":"BA-300","kommune":"0751","valid_to":"2026-06-30"}
{"type":"withholding","reference":"KY-1","agreement":"BA-100","kommune":"0751","cpr":"0101901234","payout_date":"2026-10-01","period_from":"2026-09-01","period_to":"2026-09-30","amount":"1000.00"}
{"type":"withholding","reference":"KY-2","agreement":"BA-200","kommune":"0101","cpr":"1507855678","payout_date":"2026-10-01","period_from":"2026-09-01","period_to":"2026-09-30","amount":"500.00"}
{"type":"correction","reference":"KY-3","corrects":"KY-1","kommune":"0751","amount":"-200.00","reason":"genberegnet"}
"#;

/// The debtors' CPR numbers in the known ledger and the corpus.
const KNOWN_CPRS: [&str; 2] = ["0101901234", "1507855678"];

/// A valid line that precedes the bad one in generated cases.
const GOOD_LINE: &str = r#"{"type":"withholding","reference":"KY-10","agreement":"BA-100","kommune":"0751","cpr":"0101901234","payout_date":"2026-11-01","period_from":"2026-10-01","period_to":"2026-10-31","amount":"100.00"}"#;

/// A process's address space cap for the 50 MB case, in KiB: room for the
/// program (about 16 MiB) but not for the line.
const ADDRESS_SPACE_KIB_MAX: u32 = 48 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

fn given_the_known_ledger() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(KNOWN_LEDGER);
    assert_eq!(t.head(), 7);
    t
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `sf2520 ingest FILE` against the ledger, optionally under `sh -c` with a
/// prefix such as `ulimit -v N;`.
fn when_ingested(t: &TestLedger, file: &Path, shell_prefix: Option<&str>) -> Run {
    let binary = env!("CARGO_BIN_EXE_sf2520");
    let mut command = match shell_prefix {
        None => Command::new(binary),
        Some(prefix) => {
            let mut shell = Command::new("sh");
            shell
                .arg("-c")
                .arg(format!("{prefix} exec \"$0\" \"$@\""))
                .arg(binary);
            shell
        }
    };
    let output = command
        .arg("--data-dir")
        .arg(t.data_dir())
        .arg("ingest")
        .arg(file)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run sf2520");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every way the run failed to be a clean refusal of exactly `line`, as text.
fn problems_with(
    run: &Run,
    file: &Path,
    line: usize,
    fragment: &str,
    before: Head,
    after: Head,
) -> Vec<String> {
    let mut problems = Vec::new();
    if run.success {
        problems.push("exit code 0: the input was accepted".into());
    }
    let prefix = format!("{}:", file.display());
    let reported: Vec<&str> = run
        .stdout
        .lines()
        .filter(|text| text.starts_with(&prefix))
        .collect();
    let expected = format!("{prefix}{line}: ");
    match reported.as_slice() {
        [only] if only.starts_with(&expected) && only.contains(fragment) => {}
        _ => problems.push(format!(
            "expected one report `{expected}…{fragment}…`, got {reported:?}"
        )),
    }
    if !run.stdout.contains("nothing was written") {
        problems.push("no `nothing was written` summary".into());
    }
    if run.stderr.contains("panicked") {
        problems.push(format!("panicked: {}", run.stderr));
    }
    for cpr in KNOWN_CPRS {
        if run.stdout.contains(cpr) || run.stderr.contains(cpr) {
            problems.push(format!("a full CPR {}-xxxx was printed", &cpr[..6]));
        }
    }
    if after != before {
        problems.push(format!("the log changed: {before:?} -> {after:?}"));
    }
    problems
}

fn head(t: &TestLedger) -> Head {
    t.ledger.head().expect("head")
}

#[test]
fn every_hostile_file_is_refused_by_line_and_reason_and_changes_nothing() {
    let t = given_the_known_ledger();
    let mut failures = Vec::new();
    for &(name, line, fragment) in CASES {
        let file = corpus_dir().join(name);
        let before = head(&t);
        let run = when_ingested(&t, &file, None);
        let problems = problems_with(&run, &file, line, fragment, before, head(&t));
        if !problems.is_empty() {
            failures.push(format!(
                "{name}:\n  {}\n  stdout: {}",
                problems.join("\n  "),
                run.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases were not cleanly refused:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_and_the_corpus_name_the_same_files() {
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/data/hostile")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = CASES.iter().map(|(name, ..)| name.to_string()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
    assert!(
        CASES.len() >= 60,
        "the corpus has only {} cases",
        CASES.len()
    );
}

/// Writes GOOD_LINE, then one line of `bytes` bytes (a JSON string that never
/// ends), then GOOD_LINE again, without holding the long line in memory.
fn write_overlong(path: &Path, bytes: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "{GOOD_LINE}").unwrap();
    let opening = br#"{"type":"withholding","reference":""#;
    out.write_all(opening).unwrap();
    let chunk = [b'x'; 64 * 1024];
    let mut left = bytes - opening.len();
    while left > 0 {
        let take = left.min(chunk.len());
        out.write_all(&chunk[..take]).unwrap();
        left -= take;
    }
    writeln!(out).unwrap();
    writeln!(out, "{}", GOOD_LINE.replace("KY-10", "KY-11")).unwrap();
}

/// The parser keeps at most LINE_BYTES_MAX bytes of a line. Under an address
/// space cap smaller than the line, a parser that read it whole would fail to
/// allocate; this one must report line 2 and go on to read line 3.
#[test]
fn a_50_mb_line_is_refused_without_being_held_in_memory() {
    let t = given_the_known_ledger();
    let file = t.dir.path().join("fifty_mb_line.jsonl");
    write_overlong(&file, 50 * 1024 * 1024);
    let before = head(&t);
    let limit = format!("ulimit -v {ADDRESS_SPACE_KIB_MAX};");
    let run = when_ingested(&t, &file, Some(&limit));
    let problems = problems_with(
        &run,
        &file,
        2,
        &format!("at most {LINE_BYTES_MAX} are accepted"),
        before,
        head(&t),
    );
    assert!(problems.is_empty(), "{problems:#?}\nstderr: {}", run.stderr);
    assert!(
        run.stdout.contains("1 of 3 line(s) failed"),
        "line 3 must still be read: {}",
        run.stdout
    );
}

#[test]
fn a_line_one_byte_over_the_limit_is_refused() {
    let t = given_the_known_ledger();
    let file = t.dir.path().join("one_byte_over.jsonl");
    write_overlong(&file, LINE_BYTES_MAX + 1);
    let before = head(&t);
    let run = when_ingested(&t, &file, None);
    let fragment = format!("line is {} bytes or more", LINE_BYTES_MAX + 1);
    let problems = problems_with(&run, &file, 2, &fragment, before, head(&t));
    assert!(problems.is_empty(), "{problems:#?}");
}
