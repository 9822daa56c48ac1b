//! Exactly once under concurrency and faults, through the real binary: exports
//! that overlap, two ledgers and a foreign file in one outbox, leftovers of
//! interrupted runs, a clock stepped either way, a full disk, SIGTERM, a lost WAL,
//! two processes on a fresh data directory, a writer kept waiting, and directory
//! ownership and modes. Interleavings are made deterministic with a held lock,
//! SIGSTOP/SIGCONT, `faketime` and a small tmpfs. After each scenario: every entry
//! in exactly one file, every recorded file present with its recorded bytes,
//! løbenumre gapless.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use sf2520::demo::{demo_month, SplitMix64};
use sf2520::export::default_outbox;
use sf2520::export::outbox::{OUTBOX_MARKER, QUARANTINE_DIR};
use sf2520::ledger::{
    IngestMode, Ledger, DATABASE_FILE, EXPORT_LOCK_FILE, HEAD_MARK_FILE, WRITER_NOTE_FILE,
};
use support::cli::{command, sf2520, Run};
use support::export::{assert_exactly_once, more_withholdings, registered_agreements};
use support::process::{signal, wait_bounded, wait_until};
use support::tmpfs::Tmpfs;

/// The exit status of a run refused because another holds what it needs.
const EXIT_TRY_AGAIN: i32 = 5;
const EXIT_SIGTERM: i32 = 143;

/// A data directory with the demo month ingested (no file exported yet).
fn month_ledger(dir: &Path, seed: u64) -> (PathBuf, Vec<sf2520::domain::Agreement>) {
    let data_dir = dir.join(format!("data-{seed}"));
    let month = demo_month(seed);
    let agreements = registered_agreements(&month);
    Ledger::open(&data_dir)
        .unwrap()
        .ingest(month.into_iter().enumerate().collect(), IngestMode::Commit)
        .unwrap()
        .accepted()
        .unwrap();
    (data_dir, agreements)
}

fn ingest_more(data_dir: &Path, agreements: &[sf2520::domain::Agreement], round: usize) {
    let mut rng = SplitMix64::new(u64::try_from(round).unwrap());
    Ledger::open(data_dir)
        .unwrap()
        .ingest(
            more_withholdings(&mut rng, agreements, round, 40),
            IngestMode::Commit,
        )
        .unwrap()
        .accepted()
        .unwrap();
}

fn spawn(data_dir: &Path, args: &[&str]) -> Child {
    command(data_dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sf2520")
}

fn finish(child: Child) -> (ExitStatus, Run) {
    let output: Output = wait_bounded(child);
    let status = output.status;
    (status, Run::from(output))
}

/// Every name in a directory with the SHA-256 of its bytes (directories as
/// empty). SQLite's `-wal` and `-shm` files are left out: a reader may create them
/// empty, and they hold no data of their own.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap())
                .filter(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    !name.ends_with("-wal") && !name.ends_with("-shm")
                })
                .map(|entry| {
                    let bytes = fs::read(entry.path()).unwrap_or_default();
                    let hash: String = Sha256::digest(&bytes)
                        .iter()
                        .map(|byte| format!("{byte:02x}"))
                        .collect();
                    (entry.file_name().to_string_lossy().into_owned(), hash)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A withholding line of KY's JSON Lines for one of the month's agreements.
fn withholding_line(
    agreement: &sf2520::domain::Agreement,
    reference: &str,
    amount: &str,
) -> String {
    serde_json::json!({
        "type": "withholding", "reference": reference, "agreement": agreement.agreement.to_string(),
        "kommune": agreement.kommune.code(), "cpr": agreement.cpr.plain().expect("a plain CPR").digits(), "payout_date": "2026-10-20",
        "period_from": "2026-10-01", "period_to": "2026-10-19", "amount": amount,
    })
    .to_string()
}

fn temporaries(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .filter(|name| name.ends_with(".partial"))
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn check_exactly_once(data_dir: &Path, outbox: &Path) -> usize {
    let ledger = Ledger::open(data_dir).unwrap();
    assert!(ledger.verify(|_| {}).unwrap().is_ok());
    assert!(temporaries(outbox).is_empty(), "{:?}", temporaries(outbox));
    assert_exactly_once(&ledger, outbox)
}

fn file_count(data_dir: &Path) -> usize {
    Ledger::open(data_dir)
        .unwrap()
        .official_files(None)
        .unwrap()
        .len()
}

#[test]
fn a_second_export_gives_up_naming_the_first_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 11);
    let outbox = default_outbox(&data_dir);
    let first = spawn(&data_dir, &["export"]);
    let pid = first.id().to_string();
    // The first run holds the lock once its holder line names it; stopped there,
    // it holds the lock for as long as the test wants.
    wait_until("the first export to hold the lock", || {
        fs::read_to_string(data_dir.join(EXPORT_LOCK_FILE))
            .is_ok_and(|holder| holder.contains(&format!("pid {pid} ")))
    });
    signal(&first, "STOP");
    let before = snapshot(&outbox);
    for args in [
        &["export", "--lock-wait", "0"][..],
        &["export", "--kommune", "0101", "--lock-wait", "0"],
    ] {
        let (status, run) = finish(spawn(&data_dir, args));
        assert_eq!(
            status.code(),
            Some(EXIT_TRY_AGAIN),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains(&format!("another export is running (pid {pid} on ")),
            "{}",
            run.stderr
        );
        assert_eq!(snapshot(&outbox), before, "{args:?} touched the outbox");
    }
    signal(&first, "CONT");
    let (status, run) = finish(first);
    assert!(status.success(), "{}", run.stderr);
    ingest_more(&data_dir, &agreements, 1);
    sf2520(&data_dir, ["export", "--lock-wait", "0"]).expect_success("the next export");
    assert!(check_exactly_once(&data_dir, &outbox) > 98);
}

#[test]
fn exports_started_together_run_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 12);
    let outbox = default_outbox(&data_dir);
    // The test holds the export lock while both runs start, with a batch ingested
    // between their starts; then lets go.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data_dir.join(EXPORT_LOCK_FILE))
        .unwrap();
    lock.lock().unwrap();
    let first = spawn(&data_dir, &["export", "--kommune", "0101"]);
    ingest_more(&data_dir, &agreements, 2);
    let second = spawn(&data_dir, &["export", "--kommune", "0751"]);
    let third = spawn(&data_dir, &["export"]);
    drop(lock);
    for child in [first, second, third] {
        let (status, run) = finish(child);
        assert!(status.success(), "{}", run.stderr);
    }
    sf2520(&data_dir, ["export"]).expect_success("a last export");
    check_exactly_once(&data_dir, &outbox);
}

