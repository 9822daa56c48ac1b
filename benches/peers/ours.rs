//! Our side of the comparison: ingest and export as child processes (so that their
//! peak RSS is theirs alone), the large log, reconstruction, replay and as-of reads.

use std::path::Path;
use std::process::Command as Process;
use std::time::Instant;

use sf2520::demo::SplitMix64;
use sf2520::domain::Kommune;
use sf2520::export::{self, ExportRequest, Quiet};
use sf2520::ledger::{IngestMode, Ledger};

use super::data::{numbered, Workload};
use super::Knobs;

/// Peak resident set of this process so far, in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("Linux's /proc/self/status has a VmHWM line in kB")
}

/// What a child process measured.
pub(crate) struct ChildReport {
    pub seconds: f64,
    pub count: u64,
    pub rss_kib: u64,
}

/// Runs this benchmark binary again as `child <what> <dir>` and reads its report
/// line `CHILD seconds=.. count=.. rss_kib=..`.
pub(crate) fn run_child(what: &str, dir: &Path) -> ChildReport {
    run_child_on(what, dir, None)
}

/// [`run_child`] with the ledger in the PostgreSQL database at `database_url`
/// (passed as `SF2520_DATABASE_URL`), or in SQLite when `None`.
pub(crate) fn run_child_on(what: &str, dir: &Path, database_url: Option<&str>) -> ChildReport {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Process::new(exe);
    child.arg("child").arg(what).arg(dir);
    match database_url {
        Some(url) => child.env(DATABASE_URL_VAR, url),
        None => child.env_remove(DATABASE_URL_VAR),
    };
    let output = child.output().expect("start child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child {what} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("CHILD "))
        .unwrap_or_else(|| panic!("child {what} printed no report: {stdout}"));
    let field = |name: &str| -> &str {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("child report lacks {name}: {line}"))
    };
    ChildReport {
        seconds: field("seconds").parse().expect("seconds"),
        count: field("count").parse().expect("count"),
        rss_kib: field("rss_kib").parse().expect("rss_kib"),
    }
}

fn report(seconds: f64, count: u64) {
    println!(
        "CHILD seconds={seconds:.6} count={count} rss_kib={}",
        peak_rss_kib()
    );
}

/// The child's database, as the CLI reads it.
const DATABASE_URL_VAR: &str = "SF2520_DATABASE_URL";

/// In a child: the ledger's database is the PostgreSQL one its parent named, if
/// any (every `Ledger::open` of the process then opens it).
pub(crate) fn use_database_from_env() {
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        let url = sf2520::ledger::DatabaseUrl::parse(&url)
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR}: {e}"));
        sf2520::ledger::set_database_url(Some(url));
    }
}

/// Child: registers the agreements (untimed), then ingests the entries in batches,
/// each durable before the next, through the real `Ledger::ingest`.
pub(crate) fn child_ingest(knobs: &Knobs, dir: &Path) {
    let mut ledger = Ledger::open(dir).expect("open ledger");
    let mut workload = Workload::new(knobs.seed, knobs.entries);
    for batch in workload.agreement_batches(knobs.batch) {
        ledger
            .ingest(numbered(batch), IngestMode::Commit)
            .expect("register agreements")
            .accepted()
            .expect("register agreements accepted");
    }
    let mut seconds = 0.0;
    let mut entries = 0;
    loop {
        // Generating the batch is the harness's work, not the ledger's: only the
        // ingest is timed, as on PostgreSQL's side.
        let batch = numbered(workload.next_batch(knobs.batch));
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        let report = ledger
            .ingest(batch, IngestMode::Commit)
            .expect("ingest batch")
            .accepted()
            .expect("ingest batch accepted");
        seconds += started.elapsed().as_secs_f64();
        entries += u64::try_from(report.appended()).expect("fits the target type");
    }
    report(seconds, entries);
}

/// Child: the official batch export of everything not yet exported.
pub(crate) fn child_export(dir: &Path) {
    let mut ledger = Ledger::open(dir).expect("open ledger");
    let outbox = export::default_outbox(dir);
    let started = Instant::now();
    let files = export::run_batch(&mut ledger, &ExportRequest::default(), &outbox, &Quiet)
        .expect("batch export");
    let seconds = started.elapsed().as_secs_f64();
    let records = files.iter().map(|file| file.summary.record_count).sum();
    report(seconds, records);
}

