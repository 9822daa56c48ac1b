//! Criterion micro-benchmarks of the hot paths: rendering records (`FileWriter`),
//! reading a file back (`read_file`, and `check_file` as the export's read-back
//! does, in bytes per second), the hash chain (`chain_hash`) and appending a
//! 1,000-entry batch (`Ledger::ingest`, durable commit included).
//!
//! `cargo bench --bench hot_paths`; the peer comparison is `benches/peers/`.

// The peer benchmark's generator; only part of it is used here.
#[allow(dead_code)]
#[path = "peers/data.rs"]
mod data;

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sf2520::domain::{Command, Kommune};
use sf2520::ledger::{chain_hash, IngestMode, Ledger, GENESIS_HASH};
use sf2520::sf2520::{check_file, read_file, DetailRecord, FileHeader, FileWriter};
use uuid::Uuid;

use data::{numbered, Workload};

const RECORDS: u64 = 1_000;

fn header() -> FileHeader {
    let created_at = NaiveDate::from_ymd_opt(2026, 11, 2)
        .and_then(|date| date.and_hms_opt(6, 30, 0))
        .expect("a real time");
    FileHeader::exported(
        Kommune::parse("0751").expect("Aarhus"),
        42,
        created_at,
        false,
    )
}

/// 1,000 withholdings as detail records (corrections would need their withholding).
fn details() -> Vec<DetailRecord> {
    let mut workload = Workload::new(7, 2 * RECORDS);
    let mut records = Vec::new();
    while records.len() < 1_000 {
        for command in workload.next_batch(100) {
            if let Command::RecordWithholding(w) = command {
                records.push(sf2520::export::withholding_record(0, w).expect("a plain CPR"));
            }
        }
    }
    records.truncate(1_000);
    records
}

fn render(records: &[DetailRecord]) -> Vec<u8> {
    let capacity = (records.len() + 2) * 130;
    let mut writer = FileWriter::new(Vec::with_capacity(capacity), header()).expect("start");
    for record in records {
        writer.write_detail(record).expect("detail");
    }
    writer.finish().expect("end").0
}

fn format(c: &mut Criterion) {
    let records = details();
    let mut group = c.benchmark_group("sf2520");
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("render 1000 records", |b| {
        b.iter(|| render(black_box(&records)))
    });
    let bytes = render(&records);
    group.bench_function("read 1000 records", |b| {
        b.iter(|| read_file(black_box(&bytes)).expect("a valid file"))
    });
    group.finish();
    // The export's read-back: every check, no records kept; in bytes per second.
    let mut group = c.benchmark_group("sf2520 bytes");
    group.throughput(Throughput::Bytes(
        u64::try_from(bytes.len()).expect("small"),
    ));
    group.bench_function("check 1000 records", |b| {
        b.iter(|| check_file(black_box(&bytes)).expect("a valid file"))
    });
    group.bench_function("render 1000 records", |b| {
        b.iter(|| render(black_box(&records)))
    });
    group.finish();
}

fn hash(c: &mut Criterion) {
    let event_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    // About the size of a withholding's postcard payload.
    let payload = vec![0x5A; 110];
    c.bench_function("chain_hash", |b| {
        b.iter(|| {
            chain_hash(
                black_box(&GENESIS_HASH),
                black_box(1_234_567),
                &event_id,
                "entry/0751/KY-0751-000000123456",
                "WithholdingRecorded",
                1,
                1_790_000_000_000_000,
                black_box(&payload),
            )
        })
    });
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory the ledger makes itself (0700): it refuses one others can read.
    let mut ledger = Ledger::open(&dir.path().join("ledger")).expect("open ledger");
    // Enough entries that criterion's iterations never run out of fresh references.
    let mut workload = Workload::new(11, 2_000_000);
    for batch in workload.agreement_batches(10_000) {
        ledger
            .ingest(numbered(batch), IngestMode::Commit)
            .expect("agreements")
            .accepted()
            .expect("agreements accepted");
    }
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(20);
    group.bench_function("ingest 1000 entries", |b| {
        b.iter_batched(
            || numbered(workload.next_batch(1_000)),
            |batch| {
                ledger
                    .ingest(batch, IngestMode::Commit)
                    .expect("ingest")
                    .accepted()
                    .expect("ingest accepted")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, format, hash, append);
criterion_main!(benches);