#[test]
fn an_outbox_of_another_ledger_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = month_ledger(dir.path(), 13);
    let (second, _) = month_ledger(dir.path(), 14);
    let shared = dir.path().join("shared-outbox");
    let out = shared.to_str().unwrap();
    sf2520(&first, ["export", "--out", out]).expect_success("the first ledger's export");
    let before = snapshot(&shared);
    let run = sf2520(&second, ["export", "--out", out]).expect_refusal("belongs to another ledger");
    assert!(!run.stderr.contains("removed"), "{}", run.stderr);
    assert_eq!(snapshot(&shared), before);
    assert_eq!(file_count(&second), 0, "the refused export recorded files");
    check_exactly_once(&first, &shared);
}

#[test]
fn a_foreign_sf2520_file_stops_the_export_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, _) = month_ledger(dir.path(), 15);
    let outbox = default_outbox(&data_dir);
    fs::create_dir(&outbox).unwrap();
    fs::set_permissions(&outbox, fs::Permissions::from_mode(0o700)).unwrap();
    let foreign = outbox.join("SF2520_0101_20260101_000001.txt");
    fs::write(&foreign, b"someone else's file\n").unwrap();
    for temporary in [
        ".SF2520_0101_20260101_000001.txt.partial",
        ".SF2520_0147_20260101_000001.txt.00000000000000aa-0123456789ab.partial",
    ] {
        let before = snapshot(&outbox);
        fs::write(outbox.join(temporary), b"x").unwrap();
        if temporary.contains("-0123") {
            fs::remove_file(&foreign).unwrap();
        }
        let mut expected = snapshot(&outbox);
        sf2520(&data_dir, ["export"]).expect_refusal("this ledger did not write");
        assert_eq!(
            snapshot(&outbox),
            expected,
            "the refused export changed the outbox"
        );
        assert_eq!(file_count(&data_dir), 0);
        fs::remove_file(outbox.join(temporary)).unwrap();
        expected.remove(temporary);
        let _ = before;
    }
    assert!(
        !outbox.join(OUTBOX_MARKER).exists(),
        "a refused run claimed the outbox"
    );
    sf2520(&data_dir, ["export"]).expect_success("the export once the foreign files are gone");
    check_exactly_once(&data_dir, &outbox);
}

