//! Peer comparison: our ledger and exporter against PostgreSQL doing the same work,
//! and the export against the disk's own limit, in one run (`cargo bench --bench
//! peers`). Ends with one machine-readable `RESULT` line; docs/performance.md has
//! the latest figures and what bounds each.
//!
//! Knobs (environment): `SF2520_BENCH_ENTRIES` (1,000,000), `SF2520_BENCH_BIG_EVENTS`
//! (10,000,000; 0 skips the large log), `SF2520_BENCH_BATCH` (10,000),
//! `SF2520_BENCH_FILE_RECORDS` (10,000), `SF2520_BENCH_SEED` (2520) and
//! `SF2520_BENCH_DIR` (where the throwaway data goes; the system temp dir).

mod data;
mod ours;
mod pg;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sf2520::ledger::Ledger;
use sf2520::ledger::OfficialFile;

use data::Workload;

/// The run's sizes, from the environment.
pub struct Knobs {
    pub entries: u64,
    pub big_events: u64,
    pub batch: usize,
    pub file_records: u64,
    pub seed: u64,
    pub dir: PathBuf,
}

fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
        Err(_) => default,
    }
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            entries: knob("SF2520_BENCH_ENTRIES", 1_000_000),
            big_events: knob("SF2520_BENCH_BIG_EVENTS", 10_000_000),
            batch: usize::try_from(knob("SF2520_BENCH_BATCH", 10_000))
                .expect("fits the target type"),
            file_records: knob("SF2520_BENCH_FILE_RECORDS", 10_000),
            seed: knob("SF2520_BENCH_SEED", 2520),
            dir: std::env::var_os("SF2520_BENCH_DIR")
                .map_or_else(std::env::temp_dir, PathBuf::from),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let knobs = Knobs::from_env();
    if args.get(1).map(String::as_str) == Some("child") {
        ours::use_database_from_env();
        let dir = Path::new(&args[3]);
        match args[2].as_str() {
            "ingest" => ours::child_ingest(&knobs, dir),
            "export" => ours::child_export(dir),
            "quiet-big" => ours::child_quiet(&knobs, dir, knobs.entries),
            "quiet-small" => ours::child_quiet(&knobs, dir, 0),
            // For development: build a large log with its reconstruct target.
            "big" => {
                ours::build_big_log(dir, knobs.seed, knobs.big_events);
                let entries = ours::big_entries(knobs.big_events);
                let sequence =
                    ours::add_reconstruct_target(dir, knobs.seed, entries, knobs.file_records);
                println!("target løbenummer {sequence}");
            }
            // For development: time reconstructing løbenummer N of the first kommune.
            "reconstruct" => {
                let sequence = args[4].parse().expect("løbenummer");
                let seconds = ours::time_reconstruct(dir, sequence, 7);
                println!("reconstruct median {:.2} ms", seconds * 1e3);
            }
            other => panic!("unknown child workload {other}"),
        }
        return;
    }
    // `cargo bench` passes --bench; a plain run of every target (`cargo test
    // --benches`) must not start a 15-minute benchmark.
    if !args.iter().any(|arg| arg == "--bench") {
        println!("peers: run with `cargo bench --bench peers`");
        return;
    }
    run(&knobs);
}

/// Prints one row of the human table.
fn row(workload: &str, ours: &str, peer: &str, ratio: &str) {
    println!("{workload:<34} {ours:>16} {peer:>16} {ratio:>10}");
}

/// `n` as a float, exactly for every `n` below 2^53 (counts here stay far below),
/// built from two exact 32-bit halves rather than a lossy `as`.
fn float(n: u64) -> f64 {
    let high = u32::try_from(n >> 32).expect("fits the target type");
    let low = u32::try_from(n & 0xFFFF_FFFF).expect("fits the target type");
    f64::from(high) * 4_294_967_296.0 + f64::from(low)
}

fn per_second(count: u64, seconds: f64) -> f64 {
    float(count) / seconds
}

