//! The chain as the only authority: editing the `files` projection never makes
//! `reconstruct`, `files` or `reissue` blame a good file or trust a bad one; an
//! altered `FileExported` event is caught; `verify` checks the outbox and
//! anchored heads (`--expect-head`, `--expect-heads`).

mod support;

use rusqlite::params;
use sf2520::domain::Kommune;
use sf2520::export::{default_outbox, reconstruct, reissue, run_batch, ExportRequest, Quiet};
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
        "KY-3",
        "BA1",
        "0751",
        "2026-11-01",
        "300.00",
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
    // Whoever edits the database by hand can remove the data directory's head mark
    // (ledger.head) too; what still catches a rollback then is a head anchored
    // outside the machine, which these tests are about.
    let _ = std::fs::remove_file(data_dir.join(sf2520::ledger::HEAD_MARK_FILE));
    (t.dir, data_dir)
}

fn position_of_file(ledger: &Ledger, code: &str, sequence: u32) -> u64 {
    ledger
        .official_file(kommune(code), sequence)
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
    let run = sf2520(
        &data_dir,
        ["reconstruct", "--kommune", "0751", "--seq", "2"],
    )
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
    let expected = t.ledger.official_file(kommune("0751"), 1).unwrap();
    let (_dir, data_dir) = edit_database(
        t,
        "UPDATE files SET position = 1, record_count = 99 WHERE kommune = 751 AND sequence = 1",
    );
    let ledger = Ledger::open(&data_dir).unwrap();
    let file = ledger.official_file(kommune("0751"), 1).unwrap();
    assert_eq!(file.position, expected.position);
    assert_eq!(file.record_count, expected.record_count);
    assert_eq!(file.sha256, expected.sha256);
    let damage = file.damage.expect("reported");
    assert!(
        damage.what.contains("points at position 1"),
        "{}",
        damage.what
    );
    assert!(reconstruct(&ledger, kommune("0751"), 1).unwrap().matches());
}

#[test]
fn a_deleted_files_row_is_found_in_the_log_by_reconstruct_files_and_reissue() {
    let t = given_exported();
    let expected = t.ledger.official_file(kommune("0751"), 1).unwrap();
    let (_dir, data_dir) =
        edit_database(t, "DELETE FROM files WHERE kommune = 751 AND sequence = 1");
    let mut ledger = Ledger::open(&data_dir).unwrap();
    let files = ledger.official_files(Some(kommune("0751"))).unwrap();
    let sequences: Vec<u32> = files.iter().map(|file| file.sequence).collect();
    assert_eq!(sequences, [1, 2], "the gap is filled from the log");
    assert_eq!(files[0].sha256, expected.sha256);
    assert!(files[0].damage.as_ref().unwrap().what.contains("no row"));
    assert!(reconstruct(&ledger, kommune("0751"), 1).unwrap().matches());
    let outbox = default_outbox(&data_dir);
    std::fs::remove_file(outbox.join(&expected.file_name)).unwrap();
    let done = reissue(
        &mut ledger,
        kommune("0751"),
        1,
        &outbox,
        std::time::Duration::ZERO,
    )
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
    let error = ledger.official_files(None).unwrap_err();
    assert!(
        matches!(
            error,
            sf2520::ledger::LedgerError::FileWithoutEvent {
                sequence: 3,
                position: 2,
                ..
            }
        ),
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
    assert!(
        broken.contains(&format!("position {}", position + 1)),
        "{broken}"
    );
    sf2520(
        &data_dir,
        ["reconstruct", "--kommune", "0101", "--seq", "1"],
    )
    .expect_refusal("ALTERED");
}

/// The `head: POS:HASH` line a command printed.
fn printed_head(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("head: "))
        .unwrap_or_else(|| panic!("no head printed in {stdout}"))
        .to_string()
}

fn write_input(dir: &std::path::Path, name: &str, jsonl: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, jsonl).unwrap();
    path
}

