//! The reader against broken files: a committed corpus with one defect each, and a
//! fuzz run of random and mutated bytes that must never make it panic.
//!
//! Positions in this file are written out by hand from docs/sf2520-format.md, independently of
//! the layout table, so that the table is checked against the design too.

mod support;

use proptest::prelude::*;
use sf2520::sf2520::{read_file, render_file, ReadErrorKind, ReadErrorKind as K};
use support::{assert_golden, crate_path, golden_cases, sample_file, updating_golden, Rng};

const RECORD: usize = 130;

// ---- mutations of the sample file (lines 1 start, 2–4 details, 5 end) ---------------

fn index(line: usize, column: usize) -> usize {
    (line - 1) * RECORD + column - 1
}

/// Overwrites bytes from `line`/`column` on.
fn put(file: &mut [u8], line: usize, column: usize, bytes: &[u8]) {
    let at = index(line, column);
    file[at..at + bytes.len()].copy_from_slice(bytes);
}

fn remove(file: &mut Vec<u8>, line: usize, column: usize, count: usize) {
    let at = index(line, column);
    file.drain(at..at + count);
}

fn insert(file: &mut Vec<u8>, line: usize, column: usize, bytes: &[u8]) {
    let at = index(line, column);
    file.splice(at..at, bytes.iter().copied());
}

fn record(file: &[u8], line: usize) -> Vec<u8> {
    file[index(line, 1)..index(line + 1, 1)].to_vec()
}

fn remove_line(file: &mut Vec<u8>, line: usize) {
    remove(file, line, 1, RECORD);
}

struct Case {
    name: &'static str,
    mutate: fn(&mut Vec<u8>),
    kind: ReadErrorKind,
    line: usize,
    column: usize,
    field: &'static str,
}