#[test]
fn leftovers_of_interrupted_runs_are_published_or_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, _) = month_ledger(dir.path(), 16);
    let outbox = default_outbox(&data_dir);
    sf2520(&data_dir, ["export"]).expect_success("the export");
    let ledger_id = fs::read_to_string(outbox.join(OUTBOX_MARKER)).unwrap();
    let ledger_id = ledger_id.trim().rsplit(' ').next().unwrap().to_string();
    let files = Ledger::open(&data_dir)
        .unwrap()
        .official_files(None)
        .unwrap();
    let (recorded, damaged) = (&files[0].file_name, &files[1].file_name);
    let recorded_bytes = fs::read(outbox.join(recorded)).unwrap();
    let damaged_bytes = fs::read(outbox.join(damaged)).unwrap();
    // Killed between recording and renaming: the recorded bytes under a temporary name.
    fs::rename(
        outbox.join(recorded),
        outbox.join(format!(".{recorded}.{ledger_id}-deadbeef0001.partial")),
    )
    .unwrap();
    // Killed between recording and renaming, its temporary file damaged since:
    // the log renders it again, and the damaged copy goes to quarantine.
    let damaged_temporary = format!(".{damaged}.{ledger_id}-deadbeef0003.partial");
    fs::remove_file(outbox.join(damaged)).unwrap();
    fs::write(outbox.join(&damaged_temporary), b"half a file").unwrap();
    // Killed while rendering a file never recorded: goes to quarantine.
    let unrecorded = format!(".SF2520_0101_20991231_000009.txt.{ledger_id}-deadbeef0002.partial");
    fs::write(outbox.join(&unrecorded), b"half a file").unwrap();
    let run = sf2520(&data_dir, ["export"]).expect_success("the export after the faults");
    assert!(
        run.stderr.contains("recorded but not yet renamed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("its temporary file was damaged; rendered it again"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("quarantine"), "{}", run.stderr);
    assert_eq!(fs::read(outbox.join(recorded)).unwrap(), recorded_bytes);
    assert_eq!(fs::read(outbox.join(damaged)).unwrap(), damaged_bytes);
    let quarantined = outbox
        .join(QUARANTINE_DIR)
        .join(unrecorded.trim_start_matches('.'));
    assert_eq!(fs::read(quarantined).unwrap(), b"half a file");
    assert_eq!(support::cli::mode(&outbox.join(QUARANTINE_DIR)), 0o700);
    check_exactly_once(&data_dir, &outbox);
}

/// The official files in `dir` (SF2520 names, not temporary ones).
fn official_names(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .filter(|name| name.starts_with("SF2520_"))
        .collect()
}

/// Regression: a file that left the outbox after it was published (a transfer
/// agent picking files up, an operator archiving last month) was rendered again
/// into the outbox by every later export, with a WARN each, for the agent to
/// ship a second time; and `export --out NEWDIR` with nothing new filled NEWDIR
/// with every file the ledger ever recorded. Over a week of nights with a mover
/// that takes every file away after each export, each file appears in the outbox
/// exactly once and is never rendered again; a missing one is `verify`'s and
/// `status`'s finding, and `reissue` puts it back on purpose.
#[test]
fn files_taken_from_the_outbox_after_publishing_are_never_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 21);
    let outbox = default_outbox(&data_dir);
    let shipped = dir.path().join("shipped");
    fs::create_dir(&shipped).unwrap();
    let mut appearances: BTreeMap<String, usize> = BTreeMap::new();
    for night in 1..=7 {
        if night > 1 {
            ingest_more(&data_dir, &agreements, 100 + night);
        }
        let run = sf2520(&data_dir, ["export"]).expect_success("the night's export");
        assert!(!run.stderr.contains("rendered it again"), "{}", run.stderr);
        let names = official_names(&outbox);
        assert!(!names.is_empty(), "night {night} exported nothing");
        // The mover: every file to the transfer agent's side.
        for name in names {
            *appearances.entry(name.clone()).or_default() += 1;
            fs::rename(outbox.join(&name), shipped.join(&name)).unwrap();
        }
    }
    // A night with nothing new, into the outbox and into a new directory: nothing.
    sf2520(&data_dir, ["export"]).expect_success("an export with nothing new");
    assert_eq!(official_names(&outbox), Vec::<String>::new());
    let fresh = dir.path().join("fresh-outbox");
    sf2520(&data_dir, ["export", "--out", fresh.to_str().unwrap()])
        .expect_success("an export into a new directory with nothing new");
    assert_eq!(official_names(&fresh), Vec::<String>::new());

    let ledger = Ledger::open(&data_dir).unwrap();
    let files = ledger.official_files(None).unwrap();
    assert_eq!(
        appearances.len(),
        files.len(),
        "every recorded file was shipped"
    );
    let twice: Vec<_> = appearances.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        twice.is_empty(),
        "files in the outbox more than once: {twice:?}"
    );
    // What was shipped is every file once, with its recorded bytes.
    assert_exactly_once(&ledger, &shipped);

    // A published file missing from the outbox is a finding, named.
    let last = files.iter().max_by_key(|file| file.position).unwrap();
    let verify = sf2520(&data_dir, ["verify"]).expect_refusal("is missing");
    assert!(verify.stdout.contains(&last.file_name) || verify.stderr.contains(&last.file_name));
    let status = sf2520(&data_dir, ["status"]).expect_success("status");
    assert!(
        status.stdout.contains("left the outbox") && status.stdout.contains(&last.file_name),
        "{}",
        status.stdout
    );
    // `reissue` puts one back on purpose, byte for byte.
    let (kommune, sequence) = (last.kommune.code(), last.sequence.to_string());
    sf2520(
        &data_dir,
        ["reissue", "--kommune", &kommune, "--seq", &sequence],
    )
    .expect_success("reissue");
    assert_eq!(
        fs::read(outbox.join(&last.file_name)).unwrap(),
        fs::read(shipped.join(&last.file_name)).unwrap()
    );
}

