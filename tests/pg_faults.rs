//! Faults on PostgreSQL, against the real server of this test process
//! (`support::postgres`), through the real binary:
//!
//! - a connection lost while a batch's COMMIT waits for a standby (committed
//!   locally, outcome unknown to the client): `ingest` connects again and finds
//!   the commit's last event on the chain by its hash, so the batch was written; a connection lost before the commit (waiting
//!   for the head row, or a COMMIT answered with FATAL before anything was
//!   written): the repeat writes the batch once;
//! - `export` SIGKILLed at four points (holding the export lock, waiting for the
//!   write lock to fix its cut-off; files rendered, waiting for the write lock to
//!   record them; recorded but unacknowledged and not yet renamed; rendering):
//!   the advisory export lock goes with the process, and the next run leaves every
//!   entry in exactly one official file;
//! - the node's disk (its data directory and outbox) full while the ledger is on
//!   PostgreSQL: nothing recorded, nothing left, and the next export completes.
//!
//! Every interleaving is made deterministic by waiting for a state the server
//! shows (`pg_stat_activity`: a session waiting for a row lock the test holds, or
//! a COMMIT waiting in `SyncRep` for a standby that never connects) or a file the
//! run writes, never by sleeping.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

use postgres::{Client, NoTls};
use sf2520::demo::{demo_month, SplitMix64};
use sf2520::domain::Agreement;
use sf2520::export::default_outbox;
use sf2520::export::outbox::QUARANTINE_DIR;
use sf2520::ledger::{DatabaseUrl, IngestMode, Ledger, Location, DEFAULT_TOTALS_BLOCK};
use support::cli::Run;
use support::export::{assert_exactly_once, more_withholdings, registered_agreements};
use support::ledger::three_kommune_batch;
use support::postgres::{database, TestDatabase};
use support::process::{signal, wait_bounded, wait_for, PATIENCE};
use support::tmpfs::Tmpfs;

/// One node: a data directory, and the database URL its `sf2520` processes get
/// (through `SF2520_DATABASE_URL`) with an `application_name` of the test's own,
/// so that `pg_stat_activity` tells their sessions from the test's. (The session
/// that holds the export lock names itself: `sf2520 export (pid N, ...)`.)
struct Node<'d> {
    dir: PathBuf,
    db: &'d TestDatabase,
    name: &'static str,
}

impl<'d> Node<'d> {
    fn at(dir: PathBuf, db: &'d TestDatabase, name: &'static str) -> Node<'d> {
        Node { dir, db, name }
    }

    /// A node named `name` with a ledger, and beside it a file of 30 lines
    /// (33 events: three agreements and their withholdings) to ingest.
    fn with_batch(root: &Path, db: &'d TestDatabase, name: &'static str) -> (Node<'d>, PathBuf) {
        let node = Node::at(root.join("node"), db, name);
        node.run(&["init"]).expect_success("init");
        let input = root.join("batch.jsonl");
        fs::write(&input, three_kommune_batch(0, 30)).unwrap();
        (node, input)
    }

    fn url(&self) -> String {
        format!("{} application_name={}", self.db.url(), self.name)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        support::cli::spawn_node(&self.dir, &self.url(), args)
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(wait_bounded(self.spawn(args)))
    }

    /// The ledger, opened in this process (its session is named `sf2520`).
    fn open(&self) -> Ledger {
        let location = Location {
            dir: self.dir.clone(),
            database: Some(DatabaseUrl::parse(&self.db.url()).unwrap()),
        };
        Ledger::open_at(&location, false, DEFAULT_TOTALS_BLOCK).unwrap()
    }
}

fn sigkill(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the killed process");
}

/// A connection to `db` whose session shows `application_name` = `name`.
fn connect_named(db: &TestDatabase, name: &str) -> Client {
    Client::connect(&format!("{} application_name={name}", db.url()), NoTls)
        .unwrap_or_else(|e| panic!("connect as {name}: {e}"))
}

