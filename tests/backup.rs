//! Backup and restore through the real binary: backups taken while `ingest` runs
//! are consistent and restore to a ledger that verifies; restore refuses newer or
//! different ledgers (without --force), damaged backups and a ledger open
//! elsewhere; backup never overwrites by accident; everything is owner-only.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rusqlite::Connection;
use sf2520::ledger::{Head, Ledger};
use support::cli::{command, mode, sf2520};
use support::ledger::*;

const K: &str = "0751";

/// Events per batch file in the concurrent test: one agreement, fifteen withholdings.
const EVENTS_PER_BATCH: u64 = 16;
const BATCHES: usize = 300;

/// Batch `k` of [`EVENTS_PER_BATCH`] events: agreement BA-k and KY-k-1 … KY-k-15.
fn batch(k: usize) -> String {
    let mut batch = vec![agreement(&format!("BA-{k}"), K, CPR, "2026-01-01")];
    for i in 1..=EVENTS_PER_BATCH - 1 {
        batch.push(withholding(
            &format!("KY-{k}-{i}"),
            &format!("BA-{k}"),
            K,
            "2026-10-01",
            "100.00",
        ));
    }
    lines(&batch)
}

/// A ledger in `<temp>/data` holding the first `batches` batches.
fn given_a_ledger_with(batches: usize) -> TestLedger {
    let mut t = TestLedger::new();
    for k in 0..batches {
        t.given(&batch(k));
    }
    t
}

fn head_of(data_dir: &Path) -> Head {
    Ledger::open(data_dir).unwrap().head().unwrap()
}

fn assert_verifies(data_dir: &Path) {
    let verified = Ledger::open(data_dir).unwrap().verify(|_| {}).unwrap();
    assert!(verified.is_ok(), "{}: {verified:?}", data_dir.display());
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `sf2520 backup DEST`, which must succeed.
fn when_backed_up(data_dir: &Path, destination: &Path) {
    sf2520(data_dir, ["backup", path_arg(destination)]).expect_success("backup");
}

/// Names in `dir` that a run should not have left behind (staged copies, replays).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial") || name.contains("replay"))
        .collect()
}

#[test]
fn backups_taken_during_a_running_ingest_are_whole_batches_and_restore_to_a_verified_ledger() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let inputs = t.dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let files: Vec<PathBuf> = (1..BATCHES)
        .map(|k| {
            let path = inputs.join(format!("batch-{k:04}.jsonl"));
            std::fs::write(&path, batch(k)).unwrap();
            path
        })
        .collect();
    let mut ingest = command(&data_dir, [std::ffi::OsStr::new("ingest")])
        .args(&files)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let backups = t.dir.path().join("backups");
    let mut taken = Vec::new();
    while ingest.try_wait().unwrap().is_none() {
        let destination = backups.join(format!("during-{:03}.sqlite3", taken.len()));
        when_backed_up(&data_dir, &destination);
        taken.push(destination);
    }
    assert!(ingest.wait().unwrap().success(), "the ingest must succeed");
    let live = Ledger::open(&data_dir).unwrap();
    let total = live.head().unwrap().position;
    assert_eq!(total, u64::try_from(BATCHES).unwrap() * EVENTS_PER_BATCH);
    let mut during = 0;
    for (index, backup) in taken.iter().enumerate() {
        assert_eq!(mode(backup), 0o600, "{}", backup.display());
        let restored = t.dir.path().join(format!("restored-{index}"));
        support::ledger::share_key_file(&data_dir, &restored);
        sf2520(&restored, ["restore", path_arg(backup)]).expect_success("restore");
        assert_verifies(&restored);
        let head = head_of(&restored);
        // One commit is one batch: a consistent copy holds whole batches only, and
        // exactly the live log's events up to its head.
        assert_eq!(head.position % EVENTS_PER_BATCH, 0, "{}", backup.display());
        assert_eq!(head.hash, live.event_at(head.position).unwrap().hash);
        if head.position > EVENTS_PER_BATCH && head.position < total {
            during += 1;
        }
    }
    assert!(
        during > 0,
        "no backup of {} caught the ingest half-way",
        taken.len()
    );
    println!(
        "{} backups during the ingest, {during} of them half-way",
        taken.len()
    );
    assert!(leftovers(&backups).is_empty(), "{:?}", leftovers(&backups));
}

