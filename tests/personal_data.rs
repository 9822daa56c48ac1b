//! Personal data at rest and its erasure (decision 0010), through the real binary:
//! no ingested CPR is found in any byte of the ledger's files (database, WAL,
//! shared memory, a backup, PostgreSQL's data directory, `migrate`'s copy) while
//! the SF2520 files still hold them; `retention` lists without changing anything,
//! and with `--apply` leaves no trace of an erased agreement's CPR under the data
//! directory (outbox, receipts, test files included) nor of its data key in the
//! database, while `verify`, totals and the files register stay as they were and
//! rebuilding a file that held it exits 9; a key file that is missing, wrong or
//! readable by others, and a damaged data key, are refused by name.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::cli::{sf2520, Run};
use support::postgres::TestDatabase;

/// The debtor whose agreement ends in 2019 and is erased.
const OLD_CPR: &str = "0304751234";
/// A debtor whose agreement runs on.
const LIVE_CPR: &str = "1207884321";
/// A debtor whose only file is from 2019 (past retention by its own year), whose
/// agreement also runs on.
const QUIET_CPR: &str = "2802925678";

fn agreement(reference: &str, kommune: &str, cpr: &str, from: &str) -> String {
    json!({"type": "agreement", "agreement": reference, "kommune": kommune, "cpr": cpr, "valid_from": from})
        .to_string()
}

fn withholding(reference: &str, agreement: &str, kommune: &str, cpr: &str, payout: &str) -> String {
    json!({
        "type": "withholding", "reference": reference, "agreement": agreement, "kommune": kommune,
        "cpr": cpr, "payout_date": payout, "period_from": "2019-01-01", "period_to": "2019-01-31",
        "amount": "812.50",
    })
    .to_string()
}