/// Builds a log of about `events` events through `Ledger::write`/`Appender` (the
/// rules are skipped: the generator only makes commands that pass them), in
/// transactions of 50,000 events of the same workload as W1's (random agreements,
/// 5 % corrections). Returns the seconds it took.
pub(crate) fn build_big_log(dir: &Path, seed: u64, events: u64) -> f64 {
    let started = Instant::now();
    let mut ledger = Ledger::open(dir).expect("open big ledger");
    let mut workload = Workload::new(seed, big_entries(events));
    let append = |ledger: &mut Ledger, batch: Vec<sf2520::domain::Command>| {
        // `write` may repeat its work after a lost connection (PostgreSQL only).
        let mut batch = Some(batch);
        ledger
            .write(|appender| {
                for command in batch.take().unwrap_or_default() {
                    appender.append(&command.into_event())?;
                }
                Ok(())
            })
            .expect("append");
    };
    for batch in workload.agreement_batches(50_000) {
        append(&mut ledger, batch);
    }
    let mut done = 0u64;
    loop {
        let batch = workload.next_batch(50_000);
        if batch.is_empty() {
            break;
        }
        append(&mut ledger, batch);
        done += 50_000;
        if done.is_multiple_of(1_000_000) {
            eprintln!(
                "  big log: {} events, {:.0} s",
                ledger.head().expect("head").position,
                started.elapsed().as_secs_f64()
            );
        }
    }
    started.elapsed().as_secs_f64()
}

/// The entries of a big log of `events` events: one agreement per 20 entries.
pub(crate) fn big_entries(events: u64) -> u64 {
    events - (events / 21).max(98)
}

/// Ingests `records` withholdings for the first kommune and exports its next file:
/// an official file of exactly `records` records to reconstruct. Returns its
/// løbenummer.
pub(crate) fn add_reconstruct_target(dir: &Path, seed: u64, entries: u64, records: u64) -> u32 {
    let mut ledger = Ledger::open(dir).expect("open ledger");
    let kommune = Kommune::all().next().expect("98 kommuner");
    let request = ExportRequest {
        kommuner: vec![kommune],
        ..ExportRequest::default()
    };
    let outbox = export::default_outbox(dir);
    // First the kommune's backlog (the large log was never exported), so that the
    // target file holds exactly the entries added below.
    export::run_batch(&mut ledger, &request, &outbox, &Quiet).expect("export backlog");
    // The same seed and size give the same agreements; the `KX` references of
    // `kommune_batch` cannot collide with the main workload's `KY`/`KO` ones.
    let mut workload = Workload::new(seed, entries);
    let batch = workload.kommune_batch(0, records);
    let mut numbered_batch = numbered(batch);
    let mut appended = 0;
    while !numbered_batch.is_empty() {
        let rest = numbered_batch.split_off(numbered_batch.len().min(10_000));
        let report = ledger
            .ingest(numbered_batch, IngestMode::Commit)
            .expect("ingest target")
            .accepted()
            .expect("ingest target accepted");
        appended += report.appended();
        numbered_batch = rest;
    }
    assert_eq!(u64::try_from(appended).ok(), Some(records));
    let files = export::run_batch(&mut ledger, &request, &outbox, &Quiet).expect("export");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].summary.record_count, records);
    files[0].planned.header.sequence
}

/// Median seconds of `runs` reconstructions of one file (each checked against the
/// recorded SHA-256), in a freshly opened ledger, after one untimed warm-up.
pub(crate) fn time_reconstruct(dir: &Path, sequence: u32, runs: usize) -> f64 {
    let ledger = Ledger::open(dir).expect("open ledger");
    reconstruct_once(&ledger, sequence);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| reconstruct_once(&ledger, sequence))
        .collect();
    median(&mut times)
}

/// Seconds to reconstruct the first kommune's løbenummer `sequence`, checked.
pub(crate) fn reconstruct_once(ledger: &Ledger, sequence: u32) -> f64 {
    let kommune = Kommune::all().next().expect("98 kommuner");
    let started = Instant::now();
    let rebuilt = export::reconstruct(ledger, kommune, sequence).expect("reconstruct");
    let seconds = started.elapsed().as_secs_f64();
    assert!(rebuilt.matches(), "reconstruction differs from the record");
    seconds
}

