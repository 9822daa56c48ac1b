//! The PostgreSQL backend against a real server the harness starts
//! (`support::postgres`): the same CLI scenario gives the same files byte for byte
//! as on SQLite; a migrated demo ledger has the same head and verifies there; a
//! rejected batch writes nothing; a database behind a node's last head is refused;
//! and three `sf2520` processes on one database at once (overlapping ingests, two
//! exports) leave gapless positions, a chain that verifies, each entry in exactly
//! one file and gapless løbenumre.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use sf2520::ledger::{Ledger, Location};
use support::backend::Backend;
use support::cli::{command, sf2520, Run};
use support::ledger::*;
use support::postgres::{database, TestDatabase};

/// `sf2520 --data-dir DIR --database-url URL ARGS...`.
fn on_pg(dir: &Path, db: &TestDatabase, args: &[&str]) -> Run {
    let mut all = vec!["--database-url".to_string(), db.url()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    sf2520(dir, all)
}

/// The same, under a frozen clock.
fn frozen(dir: &Path, url: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new("faketime");
    // Absolute and without `@`: the clock stands still.
    command
        .arg("-f")
        .arg("2026-11-02 03:00:00")
        .arg(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(dir);
    if let Some(url) = url {
        command.arg("--database-url").arg(url);
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("faketime (installed by scripts/test.sh)")
        .into()
}

fn open_pg(dir: &Path, db: &TestDatabase) -> Ledger {
    let location = Location {
        dir: dir.to_path_buf(),
        database: Some(sf2520::ledger::DatabaseUrl::parse(&db.url()).unwrap()),
    };
    Ledger::open_at(&location, false, sf2520::ledger::DEFAULT_TOTALS_BLOCK).unwrap()
}

fn outbox_files(outbox: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(outbox)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn the_demo_gives_the_same_files_byte_for_byte_on_both_backends() {
    let root = tempfile::tempdir().unwrap();
    let (lite, pg) = (root.path().join("lite"), root.path().join("pg"));
    let db = database();
    frozen(&lite, None, &["demo"]).expect_success("demo on SQLite");
    frozen(&pg, Some(&db.url()), &["demo"]).expect_success("demo on PostgreSQL");
    let (ours, theirs) = (
        outbox_files(&lite.join("outbox")),
        outbox_files(&pg.join("outbox")),
    );
    assert_eq!(ours.len(), 98, "one file per kommune");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &ours {
        assert!(
            theirs[name] == *bytes,
            "{name} differs between the backends"
        );
    }
    // The totals and the register agree too.
    let totals = |dir: &Path, url: Option<&str>| frozen(dir, url, &["totals"]).stdout;
    assert_eq!(totals(&lite, None), totals(&pg, Some(&db.url())));
    on_pg(&pg, &db, &["verify"]).expect_success("verify on PostgreSQL");
}

#[test]
fn a_migrated_demo_ledger_has_the_same_head_and_verifies_there() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    sf2520(&dir, ["demo"]).expect_success("demo");
    let head = Ledger::open(&dir).unwrap().head().unwrap();
    let db = database();
    let run = sf2520(&dir, ["migrate", "--to", &db.url(), "--json"]).expect_success("migrate");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["head"]["position"], head.position);
    let migrated = open_pg(&dir, &db).head().unwrap();
    assert_eq!(migrated, head, "the copy has the source's head");
    on_pg(
        &dir,
        &db,
        &[
            "verify",
            "--expect-head",
            &format!("{}:{}", head.position, hex(&head.hash)),
        ],
    )
    .expect_success("verify on PostgreSQL");
    // The same outbox is this ledger's (same identity): an export there finds
    // nothing new and touches nothing.
    on_pg(&dir, &db, &["export"]).expect_success("export after migrate");
    // A second migration into the same database is refused, and changes nothing.
    sf2520(&dir, ["migrate", "--to", &db.url()]).expect_refusal("is not empty");
    assert_eq!(open_pg(&dir, &db).head().unwrap(), head);
}

#[test]
fn a_rejected_batch_writes_nothing_on_postgres() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let db = database();
    on_pg(&dir, &db, &["init"]).expect_success("init");
    let batch = root.path().join("batch.jsonl");
    std::fs::write(
        &batch,
        lines(&[
            agreement("A-1", "0101", CPR, "2026-01-01"),
            withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
            withholding("W-2", "A-404", "0101", "2026-10-01", "100.00"),
        ]),
    )
    .unwrap();
    on_pg(&dir, &db, &["ingest", batch.to_str().unwrap()]).expect_code(3, "a rejected line");
    assert_eq!(open_pg(&dir, &db).head().unwrap().position, 0);
    let mut client = db.client();
    let events: i64 = client
        .query_one("SELECT COUNT(*) FROM events", &[])
        .unwrap()
        .get(0);
    let entries: i64 = client
        .query_one("SELECT COUNT(*) FROM entries", &[])
        .unwrap()
        .get(0);
    assert_eq!((events, entries), (0, 0), "nothing of the batch is left");
}

/// On PostgreSQL the rules read a batch's references in one query up front and
/// its writes wait to be sent together; what they see must still be exactly what
/// SQLite's line-by-line reads see: an agreement registered earlier in the same
/// batch, a withholding's net after corrections in the same batch and in earlier
/// ones, a repeated line, a reference already taken. Totals blocks of 4 positions
/// make the batches cross many block ends too.
#[test]
fn the_rules_see_a_batchs_own_lines_and_earlier_batches_alike_on_both_backends() {
    let mut pg = TestLedger::on(Backend::Postgres, 4);
    let mut lite = TestLedger::on(Backend::Sqlite, 4);
    let batches = [
        // Rejected as a whole: the second correction takes W-1's net below zero,
        // counting the first correction of the same batch.
        lines(&[
            agreement("A-1", "0101", CPR, "2026-01-01"),
            withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
            correction("C-1", "W-1", "0101", "-60.00"),
            correction("C-2", "W-1", "0101", "-50.00"),
        ]),
        // Committed: the same without C-2, a repeated line, a second agreement and
        // its withholding, a correction of a withholding of this batch.
        lines(&[
            agreement("A-1", "0101", CPR, "2026-01-01"),
            withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
            correction("C-1", "W-1", "0101", "-60.00"),
            withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
            agreement("A-2", "0147", CPR, "2026-01-01"),
            withholding("W-2", "A-2", "0147", "2026-10-01", "250.00"),
            correction("C-3", "W-2", "0147", "25.00"),
        ]),
        // Rejected: W-1's net is 40.00 from the earlier batch; a reference taken by
        // a withholding cannot name a different one.
        lines(&[
            correction("C-4", "W-1", "0101", "-40.01"),
            withholding("C-1", "A-1", "0101", "2026-10-01", "10.00"),
        ]),
        // Committed: down to exactly zero, then up again in the same batch; C-3
        // repeated; a withholding of an agreement unknown to this batch's reads
        // until now.
        lines(&[
            correction("C-5", "W-1", "0101", "-40.00"),
            correction("C-6", "W-1", "0101", "5.00"),
            correction("C-3", "W-2", "0147", "25.00"),
            withholding("W-3", "A-2", "0147", "2026-10-15", "75.00"),
        ]),
    ];
    for (at, batch) in batches.iter().enumerate() {
        let on_pg = pg.ingest(batch);
        let on_sqlite = lite.ingest(batch);
        match (&on_pg, &on_sqlite) {
            (Ok(pg_report), Ok(sqlite_report)) => {
                assert_eq!(pg_report.lines, sqlite_report.lines, "batch {at}");
                assert_eq!(pg_report.head.hash.len(), 32);
            }
            (Err(pg_rejected), Err(sqlite_rejected)) => {
                assert_eq!(pg_rejected, sqlite_rejected, "batch {at}");
            }
            _ => panic!("batch {at}: PostgreSQL {on_pg:?}, SQLite {on_sqlite:?}"),
        }
    }
    assert!(lite.ingest(&batches[0]).is_err() && lite.ingest(&batches[2]).is_err());
    let head = pg.head();
    assert_eq!(head, lite.head());
    assert_eq!(
        head, 9,
        "two agreements, three withholdings, four corrections"
    );
    for agreement in ["A-1", "A-2"] {
        assert_eq!(
            pg.ledger.agreement_totals(agreement, head).unwrap(),
            lite.ledger.agreement_totals(agreement, head).unwrap(),
            "{agreement}"
        );
    }
    let totals = pg.ledger.kommune_totals(head).unwrap();
    assert_eq!(totals, lite.ledger.kommune_totals(head).unwrap());
    let nets: Vec<i64> = totals.iter().map(|(_, totals)| totals.net_ore).collect();
    assert_eq!(
        nets,
        [500, 35_000],
        "0101: 100 - 60 - 40 + 5; 0147: 250 + 25 + 75"
    );
    pg.ledger
        .verify(|_| {})
        .unwrap()
        .expect("the log on PostgreSQL verifies");
}

/// A kommune's agreements come in the same order on both backends, whatever the
/// PostgreSQL database's collation: byte order, as SQLite sorts text. In a
/// Danish-collated database `ORDER BY` alone puts `ba0` before `BA1` and `Å1`
/// after `Z`, and `sf2520 totals --kommune` would list them differently.
#[test]
fn a_kommunes_agreements_come_in_byte_order_on_a_collated_database() {
    let mut pg = TestLedger::on_database(support::postgres::database_collated("da-DK"));
    let mut lite = TestLedger::on(Backend::Sqlite, sf2520::ledger::DEFAULT_TOTALS_BLOCK);
    let references = ["ba0", "BA1", "Z", "AA", "Å1", "BA-2", "BA10"];
    let mut batch = Vec::new();
    for (at, reference) in references.iter().enumerate() {
        batch.push(agreement(reference, "0101", CPR, "2026-01-01"));
        batch.push(withholding(
            &format!("W-{at}"),
            reference,
            "0101",
            "2026-10-01",
            "100.00",
        ));
    }
    let batch = lines(&batch);
    pg.given(&batch);
    lite.given(&batch);
    let kommune = sf2520::domain::Kommune::parse("0101").unwrap();
    let order = |ledger: &TestLedger| -> Vec<String> {
        ledger
            .ledger
            .agreements_of_kommune(kommune, ledger.head())
            .unwrap()
            .into_iter()
            .map(|(agreement, _)| agreement)
            .collect()
    };
    let mut bytewise: Vec<String> = references.iter().map(|r| r.to_string()).collect();
    bytewise.sort();
    assert_eq!(order(&lite), bytewise);
    assert_eq!(
        order(&pg),
        bytewise,
        "the collated database's order leaked through"
    );
}

/// `verify` on PostgreSQL also checks the `ledger_head` row against the log's last
/// event: a log cut short (here, as if its last events were removed with the row
/// left as it was) is damage, not a shorter ledger.
#[test]
fn verify_refuses_a_head_row_that_does_not_name_the_logs_last_event() {
    let mut pg = TestLedger::on(Backend::Postgres, sf2520::ledger::DEFAULT_TOTALS_BLOCK);
    pg.given(&lines(&[
        agreement("A-1", "0101", CPR, "2026-01-01"),
        withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
    ]));
    pg.ledger
        .verify(|_| {})
        .unwrap()
        .expect("an untouched ledger verifies");
    let mut client = pg.store.database().expect("a PostgreSQL database").client();
    client
        .batch_execute("UPDATE ledger_head SET position = position + 1")
        .unwrap();
    let failure = pg
        .ledger
        .verify(|_| {})
        .unwrap()
        .expect_err("a head row past the log's end is damage");
    assert!(
        failure
            .to_string()
            .contains("does not name the log's last event (it names position 3)"),
        "{failure}"
    );
}

/// `batch.jsonl` in `dir`: agreement A-1 of kommune 0101 and one withholding of it.
fn one_withholding(dir: &Path) -> std::path::PathBuf {
    let batch = dir.join("batch.jsonl");
    std::fs::write(
        &batch,
        lines(&[
            agreement("A-1", "0101", CPR, "2026-01-01"),
            withholding("W-1", "A-1", "0101", "2026-10-01", "100.00"),
        ]),
    )
    .unwrap();
    batch
}

#[test]
fn a_database_behind_the_nodes_last_head_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let db = database();
    on_pg(&dir, &db, &["init"]).expect_success("init");
    let batch = one_withholding(root.path());
    on_pg(&dir, &db, &["ingest", batch.to_str().unwrap()]).expect_success("ingest");
    // A failover to a replica that lacked the last commit: the event is gone.
    let mut client = db.client();
    client
        .batch_execute(
            "DELETE FROM entries WHERE position = 2; DELETE FROM events WHERE position = 2;
             UPDATE ledger_head SET position = 1, hash = (SELECT hash FROM events WHERE position = 1)",
        )
        .unwrap();
    on_pg(&dir, &db, &["ingest", batch.to_str().unwrap()])
        .expect_code(10, "an ingest on a database behind this node's head")
        .expect_refusal("acknowledged position 2");
    let count: i64 = client
        .query_one("SELECT COUNT(*) FROM events", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "nothing was written");
}

