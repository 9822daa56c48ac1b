//! The reference verifier `tools/audit/verify_ledger.py` (Python 3, standard
//! library, written from docs/log-format.md) against ledgers the binary made: it
//! passes on untouched ones and catches each tamper — a payload byte, a deleted
//! row, swapped payloads, edited projections, an edited or missing outbox file, a
//! truncated tail and a chain rewritten with recomputed hashes (the last two only
//! with an expected head) — and so does `sf2520 verify`.
//!
//! On PostgreSQL (`SF2520_TEST_BACKEND=postgres`) the binary makes the ledger in
//! a database. The reference verifier reads SQLite files only, so it reads the
//! ledger's logical copy, the SQLite ledger file `sf2520 backup` writes: an
//! untouched one must pass with the binary's head. Each tamper is then made both
//! in a copy of the database, which `sf2520 verify` must reject, and in the
//! logical copy, which the reference verifier must reject.

mod support;

use std::path::Path;
use std::process::Command;

use sf2520::ledger::{chain_hash, DATABASE_FILE};
use support::backend::{on_postgres, sql, Sql, Store, Value};
use support::cli::sf2520;
use support::format::crate_path;
use support::ledger::*;

struct Verdict {
    code: Option<i32>,
    stdout: String,
}

fn python_verify(data_dir: &Path, extra: &[&str]) -> Verdict {
    let output = Command::new("python3")
        .arg(crate_path("tools/audit/verify_ledger.py"))
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("python3 runs (scripts/install-test-deps.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Traceback"),
        "the verifier crashed: {stderr}"
    );
    Verdict {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// A ledger made by the binary: two kommuner, corrections (one in a later file),
/// two export runs and a reissue. Returns its store (the data directory and, on
/// PostgreSQL, the database) and the final head.
fn made_by_the_binary(root: &Path) -> (Store, String) {
    let data_dir = root.join("data");
    let store = Store::new(&data_dir);
    let write = |name: &str, text: String| {
        let path = root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = write(
        "first.jsonl",
        lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            agreement("BA2", "0101", CPR, "2026-01-01"),
            withholding("KY-Århus-1", "BA1", "0751", "2026-10-01", "1623.50"),
            withholding("KY-2", "BA1", "0751", "2026-10-01", "950.50"),
            withholding("KY-3", "BA2", "0101", "2026-10-01", "250.00"),
            correction("KO-1", "KY-Århus-1", "0751", "-200.00"),
        ]),
    );
    sf2520(&data_dir, ["init"]).expect_success("init");
    sf2520(&data_dir, ["ingest".as_ref(), first.as_os_str()]).expect_success("ingest");
    sf2520(&data_dir, ["export"]).expect_success("export");
    let second = write(
        "second.jsonl",
        lines(&[
            correction("KO-2", "KY-2", "0751", "50.00"),
            withholding("KY-4", "BA2", "0101", "2026-11-01", "300.00"),
        ]),
    );
    sf2520(&data_dir, ["ingest".as_ref(), second.as_os_str()]).expect_success("ingest");
    sf2520(&data_dir, ["export"]).expect_success("export");
    let reissue =
        sf2520(&data_dir, ["reissue", "--kommune", "0751", "--seq", "1"]).expect_success("reissue");
    let head = reissue
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("head: "))
        .expect("reissue prints its head")
        .to_string();
    (store, head)
}

/// A copy of the ledger (data directory with its outbox, and the database) to
/// tamper with. The data directory's head mark (`ledger.head`) is left behind:
/// whoever tampers with the database removes it too, and what an auditor has then
/// is the log itself and the heads anchored elsewhere. On PostgreSQL the copy's
/// data directory also gets the ledger's logical copy as its `ledger.sqlite3`, for
/// the reference verifier (see the top of this file).
fn copy_of(original: &Store, root: &Path, name: &str) -> Store {
    let copy = root.join(name);
    copy_dir(original.dir(), &copy);
    let store = original.copy(&copy);
    if on_postgres() {
        let file = copy.join(DATABASE_FILE);
        sf2520(original.dir(), ["backup".as_ref(), file.as_os_str()])
            .expect_success("the logical copy (sf2520 backup)");
    }
    store
}

