//! Format-test helpers: golden inputs, a sample file, golden comparison and a tiny RNG.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use serde::Deserialize;
use sf2520::domain::{AgreementRef, Amount, Cpr, EntryKind, Kommune, KyRef};
use sf2520::sf2520::{DetailRecord, FileHeader};

/// A path inside the crate, independent of the directory tests run in.
pub(crate) fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// True when golden files are to be rewritten rather than compared.
pub(crate) fn updating_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1")
}

/// Compares `actual` with the committed file at `path`, or rewrites it under
/// `UPDATE_GOLDEN=1`.
pub(crate) fn assert_golden(path: &Path, actual: &[u8]) {
    if updating_golden() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}; run UPDATE_GOLDEN=1 cargo test", path.display()));
    assert!(
        expected == actual,
        "{} differs from what the code produces; review, then run UPDATE_GOLDEN=1 cargo test",
        path.display()
    );
}

/// A golden case's input: the header and the entries of one file
/// (documented in data/golden/README.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoldenInput {
    pub description: String,
    pub header: GoldenHeader,
    pub entries: Vec<GoldenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoldenHeader {
    pub kommune: String,
    pub sequence: u32,
    pub created_at: String,
    pub as_of: String,
    pub test_marker: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoldenEntry {
    pub transaction: String,
    pub cpr: String,
    pub agreement: String,
    pub payout_date: String,
    pub period_from: String,
    pub period_to: String,
    pub amount: String,
    pub reference: String,
    #[serde(default)]
    pub corrects: Option<String>,
}

impl GoldenInput {
    pub(crate) fn load(path: &Path) -> GoldenInput {
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub(crate) fn header(&self) -> FileHeader {
        let header = &self.header;
        FileHeader {
            kommune: Kommune::parse(&header.kommune).unwrap(),
            sequence: header.sequence,
            created_at: date_time(&header.created_at),
            as_of: date_time(&header.as_of),
            test_marker: header.test_marker,
        }
    }

    pub(crate) fn records(&self) -> Vec<DetailRecord> {
        self.entries.iter().map(GoldenEntry::record).collect()
    }
}

impl GoldenEntry {
    fn record(&self) -> DetailRecord {
        let kind = match self.transaction.as_str() {
            "withholding" => EntryKind::Withholding,
            "correction" => EntryKind::Correction,
            other => panic!("transaction {other:?}: expected withholding or correction"),
        };
        DetailRecord {
            cpr: Cpr::parse(&self.cpr).unwrap(),
            agreement: AgreementRef::parse(&self.agreement).unwrap(),
            kind,
            payout_date: date(&self.payout_date),
            period_from: date(&self.period_from),
            period_to: date(&self.period_to),
            amount: Amount::parse_kroner(&self.amount).unwrap(),
            reference: KyRef::parse(&self.reference).unwrap(),
            corrects: self
                .corrects
                .as_deref()
                .map(|raw| KyRef::parse(raw).unwrap()),
        }
    }
}

pub(crate) fn date(raw: &str) -> NaiveDate {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").unwrap_or_else(|e| panic!("{raw:?}: {e}"))
}

pub(crate) fn date_time(raw: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
}

/// The golden cases: `(name, input path, expected .txt path)`, sorted by name.
pub(crate) fn golden_cases() -> Vec<(String, PathBuf, PathBuf)> {
    let directory = crate_path("data/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|input| {
            let name = input.file_stem().unwrap().to_string_lossy().into_owned();
            let expected = input.with_extension("txt");
            (name, input, expected)
        })
        .collect();
    cases.sort();
    cases
}

/// The header of the sample file: Aarhus, file 7, a production file.
pub(crate) fn sample_header() -> FileHeader {
    FileHeader {
        kommune: Kommune::parse("0751").unwrap(),
        sequence: 7,
        created_at: date_time("2026-03-02T06:15:30"),
        as_of: date_time("2026-03-02T06:15:00"),
        test_marker: false,
    }
}

/// The sample file's entries: two withholdings and a correction of the first
/// (lines 2, 3 and 4 of the file).
pub(crate) fn sample_records() -> Vec<DetailRecord> {
    let entry =
        |cpr: &str, agreement: &str, amount: &str, reference: &str, corrects: Option<&str>| {
            DetailRecord {
                cpr: Cpr::parse(cpr).unwrap(),
                agreement: AgreementRef::parse(agreement).unwrap(),
                kind: if corrects.is_some() {
                    EntryKind::Correction
                } else {
                    EntryKind::Withholding
                },
                payout_date: date("2026-03-01"),
                period_from: date("2026-02-01"),
                period_to: date("2026-02-28"),
                amount: Amount::parse_kroner(amount).unwrap(),
                reference: KyRef::parse(reference).unwrap(),
                corrects: corrects.map(|raw| KyRef::parse(raw).unwrap()),
            }
        };
    vec![
        entry(
            "0101901234",
            "BA000123456",
            "1623.00",
            "KY-2026-000987",
            None,
        ),
        entry(
            "2512884321",
            "BA000777001",
            "950.50",
            "KY-2026-000988",
            None,
        ),
        entry(
            "0101901234",
            "BA000123456",
            "-200.00",
            "KY-2026-001234",
            Some("KY-2026-000987"),
        ),
    ]
}

/// The sample file's bytes: 5 records of 130 bytes.
pub(crate) fn sample_file() -> Vec<u8> {
    sf2520::sf2520::render_file(sample_header(), sample_records())
        .unwrap()
        .0
}

/// Xorshift64*: a tiny deterministic generator, so that a failing fuzz case can be
/// replayed from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `bound` (which must be positive).
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        let bound = u64::try_from(bound).unwrap();
        usize::try_from(self.next_u64() % bound).unwrap()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}