fn thousands(value: f64) -> String {
    let whole = format!("{value:.0}");
    let mut out = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn mib(kib: u64) -> f64 {
    float(kib) / 1024.0
}

fn run(knobs: &Knobs) {
    let started = Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("sf2520-peers-")
        .tempdir_in(&knobs.dir)
        .expect("scratch dir");
    let small = scratch.path().join("ledger-1m");
    println!(
        "peers: {} entries in batches of {}, 98 kommuner, seed {}; scratch in {}",
        knobs.entries,
        knobs.batch,
        knobs.seed,
        scratch.path().display()
    );
    let server = pg::start();
    println!(
        "PostgreSQL {} (fsync=on, synchronous_commit=on)",
        server.version()
    );
    row("workload", "ours", "PostgreSQL", "ours/PG");

    // W1 ingest.
    let ingest = ours::run_child("ingest", &small);
    let ours_ingest = per_second(ingest.count, ingest.seconds);
    let peer_ingest = pg_ingest(&server, knobs);
    let ingest_ratio = ours_ingest / peer_ingest;
    row(
        "W1 ingest (entries/s)",
        &thousands(ours_ingest),
        &thousands(peer_ingest),
        &format!("{ingest_ratio:.2}"),
    );

    // W1 on PostgreSQL: our ledger in a database of the same server.
    let ours_pg_url = server.create_database("ours");
    let small_pg = scratch.path().join("ledger-1m-pg");
    let ingest_pg = ours::run_child_on("ingest", &small_pg, Some(&ours_pg_url));
    // Untimed, as after the peer's ingest (see `pg_ingest`).
    let mut ours_client = server.connect("ours");
    ours_client
        .batch_execute("VACUUM ANALYZE")
        .expect("vacuum analyze");
    ours_client.batch_execute("CHECKPOINT").expect("checkpoint");
    drop(ours_client);
    let ours_pg_ingest = per_second(ingest_pg.count, ingest_pg.seconds);
    let pg_ingest_ratio = ours_pg_ingest / peer_ingest;
    row(
        "W1 ingest on PG (entries/s)",
        &thousands(ours_pg_ingest),
        &thousands(peer_ingest),
        &format!("{pg_ingest_ratio:.2}"),
    );

    // W2 export.
    let export = ours::run_child("export", &small);
    let files = Ledger::open(&small)
        .expect("open")
        .official_files(None)
        .expect("files register");
    let ours_export = per_second(export.count, export.seconds);
    let peer_dir = scratch.path().join("pg-outbox");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let peer_started = Instant::now();
    pg::export(&server, &files, &peer_dir, workers);
    let peer_seconds = peer_started.elapsed().as_secs_f64();
    assert_identical(&files, &sf2520::export::default_outbox(&small), &peer_dir);
    let peer_export = per_second(export.count, peer_seconds);
    let export_ratio = ours_export / peer_export;
    row(
        "W2 export (records/s)",
        &thousands(ours_export),
        &thousands(peer_export),
        &format!("{export_ratio:.2}"),
    );
    println!(
        "   {} files, {} records, byte-identical to PostgreSQL's; ours {:.2} s, PG {:.2} s",
        files.len(),
        export.count,
        export.seconds,
        peer_seconds
    );
    let export_pg = ours::run_child_on("export", &small_pg, Some(&ours_pg_url));
    let ours_pg_export = per_second(export_pg.count, export_pg.seconds);
    let pg_export_ratio = ours_pg_export / peer_export;
    assert_same_records(
        &files,
        &sf2520::export::default_outbox(&small),
        &sf2520::export::default_outbox(&small_pg),
    );
    row(
        "W2 export on PG (records/s)",
        &thousands(ours_pg_export),
        &thousands(peer_export),
        &format!("{pg_export_ratio:.2}"),
    );
    println!(
        "   the same records from our PostgreSQL ledger; ours on PG {:.2} s",
        export_pg.seconds
    );
    let quiet = quiet_kommune(&server, scratch.path(), knobs);
    drop(server);

    let disk_seconds = disk_limit(&files, &scratch.path().join("disk"));
    let export_vs_disk = export.seconds / disk_seconds;
    row(
        "export time / disk write+fsync",
        &format!("{:.3} s", export.seconds),
        &format!("{disk_seconds:.3} s"),
        &format!("{export_vs_disk:.2}x"),
    );
    row(
        "peak RSS ingest / export (MiB)",
        &format!("{:.1}", mib(ingest.rss_kib)),
        &format!("{:.1}", mib(export.rss_kib)),
        "",
    );

    let asof_1m = ours::time_as_of(&small, knobs.seed, knobs.entries, 2_001);
    let (replay_events, replay_seconds) = ours::time_replay(&small);
    let replay_eps = per_second(replay_events, replay_seconds);
    row(
        "W4 replay+verify (events/s)",
        &thousands(replay_eps),
        "",
        &format!("{replay_seconds:.1} s"),
    );

    let target_1m =
        ours::add_reconstruct_target(&small, knobs.seed, knobs.entries, knobs.file_records);
    let events_1m = Ledger::open(&small)
        .expect("open")
        .head()
        .expect("head")
        .position;
    row(
        &format!("W5 as-of @{} ev (median)", thousands(float(events_1m))),
        &format!("{asof_1m:.4} ms"),
        "",
        "",
    );

    let (reconstruct_ratio, asof_big) = if knobs.big_events > 0 {
        big_log(knobs, scratch.path(), (&small, target_1m), events_1m)
    } else {
        let reconstruct = ours::time_reconstruct(&small, target_1m, 9);
        row(
            &format!("W3 reconstruct @{} ev", thousands(float(events_1m))),
            &format!("{:.1} ms", reconstruct * 1e3),
            "",
            "",
        );
        (f64::NAN, f64::NAN)
    };
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    let [quiet_ratio, pg_quiet_ratio] = quiet;
    println!(
        "RESULT ingest_ratio={ingest_ratio:.2} export_ratio={export_ratio:.2} \
         pg_ingest_ratio={pg_ingest_ratio:.2} pg_export_ratio={pg_export_ratio:.2} \
         quiet_export_ratio={quiet_ratio:.2} pg_quiet_export_ratio={pg_quiet_ratio:.2} \
         export_vs_disk={export_vs_disk:.2} reconstruct_10m_over_1m={reconstruct_ratio:.2} \
         replay_eps={replay_eps:.0} asof_ms_10m={asof_big:.4} export_rss_mb={:.1} \
         ingest_rss_mb={:.1}",
        mib(export.rss_kib),
        mib(ingest.rss_kib)
    );
}

/// W6, the quiet kommune: the export of 100 new entries of a kommune whose last
/// file lies a whole workload of other kommuner's entries back in the log, over
/// the same on a ledger without those entries; on SQLite and on PostgreSQL.
fn quiet_kommune(server: &pg::PgServer, scratch: &Path, knobs: &Knobs) -> [f64; 2] {
    let mut ratios = [0.0; 2];
    for (at, backend) in ["SQLite", "PostgreSQL"].into_iter().enumerate() {
        let url = |name: &str| (at == 1).then(|| server.create_database(name));
        let (big_url, small_url) = (url("quiet_big"), url("quiet_small"));
        let big = ours::run_child_on(
            "quiet-big",
            &scratch.join(format!("quiet-big-{at}")),
            big_url.as_deref(),
        );
        let small = ours::run_child_on(
            "quiet-small",
            &scratch.join(format!("quiet-small-{at}")),
            small_url.as_deref(),
        );
        ratios[at] = big.seconds / small.seconds;
        row(
            &format!("W6 quiet kommune, {backend}"),
            &format!("{:.1} ms", big.seconds * 1e3),
            &format!("{:.1} ms", small.seconds * 1e3),
            &format!("{:.2}x", ratios[at]),
        );
    }
    println!(
        "   export of {} new entries of a kommune quiet for {} other entries (left) and on a small ledger (right)",
        100,
        thousands(float(knobs.entries))
    );
    ratios
}

/// W3 on both logs and W5 on the large one. Returns (reconstruct time at the large
/// log over that at the small one, as-of median ms at the large log).
fn big_log(knobs: &Knobs, scratch: &Path, small: (&Path, u32), small_events: u64) -> (f64, f64) {
    let big = scratch.join("ledger-big");
    let build_seconds = ours::build_big_log(&big, knobs.seed, knobs.big_events);
    let entries = ours::big_entries(knobs.big_events);
    let asof = ours::time_as_of(&big, knobs.seed, entries, 2_001);
    let target = ours::add_reconstruct_target(&big, knobs.seed, entries, knobs.file_records);
    let events = Ledger::open(&big)
        .expect("open")
        .head()
        .expect("head")
        .position;
    let (reconstruct_small, reconstruct_big) =
        ours::time_reconstruct_pair(small, (&big, target), 9);
    let ratio = reconstruct_big / reconstruct_small;
    row(
        &format!("W3 reconstruct @{} ev", thousands(float(small_events))),
        &format!("{:.1} ms", reconstruct_small * 1e3),
        "",
        "",
    );
    row(
        &format!("W3 reconstruct @{} ev", thousands(float(events))),
        &format!("{:.1} ms", reconstruct_big * 1e3),
        "",
        &format!("{ratio:.2}x"),
    );
    row(
        &format!("W5 as-of @{} ev (median)", thousands(float(events))),
        &format!("{asof:.4} ms"),
        "",
        "",
    );
    println!(
        "   large log built through Ledger::write in {build_seconds:.0} s ({}/s)",
        thousands(per_second(events, build_seconds))
    );
    (ratio, asof)
}

/// PostgreSQL's W1: schema and agreements untimed, then the timed entry batches.
fn pg_ingest(server: &pg::PgServer, knobs: &Knobs) -> f64 {
    let mut client = server.connect("postgres");
    let mut workload = Workload::new(knobs.seed, knobs.entries);
    pg::prepare(&mut client, &workload.agreement_batches(knobs.batch));
    let mut ingest = pg::Ingest::new(&mut client);
    let mut seconds = 0.0;
    let mut entries = 0;
    loop {
        // Generating the batch is not PostgreSQL's work; only the batch is timed.
        let batch = workload.next_batch(knobs.batch);
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        ingest.batch(&mut client, &batch);
        seconds += started.elapsed().as_secs_f64();
        entries += u64::try_from(batch.len()).expect("fits the target type");
    }
    // Untimed: the work PostgreSQL would otherwise do in the background after a
    // million inserts (autovacuum, analyze, the checkpoint), done now so that it
    // runs neither during our export nor during its own, and so that its export
    // query is planned with statistics.
    client
        .batch_execute("VACUUM ANALYZE")
        .expect("vacuum analyze");
    client.batch_execute("CHECKPOINT").expect("checkpoint");
    per_second(entries, seconds)
}

/// Fails loudly unless every file PostgreSQL made equals ours byte for byte.
fn assert_identical(files: &[OfficialFile], ours_dir: &Path, peer_dir: &Path) {
    for file in files {
        let ours = fs::read(ours_dir.join(&file.file_name)).expect("our file");
        let peer = fs::read(peer_dir.join(&file.file_name)).expect("PostgreSQL's file");
        if ours != peer {
            let line = ours
                .chunks(130)
                .zip(peer.chunks(130))
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(peer.len()) / 130);
            let show = |bytes: &[u8]| {
                bytes
                    .chunks(130)
                    .nth(line)
                    .map(|record| String::from_utf8_lossy(record).into_owned())
                    .unwrap_or_default()
            };
            panic!(
                "{}: PostgreSQL's file differs from ours ({} vs {} bytes) at line {}:\n ours: {:?}\n   PG: {:?}",
                file.file_name,
                ours.len(),
                peer.len(),
                line + 1,
                show(&ours),
                show(&peer)
            );
        }
    }
}