/// Makes the same edit in every copy of the ledger `copy` holds: its database,
/// and on PostgreSQL also the logical copy the reference verifier reads (both
/// hold the same log, so the edit must find the same there). Returns what the
/// edit returned.
fn tamper<T: PartialEq + std::fmt::Debug>(copy: &Store, edit: impl Fn(&mut Sql) -> T) -> T {
    let done = edit(&mut sql(copy.dir()));
    if on_postgres() {
        let file = copy.dir().join(DATABASE_FILE);
        let mut logical = Sql::Sqlite(rusqlite::Connection::open(file).unwrap());
        assert_eq!(edit(&mut logical), done, "the logical copy differs");
    }
    done
}

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    // Owner-only, as the program requires of a data directory and an outbox.
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == sf2520::ledger::HEAD_MARK_FILE {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn position_of(conn: &mut Sql, where_clause: &str) -> i64 {
    conn.query_int(
        &format!("SELECT position FROM events WHERE {where_clause}"),
        &[],
    )
}

/// Asserts both verifiers reject `data_dir`, the Python one naming `fragment`.
fn both_reject(data_dir: &Path, extra: &[&str], fragment: &str) {
    let verdict = python_verify(data_dir, extra);
    assert_eq!(
        verdict.code,
        Some(1),
        "the verifier must fail: {}",
        verdict.stdout
    );
    assert!(
        verdict.stdout.contains(fragment),
        "expected {fragment:?} in {}",
        verdict.stdout
    );
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    sf2520(data_dir, &args).expect_refusal("DAMAGED");
}

#[test]
fn the_reference_verifier_passes_untouched_ledgers_and_catches_every_tamper() {
    let root = tempfile::tempdir().unwrap();
    let (original, head) = made_by_the_binary(root.path());

    // Untouched: passes, with the head, and prints the same head as the binary.
    let untouched = copy_of(&original, root.path(), "untouched");
    let verdict = python_verify(untouched.dir(), &["--expect-head", &head]);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stdout);
    assert!(
        verdict.stdout.contains("4 official file(s)"),
        "{}",
        verdict.stdout
    );
    assert!(
        verdict.stdout.contains(&format!("head: {head}")),
        "{}",
        verdict.stdout
    );
    sf2520(original.dir(), ["verify", "--expect-head", &head]).expect_success("sf2520 verify");

    // A payload byte: the amount of KY-2 (its last byte) changed.
    let copy = copy_of(&original, root.path(), "payload-byte");
    let position = tamper(&copy, |conn| {
        let position = position_of(conn, "stream = 'entry/0751/KY-2'");
        let rows = conn.query(
            "SELECT payload FROM events WHERE position = ?1",
            &[position.into()],
        );
        let mut payload = rows[0][0].bytes().to_vec();
        let last = payload.len() - 1;
        payload[last] ^= 0x01;
        conn.execute(
            "UPDATE events SET payload = ?1 WHERE position = ?2",
            &[payload.into(), position.into()],
        );
        position
    });
    both_reject(
        copy.dir(),
        &[],
        &format!("position {position}: hash chain broken"),
    );

    // A deleted row in the middle of the log.
    let copy = copy_of(&original, root.path(), "deleted-row");
    tamper(&copy, |conn| {
        conn.execute("DELETE FROM events WHERE position = 3", &[])
    });
    both_reject(copy.dir(), &[], "position 4: expected position 3");

    // Two payloads of the same length swapped (KY-2 and KY-3 have 4-byte references).
    let copy = copy_of(&original, root.path(), "swapped");
    let a = tamper(&copy, |conn| {
        let a = position_of(conn, "stream = 'entry/0751/KY-2'");
        let b = position_of(conn, "stream = 'entry/0101/KY-3'");
        conn.batch(&format!(
            "UPDATE events SET payload = CASE position
                 WHEN {a} THEN (SELECT payload FROM events WHERE position = {b})
                 ELSE (SELECT payload FROM events WHERE position = {a}) END
             WHERE position IN ({a}, {b});"
        ));
        a
    });
    both_reject(copy.dir(), &[], &format!("position {a}: hash chain broken"));

    // An edited projection: the files table's SHA-256, and an entries amount.
    let copy = copy_of(&original, root.path(), "files-projection");
    tamper(&copy, |conn| {
        conn.execute(
            "UPDATE files SET sha256 = ?1 WHERE kommune = 751 AND sequence = 2",
            &[Value::Bytes(vec![0; 32])],
        )
    });
    both_reject(copy.dir(), &[], "damaged projection at position");
    let copy = copy_of(&original, root.path(), "entries-projection");
    tamper(&copy, |conn| {
        conn.execute(
            "UPDATE entries SET amount_ore = amount_ore + 1 WHERE reference = 'KY-3'",
            &[],
        )
    });
    both_reject(copy.dir(), &[], "entries table row differs");

    // The outbox: an edited file, then a missing one.
    let copy = copy_of(&original, root.path(), "outbox-edited");
    let outbox = copy.dir().join("outbox");
    let name = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .find(|name| name.starts_with("SF2520_0101_"))
        .unwrap();
    let mut bytes = std::fs::read(outbox.join(&name)).unwrap();
    bytes[300] = if bytes[300] == b'5' { b'6' } else { b'5' };
    std::fs::write(outbox.join(&name), &bytes).unwrap();
    both_reject(copy.dir(), &[], "was edited");
    std::fs::remove_file(outbox.join(&name)).unwrap();
    both_reject(copy.dir(), &[], "is missing");

    // A truncated tail: the newest event gone (FileReissued, no projection row). The
    // rest is a consistent log; only the expected head shows what happened.
    let copy = copy_of(&original, root.path(), "truncated");
    let head_position = tamper(&copy, |conn| {
        let head_position = conn.query_int("SELECT MAX(position) FROM events", &[]);
        conn.execute(
            "DELETE FROM events WHERE position = ?1",
            &[head_position.into()],
        );
        conn.execute(
            "DELETE FROM deliveries WHERE position = ?1",
            &[head_position.into()],
        );
        head_position
    });
    let verdict = python_verify(copy.dir(), &[]);
    assert_eq!(
        verdict.code,
        Some(0),
        "without an anchor: {}",
        verdict.stdout
    );
    both_reject(
        copy.dir(),
        &["--expect-head", &head],
        &format!("shorter than position {head_position}"),
    );

    // A chain rewritten from an edited correction reason onwards (the reason is in
    // no file and no projection), every hash recomputed: only the expected head
    // can tell.
    let copy = copy_of(&original, root.path(), "rewritten");
    tamper(&copy, |conn| rewrite_chain_from(conn, "entry/0751/KO-1"));
    let verdict = python_verify(copy.dir(), &[]);
    assert_eq!(
        verdict.code,
        Some(0),
        "a recomputed chain is self-consistent: {}",
        verdict.stdout
    );
    sf2520(copy.dir(), ["verify"]).expect_success("self-consistent for sf2520 too");
    both_reject(
        copy.dir(),
        &["--expect-head", &head],
        "the history was rewritten",
    );
}