#[test]
fn every_appending_command_prints_the_head_it_leaves_and_verify_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let input = write_input(
        dir.path(),
        "a.jsonl",
        &lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "1000.00"),
        ]),
    );
    sf2520(&data_dir, ["init"]).expect_success("init");
    let ingest = sf2520(&data_dir, ["ingest".as_ref(), input.as_os_str()]).expect_success("ingest");
    let after_ingest = printed_head(&ingest.stdout);
    assert!(after_ingest.starts_with("2:"), "{after_ingest}");
    let export = sf2520(&data_dir, ["export"]).expect_success("export");
    let after_export = printed_head(&export.stdout);
    assert!(after_export.starts_with("3:"), "{after_export}");
    let json = sf2520(&data_dir, ["export", "--json"]).expect_success("export --json");
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(
        value["head"],
        after_export.as_str(),
        "nothing new: same head"
    );
    let reissue =
        sf2520(&data_dir, ["reissue", "--kommune", "0751", "--seq", "1"]).expect_success("reissue");
    let after_reissue = printed_head(&reissue.stdout);
    assert!(after_reissue.starts_with("4:"), "{after_reissue}");

    let heads = dir.path().join("heads.txt");
    std::fs::write(
        &heads,
        format!("# journal\n{after_ingest} ingest\n\n{after_export} export\n"),
    )
    .unwrap();
    sf2520(
        &data_dir,
        [
            "verify".as_ref(),
            "--expect-head".as_ref(),
            after_reissue.as_ref(),
            "--expect-heads".as_ref(),
            heads.as_os_str(),
        ],
    )
    .expect_success("verify with anchors");
}

#[test]
fn a_rolled_back_ledger_fails_verify_expect_head_naming_the_position() {
    let t = given_exported();
    let head = sf2520::audit::Anchor::of(&t.ledger.head().unwrap()).to_string();
    let position = t.head();
    // Delete the newest event together with its projection rows: the chain that
    // remains is intact and the projections equal its replay.
    let (_dir, data_dir) = edit_database(
        t,
        &format!("DELETE FROM events WHERE position = {position}"),
    );
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    conn.execute("DELETE FROM files WHERE position = ?1", [position])
        .unwrap();
    drop(conn);
    // Without an anchor this consistent prefix passes; only the head shows.
    sf2520(&data_dir, ["verify", "--no-outbox"]).expect_success("a consistent prefix");
    let run = sf2520(&data_dir, ["verify", "--no-outbox", "--expect-head", &head])
        .expect_refusal(&format!("shorter than position {position}"));
    assert!(run.stdout.contains("DAMAGED"), "{}", run.stdout);
    // A rewritten history: same length, another hash at the anchored position.
    let forged = format!("{position}:{}", "ab".repeat(32));
    let earlier = format!("{}:{}", position - 1, "ab".repeat(32));
    sf2520(
        &data_dir,
        ["verify", "--no-outbox", "--expect-head", &earlier],
    )
    .expect_refusal(&format!("hash at position {}", position - 1));
    sf2520(&data_dir, ["verify", "--expect-head", &forged]).expect_refusal("shorter");
}

#[test]
fn verify_checks_every_official_file_in_the_outbox_against_its_event() {
    let t = given_exported();
    let data_dir = t.data_dir();
    let files = t.ledger.official_files(None).unwrap();
    drop(t.ledger);
    let outbox = default_outbox(&data_dir);
    sf2520(&data_dir, ["verify"]).expect_success("untouched outbox");
    // Edited: one byte of an amount.
    let edited = outbox.join(&files[1].file_name);
    let mut bytes = std::fs::read(&edited).unwrap();
    bytes[200] = if bytes[200] == b'1' { b'2' } else { b'1' };
    std::fs::write(&edited, bytes).unwrap();
    // Missing.
    std::fs::remove_file(outbox.join(&files[2].file_name)).unwrap();
    let run = sf2520(&data_dir, ["verify"]).expect_refusal("was edited");
    let edited_line = format!(
        "kommune {} løbenummer {}",
        files[1].kommune, files[1].sequence
    );
    let missing_line = format!(
        "kommune {} løbenummer {}",
        files[2].kommune, files[2].sequence
    );
    assert!(run.stdout.contains(&edited_line), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains(&missing_line) && line.contains("is missing")),
        "{}",
        run.stdout
    );
    // The outbox elsewhere: --outbox names it; a copy with the right bytes passes.
    let elsewhere = tempfile::tempdir().unwrap();
    for file in &files {
        let ledger = Ledger::open(&data_dir).unwrap();
        let rebuilt = reconstruct(&ledger, file.kommune, file.sequence).unwrap();
        std::fs::write(elsewhere.path().join(&file.file_name), &rebuilt.bytes).unwrap();
    }
    sf2520(
        &data_dir,
        [
            "verify".as_ref(),
            "--outbox".as_ref(),
            elsewhere.path().as_os_str(),
        ],
    )
    .expect_success("a correct outbox elsewhere");
}