/// A long-running command checks the node's head before every write, not only
/// when it opened the ledger: its database loses the last commit (a failover to a
/// replica that lacked it), another node with no evidence of it writes a new event
/// at that position, and the first node's next write is refused, writing nothing.
/// Before, the check ran only when the ledger was opened, and the open ledger
/// appended on the forked chain.
#[test]
fn an_open_ledger_checks_the_nodes_head_before_every_write() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let db = database();
    on_pg(&a, &db, &["init"]).expect_success("init");
    share_key_file(&a, &b);
    on_pg(&b, &db, &["init"]).expect_success("init on a second node");
    let mut ledger = open_pg(&a, &db);
    let accepted = |ledger: &mut Ledger, jsonl: &str| {
        sf2520::ingest::ingest_lines(ledger, jsonl.as_bytes(), sf2520::ledger::IngestMode::Commit)
    };
    let first = accepted(
        &mut ledger,
        &lines(&[agreement("A-1", "0101", CPR, "2026-01-01")]),
    );
    assert!(
        matches!(first, Ok(sf2520::ingest::IngestOutcome::Committed(_))),
        "{first:?}"
    );
    // The database loses position 1; node B, which never saw it, writes there.
    let mut client = db.client();
    client
        .batch_execute(
            "DELETE FROM agreements; DELETE FROM events;
             UPDATE ledger_head SET position = 0, hash = (SELECT hash FROM ledger_head)",
        )
        .unwrap();
    let other = root.path().join("other.jsonl");
    std::fs::write(
        &other,
        lines(&[agreement("B-1", "0147", CPR, "2026-01-01")]),
    )
    .unwrap();
    on_pg(&b, &db, &["ingest", other.to_str().unwrap()]).expect_success("B's ingest");
    let refused = accepted(
        &mut ledger,
        &lines(&[agreement("A-2", "0101", CPR, "2026-01-01")]),
    );
    assert!(
        matches!(
            refused,
            Err(sf2520::ingest::IngestError::Ledger(
                sf2520::ledger::LedgerError::MarkMismatch(_)
            ))
        ),
        "{refused:?}"
    );
    let count: i64 = client
        .query_one("SELECT COUNT(*) FROM events", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        count, 1,
        "only B's event: A wrote nothing on the forked chain"
    );
}