/// The pid of a session named `name` on the admin connection's database that
/// waits with `wait_event_type` `kind` (and `wait_event` `event`, when given).
fn waiting(admin: &mut Client, name: &str, kind: &str, event: Option<&str>) -> Option<i32> {
    admin
        .query_opt(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND wait_event_type = $2 AND ($3::text IS NULL OR wait_event = $3)
             LIMIT 1",
            &[&name, &kind, &event],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// The sessions named `name` on the admin connection's database.
fn sessions(admin: &mut Client, name: &str) -> i64 {
    admin
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}

/// The `application_name`s of the sessions holding an advisory lock on the
/// admin connection's database (the export lock is the only one sf2520 holds
/// beyond a transaction).
fn advisory_holders(admin: &mut Client) -> Vec<String> {
    admin
        .query(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn count(admin: &mut Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).unwrap().get(0)
}

fn files_recorded(admin: &mut Client) -> i64 {
    count(
        admin,
        "SELECT COUNT(*) FROM events WHERE event_type = 'FileExported'",
    )
}

/// Positions are gapless: as many events as the highest position.
fn assert_gapless(admin: &mut Client, expected: i64) {
    let row = admin
        .query_one(
            "SELECT COUNT(*), COALESCE(MAX(position), 0) FROM events",
            &[],
        )
        .unwrap();
    let (events, max): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(events, max, "positions must be gapless");
    assert_eq!(events, expected, "each line of the batch exactly once");
}

/// A transaction of the test's, on a connection of its own (named `name`), that
/// locks the row of `ledger_head` `FOR UPDATE`, as every write transaction does
/// first, and holds it until released.
struct HeadHolder {
    release: Option<mpsc::Sender<()>>,
    locked: mpsc::Receiver<()>,
    thread: Option<JoinHandle<Result<(), postgres::Error>>>,
}

impl HeadHolder {
    fn start(db: &TestDatabase, name: &str) -> HeadHolder {
        let mut client = connect_named(db, name);
        let (release, released) = mpsc::channel::<()>();
        let (tell, locked) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut tx = client.transaction()?;
            tx.query(
                "SELECT position FROM ledger_head WHERE id = 1 FOR UPDATE",
                &[],
            )?;
            let _ = tell.send(());
            let _ = released.recv();
            tx.rollback()
        });
        HeadHolder {
            release: Some(release),
            locked,
            thread: Some(thread),
        }
    }

    /// Holds the row now (nobody else had it).
    fn started(db: &TestDatabase, name: &str) -> HeadHolder {
        let holder = HeadHolder::start(db, name);
        holder
            .locked
            .recv_timeout(PATIENCE)
            .expect("the test's transaction to lock ledger_head");
        holder
    }

    fn release(mut self) {
        self.end().expect("the test's head-row transaction");
    }

    fn end(&mut self) -> Result<(), postgres::Error> {
        drop(self.release.take());
        match self.thread.take() {
            Some(thread) => thread.join().expect("the head-row holder panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for HeadHolder {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Serializes the tests that change the server's settings (all tests of this
/// process share one server).
static SERVER_SETTINGS: Mutex<()> = Mutex::new(());

/// While this lives, every COMMIT on the server (with `synchronous_commit = on`,
/// the harness's setting) commits locally and then waits in `SyncRep` for a
/// standby that never connects: `synchronous_standby_names = 'nobody_here'`, set
/// with ALTER SYSTEM and a reload. Known to be in force once a probe commit of its
/// own waits so; when it ends, the setting is reset and the waiting commits go on
/// (known once the probe's commit returns).
///
/// Other tests' commits wait too meanwhile; they only go on later.
struct CommitsWait {
    admin: Client,
    probe: Option<JoinHandle<Result<u64, postgres::Error>>>,
    _scratch: TestDatabase,
    _serial: MutexGuard<'static, ()>,
}

impl CommitsWait {
    fn begin() -> CommitsWait {
        let serial = SERVER_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
        let scratch = database();
        let mut admin = scratch.client();
        admin
            .batch_execute("CREATE TABLE probe (n bigint)")
            .unwrap();
        admin
            .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody_here'")
            .unwrap();
        let mut gate = CommitsWait {
            admin,
            probe: None,
            _scratch: scratch,
            _serial: serial,
        };
        gate.admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        // The reload reaches the server's processes in their own time: a probe
        // that commits without waiting came too early, and another one is sent.
        wait_for("a probe's COMMIT to wait for the standby", None, || {
            if gate.probe.as_ref().is_none_or(JoinHandle::is_finished) {
                if let Some(done) = gate.probe.take() {
                    done.join().expect("the probe thread").expect("the probe");
                }
                let mut probe = connect_named(&gate._scratch, "pgf-probe");
                gate.probe = Some(std::thread::spawn(move || {
                    probe.execute("INSERT INTO probe VALUES (1)", &[])
                }));
            }
            waiting(&mut gate.admin, "pgf-probe", "IPC", Some("SyncRep"))
        });
        gate
    }
}

impl Drop for CommitsWait {
    fn drop(&mut self) {
        let reset = self
            .admin
            .batch_execute("ALTER SYSTEM RESET synchronous_standby_names")
            .and_then(|()| self.admin.batch_execute("SELECT pg_reload_conf()"));
        if let Err(error) = reset {
            if !std::thread::panicking() {
                panic!("reset synchronous_standby_names: {error}");
            }
            return;
        }
        if let Some(probe) = self.probe.take() {
            let probed = probe.join();
            if !std::thread::panicking() {
                probed
                    .expect("the probe thread")
                    .expect("the probe's COMMIT once no standby is waited for");
            }
        }
    }
}

/// The ingest report's JSON for its one file.
fn ingest_report(run: &Run) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("ingest --json printed no JSON ({e}): {}", run.stdout));
    report["files"][0].clone()
}

const LOST: &str = "the connection to PostgreSQL was lost during";

#[test]
fn a_commit_whose_outcome_is_unknown_is_settled_by_the_chain_and_written_once() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let (node, input) = Node::with_batch(root.path(), &db, "pgf-ingest");
    let mut admin = db.client();

    let gate = CommitsWait::begin();
    let mut ingest = node.spawn(&["ingest", input.to_str().unwrap(), "--json"]);
    let backend = wait_for(
        "the ingest's COMMIT to wait for the standby",
        Some(&mut ingest),
        || waiting(&mut admin, node.name, "IPC", Some("SyncRep")),
    );
    assert_eq!(
        count(&mut admin, "SELECT COUNT(*) FROM events"),
        0,
        "a commit waiting for its standby is not visible yet"
    );
    // PostgreSQL: "canceling the wait for synchronous replication and terminating
    // connection ... The transaction has already committed locally". The client
    // only sees its connection end: the outcome is unknown to it.
    terminate(&mut admin, backend);
    // The repeated batch must be able to commit.
    drop(gate);

    let run = Run::from(wait_bounded(ingest)).expect_success("the ingest whose commit was lost");
    assert_batch_once(
        &run,
        &mut admin,
        &node,
        (33, 0),
        "the lost commit's last event is found on the chain by its hash: the batch was written, once",
    );
}

#[test]
fn a_connection_lost_before_the_commit_is_repeated_and_writes_the_batch_once() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let (node, input) = Node::with_batch(root.path(), &db, "pgf-ingest-early");
    let mut admin = db.client();

    let holder = HeadHolder::started(&db, "pgf-holder");
    let mut ingest = node.spawn(&["ingest", input.to_str().unwrap(), "--json"]);
    let first = wait_for(
        "the ingest to wait for the write lock",
        Some(&mut ingest),
        || waiting(&mut admin, node.name, "Lock", None),
    );
    terminate(&mut admin, first);
    // The repeat, on a new connection, waits for the same lock.
    let again = wait_for(
        "the repeated batch to wait for the write lock on a new connection",
        Some(&mut ingest),
        || waiting(&mut admin, node.name, "Lock", None).filter(|pid| *pid != first),
    );
    assert_ne!(again, first);
    assert_eq!(count(&mut admin, "SELECT COUNT(*) FROM events"), 0);
    holder.release();

    let run =
        Run::from(wait_bounded(ingest)).expect_success("the ingest whose connection was lost");
    assert_batch_once(
        &run,
        &mut admin,
        &node,
        (33, 0),
        "nothing was written before the loss, so the repeat writes every line",
    );
}

#[test]
fn a_connection_ended_in_answer_to_the_commit_is_repeated_and_writes_the_batch_once() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let (node, input) = Node::with_batch(root.path(), &db, "pgf-ingest-commit");
    let mut admin = db.client();
    hold_commits(&mut admin);
    let mut ingest = node.spawn(&["ingest", input.to_str().unwrap(), "--json"]);
    let first = wait_for(
        "the ingest's COMMIT to wait for the test's lock",
        Some(&mut ingest),
        || waiting(&mut admin, node.name, "Lock", Some("advisory")),
    );
    // Terminated there, the server answers the COMMIT with FATAL 57P01 and ends
    // the connection: the transaction is rolled back.
    terminate(&mut admin, first);
    let again = wait_for(
        "the repeated batch's COMMIT to wait for the test's lock on a new connection",
        Some(&mut ingest),
        || waiting(&mut admin, node.name, "Lock", Some("advisory")).filter(|pid| *pid != first),
    );
    assert_ne!(again, first);
    assert_eq!(count(&mut admin, "SELECT COUNT(*) FROM events"), 0);
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({COMMIT_KEY})"))
        .unwrap();

    let run = Run::from(wait_bounded(ingest))
        .expect_success("the ingest whose COMMIT was answered with FATAL");
    // Which of the two the client reports depends on whether it read the end of
    // the stream together with the FATAL; never a bare "db error".
    assert!(
        run.stderr.contains(
            "error=PostgreSQL: terminating connection due to administrator command (57P01)"
        ) || run.stderr.contains("error=PostgreSQL: connection closed"),
        "the warning gives the server's reason: {}",
        run.stderr
    );
    assert_batch_once(
        &run,
        &mut admin,
        &node,
        (33, 0),
        "the lost commit wrote nothing, so the repeat writes every line",
    );
}