#[test]
fn restore_refuses_a_newer_ledger_without_force_and_says_how_many_events_would_be_lost() {
    let mut t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let backup = t.dir.path().join("backup.sqlite3");
    when_backed_up(&data_dir, &backup);
    t.given(&lines(&[withholding(
        "KY-9",
        "BA-0",
        K,
        "2026-10-01",
        "5.00",
    )]));
    let newer = head_of(&data_dir);

    sf2520(&data_dir, ["restore", path_arg(&backup)]).expect_refusal(
        "the ledger has 17 event(s), the backup only 16: restoring would lose the 1 newest \
         (positions 17..=17: 1 WithholdingRecorded)",
    );
    assert_eq!(
        head_of(&data_dir),
        newer,
        "a refused restore changed the ledger"
    );

    drop(t.ledger);
    let forced = sf2520(&data_dir, ["restore", "--force", path_arg(&backup)])
        .expect_success("forced restore");
    assert!(
        forced.stdout.contains("forced: 1 event(s)"),
        "{}",
        forced.stdout
    );
    assert_eq!(head_of(&data_dir).position, 16);
    assert_verifies(&data_dir);
    let aside: Vec<PathBuf> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "the replaced ledger is kept: {aside:?}");
    assert_eq!(mode(&aside[0]), 0o600);
    let kept = Ledger::open_copy(&aside[0]).unwrap();
    assert_eq!(
        kept.head().unwrap(),
        newer,
        "the kept ledger is the replaced one"
    );
}

#[test]
fn restore_warns_that_files_made_after_the_backup_would_be_numbered_again() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let backup = t.dir.path().join("backup.sqlite3");
    when_backed_up(&data_dir, &backup);
    sf2520(&data_dir, ["export"]).expect_success("export");
    sf2520(&data_dir, ["restore", path_arg(&backup)])
        .expect_refusal("1 FileExported; SF2520 files were made or sent after the backup");
}

#[test]
fn restore_refuses_a_ledger_with_a_different_history() {
    let t = given_a_ledger_with(2);
    let other = given_a_ledger_with(1);
    let backup = t.dir.path().join("other.sqlite3");
    when_backed_up(&other.data_dir(), &backup);
    let before = head_of(&t.data_dir());
    sf2520(&t.data_dir(), ["restore", path_arg(&backup)]).expect_refusal(
        "the ledger and the backup hold different histories from position 1 on \
         (ledger: 32 event(s), backup: 16)",
    );
    assert_eq!(head_of(&t.data_dir()), before);
}

#[test]
fn restore_of_a_backup_that_extends_the_ledger_needs_no_force() {
    let mut t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let older = t.dir.path().join("older.sqlite3");
    when_backed_up(&data_dir, &older);
    t.given(&batch(1));
    let newer = t.dir.path().join("newer.sqlite3");
    when_backed_up(&data_dir, &newer);
    drop(t.ledger);
    sf2520(&data_dir, ["restore", "--force", path_arg(&older)]).expect_success("back");
    let run = sf2520(&data_dir, ["restore", path_arg(&newer)]).expect_success("forward");
    assert!(
        run.stdout
            .contains("the ledger it replaced had 16 event(s)"),
        "{}",
        run.stdout
    );
    assert_eq!(head_of(&data_dir).position, 32);
    assert_verifies(&data_dir);
}

/// A change made to a copy of a backup.
type Tamper = Box<dyn FnOnce(&Connection)>;

/// Copies the backup and changes the copy with `tamper`.
fn tampered(backup: &Path, name: &str, tamper: impl FnOnce(&Connection)) -> PathBuf {
    let copy = backup.with_file_name(name);
    std::fs::copy(backup, &copy).unwrap();
    tamper(&Connection::open(&copy).unwrap());
    copy
}

fn sql(statements: &'static str) -> impl FnOnce(&Connection) {
    move |conn| conn.execute_batch(statements).unwrap()
}

/// Flips one bit in the last byte of the payload at `position`.
fn flip_payload_bit(position: i64) -> impl FnOnce(&Connection) {
    move |conn| {
        let mut payload: Vec<u8> = conn
            .query_row(
                "SELECT payload FROM events WHERE position = ?1",
                [position],
                |row| row.get(0),
            )
            .unwrap();
        *payload.last_mut().unwrap() ^= 1;
        conn.execute(
            "UPDATE events SET payload = ?1 WHERE position = ?2",
            rusqlite::params![payload, position],
        )
        .unwrap();
    }
}

