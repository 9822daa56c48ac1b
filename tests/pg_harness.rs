//! The PostgreSQL test harness (tests/support/postgres.rs) does what the PostgreSQL
//! tests rely on: fresh, separate, empty databases that go away when dropped, on a
//! server that listens on no TCP port and leaves nothing behind when its test
//! process is killed.
//!
//! Needs Debian's postgresql server: `scripts/install-test-deps.sh` installs it.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use support::postgres as pg;

fn user_tables(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1",
            &[],
        )
        .expect("list tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn current_database(client: &mut Client) -> String {
    client
        .query_one("SELECT current_database()", &[])
        .expect("current_database()")
        .get(0)
}

fn database_exists(client: &mut Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .expect("query pg_database")
        .get::<_, i64>(0)
        == 1
}

#[test]
fn two_databases_are_distinct_empty_and_separate() {
    let a = pg::database();
    let b = pg::database();
    assert_ne!(a.name(), b.name());
    let (mut ca, mut cb) = (a.client(), b.client());
    assert_eq!(current_database(&mut ca), a.name());
    assert_eq!(current_database(&mut cb), b.name());
    assert_eq!(user_tables(&mut ca), Vec::<String>::new());
    assert_eq!(user_tables(&mut cb), Vec::<String>::new());

    ca.batch_execute(
        "CREATE TABLE only_in_a (id int PRIMARY KEY); INSERT INTO only_in_a VALUES (1)",
    )
    .expect("create a table in a");
    assert_eq!(user_tables(&mut ca), ["public.only_in_a"]);
    assert_eq!(user_tables(&mut cb), Vec::<String>::new());
    let missing = cb
        .query("SELECT * FROM only_in_a", &[])
        .expect_err("b must not see a's table");
    assert_eq!(
        missing.code(),
        Some(&postgres::error::SqlState::UNDEFINED_TABLE),
        "{missing}"
    );
}

#[test]
fn the_url_and_the_uri_both_reach_the_database() {
    let db = pg::database();
    let dir = pg::socket_dir();
    assert_eq!(
        db.url(),
        format!("host={} user=postgres dbname={}", dir.display(), db.name())
    );
    assert!(
        db.uri()
            .starts_with(&format!("postgresql://postgres@/{}?host=%2F", db.name())),
        "{}",
        db.uri()
    );
    for url in [db.url(), db.uri()] {
        let mut client = Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(current_database(&mut client), db.name(), "{url}");
        let user: String = client
            .query_one("SELECT current_user", &[])
            .expect("current_user")
            .get(0);
        assert_eq!(user, "postgres", "{url}");
    }
}

#[test]
fn the_server_listens_only_on_its_unix_socket() {
    let db = pg::database();
    let mut client = db.client();
    let show = |client: &mut Client, setting: &str| -> String {
        client
            .query_one(&format!("SHOW {setting}"), &[])
            .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
            .get(0)
    };
    assert_eq!(show(&mut client, "listen_addresses"), "");
    let dir = pg::socket_dir();
    assert_eq!(
        show(&mut client, "unix_socket_directories"),
        dir.to_string_lossy()
    );
    let port = show(&mut client, "port");
    assert!(
        dir.join(format!(".s.PGSQL.{port}")).exists(),
        "no socket in {}",
        dir.display()
    );
    // Our own connection came over the socket: no server address.
    let address: Option<String> = client
        .query_one("SELECT inet_server_addr()::text", &[])
        .expect("inet_server_addr()")
        .get(0);
    assert_eq!(address, None);
    assert_eq!(show(&mut client, "fsync"), "on");
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    assert!(name.starts_with(pg::DIR_PREFIX), "{}", dir.display());
    assert_eq!(dir.parent(), Some(std::env::temp_dir().as_path()));
}

#[test]
fn dropping_a_test_database_drops_it_even_while_connected() {
    let observer = pg::database();
    let mut client = observer.client();
    let doomed = pg::database();
    let name = doomed.name().to_string();
    let mut still_open = doomed.client();
    assert!(database_exists(&mut client, &name));
    drop(doomed);
    assert!(!database_exists(&mut client, &name));
    assert!(
        still_open.query_one("SELECT 1", &[]).is_err(),
        "the dropped database's connection should have been ended"
    );
}