/// Regression: `init` on a new node of a PostgreSQL ledger that held events said
/// "created an empty ledger" (or "a ledger already exists … nothing changed"): it
/// joined the existing ledger, at its head.
#[test]
fn init_on_a_new_node_says_it_joined_the_existing_ledger_at_its_head() {
    let root = tempfile::tempdir().unwrap();
    let (first, second, third) = (
        root.path().join("node1"),
        root.path().join("node2"),
        root.path().join("node3"),
    );
    let db = database();
    let run = on_pg(&first, &db, &["init"]).expect_success("init");
    assert!(
        run.stdout.contains("created an empty ledger"),
        "{}",
        run.stdout
    );
    let batch = one_withholding(root.path());
    on_pg(&first, &db, &["ingest", batch.to_str().unwrap()]).expect_success("ingest");
    support::ledger::share_key_file(&first, &second);
    let run = on_pg(&second, &db, &["init"]).expect_success("init on a new node");
    assert!(
        run.stdout.contains("init: joined the existing ledger")
            && run.stdout.contains("at head 2 (2 event(s))"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("created"), "{}", run.stdout);
    assert!(!run.stdout.contains("already exists"), "{}", run.stdout);
    support::ledger::share_key_file(&first, &third);
    let run = on_pg(&third, &db, &["init", "--json"]).expect_success("init --json");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        (
            &report["joined"],
            &report["created"],
            &report["head_position"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!(2)
        ),
        "{report}"
    );
    // The node that made the ledger and committed to it joins nothing.
    let run = on_pg(&first, &db, &["init", "--json"]).expect_success("init again");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["joined"], false, "{report}");
}

