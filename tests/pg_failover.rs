//! Failover on PostgreSQL, with real servers on this machine: a primary and a
//! streaming standby that the harness builds (`initdb`, `pg_basebackup -R`,
//! `pg_ctl stop -m immediate`, `pg_ctl promote`), every node an `sf2520`
//! process given a two-host URL with `target_session_attrs=read-write`.
//!
//! - **Synchronous pair.** Ingests are acknowledged, then one waits for the
//!   head row (a lock the test holds) when the primary dies; the standby is
//!   promoted, and the same run connects to it through the same URL and
//!   commits. Every acknowledged batch is on the new primary, once.
//! - **An export killed by the failover.** The standby's WAL receiver is
//!   stopped (SIGSTOP), so the export's first commit waits in `SyncRep`; the
//!   primary dies, the standby is promoted: the export finishes on it, and
//!   every entry is in exactly one official file.
//! - **A lossy promotion.** An asynchronous standby is cut off from the
//!   primary (its `primary_conninfo` emptied and reloaded, so its WAL receiver
//!   stops); a node's ingest and another node's export are acknowledged on the
//!   old primary, which dies; the standby is promoted. Both nodes then refuse to
//!   ingest and export (exit 10, naming the lost head), nothing is written, and
//!   `accept-loss` is the explicit way on.
//! - **No synchronous standby.** With a two-host URL a write is refused (exit
//!   12) while the primary has none, and `status --check` says CRITICAL.
//!
//! Interleavings are made deterministic by states the servers show
//! (`pg_stat_activity`, `pg_stat_replication`, `pg_stat_wal_receiver`), never
//! by sleeping.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use postgres::Client;
use sf2520::ledger::{DatabaseUrl, Ledger, Location};
use support::cli::Run;
use support::export::assert_exactly_once;
use support::ledger::{share_key_file, three_kommune_batch};
use support::postgres::{installed_bin, Server};
use support::process::{wait_bounded, wait_for};

const DATABASE: &str = "ledger";

/// A primary and its streaming standby, and the ledger's database on them.
struct Pair {
    primary: Server,
    standby: Server,
}

impl Pair {
    /// A primary (whose commits wait for the standby when `synchronous`) and a
    /// standby streaming from it, the database created and replicated. The
    /// standby's own `synchronous_standby_names` is empty: promoted, it runs
    /// alone (as Patroni's non-strict `synchronous_mode` does).
    fn start(synchronous: bool) -> Pair {
        let bin = installed_bin()
            .expect("the PostgreSQL server is not installed: run scripts/install-test-deps.sh");
        let primary = Server::start(&bin, &[("synchronous_commit", "on"), ("fsync", "on")]);
        primary.create_database(DATABASE);
        let standby =
            Server::start_standby(&primary, "standby1", &[("synchronous_standby_names", "")]);
        let pair = Pair { primary, standby };
        let mut admin = pair.primary.connect("postgres");
        // Only now: a commit that waits for a standby that is not there yet waits
        // for ever (CREATE DATABASE too).
        if synchronous {
            admin
                .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
                .unwrap();
            admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        }
        let wanted = if synchronous { "sync" } else { "async" };
        wait_for("the standby to stream from the primary", None, || {
            let state: Option<String> = admin
                .query_opt(
                    "SELECT sync_state::text FROM pg_stat_replication WHERE application_name = 'standby1'",
                    &[],
                )
                .unwrap()
                .map(|row| row.get(0));
            (state.as_deref() == Some(wanted)).then_some(())
        });
        pair
    }

    /// The two-host URL every node is given.
    fn url(&self, application: &str) -> String {
        format!(
            "host={},{} user=postgres dbname={DATABASE} target_session_attrs=read-write application_name={application}",
            self.primary.socket_dir().display(),
            self.standby.socket_dir().display()
        )
    }

