//! The chain as the only authority: editing the `files` projection never makes
//! `reconstruct`, `files` or `reissue` blame a good file or trust a bad one; an
//! altered `FileExported` event is caught; `verify` checks the outbox and
//! anchored heads (`--expect-head`, `--expect-heads`).

mod support;

use rusqlite::params;
use sf2520::domain::Kommune;
use sf2520::export::{
    default_outbox, official_file, official_files, reconstruct, reissue, run_batch, ExportError,
    ExportRequest, Quiet,
};
use sf2520::ledger::{Ledger, DATABASE_FILE};
use support::cli::sf2520;
use support::ledger::*;

fn kommune(code: &str) -> Kommune {
    Kommune::parse(code).unwrap()
}

/// Two kommuner; 0751 has two files (løbenumre 1 and 2), 0101 one.
fn given_exported() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", "0751", CPR, "2026-01-01"),
        agreement("BA2", "0101", CPR, "2026-01-01"),
        withholding("KY-1", "BA1", "0751", "2026-10-01", "1000.00"),
        withholding("KY-2", "BA2", "0101", "2026-10-01", "250.50"),
    ]));
    export(&mut t);
    t.given(&lines(&[withholding(
        "KY-3", "BA1", "0751", "2026-11-01", "300.00",
    )]));
    export(&mut t);
    t
}

fn export(t: &mut TestLedger) {
    let outbox = default_outbox(&t.data_dir());
    run_batch(&mut t.ledger, &ExportRequest::default(), &outbox, &Quiet).unwrap();
}

/// Runs SQL against the closed ledger file, as someone with `sqlite3` would.
fn edit_database(t: TestLedger, sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let data_dir = t.data_dir();
    drop(t.ledger);
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    let changed = conn.execute(sql, params![]).unwrap();
    assert!(changed > 0, "the edit {sql:?} changed nothing");
    drop(conn);
    (t.dir, data_dir)
}

fn position_of_file(ledger: &Ledger, code: &str, sequence: u32) -> u64 {
    official_file(ledger.connection(), kommune(code), sequence)
        .unwrap()
        .position
}

#[test]
fn an_edited_sha256_in_the_files_projection_does_not_make_reconstruct_blame_a_good_file() {
    let t = given_exported();
    let position = position_of_file(&t.ledger, "0751", 2);
    // Regression: reconstruct compared with files.sha256, so this edit made it
    // report a MISMATCH for a file the log still proves.
    let (_dir, data_dir) = edit_database(
        t,
        "UPDATE files SET sha256 = zeroblob(32) WHERE kommune = 751 AND sequence = 2",
    );
    let ledger = Ledger::open(&data_dir).unwrap();
    let rebuilt = reconstruct(&ledger, kommune("0751"), 2).unwrap();
    assert!(rebuilt.matches(), "the file is still provable from the log");
    let damage = rebuilt.file.damage.expect("the damaged row is reported");
    assert_eq!(damage.position, position);
    assert!(damage.what.contains("sha256"), "{}", damage.what);
    let run = sf2520(&data_dir, ["reconstruct", "--kommune", "0751", "--seq", "2"])
        .expect_success("reconstruct");
    assert!(
        run.stdout
            .contains(&format!("damaged projection at position {position}")),
        "{}",
        run.stdout
    );
}

#[test]
fn a_files_row_pointing_at_another_position_is_reported_and_the_event_is_used() {
    let t = given_exported();
    let expected = official_file(t.ledger.connection(), kommune("0751"), 1).unwrap();
    let (_dir, data_dir) = edit_database(
        t,
        "UPDATE files SET position = 1, record_count = 99 WHERE kommune = 751 AND sequence = 1",
    );
    let ledger = Ledger::open(&data_dir).unwrap();
    let file = official_file(ledger.connection(), kommune("0751"), 1).unwrap();
    assert_eq!(file.position, expected.position);
    assert_eq!(file.record_count, expected.record_count);
    assert_eq!(file.sha256, expected.sha256);
    let damage = file.damage.expect("reported");
    assert!(damage.what.contains("points at position 1"), "{}", damage.what);
    assert!(reconstruct(&ledger, kommune("0751"), 1).unwrap().matches());
}

