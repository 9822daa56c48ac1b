//! Hostile input: every file of `tests/data/hostile/` (plus overlong lines made on
//! the fly) is fed to the real `sf2520 ingest` against a ledger holding known
//! agreements and withholdings. Each must be refused with its line number and
//! reason, leave the log's length and head hash unchanged, never panic, and never
//! print a full CPR number.

mod support;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sf2520::domain::{mask_in_text, DomainError};
use sf2520::input::{parse_lines, InputError, JsonDefect, LINE_BYTES_MAX};
use sf2520::ledger::Head;
use support::ledger::TestLedger;

/// How a case must be refused.
enum Refusal {
    /// By the parser (`sf2520::input`), with an [`InputError`] matching the
    /// pattern (kept as text for the failure message): our error kinds, not a
    /// dependency's wording, so that a serde_json upgrade cannot break the table.
    Parse(&'static str, fn(&InputError) -> bool),
    /// By the ledger's rules, with a reason containing this fragment of our own
    /// messages (`DomainError`'s); the line parses.
    Rule(&'static str),
}

use Refusal::Rule;

/// `parse!(Variant { .. } if guard)`: refused by the parser with an
/// `InputError::Variant` matching the pattern.
macro_rules! parse {
    ($variant:ident $($rest:tt)*) => {
        Refusal::Parse(
            stringify!($variant $($rest)*),
            |error| matches!(error, InputError::$variant $($rest)*),
        )
    };
}

/// (file in tests/data/hostile, the 1-based line that must be refused, how).
/// Every case has exactly one bad line; the lines around it are valid, so the
/// report must name that line and no other.
const CASES: &[(&str, usize, Refusal)] = &[
    (
        "json_truncated_object.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Truncated,
            ..
        }),
    ),
    (
        "json_trailing_comma.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_single_quotes.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_unquoted_keys.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_two_objects_on_one_line.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_trailing_garbage.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_comment_line.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_missing_colon.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_invalid_escape.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_lone_surrogate.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_raw_control_character.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_deeply_nested_arrays.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_deeply_nested_objects.jsonl",
        2,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_number_out_of_range.jsonl",
        1,
        parse!(Json {
            defect: JsonDefect::Syntax,
            ..
        }),
    ),
    (
        "json_empty_line_object.jsonl",
        2,
        parse!(MissingField { field: "type" }),
    ),
    (
        "json_empty_key.jsonl",
        1,
        parse!(UnknownField { field, kind: "withholding", .. } if field == "\"\""),
    ),
    (
        "utf8_invalid_latin1_byte.jsonl",
        2,
        parse!(NotUtf8 { offset: 38 }),
    ),
    (
        "utf8_overlong_encoding.jsonl",
        1,
        parse!(NotUtf8 { offset: 38 }),
    ),
    (
        "utf8_truncated_sequence.jsonl",
        1,
        parse!(NotUtf8 { offset: 40 }),
    ),
    (
        "utf8_surrogate_bytes.jsonl",
        1,
        parse!(NotUtf8 { offset: 38 }),
    ),
    ("utf16le_with_bom.jsonl", 1, parse!(NulByte { offset: 3 })),
    ("bom_at_start.jsonl", 1, parse!(ByteOrderMark)),
    ("bom_at_line_3.jsonl", 3, parse!(ByteOrderMark)),
    (
        "nul_byte_between_fields.jsonl",
        2,
        parse!(NulByte { offset: 59 }),
    ),
    (
        "nul_byte_at_end_of_line.jsonl",
        1,
        parse!(NulByte { offset: 196 }),
    ),
    (
        "nul_escaped_in_reference.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "cr_only_line_endings.jsonl",
        1,
        parse!(BareCarriageReturn { offset: 196 }),
    ),
    (
        "cr_inside_line.jsonl",
        2,
        parse!(BareCarriageReturn { offset: 59 }),
    ),
    (
        "array_instead_of_object.jsonl",
        2,
        parse!(NotAnObject { found } if found.starts_with("an array")),
    ),
    (
        "string_instead_of_object.jsonl",
        1,
        parse!(NotAnObject { found } if found.starts_with("a string")),
    ),
    (
        "null_instead_of_object.jsonl",
        2,
        parse!(NotAnObject { found } if found.starts_with("null")),
    ),
    (
        "number_instead_of_object.jsonl",
        1,
        parse!(NotAnObject { found } if found.starts_with("a number")),
    ),
    (
        "type_missing.jsonl",
        1,
        parse!(MissingField { field: "type" }),
    ),
    (
        "type_not_a_string.jsonl",
        1,
        parse!(NotAString { field, found } if field == "type" && found.starts_with("a number")),
    ),
    (
        "type_is_an_array.jsonl",
        1,
        parse!(NotAString { field, found } if field == "type" && found.starts_with("an array")),
    ),
    (
        "type_is_null.jsonl",
        2,
        parse!(NotAString { field, found } if field == "type" && found.starts_with("null")),
    ),
    (
        "type_unknown.jsonl",
        1,
        parse!(UnknownType { found } if found == "Withholding"),
    ),
    (
        "field_unknown.jsonl",
        1,
        parse!(UnknownField { field, kind: "withholding", .. } if field == "\"comment\""),
    ),
    (
        "field_misspelt.jsonl",
        2,
        parse!(UnknownField { field, kind: "withholding", .. } if field == "\"amout\""),
    ),
    (
        "field_missing.jsonl",
        1,
        parse!(MissingField { field: "amount" }),
    ),
    (
        "field_of_another_type.jsonl",
        1,
        parse!(UnknownField { field, kind: "agreement_ended", .. } if field == "\"cpr\""),
    ),
    (
        "duplicate_key_amount.jsonl",
        1,
        parse!(DuplicateField { field } if field == "\"amount\""),
    ),
    (
        "duplicate_key_type.jsonl",
        2,
        parse!(DuplicateField { field } if field == "\"type\""),
    ),
    (
        "duplicate_key_same_value.jsonl",
        1,
        parse!(DuplicateField { field } if field == "\"valid_to\""),
    ),
    (
        "null_required_value.jsonl",
        1,
        parse!(NotAString { field, found } if field == "kommune" && found.starts_with("null")),
    ),
    (
        "null_optional_value.jsonl",
        1,
        parse!(NotAString { field, found } if field == "valid_to" && found.starts_with("null")),
    ),
    (
        "amount_float_unquoted.jsonl",
        1,
        parse!(NotAString { field, found } if field == "amount" && found.starts_with("a number")),
    ),
    (
        "amount_integer_unquoted.jsonl",
        1,
        parse!(NotAString { field, found } if field == "amount" && found.starts_with("a number")),
    ),
    (
        "amount_exponent_unquoted.jsonl",
        1,
        parse!(NotAString { field, found } if field == "amount" && found.starts_with("a number")),
    ),
    (
        "amount_boolean.jsonl",
        1,
        parse!(NotAString { field, found } if field == "amount" && found.starts_with("true or false")),
    ),
    (
        "amount_object.jsonl",
        1,
        parse!(NotAString { field, found } if field == "amount" && found.starts_with("an object")),
    ),
    (
        "cpr_unquoted_number.jsonl",
        2,
        parse!(NotAString { field, found } if field == "cpr" && found.starts_with("a number")),
    ),
    (
        "amount_exponent_quoted.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "withholding_negative_zero.jsonl",
        2,
        Rule("must be greater than 0"),
    ),
    (
        "correction_negative_zero.jsonl",
        1,
        Rule("amount must not be 0"),
    ),
    ("correction_zero.jsonl", 2, Rule("amount must not be 0")),
    ("withholding_zero.jsonl", 1, Rule("must be greater than 0")),
    (
        "withholding_negative.jsonl",
        1,
        Rule("must be greater than 0"),
    ),
    (
        "amount_three_decimals.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_three_decimals_zero.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_huge.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_beyond_any_decimal.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_plus_sign.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_decimal_comma.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_leading_space.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_nan.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_empty.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_dot_without_decimals.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "amount_arabic_indic_digits.jsonl",
        1,
        parse!(Field {
            field: "amount",
            error: DomainError::InvalidAmount { .. }
        }),
    ),
    (
        "date_month_13.jsonl",
        1,
        parse!(Date { field: "payout_date", value } if value == "2026-13-01"),
    ),
    (
        "date_february_30.jsonl",
        2,
        parse!(Date { field: "period_to", value } if value == "2026-02-30"),
    ),
    (
        "date_february_29_non_leap.jsonl",
        1,
        parse!(Date { field: "period_from", value } if value == "2026-02-29"),
    ),
    (
        "date_february_29_2100.jsonl",
        1,
        parse!(Date { field: "valid_from", value } if value == "2100-02-29"),
    ),
    (
        "date_day_zero.jsonl",
        1,
        parse!(Date { field: "payout_date", value } if value == "2026-10-00"),
    ),
    (
        "date_unpadded.jsonl",
        1,
        parse!(Date { field: "valid_to", value } if value == "2026-1-1"),
    ),
    (
        "date_with_time.jsonl",
        1,
        parse!(Date { field: "payout_date", value } if value == "2026-10-01T00:00:00Z"),
    ),
    (
        "date_danish_order.jsonl",
        1,
        parse!(Date { field: "payout_date", value } if value == "01-10-2026"),
    ),
    (
        "cpr_with_letter.jsonl",
        1,
        parse!(Field {
            field: "cpr",
            error: DomainError::InvalidCpr { .. }
        }),
    ),
    (
        "cpr_bad_date.jsonl",
        1,
        parse!(Field {
            field: "cpr",
            error: DomainError::InvalidCpr { .. }
        }),
    ),
    (
        "cpr_february_29_1901.jsonl",
        1,
        parse!(Field {
            field: "cpr",
            error: DomainError::InvalidCpr { .. }
        }),
    ),
    (
        "cpr_nine_digits.jsonl",
        1,
        parse!(Field {
            field: "cpr",
            error: DomainError::InvalidCpr { .. }
        }),
    ),
    (
        "cpr_with_hyphen.jsonl",
        1,
        parse!(Field {
            field: "cpr",
            error: DomainError::InvalidCpr { .. }
        }),
    ),
    (
        "cpr_not_the_agreements.jsonl",
        2,
        Rule("registered for CPR 010190-xxxx, not 150785-xxxx"),
    ),
    (
        "kommune_0411_christiansoe.jsonl",
        1,
        parse!(Field {
            field: "kommune",
            error: DomainError::UnknownKommune { .. }
        }),
    ),
    (
        "kommune_9999.jsonl",
        2,
        parse!(Field {
            field: "kommune",
            error: DomainError::UnknownKommune { .. }
        }),
    ),
    (
        "kommune_three_digits.jsonl",
        1,
        parse!(Field {
            field: "kommune",
            error: DomainError::UnknownKommune { .. }
        }),
    ),
    (
        "kommune_not_the_agreements.jsonl",
        1,
        Rule("belongs to kommune 0751, not 0101"),
    ),
    (
        "kommune_and_cpr_swapped.jsonl",
        1,
        parse!(Field {
            field: "kommune",
            error: DomainError::UnknownKommune { .. }
        }),
    ),
    (
        "reference_control_character.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_tab.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_delete_character.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_c1_control.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_euro_sign.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_too_long.jsonl",
        2,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_empty.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "reference_trailing_space.jsonl",
        1,
        parse!(Field {
            field: "reference",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    (
        "agreement_reference_too_long.jsonl",
        1,
        parse!(Field {
            field: "agreement",
            error: DomainError::InvalidReference { .. }
        }),
    ),
    ("reason_too_long.jsonl", 1, parse!(Reason { .. })),
    ("reason_control_character.jsonl", 1, parse!(Reason { .. })),
    (
        "correction_unknown_reference.jsonl",
        2,
        Rule("corrects KY-999, which is no withholding of kommune 0751"),
    ),
    (
        "correction_other_kommunes_withholding.jsonl",
        1,
        Rule("corrects KY-2, which is no withholding of kommune 0751"),
    ),
    (
        "correction_below_zero.jsonl",
        1,
        Rule("would bring withholding KY-1 below 0 (its net is 800.00)"),
    ),
    (
        "correction_below_zero_in_batch.jsonl",
        2,
        Rule("would bring withholding KY-1 below 0 (its net is 300.00)"),
    ),
    (
        "correction_of_a_correction.jsonl",
        1,
        Rule("which is itself a correction"),
    ),
    (
        "agreement_not_active_before_start.jsonl",
        1,
        Rule("not active on payout date 2025-12-31"),
    ),
    (
        "agreement_not_active_after_valid_to.jsonl",
        2,
        Rule("not active on payout date 2027-01-01"),
    ),
    (
        "agreement_not_active_after_end.jsonl",
        1,
        Rule("not active on payout date 2026-07-01"),
    ),
    (
        "agreement_unknown.jsonl",
        1,
        Rule("agreement BA-999 is not registered"),
    ),
    (
        "period_reversed.jsonl",
        1,
        Rule("period_from 2026-10-31 is after period_to 2026-10-01"),
    ),
    (
        "agreement_ends_before_start.jsonl",
        1,
        Rule("valid_to 2026-05-31 is before valid_from 2026-06-01"),
    ),
    (
        "agreement_conflict.jsonl",
        1,
        Rule("agreement BA-100 is already registered with different content"),
    ),
    (
        "reference_conflict.jsonl",
        1,
        Rule("reference KY-1 already exists in kommune 0751 with different content"),
    ),
    (
        "reference_conflict_in_batch.jsonl",
        2,
        Rule("reference KY-10 already exists in kommune 0751 with different content"),
    ),
    (
        "agreement_end_conflict.jsonl",
        1,
        Rule("already ended on 2026-06-30"),
    ),
    (
        "agreement_end_unknown.jsonl",
        1,
        Rule("agreement BA-999 is not registered"),
    ),
    (
        "agreement_end_before_start.jsonl",
        1,
        Rule("valid_to 2025-12-31 is before valid_from 2026-01-01"),
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

/// What the report of the refused line must give as its reason.
enum Reason {
    /// Exactly the parser's message (with CPR numbers masked, as every report is).
    Exactly(String),
    /// A reason containing this fragment.
    Containing(&'static str),
}

impl Reason {
    fn given_by(&self, reported: &str) -> bool {
        match self {
            Reason::Exactly(reason) => reported == reason,
            Reason::Containing(fragment) => reported.contains(fragment),
        }
    }
}

/// The parser's verdict on `file`, read as `ingest` reads it, checked against
/// `refusal`: the reason the report must give, or what the parser did instead.
fn parser_verdict(file: &Path, line: usize, refusal: &Refusal) -> Result<Reason, String> {
    let handle = File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let parsed = parse_lines(BufReader::new(handle)).expect("read the case");
    let errors: Vec<(usize, &InputError)> = parsed
        .errors
        .iter()
        .map(|error| (error.line, &error.error))
        .collect();
    match (refusal, errors.as_slice()) {
        (Refusal::Parse(_, matches), [(at, error)]) if *at == line && matches(error) => {
            Ok(Reason::Exactly(mask_in_text(&error.to_string())))
        }
        (Refusal::Parse(pattern, _), _) => Err(format!(
            "the parser must refuse line {line} (only) with {pattern}; it gave {errors:?}"
        )),
        (Refusal::Rule(fragment), []) => Ok(Reason::Containing(fragment)),
        (Refusal::Rule(_), _) => Err(format!(
            "a case for the rules must parse; the parser gave {errors:?}"
        )),
    }
}

/// Every way the run failed to be a clean refusal of exactly `line`, as text.
fn problems_with(
    run: &Run,
    file: &Path,
    line: usize,
    reason: &Reason,
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
        [only]
            if only
                .strip_prefix(&expected)
                .is_some_and(|r| reason.given_by(r)) => {}
        _ => problems.push(match reason {
            Reason::Exactly(reason) => {
                format!("expected the one report `{expected}{reason}`, got {reported:?}")
            }
            Reason::Containing(fragment) => {
                format!("expected one report `{expected}…{fragment}…`, got {reported:?}")
            }
        }),
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
    for (name, line, refusal) in CASES {
        let file = corpus_dir().join(name);
        let reason = match parser_verdict(&file, *line, refusal) {
            Ok(reason) => reason,
            Err(problem) => {
                failures.push(format!("{name}:\n  {problem}"));
                continue;
            }
        };
        let before = head(&t);
        let run = when_ingested(&t, &file, None);
        let problems = problems_with(&run, &file, *line, &reason, before, head(&t));
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
    const FIFTY_MB: usize = 50 * 1024 * 1024;
    let t = given_the_known_ledger();
    let file = t.dir.path().join("fifty_mb_line.jsonl");
    write_overlong(&file, FIFTY_MB);
    let reason = parser_verdict(&file, 2, &parse!(LineTooLong { bytes: FIFTY_MB }))
        .unwrap_or_else(|problem| panic!("{problem}"));
    let before = head(&t);
    let limit = format!("ulimit -v {ADDRESS_SPACE_KIB_MAX};");
    let run = when_ingested(&t, &file, Some(&limit));
    let problems = problems_with(&run, &file, 2, &reason, before, head(&t));
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
    const ONE_OVER: usize = LINE_BYTES_MAX + 1;
    write_overlong(&file, ONE_OVER);
    let reason = parser_verdict(&file, 2, &parse!(LineTooLong { bytes: ONE_OVER }))
        .unwrap_or_else(|problem| panic!("{problem}"));
    let before = head(&t);
    let run = when_ingested(&t, &file, None);
    let problems = problems_with(&run, &file, 2, &reason, before, head(&t));
    assert!(problems.is_empty(), "{problems:#?}");
}