/// Median seconds to reconstruct a file in each of two ledgers, timed in turns so
/// that the other tenants of a shared machine weigh on both alike.
pub(crate) fn time_reconstruct_pair(
    small: (&Path, u32),
    big: (&Path, u32),
    runs: usize,
) -> (f64, f64) {
    let ledgers = [
        (Ledger::open(small.0).expect("open ledger"), small.1),
        (Ledger::open(big.0).expect("open ledger"), big.1),
    ];
    for (ledger, sequence) in &ledgers {
        reconstruct_once(ledger, *sequence);
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (index, (ledger, sequence)) in ledgers.iter().enumerate() {
            times[index].push(reconstruct_once(ledger, *sequence));
        }
    }
    let [small_times, big_times] = &mut times;
    (median(small_times), median(big_times))
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `Ledger::verify` (hash chain walk, replay into an empty database, comparison).
/// Returns (events, seconds).
pub(crate) fn time_replay(dir: &Path) -> (u64, f64) {
    let ledger = Ledger::open(dir).expect("open ledger");
    let started = Instant::now();
    let report = ledger
        .verify(|_| {})
        .expect("read the log")
        .expect("the log verifies");
    (report.events, started.elapsed().as_secs_f64())
}

/// Median latency in milliseconds of `agreement_totals(ref, position)` for random
/// agreements at random past positions.
pub(crate) fn time_as_of(dir: &Path, seed: u64, entries: u64, lookups: usize) -> f64 {
    let ledger = Ledger::open(dir).expect("open ledger");
    let workload = Workload::new(seed, entries);
    let head = ledger.head().expect("head").position;
    let mut rng = SplitMix64::new(seed ^ 0xA5A5);
    let mut times: Vec<f64> = (0..lookups)
        .map(|_| {
            let agreement = workload.agreement_ref(rng.below(workload.agreement_count()));
            let position = 1 + rng.below(head);
            let started = Instant::now();
            let totals = ledger
                .agreement_totals(agreement.as_str(), position)
                .expect("as-of read");
            let seconds = started.elapsed().as_secs_f64();
            std::hint::black_box(totals);
            seconds * 1_000.0
        })
        .collect();
    median(&mut times)
}

/// Kommuner kept quiet in the quiet-kommune case, one per timed export.
const QUIET_KOMMUNER: u64 = 5;

/// New entries of a quiet kommune per timed export.
const QUIET_ENTRIES: u64 = 100;

/// Child: the quiet-kommune case. Registers the agreements and gives each of the
/// first [`QUIET_KOMMUNER`] kommuner a first file; then, when `bulk` is not 0,
/// ingests and exports `bulk` entries of the other kommuner (so the quiet ones'
/// last files lie that far back in the log); then, for each quiet kommune in
/// turn, ingests [`QUIET_ENTRIES`] entries for it and times the batch export that
/// follows (only that kommune has new entries). Reports the median export.
pub(crate) fn child_quiet(knobs: &Knobs, dir: &Path, bulk: u64) {
    let mut ledger = Ledger::open(dir).expect("open ledger");
    let outbox = export::default_outbox(dir);
    let export_all = |ledger: &mut Ledger| {
        export::run_batch(ledger, &ExportRequest::default(), &outbox, &Quiet).expect("export")
    };
    // The same seed gives the same agreements as the bulk workload's.
    let mut quiet = Workload::new(knobs.seed, knobs.entries);
    for batch in quiet.agreement_batches(knobs.batch) {
        ledger
            .ingest(numbered(batch), IngestMode::Commit)
            .expect("register agreements")
            .accepted()
            .expect("register agreements accepted");
    }
    for kommune in 0..QUIET_KOMMUNER {
        ledger
            .ingest(
                numbered(quiet.kommune_batch(kommune, QUIET_ENTRIES)),
                IngestMode::Commit,
            )
            .expect("first entries of a quiet kommune")
            .accepted()
            .expect("first entries of a quiet kommune accepted");
    }
    export_all(&mut ledger);
    let mut bulk_workload = Workload::new(knobs.seed, bulk).sparing(QUIET_KOMMUNER);
    loop {
        let batch = bulk_workload.next_batch(knobs.batch);
        if batch.is_empty() {
            break;
        }
        ledger
            .ingest(numbered(batch), IngestMode::Commit)
            .expect("bulk entries")
            .accepted()
            .expect("bulk entries accepted");
    }
    export_all(&mut ledger);
    let mut times: Vec<f64> = (0..QUIET_KOMMUNER)
        .map(|kommune| {
            ledger
                .ingest(
                    numbered(quiet.kommune_batch(kommune, QUIET_ENTRIES)),
                    IngestMode::Commit,
                )
                .expect("new entries of a quiet kommune")
                .accepted()
                .expect("new entries of a quiet kommune accepted");
            let started = Instant::now();
            let files = export_all(&mut ledger);
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!(files.len(), 1, "only the quiet kommune has new entries");
            assert_eq!(files[0].summary.record_count, QUIET_ENTRIES);
            seconds
        })
        .collect();
    report(median(&mut times), QUIET_ENTRIES);
}