#[test]
fn a_deleted_files_row_is_found_in_the_log_by_reconstruct_files_and_reissue() {
    let t = given_exported();
    let expected = official_file(t.ledger.connection(), kommune("0751"), 1).unwrap();
    let (_dir, data_dir) =
        edit_database(t, "DELETE FROM files WHERE kommune = 751 AND sequence = 1");
    let mut ledger = Ledger::open(&data_dir).unwrap();
    let files = official_files(ledger.connection(), Some(kommune("0751"))).unwrap();
    let sequences: Vec<u32> = files.iter().map(|file| file.sequence).collect();
    assert_eq!(sequences, [1, 2], "the gap is filled from the log");
    assert_eq!(files[0].sha256, expected.sha256);
    assert!(files[0].damage.as_ref().unwrap().what.contains("no row"));
    assert!(reconstruct(&ledger, kommune("0751"), 1).unwrap().matches());
    let outbox = default_outbox(&data_dir);
    std::fs::remove_file(outbox.join(&expected.file_name)).unwrap();
    let done = reissue(&mut ledger, kommune("0751"), 1, &outbox)
        .unwrap()
        .expect("reissued from the event");
    assert_eq!(done.written.sha256, expected.sha256);
}

#[test]
fn a_files_row_with_no_event_is_an_error_not_an_official_file() {
    let t = given_exported();
    let (_dir, data_dir) = edit_database(
        t,
        "INSERT INTO files SELECT kommune, 3, 2, file_id, 'FORGED.txt', created_at_us,
             previous_cutoff_position, cutoff_position, test_marker, record_count, plus_ore,
             minus_ore, sha256 FROM files WHERE kommune = 751 AND sequence = 2",
    );
    let ledger = Ledger::open(&data_dir).unwrap();
    let error = official_files(ledger.connection(), None).unwrap_err();
    assert!(
        matches!(error, ExportError::FileWithoutEvent { sequence: 3, position: 2, .. }),
        "{error}"
    );
}

#[test]
fn an_altered_file_exported_event_is_caught_by_reconstruct_even_with_its_hash_recomputed() {
    let t = given_exported();
    let position = position_of_file(&t.ledger, "0101", 1);
    let data_dir = t.data_dir();
    let event = t.ledger.event_at(position).unwrap();
    let previous = t.ledger.event_at(position - 1).unwrap().hash;
    drop(t.ledger);
    // Change one byte of the recorded SHA-256 inside the payload (its last 32
    // bytes) and recompute this event's hash, so only the next link is broken.
    let mut payload = event.payload.clone();
    let last = payload.len() - 1;
    payload[last] ^= 1;
    let forged = sf2520::ledger::chain_hash(
        &previous,
        event.position,
        &event.event_id,
        &event.stream,
        &event.event_type,
        event.schema_version,
        event.recorded_at_us,
        &payload,
    );
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    conn.execute(
        "UPDATE events SET payload = ?1, hash = ?2 WHERE position = ?3",
        params![payload, &forged[..], i64::try_from(position).unwrap()],
    )
    .unwrap();
    conn.execute(
        "UPDATE files SET sha256 = ?1 WHERE kommune = 101 AND sequence = 1",
        params![&payload[last - 31..]],
    )
    .unwrap();
    drop(conn);
    let ledger = Ledger::open(&data_dir).unwrap();
    // Regression: reconstruct said the file "equals the one recorded" when the
    // record itself had been edited to match something else.
    let rebuilt = reconstruct(&ledger, kommune("0101"), 1).unwrap();
    assert!(!rebuilt.matches());
    let broken = rebuilt.broken_link.expect("the chain link is checked");
    assert!(broken.contains(&format!("position {}", position + 1)), "{broken}");
    sf2520(&data_dir, ["reconstruct", "--kommune", "0101", "--seq", "1"])
        .expect_refusal("ALTERED");
}