/// `sf2520 ARGS` with the clock standing at `time` (faketime), as a night of the
/// past; on the PostgreSQL database `url` if given.
fn at(dir: &Path, url: Option<&str>, time: &str, args: &[&str]) -> Run {
    let mut command = Command::new("faketime");
    command
        .arg("-f")
        .arg(time)
        .arg(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn");
    match url {
        Some(url) => command.env("SF2520_DATABASE_URL", url),
        None => command.env_remove("SF2520_DATABASE_URL"),
    };
    command
        .output()
        .expect("faketime (installed by scripts/test.sh)")
        .into()
}

/// A ledger with a history: BA-OLD (0101) from 2018 to 2019, a withholding of it
/// exported in 2019 and a late one recorded on 2020-12-30 but exported on
/// 2021-01-02 beside BA-LIVE's first; BA-QUIET (0147) exported once in 2019; and
/// BA-LIVE's withholding of today, still waiting in the outbox.
struct History {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    /// The PostgreSQL database, when the ledger is there.
    url: Option<String>,
}

impl History {
    fn new() -> History {
        History::on(None)
    }

    fn on(url: Option<String>) -> History {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("data");
        let history = History {
            _tmp: tmp,
            root,
            dir,
            url,
        };
        history.night(
            "2019-03-01 02:00:00",
            &[
                agreement("BA-OLD", "0101", OLD_CPR, "2018-01-01"),
                agreement("BA-QUIET", "0147", QUIET_CPR, "2018-01-01"),
                withholding("W-OLD-1", "BA-OLD", "0101", OLD_CPR, "2019-02-01"),
                withholding("W-QUIET-1", "BA-QUIET", "0147", QUIET_CPR, "2019-02-01"),
            ],
        );
        history.night(
            "2019-06-01 02:00:00",
            &[json!({"type": "agreement_ended", "agreement": "BA-OLD", "kommune": "0101", "valid_to": "2019-12-31"}).to_string()],
        );
        history.ingest_at(
            "2020-12-30 02:00:00",
            &[withholding(
                "W-OLD-2",
                "BA-OLD",
                "0101",
                OLD_CPR,
                "2019-12-01",
            )],
        );
        history.night(
            "2021-01-02 02:00:00",
            &[
                agreement("BA-LIVE", "0101", LIVE_CPR, "2020-06-01"),
                withholding("W-LIVE-1", "BA-LIVE", "0101", LIVE_CPR, "2020-12-15"),
            ],
        );
        history.ingest_at(
            "2026-11-02 02:00:00",
            &[withholding(
                "W-LIVE-2",
                "BA-LIVE",
                "0101",
                LIVE_CPR,
                "2026-11-01",
            )],
        );
        history
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = Vec::new();
        if let Some(url) = &self.url {
            all.extend(["--database-url".to_string(), url.clone()]);
        }
        all.extend(args.iter().map(|arg| arg.to_string()));
        sf2520(&self.dir, all)
    }

    fn ingest_at(&self, time: &str, lines: &[String]) {
        let batch = self.root.join("batch.jsonl");
        fs::write(&batch, lines.join("\n") + "\n").unwrap();
        let url = self.url.as_deref();
        if !self.dir.join("ledger.kek").exists() {
            at(&self.dir, url, time, &["init"]).expect_success("init");
        }
        at(&self.dir, url, time, &["ingest", batch.to_str().unwrap()]).expect_success("ingest");
    }

    /// Ingest at `time`, then the batch export a few minutes later.
    fn night(&self, time: &str, lines: &[String]) {
        self.ingest_at(time, lines);
        let later = time.replace("02:00:00", "02:30:00");
        at(&self.dir, self.url.as_deref(), &later, &["export"]).expect_success("export");
    }

    /// `reconstruct --kommune KOMMUNE --seq SEQ --out OUT`.
    fn reconstruct_into(&self, kommune: &str, seq: &str, out: &Path) -> Run {
        let out = out.to_str().unwrap();
        self.run(&[
            "reconstruct",
            "--kommune",
            kommune,
            "--seq",
            seq,
            "--out",
            out,
        ])
    }

    fn json(&self, args: &[&str]) -> Value {
        let run = self.run(args).expect_success(&args.join(" "));
        serde_json::from_str(&run.stdout).unwrap()
    }
}

/// `tools/audit/verify_ledger.py DIR` (it finds the key file beside the ledger).
fn reference_verifier(dir: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(support::format::crate_path("tools/audit/verify_ledger.py"))
        .arg(dir)
        .output()
        .expect("python3 (installed by scripts/test.sh)")
}

/// Every file under `dir`, with its bytes.
fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    // A running PostgreSQL server removes files (temporary statistics, recycled
    // WAL) while they are listed: one gone by the time it is read is skipped.
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::NotFound;
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Err(error) if gone(&error) => continue,
            entries => entries.unwrap(),
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = match fs::symlink_metadata(&path) {
                Err(error) if gone(&error) => continue,
                meta => meta.unwrap(),
            };
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                match fs::read(&path) {
                    Err(error) if gone(&error) => {}
                    bytes => {
                        found.insert(path.clone(), bytes.unwrap());
                    }
                }
            }
        }
    }
    found
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|window| window == needle)
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|(_, bytes)| holds(bytes, needle))
        .map(|(path, _)| path)
        .collect()
}

fn is_sf2520_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("SF2520_") && name.ends_with(".txt"))
}