fn faketime(data_dir: &Path, offset: &str, args: &[&str]) -> Run {
    let output = Command::new("faketime")
        .arg("-f")
        .arg(offset)
        .arg(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faketime (Debian's faketime package, installed by scripts/test.sh)");
    Run::from(wait_bounded(output))
}

fn first_file_created_at(data_dir: &Path, kommune: &str) -> String {
    let run = sf2520(data_dir, ["files", "--kommune", kommune, "--json"]).expect_success("files");
    let files: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    files["files"].as_array().unwrap().last().unwrap()["created_at"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_clock_stepped_back_or_running_slow_is_reported_and_not_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 17);
    let outbox = default_outbox(&data_dir);
    let batch = dir.path().join("fast.jsonl");
    // Events recorded by a clock a day fast; then the clock is corrected.
    let lines: Vec<String> = (0..5)
        .map(|i| withholding_line(&agreements[i * 7], &format!("KY-FAST-{i}"), "123.45"))
        .collect();
    fs::write(&batch, lines.join("\n") + "\n").unwrap();
    let run = faketime(&data_dir, "+1d", &["ingest", batch.to_str().unwrap()]);
    assert!(run.success, "{}", run.stderr);
    let run = sf2520(&data_dir, ["export"]).expect_success("export with the corrected clock");
    assert!(
        run.stderr
            .contains("the clock is behind the log's newest recorded-at"),
        "{}",
        run.stderr
    );
    // The file is dated from the log's time, and `--as-of` that time renders it again.
    let created_at = first_file_created_at(&data_dir, "0101");
    let again = dir.path().join("again");
    sf2520(
        &data_dir,
        [
            "export",
            "--as-of",
            &created_at,
            "--out",
            again.to_str().unwrap(),
        ],
    )
    .expect_success("export --as-of the creation time");
    let official = snapshot(&outbox);
    let rendered = snapshot(&again);
    assert!(!rendered.is_empty());
    for (name, hash) in rendered {
        assert_eq!(
            official.get(&name),
            Some(&hash),
            "{name} differs as of its time"
        );
    }
    // A clock a day slow at export time: the same.
    ingest_more(&data_dir, &agreements, 10);
    let run = faketime(&data_dir, "-1d", &["export"]);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stderr.contains("the clock is behind"), "{}", run.stderr);
    ingest_more(&data_dir, &agreements, 11);
    sf2520(&data_dir, ["export"]).expect_success("export with the clock right again");
    check_exactly_once(&data_dir, &outbox);
}

#[test]
fn a_full_disk_records_nothing_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("ledger-disk"), "16m");
    let (data_dir, agreements) = month_ledger(disk.path(), 18);
    let outbox = dir.path().join("outbox");
    let out = outbox.to_str().unwrap();
    // Only what the next writes append needs disk space: the WAL folded into the
    // database and emptied first.
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    // Room for SQLite's shared memory and the cut-off's small commit, not for the
    // commit that records the files.
    let filler = disk.fill(64 * 1024);
    let run = sf2520(&data_dir, ["export", "--out", out]).expect_refusal("full");
    assert!(!run.stderr.contains("panicked"));
    assert_eq!(file_count(&data_dir), 0, "a full disk recorded files");
    let left: Vec<String> = snapshot(&outbox)
        .into_keys()
        .filter(|name| name.contains("SF2520_"))
        .collect();
    assert!(left.is_empty(), "files left under the outbox: {left:?}");
    // Reading works on a 100 % full disk.
    let rest = disk.fill(0);
    sf2520(&data_dir, ["totals"]).expect_success("totals on a full disk");
    fs::remove_file(filler).unwrap();
    fs::remove_file(rest).unwrap();
    ingest_more(&data_dir, &agreements, 3);
    sf2520(&data_dir, ["export", "--out", out]).expect_success("the export with space again");
    check_exactly_once(&data_dir, &outbox);

    // The outbox's disk full while rendering: the temporary files are removed and
    // nothing is recorded.
    let small = Tmpfs::mount(&dir.path().join("small-outbox"), "64k");
    let small_out = small.path().join("outbox");
    ingest_more(&data_dir, &agreements, 4);
    let files_before = file_count(&data_dir);
    sf2520(&data_dir, ["export", "--out", small_out.to_str().unwrap()])
        .expect_refusal("No space left on device");
    assert_eq!(file_count(&data_dir), files_before);
    assert!(
        temporaries(&small_out).is_empty(),
        "{:?}",
        temporaries(&small_out)
    );
}