#[test]
fn restore_refuses_a_damaged_backup_naming_the_first_bad_position() {
    let t = given_a_ledger_with(2);
    let data_dir = t.data_dir();
    let backup = t.dir.path().join("backup.sqlite3");
    when_backed_up(&data_dir, &backup);
    let before = head_of(&data_dir);
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "payload.sqlite3",
            Box::new(flip_payload_bit(20)),
            "position 20: hash chain broken",
        ),
        (
            "gap.sqlite3",
            Box::new(sql("DELETE FROM events WHERE position = 7")),
            "position 8: expected position 7 (a gap in the log)",
        ),
        (
            "column.sqlite3",
            Box::new(sql("UPDATE events SET payload = 'text' WHERE position = 3")),
            "position 3: the stored row cannot be read",
        ),
        (
            "projection.sqlite3",
            Box::new(sql(
                "UPDATE entries SET amount_ore = amount_ore + 1 WHERE reference = 'KY-1-1'",
            )),
            "projection table entries differs from a replay",
        ),
        (
            "index.sqlite3",
            // An index that no longer matches its table: only SQLite's own
            // integrity check sees this.
            Box::new(sql("PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema SET sql = replace(sql, '(kommune, reference)', '(reference, kommune)')
                 WHERE name = 'entries_by_reference';")),
            "integrity check",
        ),
        (
            "not-a-ledger.sqlite3",
            Box::new(sql("DROP TABLE meta")),
            "is not a ledger",
        ),
    ];
    for (name, tamper, expected) in cases {
        let damaged = tampered(&backup, name, tamper);
        sf2520(&data_dir, ["restore", "--force", path_arg(&damaged)]).expect_refusal(expected);
        assert_eq!(head_of(&data_dir), before, "{name} changed the ledger");
    }
    std::fs::write(
        t.dir.path().join("garbage.sqlite3"),
        b"not a database at all",
    )
    .unwrap();
    sf2520(&data_dir, ["restore", "--force", "garbage.sqlite3"]).expect_refusal("is not a ledger");
    assert_eq!(head_of(&data_dir), before);
    assert!(
        leftovers(&data_dir).is_empty(),
        "{:?}",
        leftovers(&data_dir)
    );
}

#[test]
fn restore_over_an_unreadable_ledger_needs_force_and_keeps_the_old_file() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let backup = t.dir.path().join("backup.sqlite3");
    when_backed_up(&data_dir, &backup);
    drop(t.ledger);
    let database = data_dir.join("ledger.sqlite3");
    std::fs::write(&database, b"overwritten by something else").unwrap();
    sf2520(&data_dir, ["restore", path_arg(&backup)])
        .expect_refusal("cannot be read (cannot open ledger database");
    assert_eq!(
        std::fs::read(&database).unwrap(),
        b"overwritten by something else"
    );
    sf2520(&data_dir, ["restore", "--force", path_arg(&backup)]).expect_success("forced");
    assert_eq!(head_of(&data_dir).position, EVENTS_PER_BATCH);
    assert_verifies(&data_dir);
    let kept: Vec<Vec<u8>> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains(".replaced-"))
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert_eq!(kept, [b"overwritten by something else".to_vec()]);
}

#[test]
fn restore_refuses_while_another_process_has_the_ledger_open() {
    let mut t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let backup = t.dir.path().join("backup.sqlite3");
    when_backed_up(&data_dir, &backup);
    t.given(&batch(1));
    let before = t.ledger.head().unwrap();
    // This test process is "another process" with an open connection.
    sf2520(&data_dir, ["restore", "--force", path_arg(&backup)])
        .expect_refusal("is open in another process");
    assert_eq!(t.ledger.head().unwrap(), before);
    drop(t.ledger);
    sf2520(&data_dir, ["restore", "--force", path_arg(&backup)]).expect_success("restore");
}