    /// Waits until the standby has replayed everything the primary has written.
    fn wait_replayed(&self) {
        let mut primary = self.primary.connect("postgres");
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .unwrap()
            .get(0);
        let mut standby = self.standby.connect("postgres");
        wait_for("the standby to replay the primary's WAL", None, || {
            standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .unwrap()
                .get::<_, bool>(0)
                .then_some(())
        });
    }

    /// The primary dies as in a crash; the standby is promoted.
    fn fail_over(&self) {
        self.primary.kill();
        self.standby.promote();
    }
}

/// One node: a data directory, and the URL its `sf2520` processes get.
struct Node {
    dir: PathBuf,
    url: String,
    name: String,
}

impl Node {
    /// A node named `name` on the pair; its ledger is made (`init`) or joined
    /// with `keys_from`'s key file.
    fn new(root: &Path, pair: &Pair, name: &str, keys_from: Option<&Node>) -> Node {
        let node = Node {
            dir: root.join(name),
            url: pair.url(name),
            name: name.to_string(),
        };
        if let Some(first) = keys_from {
            share_key_file(&first.dir, &node.dir);
        }
        node.run(&["init"]).expect_success("init");
        node
    }

    /// `[database]` in the node's sf2520.toml.
    fn configure(&self, database: &str) {
        let path = self.dir.join("sf2520.toml");
        fs::write(&path, format!("[database]\n{database}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn spawn(&self, args: &[&str]) -> Child {
        support::cli::spawn_node(&self.dir, &self.url, args)
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(wait_bounded(self.spawn(args)))
    }

    /// Ingests `batch` from a file of its own.
    fn ingest(&self, number: usize, batch: &str) -> Run {
        let input = self.dir.with_extension(format!("batch-{number}.jsonl"));
        fs::write(&input, batch).unwrap();
        self.run(&["ingest", input.to_str().unwrap()])
    }

    /// The ledger, opened in this process through the node's URL.
    fn open(&self) -> Ledger {
        let location = Location {
            dir: self.dir.clone(),
            database: Some(
                DatabaseUrl::parse(&self.url)
                    .unwrap()
                    .with_failover(std::time::Duration::from_secs(60), Some(false)),
            ),
        };
        Ledger::open_at(&location, false, sf2520::ledger::DEFAULT_TOTALS_BLOCK).unwrap()
    }
}

/// The number of events whose stream is `stream`, on `client`'s database.
fn events_in(client: &mut Client, stream: &str) -> i64 {
    client
        .query_one("SELECT COUNT(*) FROM events WHERE stream = $1", &[&stream])
        .unwrap()
        .get(0)
}

/// The backend of the session named `application` waiting on `event_type` /
/// `event`, if there is one.
fn waiting(admin: &mut Client, application: &str, event_type: &str, event: &str) -> Option<i32> {
    admin
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND wait_event_type = $2 AND wait_event = $3",
            &[&application, &event_type, &event],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// Withholdings `W-<from>`.. in batches of ten, numbered `round`.
fn batch(round: usize) -> String {
    three_kommune_batch(round * 10, 10)
}

#[test]
fn a_synchronous_pair_loses_no_acknowledged_batch_and_the_run_finishes_on_the_new_primary() {
    let root = tempfile::tempdir().unwrap();
    let pair = Pair::start(true);
    let node = Node::new(root.path(), &pair, "pgfo-sync", None);
    // The promoted standby runs alone: writes are allowed without a standby.
    node.configure("require_synchronous = false\nfailover_wait_secs = 120");
    for round in 0..3 {
        node.ingest(round, &batch(round))
            .expect_success("an ingest on the synchronous pair");
    }
    // The next ingest waits for the head row, which the test holds on the
    // primary: it is mid-transaction when the primary dies.
    let mut holder = pair.primary.connect(DATABASE);
    let mut lock = holder.transaction().unwrap();
    lock.query_one(
        "SELECT position FROM ledger_head WHERE id = 1 FOR UPDATE",
        &[],
    )
    .unwrap();
    let input = root.path().join("round-3.jsonl");
    fs::write(&input, batch(3)).unwrap();
    let mut ingest = node.spawn(&["ingest", input.to_str().unwrap()]);
    let mut admin = pair.primary.connect("postgres");
    wait_for(
        "the ingest to wait for the head row",
        Some(&mut ingest),
        || waiting(&mut admin, &node.name, "Lock", "transactionid"),
    );
    drop(admin);
    pair.fail_over();
    drop(lock);
    drop(holder);
    let run = Run::from(wait_bounded(ingest))
        .expect_success("the ingest that lost its primary finishes on the new one");
    assert!(
        run.stderr.contains("the connection to PostgreSQL was lost"),
        "{}",
        run.stderr
    );

    let mut new_primary = pair.standby.connect(DATABASE);
    for n in 0..40 {
        let stream = format!("entry/{}/W-{n}", ["0101", "0147", "0751"][n % 3]);
        assert_eq!(
            events_in(&mut new_primary, &stream),
            1,
            "withholding W-{n} once on the new primary"
        );
    }
    node.run(&["verify"])
        .expect_success("verify on the new primary");
    let totals = node.run(&["totals", "--json"]).expect_success("totals");
    let totals: serde_json::Value = serde_json::from_str(totals.stdout.trim()).unwrap();
    let withheld: i64 = totals["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["totals"]["withheld_ore"].as_i64().unwrap())
        .sum();
    assert_eq!(
        withheld,
        40 * 1234,
        "40 withholdings of 12.34 kr.: {totals}"
    );
}

#[test]
fn an_export_cut_short_by_a_failover_finishes_with_each_entry_in_exactly_one_file() {
    let root = tempfile::tempdir().unwrap();
    let pair = Pair::start(true);
    let node = Node::new(root.path(), &pair, "pgfo-export", None);
    node.configure("require_synchronous = false\nfailover_wait_secs = 120");
    for round in 0..2 {
        node.ingest(round, &batch(round)).expect_success("ingest");
    }
    pair.wait_replayed();
    // The standby's WAL receiver stops: the primary's commits wait in SyncRep.
    let mut standby = pair.standby.connect("postgres");
    let receiver: i32 = standby
        .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
        .unwrap()
        .get(0);
    drop(standby);
    signal_pid(receiver, "STOP");
    let mut export = node.spawn(&["export"]);
    let mut admin = pair.primary.connect("postgres");
    wait_for(
        "the export's commit to wait for the standby",
        Some(&mut export),
        || waiting(&mut admin, &node.name, "IPC", "SyncRep"),
    );
    drop(admin);
    pair.primary.kill();
    signal_pid(receiver, "CONT");
    pair.standby.promote();
    let run = Run::from(wait_bounded(export))
        .expect_success("the export that lost its primary finishes on the new one");
    assert!(
        run.stderr.contains("the connection to PostgreSQL was lost"),
        "{}",
        run.stderr
    );
    let ledger = node.open();
    let files = assert_exactly_once(&ledger, &node.dir.join("outbox"));
    assert_eq!(files, 3, "one file per kommune");
    drop(ledger);
    node.run(&["verify"])
        .expect_success("verify after the failover");
}

/// Sends signal `name` to the process `pid` with kill(1).
fn signal_pid(pid: i32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[test]
fn a_lossy_promotion_is_refused_by_every_node_that_holds_evidence_of_the_loss() {
    let root = tempfile::tempdir().unwrap();
    let pair = Pair::start(false);
    let a = Node::new(root.path(), &pair, "pgfo-a", None);
    let b = Node::new(root.path(), &pair, "pgfo-b", Some(&a));

    // Two hosts and no synchronous standby: writes are refused, and said so.
    let refused = a
        .ingest(0, &batch(0))
        .expect_code(12, "an ingest without a synchronous standby");
    assert!(
        refused
            .stderr
            .contains("synchronous_standby_names is empty"),
        "{}",
        refused.stderr
    );
    let check = a
        .run(&["status", "--check"])
        .expect_code(2, "status --check");
    assert!(
        check
            .stdout
            .starts_with("SF2520 CRITICAL - database: synchronous_standby_names is empty"),
        "{}",
        check.stdout
    );
    let config = a.run(&["config", "check"]).expect_code(12, "config check");
    assert!(
        config.stdout.contains("NOT synchronous"),
        "{}",
        config.stdout
    );
    let metrics = a.run(&["metrics"]).expect_success("metrics");
    for sample in [
        "sf2520_database_synchronous 0",
        "sf2520_database_standbys 1",
    ] {
        assert!(
            metrics.stdout.lines().any(|line| line == sample),
            "{sample}: {}",
            metrics.stdout
        );
    }

    for node in [&a, &b] {
        node.configure("require_synchronous = false");
    }
    a.ingest(0, &batch(0)).expect_success("ingest, replicated");
    pair.wait_replayed();
    // Cut the standby off: its WAL receiver stops for good.
    let mut standby = pair.standby.connect("postgres");
    standby
        .batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .unwrap();
    standby.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the standby's WAL receiver to stop", None, || {
        let receivers: i64 = standby
            .query_one("SELECT COUNT(*) FROM pg_stat_wal_receiver", &[])
            .unwrap()
            .get(0);
        (receivers == 0).then_some(())
    });
    drop(standby);
    // Acknowledged on the old primary only: A's batch, then B's export.
    a.ingest(1, &batch(1))
        .expect_success("an ingest the standby never sees");
    b.run(&["export"])
        .expect_success("an export the standby never sees");
    let lost: Vec<String> = fs::read_dir(b.dir.join("outbox"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("SF2520_"))
        .collect();
    assert_eq!(lost.len(), 3, "{lost:?}");
    let b_mark = sf2520::ledger::read_mark(&b.dir).unwrap().unwrap();

    pair.fail_over();
    let mut new_primary = pair.standby.connect(DATABASE);
    let head_before: i64 = new_primary
        .query_one("SELECT position FROM ledger_head", &[])
        .unwrap()
        .get(0);
    assert!(
        u64::try_from(head_before).unwrap() < b_mark.position,
        "the promoted standby lacks the export"
    );
    for node in [&a, &b] {
        let refused = node
            .ingest(2, &batch(2))
            .expect_code(10, "an ingest on a database that lost this node's history");
        assert!(
            refused.stderr.contains("committed events are missing"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("ledger.head"), "{}", refused.stderr);
        node.run(&["export"])
            .expect_code(10, "an export on a database that lost this node's history");
        let check = node
            .run(&["status", "--check"])
            .expect_code(2, "status --check");
        assert!(
            check.stdout.starts_with("SF2520 CRITICAL - "),
            "{}",
            check.stdout
        );
    }
    let head_after: i64 = new_primary
        .query_one("SELECT position FROM ledger_head", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        head_after, head_before,
        "no node wrote: the chain is not forked"
    );

    // The explicit way on: a dry run names the loss and changes nothing.
    let (apply, hash) = support::ledger::accept_loss_args(&b.dir);
    let plan = b
        .run(&["accept-loss"])
        .expect_code(10, "accept-loss without --apply");
    support::ledger::assert_loss_named(&plan.stdout, &hash, &lost);
    for name in &lost {
        assert!(
            b.dir.join("outbox").join(name).exists(),
            "the dry run moved nothing"
        );
    }
    b.run(&["accept-loss", "--apply", "--position", "1", "--hash", &hash])
        .expect_code(3, "the wrong head typed back");
    let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
    b.run(&apply).expect_success("accept-loss --apply");
    for name in &lost {
        assert!(
            b.dir.join("outbox/.lost").join(name).exists(),
            "{name} moved aside"
        );
    }
    assert_eq!(events_in(&mut new_primary, "ledger"), 1, "one LossAccepted");
    b.run(&["export"])
        .expect_success("B exports again after accepting the loss");
    b.run(&["verify"]).expect_success("verify");
    // A still refuses until it, too, accepts.
    a.ingest(3, &batch(3))
        .expect_code(10, "A has its own evidence");
}