/// Changes the last byte of the event of `stream` and recomputes the hash
/// of every event from there to the head, as a forger with the database would.
fn rewrite_chain_from(conn: &mut Sql, stream: &str) {
    let start = position_of(conn, &format!("stream = '{stream}'"));
    let rows = conn.query(
        "SELECT hash FROM events WHERE position = ?1",
        &[(start - 1).into()],
    );
    let mut previous: [u8; 32] = rows[0][0].bytes().try_into().unwrap();
    let rows = conn.query(
        "SELECT position, event_id, stream, event_type, schema_version, recorded_at_us, payload
         FROM events WHERE position >= ?1 ORDER BY position",
        &[start.into()],
    );
    for row in rows {
        let position = row[0].int();
        let mut payload = row[6].bytes().to_vec();
        if position == start {
            // A correction's payload ends with its reason: "genberegnet" becomes
            // "genberegnev", still valid text.
            let last = payload.len() - 1;
            payload[last] ^= 0x02;
        }
        let hash = chain_hash(
            &previous,
            u64::try_from(position).unwrap(),
            &uuid::Uuid::from_slice(row[1].bytes()).unwrap(),
            row[2].text(),
            row[3].text(),
            u16::try_from(row[4].int()).unwrap(),
            row[5].int(),
            &payload,
        );
        conn.execute(
            "UPDATE events SET payload = ?1, hash = ?2 WHERE position = ?3",
            &[payload.into(), hash.to_vec().into(), position.into()],
        );
        previous = hash;
    }
    // On PostgreSQL `verify` also checks that the head row names the last event;
    // a forger with the database moves it too (the logical copy has no head row).
    if matches!(conn, Sql::Postgres(_)) {
        conn.execute(
            "UPDATE ledger_head SET hash = ?1 WHERE id = 1",
            &[previous.to_vec().into()],
        );
    }
}