/// Starts `args`, waits for `started` to hold, sends SIGTERM and returns how the
/// run ended.
fn terminate_when(
    data_dir: &Path,
    args: &[&str],
    started: impl Fn(u32) -> bool,
) -> (ExitStatus, Run) {
    let child = spawn(data_dir, args);
    let pid = child.id();
    let mut exited = None;
    let mut child = child;
    wait_until("the run to reach the point of the signal", || {
        if started(pid) {
            return true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            return true;
        }
        false
    });
    if exited.is_none() {
        signal(&child, "TERM");
    }
    finish(child)
}

#[test]
fn sigterm_stops_ingest_export_backup_restore_and_verify_at_a_safe_point() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 19);
    let outbox = default_outbox(&data_dir);
    // Enough entries that each command runs long enough to be caught in the middle.
    let mut rng = SplitMix64::new(19);
    let mut ledger = Ledger::open(&data_dir).unwrap();
    for round in 0..4 {
        ledger
            .ingest(
                more_withholdings(&mut rng, &agreements, 100 + round, 25_000),
                IngestMode::Commit,
            )
            .unwrap()
            .accepted()
            .unwrap();
    }
    drop(ledger);
    let head = |data_dir: &Path| Ledger::open(data_dir).unwrap().head().unwrap();

    // Export, caught while its files are being rendered.
    let (status, run) =
        terminate_when(&data_dir, &["export"], |_| !temporaries(&outbox).is_empty());
    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{}", run.stderr);
    assert!(
        run.stderr.contains("stopped by SIGTERM at a safe point"),
        "{}",
        run.stderr
    );
    assert!(
        temporaries(&outbox).is_empty(),
        "{:?}",
        temporaries(&outbox)
    );
    assert_eq!(file_count(&data_dir), 0);

    // Ingest, caught inside its write transaction: rolled back.
    let lines: Vec<String> = (0..60_000)
        .map(|i| {
            withholding_line(
                &agreements[i % agreements.len()],
                &format!("KY-TERM-{i}"),
                "10.00",
            )
        })
        .collect();
    let batch = dir.path().join("big.jsonl");
    fs::write(&batch, support::ledger::lines(&lines)).unwrap();
    let before = head(&data_dir);
    let note = data_dir.join(WRITER_NOTE_FILE);
    let (status, run) = terminate_when(&data_dir, &["ingest", batch.to_str().unwrap()], |pid| {
        fs::read_to_string(&note).is_ok_and(|text| text.contains(&format!("(pid {pid} ")))
    });
    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{}", run.stderr);
    assert_eq!(head(&data_dir), before, "a stopped ingest changed the log");

    // Backup, caught while copying: its staging copy removed, no backup.
    let backup = dir.path().join("backup.sqlite3");
    let (status, run) = terminate_when(&data_dir, &["backup", backup.to_str().unwrap()], |pid| {
        dir.path()
            .join(format!(".backup.sqlite3.{pid}.partial"))
            .exists()
    });
    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{}", run.stderr);
    assert!(!backup.exists());
    let staged: Vec<String> = snapshot(dir.path())
        .into_keys()
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Verify, caught while replaying: its scratch database removed.
    let (status, run) = terminate_when(&data_dir, &["verify"], |pid| {
        data_dir
            .join(format!("verify-replay-{pid}.sqlite3"))
            .exists()
    });
    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{}", run.stderr);
    let scratch: Vec<String> = snapshot(&data_dir)
        .into_keys()
        .filter(|n| n.starts_with("verify-replay"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");

    // Restore, caught while staging the backup: the ledger is as it was.
    sf2520(&data_dir, ["backup", backup.to_str().unwrap()]).expect_success("backup");
    let (status, run) = terminate_when(&data_dir, &["restore", backup.to_str().unwrap()], |pid| {
        data_dir
            .join(format!(".restore-{pid}.sqlite3.partial"))
            .exists()
    });
    assert_eq!(status.code(), Some(EXIT_SIGTERM), "{}", run.stderr);
    assert_eq!(head(&data_dir), before);
    assert!(
        temporaries(&data_dir).is_empty(),
        "{:?}",
        temporaries(&data_dir)
    );

    sf2520(&data_dir, ["export"]).expect_success("the export after the stops");
    check_exactly_once(&data_dir, &outbox);
}

/// A month ledger in `root`, exported, then one more batch committed by the
/// ledger returned, whose connection stays open: its commit is in the WAL only.
fn exported_then_one_batch_in_the_wal(root: &Path, seed: u64) -> (PathBuf, Ledger) {
    let (data_dir, agreements) = month_ledger(root, seed);
    sf2520(&data_dir, ["export"]).expect_success("the export");
    let mut ledger = Ledger::open(&data_dir).unwrap();
    let mut rng = SplitMix64::new(seed);
    ledger
        .ingest(
            more_withholdings(&mut rng, &agreements, 5, 30),
            IngestMode::Commit,
        )
        .unwrap()
        .accepted()
        .unwrap();
    (data_dir, ledger)
}

#[test]
fn a_lost_wal_or_an_older_database_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // A batch whose commit is in the WAL only (this connection stays open, so it is
    // not folded into the database file); a copy of the database file without its
    // WAL is what a deleted -wal leaves.
    let (data_dir, ledger) = exported_then_one_batch_in_the_wal(dir.path(), 20);
    let damaged = dir.path().join("damaged");
    fs::create_dir(&damaged).unwrap();
    fs::set_permissions(&damaged, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(data_dir.join(DATABASE_FILE), damaged.join(DATABASE_FILE)).unwrap();
    fs::copy(data_dir.join(HEAD_MARK_FILE), damaged.join(HEAD_MARK_FILE)).unwrap();
    drop(ledger);
    let mark = fs::read(damaged.join(HEAD_MARK_FILE)).unwrap();
    for args in [&["verify"][..], &["totals"], &["export"], &["ingest", "-"]] {
        let before = snapshot(&damaged);
        let run = sf2520(&damaged, args).expect_refusal("committed events are missing");
        assert!(run.stderr.contains("ledger.head"), "{}", run.stderr);
        assert_eq!(snapshot(&damaged), before, "{args:?} wrote something");
    }
    assert_eq!(fs::read(damaged.join(HEAD_MARK_FILE)).unwrap(), mark);
    // Another history at the marked position is refused too.
    let (other, other_agreements) = month_ledger(dir.path(), 21);
    let marked = sf2520::ledger::read_mark(&damaged)
        .unwrap()
        .unwrap()
        .position;
    let mut round = 30;
    while Ledger::open(&other).unwrap().head().unwrap().position <= marked {
        ingest_more(&other, &other_agreements, round);
        round += 1;
    }
    fs::copy(other.join(DATABASE_FILE), damaged.join(DATABASE_FILE)).unwrap();
    sf2520(&damaged, ["totals"]).expect_refusal("its history was replaced");
    // A restore of a backup records the rollback on purpose.
    let backup = dir.path().join("backup.sqlite3");
    sf2520(&data_dir, ["backup", backup.to_str().unwrap()]).expect_success("backup");
    support::ledger::share_key_file(&data_dir, &damaged);
    sf2520(&damaged, ["restore", "--force", backup.to_str().unwrap()]).expect_success("restore");
    sf2520(&damaged, ["verify"]).expect_success("verify after the restore");
}

/// A loss that cannot be undone (the WAL holding an export's record is gone and
/// no backup has it) is accepted explicitly: `accept-loss` names the lost head and
/// the outbox file the database lacks and changes nothing; `--apply` with that
/// head typed back moves the file aside, records `LossAccepted`, and the ledger
/// verifies and exports again.
#[test]
fn a_lost_export_record_is_accepted_only_explicitly_and_then_exported_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, ledger) = exported_then_one_batch_in_the_wal(dir.path(), 22);
    // The database file without its WAL: the batch is lost. The second export is
    // recorded in the WAL only, and its files are in the outbox.
    let before_export = dir.path().join("before-export.sqlite3");
    fs::copy(data_dir.join(DATABASE_FILE), &before_export).unwrap();
    drop(ledger);
    let exported = sf2520(&data_dir, ["export", "--json"]).expect_success("the second export");
    let lost: Vec<String> = serde_json::from_str::<serde_json::Value>(exported.stdout.trim())
        .unwrap()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["file_name"].as_str().unwrap().to_string())
        .collect();
    assert!(!lost.is_empty(), "{}", exported.stdout);
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(data_dir.join(format!("{DATABASE_FILE}{suffix}")));
    }
    fs::copy(&before_export, data_dir.join(DATABASE_FILE)).unwrap();
    let refused = sf2520(&data_dir, ["export"]).expect_code(10, "an export on the older database");
    assert!(
        refused.stderr.contains("committed events are missing"),
        "{}",
        refused.stderr
    );

    // A link planted under an official name is no file of ours: never read,
    // named or moved.
    let outbox = default_outbox(&data_dir);
    let target = dir.path().join("not-ours.txt");
    fs::write(&target, "someone else's").unwrap();
    let planted = outbox.join("SF2520_0101_20260101_999999.txt");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let (apply, hash) = support::ledger::accept_loss_args(&data_dir);
    let before = snapshot(&data_dir);
    let plan = sf2520(&data_dir, ["accept-loss"]).expect_code(10, "the dry run");
    support::ledger::assert_loss_named(&plan.stdout, &hash, &lost);
    assert!(!plan.stdout.contains("999999"), "{}", plan.stdout);
    assert_eq!(snapshot(&data_dir), before, "the dry run changed nothing");
    sf2520(&data_dir, apply).expect_success("accept-loss --apply");
    assert!(fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap(), "someone else's");
    fs::remove_file(&planted).unwrap();
    for name in &lost {
        assert!(!outbox.join(name).exists(), "{name} left the outbox");
        assert!(
            outbox.join(".lost").join(name).exists(),
            "{name} kept aside"
        );
    }
    sf2520(&data_dir, ["verify"]).expect_success("verify after accepting the loss");
    sf2520(&data_dir, ["export"]).expect_success("the export after accepting the loss");
    let ledger = Ledger::open(&data_dir).unwrap();
    assert_exactly_once(&ledger, &outbox);
}