/// An export whose record COMMIT is answered with FATAL (nothing written) connects
/// again and records the files once more, and reports the ids it recorded: a
/// repeat keeps no id of the try that did not commit.
#[test]
fn an_export_whose_record_commit_is_lost_records_once_and_reports_what_it_recorded() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let (node, input) = Node::with_batch(root.path(), &db, "pgf-export-commit");
    node.run(&["ingest", input.to_str().unwrap()])
        .expect_success("ingest");
    let mut admin = db.client();
    hold_commits(&mut admin);
    // The cut-off's write moves no head; the record's COMMIT waits.
    let mut export = node.spawn(&["export", "--json"]);
    let first = wait_for(
        "the export's record COMMIT to wait for the test's lock",
        Some(&mut export),
        || waiting(&mut admin, node.name, "Lock", Some("advisory")),
    );
    terminate(&mut admin, first);
    wait_for(
        "the repeated record's COMMIT to wait on a new connection",
        Some(&mut export),
        || waiting(&mut admin, node.name, "Lock", Some("advisory")).filter(|pid| *pid != first),
    );
    assert_eq!(files_recorded(&mut admin), 0, "the first try wrote nothing");
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({COMMIT_KEY})"))
        .unwrap();
    let run = Run::from(wait_bounded(export)).expect_success("the export");
    let ids = |json: &str| -> BTreeSet<String> {
        let document: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        document["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["file_id"].as_str().unwrap().to_string())
            .collect()
    };
    let printed = ids(&run.stdout);
    assert_eq!(printed.len(), 3, "{}", run.stdout);
    let register = node.run(&["files", "--json"]).expect_success("files");
    assert_eq!(
        printed,
        ids(&register.stdout),
        "the ids printed are the ids recorded"
    );
    node.run(&["verify"]).expect_success("verify");
}