fn case(
    name: &'static str,
    mutate: fn(&mut Vec<u8>),
    kind: ReadErrorKind,
    (line, column): (usize, usize),
    field: &'static str,
) -> Case {
    Case {
        name,
        mutate,
        kind,
        line,
        column,
        field,
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

fn cases() -> Vec<Case> {
    let reference = "KY reference";
    vec![
        // The file's structure.
        case("empty_file", |f| f.clear(), K::EmptyFile, (1, 1), "record"),
        case(
            "byte_order_mark",
            |f| insert(f, 1, 1, b"\xEF\xBB\xBF"),
            K::ByteOrderMark,
            (1, 1),
            "record",
        ),
        case(
            "short_record",
            |f| remove(f, 2, 128, 1),
            K::RecordLength { found: 127 },
            (2, 128),
            "record",
        ),
        case(
            "long_record",
            |f| insert(f, 2, 129, b" "),
            K::RecordLength { found: 129 },
            (2, 129),
            "record",
        ),
        case(
            "empty_line_between_records",
            |f| insert(f, 3, 1, b"\r\n"),
            K::RecordLength { found: 0 },
            (3, 1),
            "record",
        ),
        case(
            "crlf_inside_record",
            |f| put(f, 3, 50, b"\r\n"),
            K::RecordLength { found: 49 },
            (3, 50),
            "record",
        ),
        case(
            "lf_only",
            |f| remove(f, 2, 129, 1),
            K::LineEnding { found: "LF alone" },
            (2, 129),
            "line end",
        ),
        case(
            "lf_only_everywhere",
            |f| f.retain(|&b| b != b'\r'),
            K::LineEnding { found: "LF alone" },
            (1, 129),
            "line end",
        ),
        case(
            "cr_only",
            |f| remove(f, 2, 130, 1),
            K::LineEnding { found: "CR alone" },
            (2, 129),
            "line end",
        ),
        case(
            "no_final_crlf",
            |f| f.truncate(f.len() - 2),
            K::LineEnding {
                found: "missing (the file ends)",
            },
            (5, 129),
            "line end",
        ),
        case(
            "trailing_garbage",
            |f| f.extend_from_slice(b"garbage"),
            K::DataAfterEndRecord,
            (6, 1),
            "record type",
        ),
        case(
            "trailing_empty_line",
            |f| f.extend_from_slice(b"\r\n"),
            K::DataAfterEndRecord,
            (6, 1),
            "record type",
        ),
        // Record order.
        case(
            "missing_end_record",
            |f| remove_line(f, 5),
            K::MissingEndRecord,
            (5, 1),
            "record type",
        ),
        case(
            "only_start_record",
            |f| f.truncate(RECORD),
            K::MissingEndRecord,
            (2, 1),
            "record type",
        ),
        case(
            "missing_start_record",
            |f| remove_line(f, 1),
            K::MissingStartRecord { found: s("010") },
            (1, 1),
            "record type",
        ),
        case(
            "detail_before_start",
            |f| {
                let start = record(f, 1);
                remove_line(f, 1);
                insert(f, 2, 1, &start)
            },
            K::MissingStartRecord { found: s("010") },
            (1, 1),
            "record type",
        ),
        case(
            "two_start_records",
            |f| {
                let start = record(f, 1);
                insert(f, 2, 1, &start)
            },
            K::UnexpectedRecord {
                found: s("000"),
                expected: "a 010 detail or 999 end record",
            },
            (2, 1),
            "record type",
        ),
        case(
            "two_end_records",
            |f| {
                let end = record(f, 5);
                f.extend_from_slice(&end)
            },
            K::DataAfterEndRecord,
            (6, 1),
            "record type",
        ),
        case(
            "unknown_record_type",
            |f| put(f, 3, 1, b"020"),
            K::UnknownRecordType { found: s("020") },
            (3, 1),
            "record type",
        ),
        case(
            "letter_in_record_type",
            |f| put(f, 2, 1, b"01O"),
            K::UnknownRecordType { found: s("01O") },
            (2, 1),
            "record type",
        ),
        // Start record.
        case(
            "wrong_integration",
            |f| put(f, 1, 4, b"SF2530"),
            K::WrongConstant {
                expected: "SF2520",
                found: s("SF2530"),
            },
            (1, 4),
            "integration",
        ),
        case(
            "wrong_version",
            |f| put(f, 1, 10, b"030"),
            K::WrongConstant {
                expected: "031",
                found: s("030"),
            },
            (1, 10),
            "layout version",
        ),
        case(
            "unknown_kommune_0411",
            |f| put(f, 1, 13, b"0411"),
            K::UnknownKommune { found: s("0411") },
            (1, 13),
            "kommunekode",
        ),
        case(
            "loebenummer_zero",
            |f| {
                put(f, 1, 17, b"000000");
                put(f, 5, 8, b"000000")
            },
            K::OutOfRange {
                found: s("000000"),
                expected: "a løbenummer from 1 (løbenumre start at 1)",
            },
            (1, 17),
            "løbenummer",
        ),
        case(
            "creation_date_20260229",
            |f| put(f, 1, 23, b"20260229"),
            K::InvalidDate {
                found: s("20260229"),
                format: "date ÅÅÅÅMMDD",
            },
            (1, 23),
            "creation date ÅÅÅÅMMDD (UTC)",
        ),
        case(
            "creation_time_246000",
            |f| put(f, 1, 31, b"246000"),
            K::InvalidDate {
                found: s("246000"),
                format: "time TTMMSS",
            },
            (1, 31),
            "creation time TTMMSS (UTC)",
        ),
        case(
            "as_of_minute_61",
            |f| put(f, 1, 45, b"0661"),
            K::InvalidDate {
                found: s("20260302066100"),
                format: "time ÅÅÅÅMMDDTTMMSS",
            },
            (1, 37),
            "as-of time ÅÅÅÅMMDDTTMMSS (UTC)",
        ),
        case(
            "bad_test_marker",
            |f| put(f, 1, 51, b"P"),
            K::TestMarker { found: s("P") },
            (1, 51),
            "test marker",
        ),
        case(
            "lowercase_test_marker",
            |f| put(f, 1, 51, b"t"),
            K::TestMarker { found: s("t") },
            (1, 51),
            "test marker",
        ),
        case(
            "non_blank_filler_in_start",
            |f| put(f, 1, 100, b"x"),
            K::NotBlank {
                found: format!("{}x{}", " ".repeat(48), " ".repeat(28)),
            },
            (1, 100),
            "filler",
        ),
        // Detail records.
        case(
            "record_number_gap",
            |f| put(f, 3, 4, b"0000003"),
            K::RecordNumber {
                found: 3,
                expected: 2,
            },
            (3, 4),
            "record number",
        ),
        case(
            "record_number_zero",
            |f| put(f, 2, 4, b"0000000"),
            K::RecordNumber {
                found: 0,
                expected: 1,
            },
            (2, 4),
            "record number",
        ),
        case(
            "wrong_kommune_in_detail",
            |f| put(f, 3, 11, b"0101"),
            K::KommuneMismatch {
                found: s("0101"),
                expected: s("0751"),
            },
            (3, 11),
            "kommunekode",
        ),
        case(
            "unknown_kommune_in_detail",
            |f| put(f, 2, 11, b"0411"),
            K::UnknownKommune { found: s("0411") },
            (2, 11),
            "kommunekode",
        ),
        case(
            "bad_cpr_date",
            |f| put(f, 2, 15, b"3102901234"),
            K::InvalidCpr {
                masked: s("310290-xxxx"),
                why: "the date part DDMMYY is not a real date under the century rule",
            },
            (2, 15),
            "CPR",
        ),
        case(
            "letter_in_cpr",
            |f| put(f, 2, 20, b"X"),
            K::NotDigits {
                found: s("01019X-xxxx"),
            },
            (2, 20),
            "CPR",
        ),
        case(
            "empty_agreement",
            |f| put(f, 2, 25, &[b' '; 15]),
            K::InvalidReference {
                found: s(""),
                why: s("must not be empty"),
            },
            (2, 25),
            "agreement reference",
        ),
        case(
            "tab_in_agreement",
            |f| put(f, 2, 27, b"\t"),
            K::NotPrintable { byte: b'\t' },
            (2, 27),
            "agreement reference",
        ),
        case(
            "utf8_euro_in_agreement",
            |f| put(f, 2, 27, "€".as_bytes()),
            K::Utf8InsteadOfLatin1 { character: '€' },
            (2, 27),
            "agreement reference",
        ),
        case(
            "bad_transaction_code",
            |f| put(f, 2, 40, b"03"),
            K::TransactionCode { found: s("03") },
            (2, 40),
            "transaction code",
        ),
        case(
            "payout_date_20260230",
            |f| put(f, 2, 42, b"20260230"),
            K::InvalidDate {
                found: s("20260230"),
                format: "date ÅÅÅÅMMDD",
            },
            (2, 42),
            "payout date ÅÅÅÅMMDD",
        ),
        case(
            "period_month_13",
            |f| put(f, 3, 50, b"20261301"),
            K::InvalidDate {
                found: s("20261301"),
                format: "date ÅÅÅÅMMDD",
            },
            (3, 50),
            "period from ÅÅÅÅMMDD",
        ),
        case(
            "bad_sign",
            |f| put(f, 2, 66, b"*"),
            K::InvalidSign {
                found: s("*"),
                expected: "+ or -",
            },
            (2, 66),
            "sign",
        ),
        case(
            "blank_sign",
            |f| put(f, 2, 66, b" "),
            K::InvalidSign {
                found: s(" "),
                expected: "+ or -",
            },
            (2, 66),
            "sign",
        ),
        case(
            "negative_zero_amount",
            |f| put(f, 2, 66, b"-0000000000000"),
            K::InvalidSign {
                found: s("-"),
                expected: "+ for zero",
            },
            (2, 66),
            "sign",
        ),
        case(
            "latin1_byte_in_amount",
            |f| put(f, 2, 70, b"\xD8"),
            K::NotDigits {
                found: s("000Ø000162300"),
            },
            (2, 70),
            "amount in øre",
        ),
        case(
            "space_padded_amount",
            |f| put(f, 2, 67, b"  "),
            K::NotDigits {
                found: s("  00000162300"),
            },
            (2, 67),
            "amount in øre",
        ),
        case(
            "utf8_in_reference",
            |f| put(f, 2, 82, "Ø".as_bytes()),
            K::Utf8InsteadOfLatin1 { character: 'Ø' },
            (2, 82),
            reference,
        ),
        case(
            "delete_byte_in_reference",
            |f| put(f, 2, 85, b"\x7F"),
            K::NotPrintable { byte: 0x7F },
            (2, 85),
            reference,
        ),
        case(
            "nul_byte_in_reference",
            |f| put(f, 2, 94, b"\0"),
            K::NotPrintable { byte: 0 },
            (2, 94),
            reference,
        ),
        case(
            "leading_space_in_reference",
            |f| put(f, 2, 80, b" KY-2026-000987"),
            K::InvalidReference {
                found: s(" KY-2026-000987"),
                why: s("leading or trailing spaces"),
            },
            (2, 80),
            reference,
        ),
        case(
            "empty_reference",
            |f| put(f, 2, 80, &[b' '; 20]),
            K::InvalidReference {
                found: s(""),
                why: s("must not be empty"),
            },
            (2, 80),
            reference,
        ),
        case(
            "correction_without_corrected_reference",
            |f| put(f, 4, 100, &[b' '; 20]),
            K::MissingCorrectedReference,
            (4, 100),
            "corrected KY reference",
        ),
        case(
            "withholding_with_corrected_reference",
            |f| put(f, 2, 100, b"KY-2026-000001"),
            K::UnexpectedCorrectedReference {
                found: s("KY-2026-000001"),
            },
            (2, 100),
            "corrected KY reference",
        ),
        case(
            "non_blank_filler_in_detail",
            |f| put(f, 2, 125, b"x"),
            K::NotBlank {
                found: s("     x   "),
            },
            (2, 125),
            "filler",
        ),
        // End record.
        case(
            "wrong_kommune_in_end",
            |f| put(f, 5, 4, b"0101"),
            K::KommuneMismatch {
                found: s("0101"),
                expected: s("0751"),
            },
            (5, 4),
            "kommunekode",
        ),
        case(
            "loebenummer_differs_in_end",
            |f| put(f, 5, 8, b"000008"),
            K::SequenceMismatch {
                found: s("8"),
                expected: s("7"),
            },
            (5, 8),
            "løbenummer",
        ),
        case(
            "count_off_by_one",
            |f| put(f, 5, 14, b"0000004"),
            K::ControlTotal {
                found: s("4"),
                computed: s("3"),
            },
            (5, 14),
            "number of 010 records",
        ),
        case(
            "plus_sum_off_by_one_ore",
            |f| put(f, 5, 21, b"000000000257351"),
            K::ControlTotal {
                found: s("257351"),
                computed: s("257350"),
            },
            (5, 21),
            "sum of + amounts in øre",
        ),
        case(
            "minus_sum_off_by_one_ore",
            |f| put(f, 5, 36, b"000000000019999"),
            K::ControlTotal {
                found: s("19999"),
                computed: s("20000"),
            },
            (5, 36),
            "sum of - amounts in øre",
        ),
        case(
            "net_sign_wrong",
            |f| put(f, 5, 51, b"-"),
            K::ControlTotal {
                found: s("-"),
                computed: s("+"),
            },
            (5, 51),
            "net sign",
        ),
        case(
            "net_sum_off_by_one_ore",
            |f| put(f, 5, 52, b"000000000237351"),
            K::ControlTotal {
                found: s("237351"),
                computed: s("237350"),
            },
            (5, 52),
            "net sum in øre",
        ),
        case(
            "negative_zero_net",
            |f| put(f, 5, 51, b"-000000000000000"),
            K::InvalidSign {
                found: s("-"),
                expected: "+ for zero",
            },
            (5, 51),
            "net sign",
        ),
        case(
            "non_blank_filler_in_end",
            |f| put(f, 5, 128, b"x"),
            K::NotBlank {
                found: format!("{}x", " ".repeat(61)),
            },
            (5, 128),
            "filler",
        ),
    ]
}

fn broken_path(name: &str) -> std::path::PathBuf {
    crate_path(&format!("tests/data/broken/{name}.txt"))
}

/// Every committed broken file is rejected with the expected first error, at the
/// expected line, column and field; the file is what its mutation of the sample
/// makes (`UPDATE_GOLDEN=1` rewrites the files).
#[test]
fn each_broken_file_is_rejected_with_the_expected_error_and_position() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} broken files", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut expected_bytes = sample_file();
        (case.mutate)(&mut expected_bytes);
        assert_golden(&broken_path(case.name), &expected_bytes);
        let bytes = std::fs::read(broken_path(case.name)).unwrap();
        let errors = match read_file(&bytes) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(errors) => errors,
        };
        let first = errors.first().unwrap();
        let found = (&first.kind, first.line, first.column, first.field);
        let expected = (&case.kind, case.line, case.column, case.field);
        if found != expected {
            failures.push(format!(
                "{}: expected {expected:?}\n   found {found:?}\n   all: {errors}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_corpus_directory_holds_exactly_the_cases() {
    if updating_golden() {
        return;
    }
    let mut committed: Vec<String> = std::fs::read_dir(crate_path("tests/data/broken"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let mut expected: Vec<String> = cases().iter().map(|c| format!("{}.txt", c.name)).collect();
    expected.sort();
    assert_eq!(
        committed, expected,
        "a stray or missing file in tests/data/broken"
    );
}

#[test]
fn error_messages_never_show_a_full_cpr() {
    for case in cases() {
        let mut bytes = sample_file();
        (case.mutate)(&mut bytes);
        if let Err(errors) = read_file(&bytes) {
            let text = errors.to_string();
            for cpr in ["0101901234", "2512884321", "3102901234"] {
                assert!(!text.contains(cpr), "{}: {text}", case.name);
            }
        }
    }
}

#[test]
fn every_defect_on_every_line_is_reported_up_to_the_cap() {
    let mut file = sample_file();
    put(&mut file, 2, 66, b"*");
    put(&mut file, 2, 42, b"20260230");
    put(&mut file, 3, 40, b"07");
    let errors = read_file(&file).unwrap_err();
    let places: Vec<(usize, usize)> = errors.errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(places, vec![(2, 42), (2, 66), (3, 40)]);

    let lines_without_cr: Vec<u8> = std::iter::repeat_n(record(&sample_file(), 2), 500)
        .flatten()
        .filter(|&b| b != b'\r')
        .collect();
    let errors = read_file(&lines_without_cr).unwrap_err();
    assert_eq!(errors.errors.len(), 100);
    assert!(errors.truncated);
}

// ---- fuzzing: never panic -----------------------------------------------------------

/// The valid files mutations start from: the sample and every golden file.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![sample_file()];
    for (_, _, expected) in golden_cases() {
        seeds.push(std::fs::read(expected).unwrap());
    }
    seeds
}

const INTERESTING: &[u8] = b"\r\n \t0123456789+-T\xC3\xD8\xE6\x7F\x00\xFF\xEF";

fn mutate(rng: &mut Rng, file: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let length = file.len().max(1);
    match rng.below(9) {
        0 => {
            let at = rng.below(length).min(file.len().saturating_sub(1));
            if let Some(byte) = file.get_mut(at) {
                *byte = rng.byte();
            }
        }
        1 => {
            let at = rng.below(length).min(file.len().saturating_sub(1));
            if let Some(byte) = file.get_mut(at) {
                *byte = INTERESTING[rng.below(INTERESTING.len())];
            }
        }
        2 => file.truncate(rng.below(length + 1)),
        3 => {
            let at = rng.below(length + 1).min(file.len());
            let byte = if rng.below(2) == 0 { b'\r' } else { b'\n' };
            file.insert(at, byte);
        }
        4 => {
            let start = rng.below(length + 1).min(file.len());
            let end = (start + rng.below(140)).min(file.len());
            file.drain(start..end);
        }
        5 => {
            // Duplicate a record-sized slice, usually aligned to a record.
            let start = (rng.below(length) / RECORD) * RECORD + rng.below(2) * rng.below(RECORD);
            let start = start.min(file.len());
            let end = (start + RECORD).min(file.len());
            let copy = file[start..end].to_vec();
            let at = rng.below(length + 1).min(file.len());
            file.splice(at..at, copy);
        }
        6 => {
            // Splice a record from another valid file.
            let other = &seeds[rng.below(seeds.len())];
            let start = (rng.below(other.len()) / RECORD) * RECORD;
            let at = ((rng.below(length + 1) / RECORD) * RECORD).min(file.len());
            file.splice(
                at..at,
                other[start..(start + RECORD).min(other.len())]
                    .iter()
                    .copied(),
            );
        }
        7 => {
            let at = rng.below(length + 1).min(file.len());
            file.splice(at..at, b"\xEF\xBB\xBF".iter().copied());
        }
        _ => {
            let at = rng.below(length).min(file.len().saturating_sub(1));
            if let Some(byte) = file.get_mut(at) {
                *byte = byte.wrapping_add(1);
            }
        }
    }
}

/// Reads `bytes`; when the reader accepts them, writing the parsed values must give
/// back the same bytes (every valid file has one spelling).
fn read_without_panic(bytes: &[u8]) -> bool {
    match read_file(bytes) {
        Ok(parsed) => {
            let records = parsed.details.into_iter().map(|d| d.record);
            let (again, summary) = render_file(parsed.header, records).unwrap();
            assert_eq!(summary, parsed.end);
            assert!(
                again == bytes,
                "an accepted file is not in the writer's spelling"
            );
            true
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            assert!(errors.errors.len() <= 100);
            false
        }
    }
}

fn fuzz_mutations(seed: u64, rounds: usize) {
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    let mut accepted = 0;
    for _ in 0..rounds {
        let mut file = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut file, &seeds);
        }
        if read_without_panic(&file) {
            accepted += 1;
        }
    }
    // A mutation is rarely harmless (a digit in a reference); most must be caught.
    assert!(
        accepted < rounds / 4,
        "{accepted} of {rounds} mutated files accepted"
    );
}

#[test]
fn fuzz_mutated_files_a() {
    fuzz_mutations(0x5F25_2001, 30_000);
}

#[test]
fn fuzz_mutated_files_b() {
    fuzz_mutations(0x5F25_2002, 30_000);
}

#[test]
fn fuzz_mutated_files_c() {
    fuzz_mutations(0x5F25_2003, 30_000);
}

/// Random bytes, and random records that start like real ones so that the reader
/// gets past the record type into the field checks.
#[test]
fn fuzz_random_bytes() {
    let mut rng = Rng::new(0x5F25_2004);
    for _ in 0..15_000 {
        let length = rng.below(700);
        let bytes: Vec<u8> = (0..length).map(|_| rng.byte()).collect();
        read_without_panic(&bytes);
    }
    let alphabet = b"0123456789 +-T\r\n";
    for _ in 0..15_000 {
        let mut bytes = Vec::new();
        for _ in 0..rng.below(6) {
            bytes.extend_from_slice([&b"000"[..], b"010", b"999"][rng.below(3)]);
            for _ in 0..rng.below(140) {
                bytes.push(alphabet[rng.below(alphabet.len())]);
            }
            bytes.extend_from_slice(b"\r\n");
        }
        read_without_panic(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        read_without_panic(&bytes);
    }
}
