//! The SF2520 format: golden files, round trip, field widths, writer refusals, the
//! generated document and the `check`/`show` commands.

mod support;

use std::io::Write;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use proptest::prelude::*;
use sf2520::cli::format;
use sf2520::domain::{AgreementRef, Amount, Cpr, EntryKind, Kommune, KyRef, AMOUNT_ORE_MAX};
use sf2520::sf2520::layout::{Content, Kind, RECORDS};
use sf2520::sf2520::{
    file_name, read_file, render_file, render_record, DetailRecord, FieldValue, FileHeader,
    FileWriter, WriteError,
};
use support::{
    assert_golden, crate_path, date, date_time, golden_cases, sample_file, sample_header,
    sample_records, GoldenInput,
};

// ---- golden files -------------------------------------------------------------------

#[test]
fn writer_reproduces_every_golden_file_byte_for_byte() {
    let cases = golden_cases();
    assert!(
        cases.len() >= 6,
        "expected the six golden cases, found {}",
        cases.len()
    );
    for (name, input, expected) in cases {
        let input = GoldenInput::load(&input);
        let (bytes, _) =
            render_file(input.header(), input.records()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_golden(&expected, &bytes);
    }
}

#[test]
fn reader_accepts_every_golden_file_and_reads_its_input_back() {
    for (name, input, expected) in golden_cases() {
        let input = GoldenInput::load(&input);
        let bytes = std::fs::read(&expected).unwrap();
        let parsed = read_file(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.header, input.header(), "{name}");
        let records: Vec<DetailRecord> = parsed.details.into_iter().map(|d| d.record).collect();
        assert_eq!(records, input.records(), "{name}");
    }
}

#[test]
fn golden_files_hold_danish_letters_as_single_latin1_bytes() {
    let bytes = std::fs::read(crate_path("data/golden/danish_letters.txt")).unwrap();
    let reference = b"KY-\xE6\xF8\xE5-\xC6\xD8\xC5-01";
    assert!(bytes.windows(reference.len()).any(|w| w == reference));
    assert!(std::str::from_utf8(&bytes).is_err(), "must not be UTF-8");
}

#[test]
fn a_zero_net_carries_plus_in_the_end_record() {
    let bytes = std::fs::read(crate_path("data/golden/reversal_to_zero_net.txt")).unwrap();
    let end = bytes.rchunks(130).next().unwrap();
    assert_eq!(&end[50..66], b"+000000000000000");
}

// ---- round trip ---------------------------------------------------------------------

fn any_kommune() -> impl Strategy<Value = Kommune> {
    let all: Vec<Kommune> = Kommune::all().collect();
    prop::sample::select(all)
}

/// Valid CPR numbers over all century digits (day ≤ 28 keeps every combination real).
fn any_cpr() -> impl Strategy<Value = Cpr> {
    (1u32..=28, 1u32..=12, 0u32..=99, 0u32..=9999).prop_map(|(day, month, year, serial)| {
        Cpr::parse(&format!("{day:02}{month:02}{year:02}{serial:04}")).unwrap()
    })
}

/// Printable ISO-8859-1 text of 1..=max characters without leading or trailing spaces.
fn any_reference_text(max: usize) -> impl Strategy<Value = String> {
    let character = prop_oneof![
        4 => 0x21u32..=0x7E,
        1 => 0xA0u32..=0xFF,
        1 => Just(0x20u32),
    ]
    .prop_map(|code| char::from_u32(code).unwrap());
    prop::collection::vec(character, 1..=max)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .prop_filter("no leading/trailing spaces", |text| text.trim() == text)
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    let first = NaiveDate::from_ymd_opt(0, 1, 1).unwrap().num_days_from_ce();
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)
        .unwrap()
        .num_days_from_ce();
    (first..=last).prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).unwrap())
}

fn any_date_time() -> impl Strategy<Value = NaiveDateTime> {
    (any_date(), 0u32..24, 0u32..60, 0u32..60)
        .prop_map(|(day, h, m, s)| day.and_hms_opt(h, m, s).unwrap())
}

fn any_header() -> impl Strategy<Value = FileHeader> {
    (
        any_kommune(),
        1u32..=999_999,
        any_date_time(),
        any_date_time(),
        any::<bool>(),
    )
        .prop_map(
            |(kommune, sequence, created_at, as_of, test_marker)| FileHeader {
                kommune,
                sequence,
                created_at,
                as_of,
                test_marker,
            },
        )
}