#[test]
fn a_deleted_or_misdirected_entries_row_does_not_make_reconstruct_blame_a_good_file() {
    for sql in [
        // The first withholding of 0751 gone from the index.
        "DELETE FROM entries WHERE kommune = 751 AND reference = 'KY-1'",
        // The index entry moved onto the agreement's event.
        "UPDATE entries SET position = 1 WHERE kommune = 751 AND reference = 'KY-1'",
    ] {
        let t = given_exported();
        let (_dir, data_dir) = edit_database(t, sql);
        let ledger = Ledger::open(&data_dir).unwrap();
        let rebuilt = reconstruct(&ledger, kommune("0751"), 1).unwrap();
        assert!(
            rebuilt.matches(),
            "{sql}: the file is provable from the log"
        );
        let damage = rebuilt.file.damage.expect("the damaged index is reported");
        assert!(
            damage.what.contains("entries projection"),
            "{sql}: {}",
            damage.what
        );
    }
}

fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[test]
fn log_json_raw_gives_the_stored_bytes_that_rebuild_the_chain() {
    let t = given_exported();
    let data_dir = t.data_dir();
    let head = t.ledger.head().unwrap();
    drop(t.ledger);
    let run = sf2520(&data_dir, ["log", "--json", "--raw"]).expect_success("log --raw");
    let mut previous = sf2520::ledger::GENESIS_HASH;
    let mut count = 0;
    for line in run.stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let raw = &value["raw"];
        let payload = from_hex(raw["payload"].as_str().unwrap());
        let position = value["position"].as_u64().unwrap();
        let event = sf2520::ledger::decode_payload(position, &payload).unwrap();
        assert_eq!(event.type_name(), value["type"]);
        let event_id =
            uuid::Uuid::from_slice(&from_hex(raw["event_id"].as_str().unwrap())).unwrap();
        let hash = sf2520::ledger::chain_hash(
            &previous,
            position,
            &event_id,
            value["stream"].as_str().unwrap(),
            value["type"].as_str().unwrap(),
            u16::try_from(value["schema_version"].as_u64().unwrap()).unwrap(),
            raw["recorded_at_us"].as_i64().unwrap(),
            &payload,
        );
        assert_eq!(
            hex_of(&hash),
            raw["hash"].as_str().unwrap(),
            "position {position}"
        );
        previous = hash;
        count += 1;
    }
    assert_eq!(count, head.position);
    assert_eq!(previous, head.hash);
    sf2520(&data_dir, ["log", "--raw"]).expect_refusal("--json");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn demo_prints_the_head_it_leaves_after_its_export_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let run = sf2520(&data_dir, ["demo"]).expect_success("demo");
    let head = printed_head(&run.stdout);
    let summary = run
        .stdout
        .lines()
        .position(|line| line.starts_with("export: "))
        .expect("the export summary");
    let head_line = run
        .stdout
        .lines()
        .position(|line| line.starts_with("head: "))
        .unwrap();
    assert_eq!(
        head_line,
        summary + 1,
        "the head follows the summary: {}",
        run.stdout
    );
    let verify = sf2520(&data_dir, ["verify", "--json"]).expect_success("verify");
    let value: serde_json::Value = serde_json::from_str(verify.stdout.trim()).unwrap();
    assert_eq!(value["head"], head.as_str());
    assert_eq!(value["ok"], true);
}