#[test]
fn two_processes_on_a_fresh_data_directory_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = (0..2)
        .map(|n| {
            let path = dir.path().join(format!("agreements-{n}.jsonl"));
            let text = support::ledger::lines(&[support::ledger::agreement(
                &format!("BA-FRESH-{n}"),
                "0101",
                support::ledger::CPR,
                "2026-01-01",
            )]);
            fs::write(&path, text).unwrap();
            path
        })
        .collect();
    for trial in 0..50 {
        let data_dir = dir.path().join(format!("fresh-{trial}"));
        // Two `init`s at once (the timer and an operator on a new machine), then
        // two ingests at once.
        for args in [vec!["init"; inputs.len()], vec!["ingest"; inputs.len()]] {
            let children: Vec<Child> = args
                .iter()
                .zip(&inputs)
                .map(|(command, input)| match *command {
                    "init" => spawn(&data_dir, &["init"]),
                    _ => spawn(&data_dir, &["ingest", input.to_str().unwrap()]),
                })
                .collect();
            for child in children {
                let (status, run) = finish(child);
                assert!(status.success(), "trial {trial}: {}", run.stderr);
            }
        }
        assert_eq!(Ledger::open(&data_dir).unwrap().head().unwrap().position, 2);
    }
}

#[test]
fn a_write_kept_waiting_names_the_holder_and_gives_up_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 22);
    let outbox = default_outbox(&data_dir);
    let batch = dir.path().join("one.jsonl");
    fs::write(
        &batch,
        support::ledger::lines(&[withholding_line(&agreements[0], "KY-WAIT-1", "10.00")]),
    )
    .unwrap();
    let mut ledger = Ledger::open(&data_dir).unwrap();
    let me = format!("(pid {} ", std::process::id());
    // This test holds the ledger's write lock while the runs try.
    ledger
        .write(|_| {
            for args in [
                &["--busy-timeout", "1", "ingest", batch.to_str().unwrap()][..],
                &["--busy-timeout", "1", "export"],
            ] {
                let (status, run) = finish(spawn(&data_dir, args));
                assert_eq!(
                    status.code(),
                    Some(EXIT_TRY_AGAIN),
                    "{args:?}: {}",
                    run.stderr
                );
                assert!(
                    run.stderr.contains("the ledger is busy: a write"),
                    "{}",
                    run.stderr
                );
                assert!(run.stderr.contains(&me), "{}", run.stderr);
                assert!(run.stderr.contains("held for"), "{}", run.stderr);
            }
            Ok(())
        })
        .unwrap();
    drop(ledger);
    assert!(temporaries(&outbox).is_empty());
    assert_eq!(file_count(&data_dir), 0);
    sf2520(&data_dir, ["ingest", batch.to_str().unwrap()]).expect_success("ingest once free");
    sf2520(&data_dir, ["export"]).expect_success("export once free");
    check_exactly_once(&data_dir, &outbox);
}