/// Fails loudly unless the files exported from our PostgreSQL ledger hold the same
/// records as those from our SQLite one: the same names, detail records and
/// trailers (the headers differ only in their creation times).
fn assert_same_records(files: &[OfficialFile], sqlite_dir: &Path, pg_dir: &Path) {
    for file in files {
        let sqlite = fs::read(sqlite_dir.join(&file.file_name)).expect("our SQLite file");
        let pg = fs::read(pg_dir.join(&file.file_name))
            .unwrap_or_else(|e| panic!("{}: not exported from PostgreSQL: {e}", file.file_name));
        assert_eq!(
            sqlite.get(130..),
            pg.get(130..),
            "{}: the records from PostgreSQL differ from SQLite's",
            file.file_name
        );
    }
}

/// The disk's limit for the export: the same bytes, in files of the same sizes,
/// written sequentially in 256 KiB writes, each file fsynced, then the directory.
fn disk_limit(files: &[OfficialFile], dir: &Path) -> f64 {
    fs::create_dir_all(dir).expect("disk dir");
    let chunk = vec![b'x'; 256 * 1024];
    let started = Instant::now();
    for file in files {
        let mut left = (file.record_count + 2) * 130;
        let mut out = File::create(dir.join(&file.file_name)).expect("create");
        while left > 0 {
            let take = usize::try_from(left)
                .expect("fits the target type")
                .min(chunk.len());
            out.write_all(&chunk[..take]).expect("write");
            left -= u64::try_from(take).expect("fits the target type");
        }
        out.sync_all().expect("fsync");
    }
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .expect("fsync dir");
    started.elapsed().as_secs_f64()
}