#[test]
fn backup_refuses_to_overwrite_an_existing_file_unless_forced() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let destination = t.dir.path().join("precious.sqlite3");
    std::fs::write(&destination, "keep me").unwrap();
    sf2520(&data_dir, ["backup", path_arg(&destination)]).expect_refusal("already exists");
    assert_eq!(std::fs::read_to_string(&destination).unwrap(), "keep me");

    let run = sf2520(&data_dir, ["backup", "--force", path_arg(&destination)])
        .expect_success("forced backup");
    let head = t.ledger.head().unwrap();
    assert!(run.stdout.contains("backup: 16 event(s)"), "{}", run.stdout);
    let copy = Ledger::open_copy(&destination).unwrap();
    assert_eq!(copy.head().unwrap(), head);
    assert!(copy.verify(|_| {}).unwrap().is_ok());
    assert_eq!(mode(&destination), 0o600);
}

/// The pid of a process that has ended (a child that ran `true`), as a killed
/// run's pid would be.
fn a_dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Regression: a backup killed with SIGKILL left `.NAME.<pid>.partial-journal`
/// (SQLite's rollback journal of the staged copy: pages of the ledger, with CPR
/// numbers) that no later run removed; only the `.partial` was removed.
#[test]
fn a_backup_removes_the_staged_copy_and_its_journal_that_a_killed_run_left() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let dir = t.dir.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let pid = a_dead_pid();
    let partial = dir.join(format!(".ledger.sqlite3.{pid}.partial"));
    let journal = dir.join(format!(".ledger.sqlite3.{pid}.partial-journal"));
    std::fs::write(&partial, "pages of the ledger").unwrap();
    std::fs::write(&journal, "pages of the ledger").unwrap();
    // Another backup's files, and a file of another name, are not this run's to remove.
    let other = dir.join(format!(".other.sqlite3.{pid}.partial-journal"));
    std::fs::write(&other, "not ours").unwrap();
    when_backed_up(&data_dir, &dir.join("ledger.sqlite3"));
    assert!(!partial.exists(), "the killed run's copy is left");
    assert!(!journal.exists(), "the killed run's journal is left");
    assert!(other.exists(), "another backup's leftover was removed");
}

#[test]
fn backup_refuses_to_write_over_the_ledger_itself_even_when_forced() {
    let t = given_a_ledger_with(1);
    let data_dir = t.data_dir();
    let before = t.ledger.head().unwrap();
    for name in ["ledger.sqlite3", "ledger.sqlite3-wal", "./ledger.sqlite3"] {
        let destination = data_dir.join(name);
        sf2520(&data_dir, ["backup", "--force", path_arg(&destination)])
            .expect_refusal("is the ledger's own database");
    }
    assert_eq!(t.ledger.head().unwrap(), before);
    assert_verifies(&data_dir);
}

#[test]
fn backup_of_a_missing_ledger_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    sf2520(&data_dir, ["backup", "out.sqlite3"]).expect_refusal("no ledger in");
    assert!(!data_dir.exists());
    assert!(!dir.path().join("out.sqlite3").exists());
}

#[test]
fn backups_and_restored_ledgers_are_owner_only_even_under_umask_000() {
    let t = given_a_ledger_with(1);
    let backup_dir = t.dir.path().join("new-backup-dir");
    let backup = backup_dir.join("backup.sqlite3");
    when_backed_up(&t.data_dir(), &backup);
    assert_eq!(mode(&backup_dir), 0o700, "a backup directory it creates");
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(
        std::fs::read_dir(&backup_dir).unwrap().count(),
        1,
        "only the backup itself: no -wal, -shm or staged file"
    );
    let restored = t.dir.path().join("fresh/data");
    let fresh = t.dir.path().join("fresh");
    // The key file is kept apart from the backups: named, not copied, so that every
    // directory here is one the restore made.
    let key_file = t.data_dir().join(sf2520::ledger::KEY_FILE);
    let key_file = key_file.to_str().unwrap();
    sf2520(
        &restored,
        ["--key-file", key_file, "restore", path_arg(&backup)],
    )
    .expect_success("restore");
    support::ledger::share_key_file(&t.data_dir(), &restored);
    assert_eq!(mode(&fresh), 0o700, "every directory it creates");
    assert_eq!(mode(&restored), 0o700);
    assert_eq!(mode(&restored.join("ledger.sqlite3")), 0o600);
    assert_eq!(head_of(&restored), t.ledger.head().unwrap());
    assert!(
        leftovers(&restored).is_empty(),
        "{:?}",
        leftovers(&restored)
    );
}