fn any_record() -> impl Strategy<Value = DetailRecord> {
    let withholding_ore = 0i64..=AMOUNT_ORE_MAX;
    let correction_ore = prop_oneof![-AMOUNT_ORE_MAX..=-1i64, 1i64..=AMOUNT_ORE_MAX];
    let transaction = prop_oneof![
        withholding_ore.prop_map(|ore| (ore, None)),
        (correction_ore, any_reference_text(20)).prop_map(|(ore, corrects)| (ore, Some(corrects))),
    ];
    (
        any_cpr(),
        any_reference_text(15),
        transaction,
        (any_date(), any_date(), any_date()),
        any_reference_text(20),
    )
        .prop_map(
            |(cpr, agreement, (ore, corrects), dates, reference)| DetailRecord {
                cpr,
                agreement: AgreementRef::parse(&agreement).unwrap(),
                kind: if corrects.is_some() {
                    EntryKind::Correction
                } else {
                    EntryKind::Withholding
                },
                payout_date: dates.0,
                period_from: dates.1,
                period_to: dates.2,
                amount: Amount::from_ore(ore).unwrap(),
                reference: KyRef::parse(&reference).unwrap(),
                corrects: corrects.map(|text| KyRef::parse(&text).unwrap()),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn written_files_read_back_to_equal_values(
        header in any_header(),
        records in prop::collection::vec(any_record(), 0..25),
    ) {
        let (bytes, summary) = render_file(header.clone(), records.clone()).unwrap();
        prop_assert_eq!(bytes.len(), 130 * (records.len() + 2));
        let parsed = read_file(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.header, header);
        prop_assert_eq!(parsed.end, summary);
        prop_assert_eq!(parsed.details.len(), records.len());
        for (index, (detail, record)) in parsed.details.into_iter().zip(records).enumerate() {
            prop_assert_eq!(detail.line, index + 2);
            prop_assert_eq!(detail.record_number, u64::try_from(index + 1).unwrap());
            prop_assert_eq!(detail.record, record);
        }
    }
}

// ---- field widths -------------------------------------------------------------------

/// For each field of each record: a value one digit or character too long is refused,
/// naming the record type, the field, the value and the width.
#[test]
fn a_value_one_too_long_fails_for_every_field_of_every_record() {
    let mut fields_tried = 0;
    for layout in RECORDS {
        for target in layout.fields {
            let too_long_text = "x".repeat(target.len + 1);
            // Only N fields need the number; X fields are too wide for a u64.
            let digits = u32::try_from(target.len).unwrap();
            // tidy: allow(unwrap-or): an X field wider than 19 digits is not filled with a number.
            let too_long_number = 10u64.checked_pow(digits).unwrap_or(u64::MAX);
            let result = render_record(layout, |id| {
                let field = layout.fields.iter().find(|f| f.id == id).unwrap();
                match (std::ptr::eq(field, target), field.kind, field.content) {
                    (true, Kind::N, _) => FieldValue::Number(too_long_number),
                    (true, Kind::X, _) => FieldValue::Text(&too_long_text),
                    (false, _, Content::Constant(_) | Content::Blank) => FieldValue::Table,
                    (false, Kind::N, Content::Data) => FieldValue::Number(0),
                    (false, Kind::X, Content::Data) => FieldValue::Text(""),
                }
            });
            match result {
                Err(WriteError::DoesNotFit {
                    record,
                    field,
                    value,
                    width,
                }) => {
                    assert_eq!(record, layout.record_type);
                    assert_eq!(field, target.name);
                    assert_eq!(width, target.len);
                    assert_eq!(value.chars().count(), target.len + 1);
                }
                other => panic!(
                    "{} {}: expected DoesNotFit, got {other:?}",
                    layout.record_type, target.name
                ),
            }
            fields_tried += 1;
        }
    }
    assert_eq!(fields_tried, 10 + 14 + 9);
}

#[test]
fn a_value_that_just_fits_is_accepted_for_every_field() {
    for layout in RECORDS {
        for target in layout.fields.iter().filter(|f| f.content == Content::Data) {
            let full_text = "x".repeat(target.len);
            let digits = u32::try_from(target.len).unwrap();
            let largest = 10u64
                .checked_pow(digits)
                .map_or(u64::MAX, |limit| limit - 1);
            let bytes = render_record(layout, |id| {
                let field = layout.fields.iter().find(|f| f.id == id).unwrap();
                match (std::ptr::eq(field, target), field.kind, field.content) {
                    (true, Kind::N, _) => FieldValue::Number(largest),
                    (true, Kind::X, _) => FieldValue::Text(&full_text),
                    (false, _, Content::Constant(_) | Content::Blank) => FieldValue::Table,
                    (false, Kind::N, Content::Data) => FieldValue::Number(0),
                    (false, Kind::X, Content::Data) => FieldValue::Text(""),
                }
            })
            .unwrap();
            let expected = if target.kind == Kind::N { b'9' } else { b'x' };
            assert!(bytes[target.start - 1..target.end()]
                .iter()
                .all(|&b| b == expected));
        }
    }
}

// ---- writer refusals ----------------------------------------------------------------

fn header_with(change: impl FnOnce(&mut FileHeader)) -> FileHeader {
    let mut header = sample_header();
    change(&mut header);
    header
}

fn expect_refusal(result: Result<impl std::fmt::Debug, WriteError>, field: &str) -> WriteError {
    let error = result.expect_err("the writer must refuse");
    let text = error.to_string();
    assert!(text.contains(field), "{text:?} does not name {field:?}");
    error
}

#[test]
fn given_a_loebenummer_beyond_six_digits_when_writing_then_it_is_refused() {
    let header = header_with(|h| h.sequence = 1_000_000);
    let error = expect_refusal(FileWriter::new(Vec::new(), header), "løbenummer");
    assert!(matches!(
        error,
        WriteError::DoesNotFit {
            record: "000",
            width: 6,
            ..
        }
    ));
    let zero = header_with(|h| h.sequence = 0);
    expect_refusal(FileWriter::new(Vec::new(), zero), "løbenummer");
}

#[test]
fn given_fractional_seconds_when_writing_then_they_are_refused_not_dropped() {
    let created = date_time("2026-03-02T06:15:30") + chrono::Duration::milliseconds(1);
    let header = header_with(|h| h.created_at = created);
    expect_refusal(FileWriter::new(Vec::new(), header), "creation time");
    let header = header_with(|h| h.as_of = created);
    expect_refusal(FileWriter::new(Vec::new(), header), "as-of time");
}

#[test]
fn given_a_year_beyond_9999_when_writing_then_the_date_is_refused() {
    let far = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
    let mut record = sample_records().remove(0);
    record.period_to = far;
    let mut writer = FileWriter::new(Vec::new(), sample_header()).unwrap();
    let error = expect_refusal(writer.write_detail(&record), "period to");
    assert!(matches!(
        error,
        WriteError::DoesNotFit {
            record: "010",
            width: 8,
            ..
        }
    ));
    let before_year_zero = NaiveDate::from_ymd_opt(-1, 12, 31).unwrap();
    record.period_to = before_year_zero;
    expect_refusal(writer.write_detail(&record), "period to");
}

#[test]
fn given_a_transaction_code_that_disagrees_with_the_corrected_reference_then_it_is_refused() {
    let records = sample_records();
    let mut withholding = records[0].clone();
    withholding.corrects = Some(KyRef::parse("KY-1").unwrap());
    let mut correction = records[2].clone();
    correction.corrects = None;
    let mut writer = FileWriter::new(Vec::new(), sample_header()).unwrap();
    expect_refusal(writer.write_detail(&withholding), "corrected KY reference");
    expect_refusal(writer.write_detail(&correction), "corrected KY reference");
    // Refused records leave nothing behind: the file is still a valid empty one.
    let (bytes, summary) = writer.finish().unwrap();
    assert_eq!(summary.record_count, 0);
    read_file(&bytes).unwrap();
}

#[test]
fn given_sums_beyond_15_digits_when_writing_then_the_record_is_refused_before_it_is_written() {
    let mut record = sample_records().remove(0);
    record.amount = Amount::from_ore(AMOUNT_ORE_MAX).unwrap();
    let mut writer = FileWriter::new(Vec::new(), sample_header()).unwrap();
    // 100 × 9 999 999 999 999 fits 15 digits; the 101st does not.
    for _ in 0..100 {
        writer.write_detail(&record).unwrap();
    }
    let error = expect_refusal(writer.write_detail(&record), "sum of + amounts");
    assert!(matches!(
        error,
        WriteError::DoesNotFit {
            record: "999",
            width: 15,
            ..
        }
    ));
    let (bytes, summary) = writer.finish().unwrap();
    assert_eq!(summary.record_count, 100);
    assert_eq!(read_file(&bytes).unwrap().end, summary);
}

/// Counts what reaches the output, so a test can see records leave as they are written.
struct CountingSink {
    bytes: usize,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_writer_streams_each_record_to_the_output_as_it_is_written() {
    let records = sample_records();
    let mut writer = FileWriter::new(CountingSink { bytes: 0 }, sample_header()).unwrap();
    for round in 1..=20_000usize {
        writer.write_detail(&records[round % 2]).unwrap();
    }
    let (sink, summary) = writer.finish().unwrap();
    assert_eq!(sink.bytes, 130 * (20_000 + 2));
    assert_eq!(summary.record_count, 20_000);
    assert_eq!(summary.plus_ore, 10_000 * (162_300 + 95_050));
}

#[test]
fn file_names_follow_the_convention_and_refuse_what_does_not_fit() {
    let aarhus = Kommune::parse("0751").unwrap();
    let day = date("2026-02-02");
    assert_eq!(
        file_name(aarhus, day, 42).unwrap(),
        "SF2520_0751_20260202_000042.txt"
    );
    assert_eq!(
        file_name(aarhus, day, 999_999).unwrap(),
        "SF2520_0751_20260202_999999.txt"
    );
    assert!(file_name(aarhus, day, 1_000_000).is_err());
    assert!(file_name(aarhus, day, 0).is_err());
    assert!(file_name(aarhus, NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap(), 1).is_err());
}

#[test]
fn every_rendered_record_is_128_bytes_and_crlf() {
    let bytes = sample_file();
    assert_eq!(bytes.len(), 5 * 130);
    for record in bytes.chunks(130) {
        assert_eq!(&record[128..], b"\r\n");
        assert!(!record[..128].contains(&b'\r') && !record[..128].contains(&b'\n'));
    }
}

// ---- commands -----------------------------------------------------------------------

fn write_temp(directory: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = directory.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn check_reports_valid_files_in_one_line_and_every_error_of_an_invalid_one() {
    let directory = tempfile::tempdir().unwrap();
    let valid = write_temp(&directory, "valid.txt", &sample_file());
    let mut broken_bytes = sample_file();
    broken_bytes[130 + 65] = b'*';
    let broken = write_temp(&directory, "broken.txt", &broken_bytes);
    let missing = directory.path().join("missing.txt");

    let mut out = Vec::new();
    let all_valid = format::check(std::slice::from_ref(&valid), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(all_valid);
    assert_eq!(
        text,
        format!(
            "{}: valid: kommune 0751 Aarhus, løbenummer 000007, 3 records, net 2373.50 kr\n",
            valid.display()
        )
    );

    let mut out = Vec::new();
    let all_valid = format::check(&[valid, broken.clone(), missing], &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!all_valid);
    assert!(text.contains(&format!("{}: invalid, 1 error(s)\n", broken.display())));
    assert!(text.contains("  line 2, column 66, sign: sign \"*\"; expected + or -\n"));
    assert!(text.contains("missing.txt: cannot read"));
}

#[test]
fn show_prints_an_aligned_table_with_masked_cpr() {
    let directory = tempfile::tempdir().unwrap();
    let path = write_temp(&directory, "file.txt", &sample_file());
    let mut out = Vec::new();
    format::show(&path, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("010190-xxxx"));
    assert!(!text.contains("0101901234"), "full CPR on screen:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[1].starts_with("line  nr  tx  cpr"));
    // Aligned: every row puts its reference at the heading's column.
    let column = lines[1].find("reference").unwrap();
    for row in &lines[2..5] {
        assert_eq!(row.get(column..column + 3), Some("KY-"), "{row}");
    }
    assert!(lines[5].contains("net 2373.50 kr"));
}

#[test]
fn show_json_masks_the_cpr_too() {
    let directory = tempfile::tempdir().unwrap();
    let path = write_temp(&directory, "file.txt", &sample_file());
    let mut out = Vec::new();
    format::show(&path, true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("0101901234") && !text.contains("2512884321"));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["details"][0]["cpr_masked"], "010190-xxxx");
    assert_eq!(value["details"][2]["amount_ore"], -20_000);
    assert_eq!(value["details"][2]["corrects"], "KY-2026-000987");
    assert_eq!(value["end"]["net_ore"], 237_350);
    // Positions 37-50 are the as-of time (decision 0009); the key it had before,
    // `cutoff_at_utc`, stays with the same value so that old scripts go on working.
    assert_eq!(value["header"]["as_of_utc"], "2026-03-02T06:15:00");
    assert_eq!(
        value["header"]["cutoff_at_utc"],
        value["header"]["as_of_utc"]
    );
    assert_eq!(value["header"]["created_at_utc"], "2026-03-02T06:15:30");
    assert_eq!(value["details"][2]["transaction"], "correction");
    assert_eq!(value["details"][2]["transaction_code"], "02");
}

#[test]
fn show_refuses_an_invalid_file_with_its_errors() {
    let directory = tempfile::tempdir().unwrap();
    let path = write_temp(&directory, "empty.txt", b"");
    let error = format::show(&path, false, &mut Vec::new()).unwrap_err();
    assert!(error.to_string().contains("line 1, column 1"), "{error}");
}