/// Ends the server process `pid`'s session, as an administrator (or a failover)
/// would.
fn terminate(admin: &mut Client, pid: i32) {
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated, "pg_terminate_backend({pid})");
}

/// What a repeated ingest of [`batch`]`(30)` must leave: a warning of the repeat,
/// a report of (`appended`, `duplicates`) lines (`why` says which and why), its
/// 33 lines once each in gapless positions, 30 entries, and a log that verifies.
fn assert_batch_once(
    run: &Run,
    admin: &mut Client,
    node: &Node<'_>,
    (appended, duplicates): (u64, u64),
    why: &str,
) {
    assert!(
        run.stderr.contains(LOST),
        "no warning of the repeat: {}",
        run.stderr
    );
    let report = ingest_report(run);
    assert_eq!(
        (report["appended"].as_u64(), report["duplicates"].as_u64()),
        (Some(appended), Some(duplicates)),
        "{why}: {report}"
    );
    assert_gapless(admin, 33);
    assert_eq!(count(admin, "SELECT COUNT(*) FROM entries"), 30);
    node.run(&["verify", "--no-outbox"])
        .expect_success("verify");
}

/// The advisory lock key the commit-holding trigger waits for.
const COMMIT_KEY: i64 = 25_200_001;

/// From now on a COMMIT that moves the head row waits, before anything is
/// written, for an advisory lock the test holds (`COMMIT_KEY`, taken here on
/// `admin`'s session): a deferred trigger on the head row, which every batch and
/// every record of files moves.
fn hold_commits(admin: &mut Client) {
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION pgf_hold_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_advisory_xact_lock({COMMIT_KEY}); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER pgf_hold_commit AFTER UPDATE ON ledger_head
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pgf_hold_commit();
             SELECT pg_advisory_lock({COMMIT_KEY});"
        ))
        .unwrap();
}