#[test]
fn the_server_is_postgresql_15_or_later() {
    let version = pg::server_version();
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("unreadable server_version {version:?}"));
    assert!(major >= 15, "PostgreSQL {version}");
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CHILD: &str = "SF2520_PG_HARNESS_CHILD";

/// A test process killed with SIGKILL (no atexit, no unwinding) leaves no server
/// and no directory: the watchdog stops the server and removes the directory.
#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start the server, say where it is, wait to be killed.
        println!("socket_dir={}", pg::socket_dir().display());
        std::thread::sleep(Duration::from_secs(120));
        panic!("the parent test should have killed this process");
    }
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "a_killed_test_process_leaves_no_server_behind",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child test process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let dir = loop {
        let line = lines
            .next()
            .expect("the child said where its server is")
            .expect("read");
        // libtest's "test <name> ... " comes first, on the same line.
        if let Some((_, dir)) = line.split_once("socket_dir=") {
            break PathBuf::from(dir);
        }
    };
    let postmaster: i32 = fs::read_to_string(dir.join("data/postmaster.pid"))
        .expect("the child's server runs")
        .lines()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("postmaster.pid names a pid");
    assert!(pid_alive(postmaster));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    wait_for("the postmaster is gone", || !pid_alive(postmaster));
    wait_for("the server directory is gone", || !dir.exists());
}

fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("run true");
    child.wait().expect("reap true");
    child.id()
}

fn fake_server_dir(
    base: &Path,
    name: &str,
    owner: Option<String>,
    postmaster: Option<u32>,
) -> PathBuf {
    let dir = base.join(name);
    fs::create_dir_all(dir.join("data")).expect("fake server dir");
    if let Some(owner) = owner {
        fs::write(dir.join("owner"), owner).expect("owner file");
    }
    if let Some(pid) = postmaster {
        fs::write(
            dir.join("data/postmaster.pid"),
            format!("{pid}\n{}\n", dir.join("data").display()),
        )
        .expect("postmaster.pid");
    }
    dir
}

/// What a start removes: directories whose owner is dead (shutting down their
/// postmaster first), and ownerless ones whose postmaster is dead; never a live
/// owner's, nor anything not named like a server directory.
#[test]
fn a_start_removes_only_stale_server_directories() {
    let base = tempfile::tempdir().expect("base dir");
    let my_identity = {
        let stat = fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        let after_name = &stat[stat.rfind(')').expect("stat format") + 1..];
        format!(
            "{} {}",
            std::process::id(),
            after_name.split_whitespace().nth(19).expect("start time")
        )
    };
    let dead = dead_pid();
    let dead_owner = fake_server_dir(
        base.path(),
        "sf2520-pg-dead-owner",
        Some(format!("{dead} 1")),
        None,
    );
    // Our pid, but another start time: a later process that reused a dead owner's pid.
    let reused_pid = fake_server_dir(
        base.path(),
        "sf2520-pg-reused-pid",
        Some(format!("{} 1", std::process::id())),
        None,
    );
    let live_owner = fake_server_dir(
        base.path(),
        "sf2520-pg-live-owner",
        Some(my_identity.clone()),
        None,
    );
    let no_owner_dead_postmaster =
        fake_server_dir(base.path(), "sf2520-pg-no-owner", None, Some(dead));
    let other = fake_server_dir(
        base.path(),
        "something-else",
        Some(format!("{dead} 1")),
        None,
    );
    // A dead owner's postmaster still running: this stand-in names its directory on
    // its command line, as a postmaster does (`postgres -D <dir>/data`). It is `sleep`
    // itself with that argv[0], not a shell that execs it: bash ignores SIGQUIT, so a
    // signal that arrived before its exec would be lost.
    let orphan = base.path().join("sf2520-pg-orphan");
    let mut stand_in = Command::new("sleep")
        .arg0(format!("postgres -D {}", orphan.join("data").display()))
        .arg("60")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a stand-in postmaster");
    let orphan = fake_server_dir(
        base.path(),
        "sf2520-pg-orphan",
        Some(format!("{dead} 1")),
        Some(stand_in.id()),
    );

    pg::remove_stale_servers(base.path());

    assert!(!dead_owner.exists());
    assert!(!reused_pid.exists());
    assert!(!no_owner_dead_postmaster.exists());
    assert!(!orphan.exists());
    let status = stand_in.wait().expect("reap the stand-in");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGQUIT), "{status}");
    assert!(live_owner.exists());
    assert!(other.exists());
}