#[test]
fn the_reference_verifier_decodes_every_documented_payload_vector_as_the_document_says() {
    let run = |doc: &Path| {
        Command::new("python3")
            .arg(crate_path("tools/audit/verify_ledger.py"))
            .arg("--check-vectors")
            .arg(doc)
            .output()
            .unwrap()
    };
    let doc = crate_path("docs/log-format.md");
    let output = run(&doc);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // The same document with one JSON value changed must fail: the check compares.
    let text = std::fs::read_to_string(&doc).unwrap();
    let changed = text.replacen("\"amount\":162350", "\"amount\":162351", 1);
    assert_ne!(changed, text);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("log-format.md");
    std::fs::write(&copy, changed).unwrap();
    let output = run(&copy);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("MISMATCH: WithholdingRecorded"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn the_reference_verifier_checks_a_signed_checkpoint_made_by_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (original, _) = made_by_the_binary(root.path());
    let data_dir = original.dir();
    let document =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = root.path().join("audit-key.der");
    std::fs::write(&key, document.as_ref()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        data_dir.join("sf2520.toml"),
        format!("[audit]\nsigning_key = {:?}\n", key.display().to_string()),
    )
    .unwrap();
    let checkpoint = root.path().join("head.checkpoint");
    let run = sf2520(
        data_dir,
        [
            "checkpoint".as_ref(),
            "--out".as_ref(),
            checkpoint.as_os_str(),
        ],
    )
    .expect_success("checkpoint");
    let public_key = run
        .stdout
        .split("public key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let with_checkpoint = |dir: &Path, file: &Path| {
        python_verify(
            dir,
            &[
                "--checkpoint",
                file.to_str().unwrap(),
                "--public-key",
                &public_key,
            ],
        )
    };
    let checked = copy_of(&original, root.path(), "checked");
    let verdict = with_checkpoint(checked.dir(), &checkpoint);
    assert_eq!(verdict.code, Some(0), "{}", verdict.stdout);
    // A checkpoint edited to vouch for another head: its signature fails (status 2).
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    let forged = root.path().join("forged.checkpoint");
    std::fs::write(&forged, text.replacen("head 1", "head 2", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&forged).unwrap(), text);
    assert_eq!(with_checkpoint(checked.dir(), &forged).code, Some(2));
    // The newest event removed: the signed head is no longer in the log.
    let copy = copy_of(&original, root.path(), "truncated");
    tamper(&copy, |conn| {
        conn.execute(
            "DELETE FROM events WHERE position = (SELECT MAX(position) FROM events)",
            &[],
        );
        conn.execute(
            "DELETE FROM deliveries WHERE position = (SELECT MAX(position) FROM deliveries)",
            &[],
        )
    });
    let verdict = with_checkpoint(copy.dir(), &checkpoint);
    assert_eq!(verdict.code, Some(1), "{}", verdict.stdout);
    assert!(
        verdict.stdout.contains("shorter than position"),
        "{}",
        verdict.stdout
    );
}