#[test]
fn a_signed_checkpoint_vouches_for_a_head_that_a_rolled_back_ledger_no_longer_holds() {
    use std::os::unix::fs::PermissionsExt;
    let t = given_exported();
    let data_dir = t.data_dir();
    drop(t.ledger);
    let document =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = data_dir.join("audit-key.der");
    std::fs::write(&key, document.as_ref()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        data_dir.join("sf2520.toml"),
        "[audit]\nsigning_key = \"audit-key.der\"\n",
    )
    .unwrap();
    let checkpoint = data_dir.join("head.checkpoint");
    let checkpoint_args = [
        "checkpoint".as_ref(),
        "--out".as_ref(),
        checkpoint.as_os_str(),
    ];
    // Regression: a signing key others can read exited 1; the table says 6.
    sf2520(&data_dir, checkpoint_args)
        .expect_refusal("chmod 600")
        .expect_code(6, "a signing key readable by others");
    std::fs::write(data_dir.join("sf2520.toml"), "[audit]\n").unwrap();
    sf2520(&data_dir, checkpoint_args)
        .expect_refusal("has no [audit] signing_key")
        .expect_code(6, "no signing key configured");
    std::fs::write(
        data_dir.join("sf2520.toml"),
        "[audit]\nsigning_key = \"audit-key.der\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = sf2520(&data_dir, checkpoint_args).expect_success("checkpoint");
    let public_key = run
        .stdout
        .split("public key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the public key is printed")
        .to_string();
    let verify = |dir: &std::path::Path, file: &std::path::Path| {
        sf2520(
            dir,
            [
                "verify".as_ref(),
                "--no-outbox".as_ref(),
                "--checkpoint".as_ref(),
                file.as_os_str(),
                "--public-key".as_ref(),
                public_key.as_ref(),
            ],
        )
    };
    verify(&data_dir, &checkpoint).expect_success("the checkpoint verifies");
    // Someone edits the checkpoint to vouch for a shorter log: the signature fails.
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    let head_line = text.lines().nth(1).unwrap().to_string();
    let forged = data_dir.join("forged.checkpoint");
    let shorter = format!("head 1:{}", "00".repeat(32));
    std::fs::write(&forged, text.replace(&head_line, &shorter)).unwrap();
    verify(&data_dir, &forged).expect_refusal("signature does not verify");
    // The newest event deleted with its projection row: the signed head catches it.
    let position = head_line
        .strip_prefix("head ")
        .and_then(|anchor| anchor.split(':').next())
        .unwrap()
        .to_string();
    let conn = rusqlite::Connection::open(data_dir.join(DATABASE_FILE)).unwrap();
    conn.execute(
        &format!("DELETE FROM events WHERE position = {position}"),
        [],
    )
    .unwrap();
    conn.execute(
        &format!("DELETE FROM files WHERE position = {position}"),
        [],
    )
    .unwrap();
    drop(conn);
    // The head mark would name this rollback too; whoever deletes events removes it.
    std::fs::remove_file(data_dir.join(sf2520::ledger::HEAD_MARK_FILE)).unwrap();
    verify(&data_dir, &checkpoint).expect_refusal(&format!("shorter than position {position}"));
}

#[test]
fn restore_prints_the_head_it_leaves() {
    let t = given_exported();
    let data_dir = t.data_dir();
    let head = sf2520::audit::Anchor::of(&t.ledger.head().unwrap()).to_string();
    drop(t.ledger);
    let copy = t.dir.path().join("backup.sqlite3");
    sf2520(&data_dir, ["backup".as_ref(), copy.as_os_str()]).expect_success("backup");
    let run = sf2520(&data_dir, ["restore".as_ref(), copy.as_os_str()]).expect_success("restore");
    assert_eq!(printed_head(&run.stdout), head);
}