/// The wrapped data key of `agreement`, read straight from the database file.
fn wrapped_key(dir: &Path, agreement: &str) -> Option<Vec<u8>> {
    let conn = rusqlite::Connection::open(dir.join("ledger.sqlite3")).unwrap();
    conn.query_row(
        "SELECT wrapped FROM subject_keys WHERE agreement = ?1",
        [agreement],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn no_cpr_is_readable_at_rest_but_every_file_holds_its_own() {
    let history = History::new();
    let backup = history.root.join("backup.sqlite3");
    history
        .run(&["backup", backup.to_str().unwrap()])
        .expect_success("backup");
    for cpr in [OLD_CPR, LIVE_CPR, QUIET_CPR] {
        let outside_files: Vec<PathBuf> = files_holding(&history.dir, cpr.as_bytes())
            .into_iter()
            .filter(|path| !is_sf2520_file(path))
            .collect();
        assert!(
            outside_files.is_empty(),
            "{cpr} found at rest in {outside_files:?}"
        );
        assert!(
            !holds(&fs::read(&backup).unwrap(), cpr.as_bytes()),
            "{cpr} in the backup"
        );
        let in_files: Vec<PathBuf> = files_holding(&history.dir.join("outbox"), cpr.as_bytes());
        assert!(!in_files.is_empty(), "{cpr} is in no SF2520 file");
    }
    // The WAL and the shared memory exist and were searched.
    let names: Vec<String> = all_files(&history.dir)
        .keys()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    assert!(names.iter().any(|n| n == "ledger.kek"), "{names:?}");
    assert!(names.iter().any(|n| n == "ledger.sqlite3"), "{names:?}");
    // The log shows each CPR masked, opened with its key.
    let log = history.run(&["log", "--json"]).expect_success("log");
    assert!(log.stdout.contains("030475-xxxx"), "{}", log.stdout);
    assert!(!log.stdout.contains(OLD_CPR));
    let verify = history.run(&["verify"]).expect_success("verify");
    assert!(!verify.stdout.contains("plain"), "{}", verify.stdout);
}

/// The files register of `files --json` as it is, without what delivery adds later.
fn register(mut files: Value) -> Value {
    const KEPT: [&str; 8] = [
        "kommune",
        "sequence",
        "file_name",
        "sha256",
        "records",
        "plus",
        "minus",
        "net",
    ];
    for file in files["files"].as_array_mut().unwrap() {
        file.as_object_mut()
            .unwrap()
            .retain(|key, _| KEPT.contains(&key.as_str()));
    }
    files
}

/// Everything `retention` promises to leave as it was.
fn unchanged_state(history: &History) -> (Value, Value, Value) {
    let files = register(history.json(&["files", "--json"]));
    // Totals as of the head, less the head's position (the erasure is an event).
    let totals = |args: &[&str]| {
        let mut totals = history.json(args);
        totals.as_object_mut().unwrap().remove("position");
        totals
    };
    (
        files,
        totals(&["totals", "--json"]),
        totals(&["totals", "--agreement", "BA-OLD", "--json"]),
    )
}

#[test]
fn retention_erases_an_ended_agreement_and_the_files_that_hold_it_and_nothing_else() {
    let history = History::new();
    // A test file of today's pending entry (BA-LIVE), and a stray copy holding the
    // old debtor's CPR where scratch files live.
    history
        .run(&["export", "--test"])
        .expect_success("export --test");
    fs::write(
        history.dir.join("test-files").join("stray.txt"),
        format!("a copy of {OLD_CPR} somebody left here\n"),
    )
    .unwrap();
    let before = unchanged_state(&history);
    let old_key = wrapped_key(&history.dir, "BA-OLD").expect("BA-OLD has a data key");
    let head_before = history.json(&["verify", "--json"])["head"].clone();

    // The dry run names what would go and changes nothing.
    let plan = history.json(&["retention", "--json"]);
    let agreements: Vec<&str> = plan["agreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agreement"].as_str().unwrap())
        .collect();
    assert_eq!(agreements, ["BA-OLD"], "{plan:#}");
    let files: BTreeMap<String, String> = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file_name"].as_str().unwrap().to_string(),
                f["why"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(files.len(), 3, "{plan:#}");
    let why = |prefix: &str, sequence: &str| {
        files
            .iter()
            .find(|(name, _)| {
                name.starts_with(prefix) && name.ends_with(&format!("{sequence}.txt"))
            })
            .map(|(_, why)| why.clone())
            .unwrap_or_default()
    };
    assert!(
        why("SF2520_0101", "000001").contains("erased agreement(s) BA-OLD"),
        "{plan:#}"
    );
    assert!(
        why("SF2520_0101", "000002").contains("erased agreement(s) BA-OLD"),
        "{plan:#}"
    );
    assert!(
        why("SF2520_0147", "000001").contains("financial year"),
        "{plan:#}"
    );
    assert_eq!(plan["applied"], false);
    assert_eq!(wrapped_key(&history.dir, "BA-OLD").as_ref(), Some(&old_key));
    assert_eq!(
        history.json(&["verify", "--json"])["head"],
        head_before,
        "the dry run wrote"
    );
    assert!(!files_holding(&history.dir, OLD_CPR.as_bytes()).is_empty());

    let applied = history
        .run(&["retention", "--apply"])
        .expect_success("retention --apply");
    assert!(
        applied.stdout.contains("RetentionApplied at position"),
        "{}",
        applied.stdout
    );

    // No trace of the erased debtor's CPR, nor of its data key, under the data directory.
    assert_eq!(
        files_holding(&history.dir, OLD_CPR.as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(files_holding(&history.dir, &old_key), Vec::<PathBuf>::new());
    assert_eq!(wrapped_key(&history.dir, "BA-OLD"), None);
    // The test file of the live debtor's pending entry stays.
    assert!(!files_holding(&history.dir.join("test-files"), LIVE_CPR.as_bytes()).is_empty());

    // Chain, totals and register intact; the removed copies are not "missing".
    let verify = history
        .run(&["verify"])
        .expect_success("verify after retention");
    assert!(
        verify
            .stdout
            .contains("3 official file(s) left the outbox under retention"),
        "{}",
        verify.stdout
    );
    assert_eq!(unchanged_state(&history), before);

    // A file that held the erased debtor cannot be made again, and says why.
    let out = history.root.join("rebuilt.txt");
    history
        .reconstruct_into("0101", "2", &out)
        .expect_code(9, "reconstruct of a file holding an erased agreement")
        .expect_refusal("BA-OLD was erased under retention on");
    assert!(!out.exists());
    history
        .run(&["reissue", "--kommune", "0101", "--seq", "1"])
        .expect_code(9, "reissue of a file holding an erased agreement");
    // One that did not still rebuilds byte for byte.
    history
        .run(&["reconstruct", "--kommune", "0147", "--seq", "1"])
        .expect_success("reconstruct of a file past retention without erased agreements");
    let log = history.run(&["log"]).expect_success("log");
    assert!(
        log.stdout.contains("erased under retention on"),
        "{}",
        log.stdout
    );

    // Tomorrow's export goes on (BA-LIVE's pending withholding), and a second
    // retention finds nothing more.
    history
        .run(&["export"])
        .expect_success("export after retention");
    assert!(!files_holding(&history.dir.join("outbox"), LIVE_CPR.as_bytes()).is_empty());
    let again = history.json(&["retention", "--json"]);
    assert_eq!(
        again["agreements"].as_array().unwrap().len(),
        0,
        "{again:#}"
    );
}

#[test]
fn a_missing_wrong_or_open_key_file_is_refused_by_name_and_changes_nothing() {
    let history = History::new();
    let key = history.dir.join("ledger.kek");
    let saved = history.root.join("saved.kek");
    fs::rename(&key, &saved).unwrap();
    for args in [&["totals"][..], &["export"], &["ingest", "/dev/null"]] {
        history
            .run(args)
            .expect_code(6, "without the key file")
            .expect_refusal("ledger.kek does not exist");
    }
    // Another ledger's key file.
    let other = history.root.join("other");
    sf2520(&other, ["init"]).expect_success("init of another ledger");
    history
        .run(&[
            "--key-file",
            other.join("ledger.kek").to_str().unwrap(),
            "export",
        ])
        .expect_code(6, "another ledger's key file")
        .expect_refusal("is not the key file of the ledger");
    // The right one, readable by others.
    fs::rename(&saved, &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    history
        .run(&["export"])
        .expect_code(6, "a key file open to others")
        .expect_refusal("ledger.kek is open to group or others");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    history
        .run(&["verify"])
        .expect_success("verify with the key file back");
}

#[test]
fn a_damaged_data_key_names_its_agreement_and_writes_no_file() {
    let history = History::new();
    let conn = rusqlite::Connection::open(history.dir.join("ledger.sqlite3")).unwrap();
    let mut wrapped: Vec<u8> = conn
        .query_row(
            "SELECT wrapped FROM subject_keys WHERE agreement = 'BA-LIVE'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    wrapped[20] ^= 0x01;
    conn.execute(
        "UPDATE subject_keys SET wrapped = ?1 WHERE agreement = 'BA-LIVE'",
        [&wrapped],
    )
    .unwrap();
    drop(conn);
    let out = history.root.join("rebuilt.txt");
    history
        .reconstruct_into("0101", "2", &out)
        .expect_code(4, "a damaged data key")
        .expect_refusal("the personal data of agreement BA-LIVE cannot be read");
    assert!(!out.exists());
    let outbox_before = all_files(&history.dir.join("outbox"));
    history
        .run(&["export"])
        .expect_code(4, "export of an entry under a damaged key");
    assert_eq!(
        all_files(&history.dir.join("outbox")).len(),
        outbox_before.len()
    );
}

/// The files of PostgreSQL's data directory under `subdir` that hold `needle`,
/// after a checkpoint has written every page there.
fn server_files_holding(db: &TestDatabase, subdir: &str, needle: &[u8]) -> Vec<PathBuf> {
    db.client().batch_execute("CHECKPOINT").unwrap();
    files_holding(&support::postgres::data_directory().join(subdir), needle)
}

#[test]
fn on_postgresql_no_cpr_is_in_the_servers_files_nor_in_a_migrated_or_backed_up_copy() {
    let db = support::postgres::database();
    let history = History::on(Some(db.url()));
    let backup = history.root.join("logical.sqlite3");
    history
        .run(&["backup", backup.to_str().unwrap()])
        .expect_success("logical backup of a PostgreSQL ledger");
    // An embedded ledger migrated into a second database.
    let embedded = History::new();
    let target = support::postgres::database();
    let migrated =
        sf2520(&embedded.dir, ["migrate", "--to", &target.url()]).expect_success("migrate");
    // The search sees what the server wrote: the agreement references are there.
    assert!(!server_files_holding(&db, "base", b"BA-QUIET").is_empty());
    for cpr in [OLD_CPR, LIVE_CPR, QUIET_CPR] {
        assert_eq!(
            server_files_holding(&db, "", cpr.as_bytes()),
            Vec::<PathBuf>::new(),
            "{cpr}"
        );
        assert!(
            !holds(&fs::read(&backup).unwrap(), cpr.as_bytes()),
            "{cpr} in the backup"
        );
        assert!(!migrated.stdout.contains(cpr) && !migrated.stderr.contains(cpr));
        let outside: Vec<PathBuf> = files_holding(&history.dir, cpr.as_bytes())
            .into_iter()
            .filter(|path| !is_sf2520_file(path))
            .collect();
        assert!(outside.is_empty(), "{cpr} at rest in {outside:?}");
    }
    // The migrated ledger opens with the embedded one's key file, and rebuilds a file.
    let on_target = |args: &[&str]| {
        let mut all = vec!["--database-url".to_string(), target.url()];
        all.extend(args.iter().map(|arg| arg.to_string()));
        sf2520(&embedded.dir, all)
    };
    on_target(&["reconstruct", "--kommune", "0101", "--seq", "2"])
        .expect_success("reconstruct on the copy");
    // The logical backup restores into a new data directory with the key file.
    let restored = history.root.join("restored");
    fs::create_dir(&restored).unwrap();
    fs::set_permissions(&restored, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(history.dir.join("ledger.kek"), restored.join("ledger.kek")).unwrap();
    sf2520(&restored, ["restore", backup.to_str().unwrap()]).expect_success("restore");
    sf2520(
        &restored,
        ["reconstruct", "--kommune", "0101", "--seq", "2"],
    )
    .expect_success("reconstruct after restore");
}

/// The wrapped data key of `agreement` in the PostgreSQL ledger.
fn wrapped_on(db: &TestDatabase, agreement: &str) -> Option<Vec<u8>> {
    db.client()
        .query_one(
            "SELECT wrapped FROM subject_keys WHERE agreement = $1",
            &[&agreement],
        )
        .unwrap()
        .get(0)
}

#[test]
fn on_postgresql_retention_erases_the_key_from_the_tables_and_the_cpr_from_the_data_directory() {
    let db = support::postgres::database();
    let history = History::on(Some(db.url()));
    let old_key = wrapped_on(&db, "BA-OLD").expect("BA-OLD has a data key");
    let before = unchanged_state(&history);
    // The search sees the table files: the key is there before.
    assert!(!server_files_holding(&db, "base", &old_key).is_empty());
    history
        .run(&["retention", "--apply"])
        .expect_success("retention --apply");
    assert_eq!(
        files_holding(&history.dir, OLD_CPR.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // The table files hold no copy of the destroyed key (VACUUM FULL rewrote them);
    // the WAL does until the server recycles it (docs/operations.md, Retention).
    assert_eq!(
        server_files_holding(&db, "base", &old_key),
        Vec::<PathBuf>::new()
    );
    assert_eq!(wrapped_on(&db, "BA-OLD"), None);
    history
        .run(&["verify", "--no-outbox"])
        .expect_success("verify after retention");
    assert_eq!(unchanged_state(&history), before);
    history
        .run(&["reconstruct", "--kommune", "0101", "--seq", "1"])
        .expect_code(9, "reconstruct of a file holding an erased agreement");
}

/// Turns the sealed ledger in `dir` into what a version before sealing wrote:
/// every CPR in plain (envelope V1, schema version 1), the chain computed anew, no
/// data keys, no key file, no head mark (it named the sealed chain's head).
fn as_written_before_sealing(dir: &Path) {
    use sf2520::domain::{Cpr, Event, PersonalCpr};
    let cpr_of = |agreement: &str| match agreement {
        "BA-OLD" => OLD_CPR,
        "BA-LIVE" => LIVE_CPR,
        _ => QUIET_CPR,
    };
    let mut conn = rusqlite::Connection::open(dir.join("ledger.sqlite3")).unwrap();
    let tx = conn.transaction().unwrap();
    type Row = (i64, Vec<u8>, String, String, i64, Vec<u8>);
    let rows: Vec<Row> = tx
        .prepare("SELECT position, event_id, stream, event_type, recorded_at_us, payload FROM events ORDER BY position")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut previous = sf2520::ledger::GENESIS_HASH;
    for (position, id, stream, event_type, recorded_at_us, payload) in rows {
        let position = u64::try_from(position).unwrap();
        let mut event = sf2520::ledger::decode_payload(position, &payload).unwrap();
        let agreement = event
            .personal_cpr()
            .map(|(agreement, _)| agreement.to_string());
        if let Some(agreement) = agreement {
            let plain = PersonalCpr::Plain(Cpr::parse(cpr_of(&agreement)).unwrap());
            match &mut event {
                Event::AgreementRegistered(a) => a.cpr = plain,
                Event::WithholdingRecorded(w) => w.cpr = plain,
                _ => unreachable!(),
            }
        }
        let payload = sf2520::ledger::encode_payload(&event);
        let id = uuid::Uuid::from_slice(&id).unwrap();
        let hash = sf2520::ledger::chain_hash(
            &previous,
            position,
            &id,
            &stream,
            &event_type,
            1,
            recorded_at_us,
            &payload,
        );
        tx.execute(
            "UPDATE events SET payload = ?1, schema_version = 1, hash = ?2 WHERE position = ?3",
            rusqlite::params![payload, hash.to_vec(), i64::try_from(position).unwrap()],
        )
        .unwrap();
        previous = hash;
    }
    tx.execute_batch("DROP TABLE subject_keys; DELETE FROM meta WHERE key = 'key_file_id';")
        .unwrap();
    tx.commit().unwrap();
    drop(conn);
    fs::remove_file(dir.join("ledger.kek")).unwrap();
    fs::remove_file(dir.join("ledger.head")).unwrap();
}

#[test]
fn an_older_ledger_keeps_working_and_seal_copies_it_with_every_cpr_sealed() {
    let history = History::new();
    history.run(&["export"]).expect_success("export");
    as_written_before_sealing(&history.dir);
    let register_before = unchanged_state(&history).0;
    let plain_found = files_holding(&history.dir, OLD_CPR.as_bytes())
        .into_iter()
        .any(|path| path.ends_with("ledger.sqlite3"));
    assert!(plain_found, "the older ledger holds its CPRs in plain");

    // It keeps working: it verifies (with a warning), its files rebuild byte for
    // byte, the auditors' verifier rebuilds them, retention says it cannot erase.
    let verify = history
        .run(&["verify"])
        .expect_success("verify of an older ledger");
    assert!(
        verify.stdout.contains("event(s) hold a CPR in plain"),
        "{}",
        verify.stdout
    );
    for (kommune, seq) in [("0101", "1"), ("0101", "3"), ("0147", "1")] {
        history
            .run(&["reconstruct", "--kommune", kommune, "--seq", seq])
            .expect_success("reconstruct of an older ledger's file");
    }
    let audit = reference_verifier(&history.dir);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    assert!(!String::from_utf8_lossy(&audit.stdout).contains("note:"));
    history
        .run(&["retention", "--apply"])
        .expect_refusal("holds plain CPRs");

    // The sealed copy: same positions, same files, no CPR at rest, linked by its head.
    let old_head = history.json(&["verify", "--json"])["head"]
        .as_str()
        .unwrap()
        .to_string();
    let sealed_dir = history.root.join("sealed");
    let sealed = sf2520(
        &history.dir,
        ["seal", "--to", sealed_dir.to_str().unwrap(), "--json"],
    )
    .expect_success("seal");
    let report: Value = serde_json::from_str(&sealed.stdout).unwrap();
    assert_eq!(report["source_head"], old_head.as_str());
    assert_eq!(report["sealed_events"], 8, "{report:#}");
    for moved in ["outbox", "receipts", "test-files"] {
        if history.dir.join(moved).exists() {
            fs::rename(history.dir.join(moved), sealed_dir.join(moved)).unwrap();
        }
    }
    let copy = |args: &[&str]| sf2520(&sealed_dir, args);
    let verify = copy(&["verify"]).expect_success("verify of the sealed copy");
    assert!(!verify.stdout.contains("plain"), "{}", verify.stdout);
    let after = register(serde_json::from_str(&copy(&["files", "--json"]).stdout).unwrap());
    assert_eq!(after, register_before);
    for (kommune, seq) in [("0101", "1"), ("0101", "3"), ("0147", "1")] {
        copy(&["reconstruct", "--kommune", kommune, "--seq", seq])
            .expect_success("reconstruct of the copy");
    }
    for cpr in [OLD_CPR, LIVE_CPR, QUIET_CPR] {
        let outside: Vec<PathBuf> = files_holding(&sealed_dir, cpr.as_bytes())
            .into_iter()
            .filter(|path| !is_sf2520_file(path))
            .collect();
        assert!(
            outside.is_empty(),
            "{cpr} at rest in the sealed copy: {outside:?}"
        );
    }
    let log = copy(&["log", "--json"]).expect_success("log");
    assert!(
        log.stdout
            .contains(&format!("\"source_head\":\"{old_head}\"")),
        "{}",
        log.stdout
    );
    // And the copy can now erase.
    copy(&["retention"]).expect_success("retention dry run on the copy");
}