#[test]
fn directories_must_be_the_users_own_and_closed_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, _) = month_ledger(dir.path(), 23);
    // Open to others: refused with the chmod to run, and nothing created.
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let run =
        sf2520(&data_dir, ["totals"]).expect_refusal(&format!("chmod 700 {}", data_dir.display()));
    assert!(run.stderr.contains("mode 777"), "{}", run.stderr);
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
    // An outbox open to others: the export is refused before anything is written.
    let outbox = dir.path().join("loose-outbox");
    fs::create_dir(&outbox).unwrap();
    fs::set_permissions(&outbox, fs::Permissions::from_mode(0o755)).unwrap();
    sf2520(&data_dir, ["export", "--out", outbox.to_str().unwrap()]).expect_refusal("chmod 700");
    assert!(snapshot(&outbox).is_empty());
    assert_eq!(file_count(&data_dir), 0);
    // A directory that belongs to another user (root running a command in the
    // service user's directory): refused with the chown to run, nothing created.
    let foreign = if is_root() {
        let foreign = dir.path().join("service-user");
        fs::create_dir(&foreign).unwrap();
        fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        foreign
    } else {
        PathBuf::from("/usr")
    };
    let before = snapshot(&foreign);
    sf2520(&foreign, ["ingest", "-"]).expect_refusal("chown -R");
    assert_eq!(snapshot(&foreign), before);
    // A data directory we create is owner-only.
    let fresh = dir.path().join("fresh");
    sf2520(&fresh, ["demo"]).expect_success("demo");
    assert_eq!(support::cli::mode(&fresh), 0o700);
    assert_eq!(support::cli::mode(&default_outbox(&fresh)), 0o700);
}