#[test]
fn three_nodes_on_one_database_leave_gapless_positions_and_each_entry_in_one_file() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let nodes: Vec<_> = (1..=3)
        .map(|n| root.path().join(format!("node{n}")))
        .collect();
    on_pg(&nodes[0], &db, &["init"]).expect_success("init");
    for node in &nodes[1..] {
        support::ledger::share_key_file(&nodes[0], node);
        on_pg(node, &db, &["init"]).expect_success("init on another node");
    }
    // Overlapping batches: node 1 W-0..600, node 2 W-300..900, node 3 W-600..1200.
    let batches: Vec<_> = (0..3)
        .map(|n| {
            let path = root.path().join(format!("batch{n}.jsonl"));
            std::fs::write(&path, three_kommune_batch(n * 300, 600)).unwrap();
            path
        })
        .collect();
    let spawn = |node: &Path, args: &[&str]| {
        let mut all = vec!["--database-url".to_string(), db.url()];
        all.extend(args.iter().map(|arg| arg.to_string()));
        // Few log lines: a process blocked on a full pipe while it holds the
        // ledger's write lock would stall the others.
        command(node, all)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ingests: Vec<_> = nodes
        .iter()
        .zip(&batches)
        .map(|(node, batch)| spawn(node, &["ingest", batch.to_str().unwrap(), "--json"]))
        .collect();
    let mut appended = 0;
    for child in ingests {
        let run: Run = child.wait_with_output().unwrap().into();
        let run = run.expect_success("a concurrent ingest");
        let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        appended += report["files"][0]["appended"].as_u64().unwrap();
    }
    // 3 agreements and 1200 distinct withholdings: each once, every other line a
    // duplicate.
    assert_eq!(appended, 3 + 1200);
    let mut client = db.client();
    let (count, max): (i64, i64) = {
        let row = client
            .query_one("SELECT COUNT(*), MAX(position) FROM events", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(count, max, "positions are gapless");
    assert_eq!(count, 1203);
    // Two exports at once on two nodes, then a third export later.
    let exports: Vec<_> = nodes[..2]
        .iter()
        .map(|node| spawn(node, &["export"]))
        .collect();
    for child in exports {
        let run: Run = child.wait_with_output().unwrap().into();
        run.expect_success("a concurrent export");
    }
    let more = root.path().join("more.jsonl");
    std::fs::write(&more, three_kommune_batch(1200, 30)).unwrap();
    on_pg(&nodes[2], &db, &["ingest", more.to_str().unwrap()]).expect_success("more");
    on_pg(&nodes[2], &db, &["export"]).expect_success("a later export");
    on_pg(&nodes[0], &db, &["verify", "--no-outbox"]).expect_success("verify");
    let ledger = open_pg(&nodes[0], &db);
    let by_kommune = support::export::assert_files_follow_on(&ledger);
    let mut in_files = 0;
    for files in by_kommune.values() {
        for (at, file) in files.iter().enumerate() {
            assert_eq!(
                file.sequence,
                u32::try_from(at + 1).unwrap(),
                "løbenumre are gapless"
            );
        }
        in_files += files.iter().map(|file| file.record_count).sum::<u64>();
    }
    assert_eq!(in_files, 1230, "each entry in exactly one file");
    // Every node's outbox holds byte-exact official files of the ledger it serves.
    for node in &nodes {
        let outbox = node.join("outbox");
        if outbox.is_dir() {
            for (name, bytes) in outbox_files(&outbox) {
                let file = ledger
                    .official_files(None)
                    .unwrap()
                    .into_iter()
                    .find(|file| file.file_name == name)
                    .unwrap_or_else(|| panic!("{name} is not an official file"));
                let rebuilt =
                    sf2520::export::reconstruct(&ledger, file.kommune, file.sequence).unwrap();
                assert_eq!(rebuilt.bytes, bytes, "{name}");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