/// The temporary files of export runs in the outbox (`.SF2520_….partial`).
fn temporaries(outbox: &Path) -> BTreeSet<String> {
    fs::read_dir(outbox)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".SF2520_") && name.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

fn quarantined(outbox: &Path) -> BTreeSet<String> {
    fs::read_dir(outbox.join(QUARANTINE_DIR))
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The official name of a temporary file: `.NAME.<ledger>-<run>.partial`.
fn official_name(temporary: &str) -> String {
    let name = temporary.trim_start_matches('.');
    let end = name.find(".txt.").expect("a temporary name holds .txt.") + 4;
    name[..end].to_string()
}

/// What a killed export run must leave: its export lock released with the
/// process, although its other sessions may still be in the middle of a
/// statement (they end once that returns; see [`wait_until_sessions_end`]).
fn assert_lock_went_with_the_process(admin: &mut Client, pid: u32) {
    let holder = format!("sf2520 export (pid {pid},");
    wait_for(
        "the killed export's advisory lock to be released",
        None,
        || {
            (!advisory_holders(admin)
                .iter()
                .any(|name| name.starts_with(&holder)))
            .then_some(())
        },
    );
}

fn wait_until_sessions_end(admin: &mut Client, node: &Node<'_>) {
    wait_for("the killed export's sessions to end", None, || {
        (sessions(admin, node.name) == 0).then_some(())
    });
}

/// Starts an export and waits until it holds the export lock and waits for the
/// head row that `holder` holds (the write that fixes its cut-off).
fn export_waiting_at_the_cutoff(admin: &mut Client, node: &Node<'_>) -> Child {
    let mut export = node.spawn(&["export"]);
    let holder = format!("sf2520 export (pid {},", export.id());
    wait_for(
        "the export to hold the export lock and wait for the write lock",
        Some(&mut export),
        || {
            let locked = advisory_holders(admin)
                .iter()
                .any(|name| name.starts_with(&holder));
            (locked && waiting(admin, node.name, "Lock", None).is_some()).then_some(())
        },
    );
    export
}

/// From an export waiting at its cut-off behind `first`: a second holder queues
/// behind the export, `first` lets go, the export fixes its cut-off, renders,
/// and waits for the second holder to record its files. Returns the second
/// holder and the run's temporary files.
fn export_waiting_to_record(
    admin: &mut Client,
    db: &TestDatabase,
    node: &Node<'_>,
    export: &mut Child,
    first: HeadHolder,
    outbox: &Path,
) -> (HeadHolder, BTreeSet<String>) {
    let before = temporaries(outbox);
    let floor = |admin: &mut Client| -> Option<i64> {
        admin
            .query_opt(
                "SELECT value FROM meta WHERE key = 'recorded_at_floor_us'",
                &[],
            )
            .unwrap()
            .map(|row| row.get(0))
    };
    let floor_before = floor(admin);
    let second = HeadHolder::start(db, "pgf-holder-2");
    wait_for(
        "the second holder to queue behind the export",
        Some(export),
        || waiting(admin, "pgf-holder-2", "Lock", None),
    );
    first.release();
    second
        .locked
        .recv_timeout(PATIENCE)
        .expect("the second holder to get the head row after the export's cut-off");
    assert_ne!(
        floor(admin),
        floor_before,
        "the export fixed its cut-off first"
    );
    let fresh = wait_for(
        "the export to render and wait to record",
        Some(export),
        || {
            let fresh: BTreeSet<String> =
                temporaries(outbox).difference(&before).cloned().collect();
            (!fresh.is_empty() && waiting(admin, node.name, "Lock", None).is_some())
                .then_some(fresh)
        },
    );
    (second, fresh)
}

/// The entries of the demo month (all 98 kommuner) on a new PostgreSQL ledger.
fn month_on_postgres(node: &Node<'_>, seed: u64) -> Vec<Agreement> {
    node.run(&["init"]).expect_success("init");
    let month = demo_month(seed);
    let agreements = registered_agreements(&month);
    node.open()
        .ingest(month.into_iter().enumerate().collect(), IngestMode::Commit)
        .unwrap()
        .accepted()
        .unwrap();
    agreements
}

fn ingest_more(node: &Node<'_>, agreements: &[Agreement], round: usize) {
    let mut rng = SplitMix64::new(u64::try_from(round).unwrap());
    node.open()
        .ingest(
            more_withholdings(&mut rng, agreements, round, 40),
            IngestMode::Commit,
        )
        .unwrap()
        .accepted()
        .unwrap();
}

/// The export after a kill: it must not wait for the killed run's lock, and must
/// leave every entry in exactly one file with every recorded file in place.
fn export_again(node: &Node<'_>, outbox: &Path) -> Run {
    let run = node
        .run(&["export", "--lock-wait", "0"])
        .expect_success("the export after the kill (without waiting for the lock)");
    assert!(temporaries(outbox).is_empty(), "{:?}", temporaries(outbox));
    assert_exactly_once(&node.open(), outbox);
    run
}

#[test]
fn sigkilled_exports_on_postgres_release_the_lock_and_leave_each_entry_in_one_file() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let node = Node::at(root.path().join("node"), &db, "pgf-export");
    let agreements = month_on_postgres(&node, 7);
    let outbox = default_outbox(&node.dir);
    let mut admin = db.client();

    // 1. Holding the export lock, waiting for the write lock to fix its cut-off.
    let holder = HeadHolder::started(&db, "pgf-holder");
    let mut export = export_waiting_at_the_cutoff(&mut admin, &node);
    let pid = export.id();
    sigkill(&mut export);
    // Released by the kill, while the run's write still waits for the test's lock.
    assert_lock_went_with_the_process(&mut admin, pid);
    holder.release();
    wait_until_sessions_end(&mut admin, &node);
    assert_eq!(files_recorded(&mut admin), 0, "nothing was recorded");
    assert!(temporaries(&outbox).is_empty(), "nothing was rendered yet");
    let run = export_again(&node, &outbox);
    assert!(!run.stderr.contains("quarantine"), "{}", run.stderr);
    let files_after_1 = files_recorded(&mut admin);
    assert!(files_after_1 >= 90, "the month gave {files_after_1} files");

    // 2. Files rendered and read back under temporary names, waiting for the write
    // lock to record them.
    ingest_more(&node, &agreements, 2);
    let holder = HeadHolder::started(&db, "pgf-holder");
    let mut export = export_waiting_at_the_cutoff(&mut admin, &node);
    let (second, rendered) =
        export_waiting_to_record(&mut admin, &db, &node, &mut export, holder, &outbox);
    let pid = export.id();
    sigkill(&mut export);
    assert_lock_went_with_the_process(&mut admin, pid);
    second.release();
    wait_until_sessions_end(&mut admin, &node);
    assert_eq!(
        files_recorded(&mut admin),
        files_after_1,
        "nothing more recorded"
    );
    assert_eq!(
        temporaries(&outbox),
        rendered,
        "the killed run's files stay temporary"
    );
    let run = export_again(&node, &outbox);
    assert!(run.stderr.contains("quarantine"), "{}", run.stderr);
    let quarantine = quarantined(&outbox);
    for temporary in &rendered {
        assert!(
            quarantine.contains(temporary.trim_start_matches('.')),
            "{temporary} was never recorded and belongs in quarantine: {quarantine:?}"
        );
    }
    let files_after_2 = files_recorded(&mut admin);
    assert_eq!(
        files_after_2 - files_after_1,
        i64::try_from(rendered.len()).unwrap(),
        "the run after the kill exported the same kommuner"
    );

    // 3. Recorded (the COMMIT done locally, waiting for a standby, unacknowledged)
    // and not yet renamed.
    ingest_more(&node, &agreements, 3);
    let holder = HeadHolder::started(&db, "pgf-holder");
    let mut export = export_waiting_at_the_cutoff(&mut admin, &node);
    let (second, rendered) =
        export_waiting_to_record(&mut admin, &db, &node, &mut export, holder, &outbox);
    let gate = CommitsWait::begin();
    second.release();
    wait_for(
        "the record's COMMIT to wait for the standby",
        Some(&mut export),
        || waiting(&mut admin, node.name, "IPC", Some("SyncRep")),
    );
    assert_eq!(
        files_recorded(&mut admin),
        files_after_2,
        "a commit waiting for its standby is not visible yet"
    );
    let pid = export.id();
    sigkill(&mut export);
    // The lock goes with the process even while its commit is still in flight.
    assert_lock_went_with_the_process(&mut admin, pid);
    drop(gate);
    wait_until_sessions_end(&mut admin, &node);
    assert_eq!(
        files_recorded(&mut admin) - files_after_2,
        i64::try_from(rendered.len()).unwrap(),
        "the killed run's commit went through once the standby was no longer waited for"
    );
    for temporary in &rendered {
        assert!(
            !outbox.join(official_name(temporary)).exists(),
            "{temporary} was renamed, yet the run was killed before it could be"
        );
    }
    let quarantine_before = quarantined(&outbox);
    let run = export_again(&node, &outbox);
    assert!(
        run.stderr.contains("recorded but not yet renamed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        quarantined(&outbox),
        quarantine_before,
        "recorded files are published, not quarantined"
    );
    let files_after_3 = files_recorded(&mut admin);

    // 4. While rendering: stopped once its first temporary file appears.
    ingest_more(&node, &agreements, 4);
    let before = temporaries(&outbox);
    let mut export = node.spawn(&["export"]);
    wait_for("the export to start rendering", Some(&mut export), || {
        (temporaries(&outbox) != before).then_some(())
    });
    signal(&export, "STOP");
    let rendering = temporaries(&outbox);
    assert_eq!(
        files_recorded(&mut admin),
        files_after_3,
        "nothing recorded while rendering"
    );
    let pid = export.id();
    sigkill(&mut export);
    assert_lock_went_with_the_process(&mut admin, pid);
    wait_until_sessions_end(&mut admin, &node);
    assert_eq!(
        files_recorded(&mut admin),
        files_after_3,
        "nothing recorded"
    );
    let run = export_again(&node, &outbox);
    assert!(run.stderr.contains("quarantine"), "{}", run.stderr);
    let quarantine = quarantined(&outbox);
    for temporary in &rendering {
        assert!(
            quarantine.contains(temporary.trim_start_matches('.')),
            "{temporary} was never recorded and belongs in quarantine: {quarantine:?}"
        );
    }

    // And once more with new entries, then everything checked through the CLI too.
    ingest_more(&node, &agreements, 5);
    export_again(&node, &outbox);
    node.run(&["verify"])
        .expect_success("verify, with the outbox");
}

#[test]
fn a_full_disk_on_a_postgres_node_records_nothing_and_the_next_export_completes() {
    let root = tempfile::tempdir().unwrap();
    // The node's whole data directory, outbox included, on a small file system.
    let disk = Tmpfs::mount(&root.path().join("disk"), "8m");
    let db = database();
    let node = Node::at(disk.path().join("node"), &db, "pgf-full");
    let agreements = month_on_postgres(&node, 9);
    let outbox = default_outbox(&node.dir);
    let mut admin = db.client();
    // Room for the outbox's claim and a few pages of files, not for the month.
    let filler = disk.fill(16 * 1024);
    let run = node
        .run(&["export"])
        .expect_refusal("No space left on device");
    assert!(
        run.stderr.contains("writing the file failed"),
        "the refusal says what failed: {}",
        run.stderr
    );
    assert_eq!(
        files_recorded(&mut admin),
        0,
        "a file was recorded without its bytes"
    );
    assert!(
        temporaries(&outbox).is_empty(),
        "{:?}",
        temporaries(&outbox)
    );
    let left: Vec<String> = fs::read_dir(&outbox)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains("SF2520_"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "files left in the outbox: {left:?}");
    // Completely full: the same, and reading still works.
    let rest = disk.fill(0);
    node.run(&["export"])
        .expect_refusal("No space left on device");
    assert_eq!(
        files_recorded(&mut admin),
        0,
        "a file was recorded without its bytes"
    );
    assert!(
        temporaries(&outbox).is_empty(),
        "{:?}",
        temporaries(&outbox)
    );
    node.run(&["totals"])
        .expect_success("totals on a full disk");
    // Space again: the next export completes.
    fs::remove_file(filler).unwrap();
    fs::remove_file(rest).unwrap();
    ingest_more(&node, &agreements, 1);
    node.run(&["export", "--lock-wait", "0"])
        .expect_success("the export with space again");
    assert!(files_recorded(&mut admin) >= 90);
    assert_exactly_once(&node.open(), &outbox);
    node.run(&["verify"])
        .expect_success("verify, with the outbox");
}

/// A run that starts while a killed run's record is still committing on the
/// server (its COMMIT waiting for a standby outlives its client) must wait for
/// that commit before it reads which files are recorded: read too early, the
/// register would not yet list the killed run's files and the new run would
/// quarantine them, leaving recorded files missing from the outbox.
#[test]
fn an_export_waits_for_a_killed_runs_record_still_in_flight_and_publishes_its_files() {
    let root = tempfile::tempdir().unwrap();
    let db = database();
    let node = Node::at(root.path().join("node"), &db, "pgf-in-flight");
    let agreements = month_on_postgres(&node, 11);
    let outbox = default_outbox(&node.dir);
    let mut admin = db.client();
    export_again(&node, &outbox);
    let files_before = files_recorded(&mut admin);

    ingest_more(&node, &agreements, 2);
    let holder = HeadHolder::started(&db, "pgf-holder");
    let mut export = export_waiting_at_the_cutoff(&mut admin, &node);
    let (second, rendered) =
        export_waiting_to_record(&mut admin, &db, &node, &mut export, holder, &outbox);
    let gate = CommitsWait::begin();
    second.release();
    wait_for(
        "the record's COMMIT to wait for the standby",
        Some(&mut export),
        || waiting(&mut admin, node.name, "IPC", Some("SyncRep")),
    );
    let pid = export.id();
    sigkill(&mut export);
    assert_lock_went_with_the_process(&mut admin, pid);

    // The killed run's commit is still in flight: the next run takes the export
    // lock and must wait for the head row that commit holds.
    let quarantine_before = quarantined(&outbox);
    let mut next = node.spawn(&["export", "--lock-wait", "0"]);
    let next_holder = format!("sf2520 export (pid {},", next.id());
    wait_for(
        "the next export to hold the lock and wait for the write in flight",
        Some(&mut next),
        || {
            let locked = advisory_holders(&mut admin)
                .iter()
                .any(|name| name.starts_with(&next_holder));
            (locked && waiting(&mut admin, node.name, "Lock", None).is_some()).then_some(())
        },
    );
    assert_eq!(
        quarantined(&outbox),
        quarantine_before,
        "nothing is quarantined while the record is in flight"
    );
    assert!(
        rendered.is_subset(&temporaries(&outbox)),
        "the killed run's files wait under their temporary names"
    );
    assert_eq!(files_recorded(&mut admin), files_before, "not visible yet");

    drop(gate);
    let run = Run::from(wait_bounded(next)).expect_success("the export after the commit landed");
    assert!(
        run.stderr.contains("recorded but not yet renamed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        files_recorded(&mut admin) - files_before,
        i64::try_from(rendered.len()).unwrap(),
        "the killed run's record landed once"
    );
    assert_eq!(
        quarantined(&outbox),
        quarantine_before,
        "recorded files are published, not quarantined"
    );
    for temporary in &rendered {
        assert!(
            outbox.join(official_name(temporary)).exists(),
            "{temporary} is recorded and must be in the outbox under its official name"
        );
    }
    assert!(temporaries(&outbox).is_empty());
    assert_exactly_once(&node.open(), &outbox);
    node.run(&["verify"])
        .expect_success("verify, with the outbox");
}