#[test]
fn reading_commands_work_on_a_read_only_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, _) = month_ledger(dir.path(), 24);
    sf2520(&data_dir, ["export"]).expect_success("export");
    let outbox = default_outbox(&data_dir);
    let reconstructed = dir.path().join("reconstructed");
    fs::create_dir(&reconstructed).unwrap();
    let rebuilt = reconstructed.join("rebuilt.txt");
    let reads: Vec<Vec<String>> = vec![
        vec!["totals".into()],
        vec!["files".into()],
        vec!["log".into(), "--to".into(), "5".into()],
        vec!["verify".into()],
        vec![
            "reconstruct".into(),
            "--kommune".into(),
            "0101".into(),
            "--seq".into(),
            "1".into(),
            "--out".into(),
            rebuilt.display().to_string(),
        ],
    ];
    let before = snapshot(&data_dir);
    // As root, permissions do not stop writes: the reads run as another user who
    // owns the directory but may not write it.
    let user = if is_root() {
        for path in [&data_dir, &outbox, &reconstructed] {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
            for name in snapshot(path).into_keys() {
                std::os::unix::fs::chown(path.join(name), Some(65534), Some(65534)).unwrap();
            }
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        Some(65534)
    } else {
        None
    };
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o500)).unwrap();
    // The binary must be reachable by that user: a copy beside the test's files.
    let binary = dir.path().join("sf2520");
    fs::copy(env!("CARGO_BIN_EXE_sf2520"), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let run_as = |args: &[String]| -> Run {
        let mut command = match user {
            Some(uid) => {
                let mut command = Command::new("setpriv");
                command.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ]);
                command.arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .current_dir(dir.path());
        Run::from(command.output().unwrap())
    };
    for args in &reads {
        let run = run_as(args);
        assert!(
            run.success,
            "{args:?} on a read-only data directory: {}",
            run.stderr
        );
    }
    let run = run_as(&["ingest".into(), "-".into()]);
    assert!(
        !run.success && !run.stderr.contains("panicked"),
        "{}",
        run.stderr
    );
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        snapshot(&data_dir),
        before,
        "a read changed the data directory"
    );
}

#[test]
fn copies_that_sigkilled_backups_and_verifies_left_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, agreements) = month_ledger(dir.path(), 25);
    let mut rng = SplitMix64::new(25);
    let mut ledger = Ledger::open(&data_dir).unwrap();
    for round in 0..2 {
        ledger
            .ingest(
                more_withholdings(&mut rng, &agreements, 200 + round, 25_000),
                IngestMode::Commit,
            )
            .unwrap()
            .accepted()
            .unwrap();
    }
    drop(ledger);
    let backup = dir.path().join("backup.sqlite3");
    let staged = |pid: u32| dir.path().join(format!(".backup.sqlite3.{pid}.partial"));
    let scratch = |pid: u32| data_dir.join(format!("verify-replay-{pid}.sqlite3"));
    let mut left = Vec::new();
    for (args, copy) in [
        (
            vec!["backup", backup.to_str().unwrap()],
            &staged as &dyn Fn(u32) -> PathBuf,
        ),
        (vec!["verify"], &scratch),
    ] {
        let mut child = spawn(&data_dir, &args);
        let pid = child.id();
        wait_until("the run's copy to appear", || copy(pid).exists());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(copy(pid).exists(), "SIGKILL leaves the copy behind");
        left.push(copy(pid));
    }
    sf2520(&data_dir, ["verify"]).expect_success("verify");
    sf2520(&data_dir, ["backup", backup.to_str().unwrap()]).expect_success("backup");
    for copy in left {
        assert!(!copy.exists(), "{} is still there", copy.display());
    }
}
