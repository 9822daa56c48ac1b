//! A real PostgreSQL server: Debian's (`/usr/lib/postgresql/<version>/bin`),
//! initdb'd into a temporary directory of the system temp dir and listening only on
//! a unix socket in that directory (`listen_addresses = ''`), trust authentication
//! for the superuser `postgres`. As root its tools run as the `postgres` system user
//! (root may not run PostgreSQL).
//!
//! Tests use the one server of their process: [`database`] starts it on first use
//! and hands out a fresh, empty database, dropped again with its value. The server is
//! stopped and its directory removed when the process exits (an `atexit` handler).
//! A process that dies without exiting (killed, Ctrl-C) leaves nothing running
//! either: every server has a watchdog process that stops it and removes its
//! directory once the process that started it is gone, and every start removes the
//! directories of servers whose owner is dead (say, after a reboot).
//!
//! The peer benchmark (benches/peers/pg.rs) includes this file by path and owns a
//! [`Server`] of its own, with its own settings; dropping it stops the server.
//!
//! If the server cannot start, the test panics with the server's own output: a
//! missing server is a broken test machine, never a reason to skip.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

/// Every server directory is `<temp dir>/sf2520-pg-<random>`.
pub(crate) const DIR_PREFIX: &str = "sf2520-pg-";

/// In a server directory: who started the server, `<pid> <start time>` (the start
/// time, from /proc, tells a live owner from a later process with the same pid).
const OWNER_FILE: &str = "owner";

/// What the test server changes from PostgreSQL's defaults (fsync is on by
/// default; said here so that nobody turns it off for speed without seeing it).
const TEST_SETTINGS: &[(&str, &str)] = &[("fsync", "on"), ("synchronous_commit", "on")];

/// The newest installed server's `bin` directory: the highest
/// `/usr/lib/postgresql/<version>/bin` holding `initdb`.
pub(crate) fn installed_bin() -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("bin/initdb").is_file())
        .map(|entry| {
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                // tidy: allow(unwrap-or): a part that is no number sorts first, never chosen.
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            (version, entry.path().join("bin"))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL server that runs until [`Server::stop`] or drop.
pub(crate) struct Server {
    /// Holds `data/`, the socket, `server.log` and the owner file.
    root: PathBuf,
    bin: PathBuf,
    /// Run the server's tools as this user (when we are root).
    run_as: Option<String>,
    /// Stops the server when our end of its stdin closes, that is when this value
    /// drops or this process dies, however it dies.
    watchdog: Mutex<Option<Child>>,
}

impl Server {
    /// initdb and start, with `settings` added to postgresql.conf (e.g.
    /// `("shared_buffers", "512MB")`); returns once the server accepts connections.
    /// Removes stale servers' directories first (see [`remove_stale_servers`]).
    pub(crate) fn start(bin: &Path, settings: &[(&str, &str)]) -> Server {
        let server = Server::empty(bin);
        let data = server.data_dir();
        let data = path_str(&data);
        server.run_checked(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        server.configure(settings);
        server.start_postmaster();
        server
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`, over the primary's
    /// unix socket), named `name` (its `cluster_name`, which is the
    /// `application_name` the primary's `pg_stat_replication` and
    /// `synchronous_standby_names` know it by), started with `settings`.
    pub(crate) fn start_standby(primary: &Server, name: &str, settings: &[(&str, &str)]) -> Server {
        let server = Server::empty(&primary.bin);
        let data = server.data_dir();
        server.run_checked(
            "pg_basebackup",
            &[
                "-D",
                path_str(&data),
                "-h",
                path_str(primary.socket_dir()),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        let mut all: Vec<(&str, &str)> = vec![("cluster_name", name)];
        all.extend_from_slice(settings);
        server.configure(&all);
        server.start_postmaster();
        server
    }

    fn start_postmaster(&self) {
        let data = self.data_dir();
        let log = self.log_file();
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`), keeping its
    /// directory: a primary lost in a failover.
    pub(crate) fn kill(&self) {
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting until it is).
    pub(crate) fn promote(&self) {
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&data), "-w", "-t", "60", "promote"],
        );
    }

    /// A server directory with no cluster in it yet, watched by its watchdog.
    fn empty(bin: &Path) -> Server {
        remove_stale_servers(&std::env::temp_dir());
        let root = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("temp dir for PostgreSQL")
            .keep();
        write_owner(&root);
        let run_as = if is_root() {
            let user = if user_exists("postgres") {
                "postgres"
            } else {
                "nobody"
            };
            chown(&root, user);
            Some(user.to_string())
        } else {
            None
        };
        // From here on, a panic drops `server`, which removes the directory again.
        let server = Server {
            root,
            bin: bin.to_path_buf(),
            run_as,
            watchdog: Mutex::new(None),
        };
        server.spawn_watchdog();
        server
    }

    /// The directory of the server's unix socket (libpq's `host`).
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// A connection to `dbname` as the superuser `postgres`.
    pub(crate) fn connect(&self, dbname: &str) -> Client {
        self.try_connect(dbname).unwrap_or_else(|e| {
            panic!(
                "connect to PostgreSQL in {} (database {dbname}): {e}\nserver log:\n{}",
                self.root.display(),
                self.log_tail()
            )
        })
    }

    pub(crate) fn try_connect(&self, dbname: &str) -> Result<Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.root)
            .user("postgres")
            .dbname(dbname)
            .connect(NoTls)
    }

    /// Creates the empty database `name` and returns its libpq `key=value` URL
    /// (`host=<socket dir> user=postgres dbname=<name>`).
    pub(crate) fn create_database(&self, name: &str) -> String {
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        format!(
            "host={} user=postgres dbname={name}",
            conninfo_value(path_str(self.socket_dir()))
        )
    }

    /// `SHOW server_version`, e.g. `15.14 (Debian 15.14-0+deb12u1)`.
    pub(crate) fn version(&self) -> String {
        self.connect("postgres")
            .query_one("SHOW server_version", &[])
            .map(|row| row.get(0))
            .unwrap_or_else(|e| panic!("SHOW server_version: {e}"))
    }

    /// Stops the server at once (its data is thrown away, so there is nothing to
    /// checkpoint) and removes its directory. Never panics: it runs at exit.
    pub(crate) fn stop(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.run(self.stop_argv());
        }
        let _ = fs::remove_dir_all(&self.root);
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The command line that runs one of the server's tools as the server's user.
    fn argv(&self, tool: &str, args: &[&str]) -> Vec<OsString> {
        let mut argv: Vec<OsString> = match &self.run_as {
            Some(user) => ["runuser", "-u", user.as_str(), "--"]
                .iter()
                .map(OsString::from)
                .collect(),
            None => Vec::new(),
        };
        argv.push(self.bin.join(tool).into_os_string());
        argv.extend(args.iter().map(OsString::from));
        argv
    }

    /// `pg_ctl stop`, immediate: the data is thrown away, nothing to checkpoint.
    fn stop_argv(&self) -> Vec<OsString> {
        let data = self.data_dir();
        self.argv(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        )
    }

    fn run(&self, argv: Vec<OsString>) -> std::io::Result<Output> {
        Command::new(&argv[0])
            .args(&argv[1..])
            // The server's user may not be able to enter our working directory.
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs a tool; panics with its output and the server log if it fails.
    fn run_checked(&self, tool: &str, args: &[&str]) {
        let output = self
            .run(self.argv(tool, args))
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join(tool).display()));
        assert!(
            output.status.success(),
            "PostgreSQL's {tool} {} failed ({}):\n{}{}\nserver log ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_file().display(),
            fs::read_to_string(self.log_file()).unwrap_or_else(|e| format!("({e})"))
        );
    }

    /// Appends `settings` and then the harness's own (unix socket in the server's
    /// directory, no TCP), which therefore win, to postgresql.conf.
    fn configure(&self, settings: &[(&str, &str)]) {
        let ours = [
            ("listen_addresses", ""),
            ("unix_socket_directories", path_str(&self.root)),
        ];
        let mut conf = String::from("\n# Added by the sf2520 test harness.\n");
        for (name, value) in settings.iter().chain(&ours) {
            let quoted = value.replace('\\', "\\\\").replace('\'', "''");
            conf.push_str(&format!("{name} = '{quoted}'\n"));
        }
        let path = self.data_dir().join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// A shell in its own process group (Ctrl-C does not reach it, as it does not
    /// reach the postmaster, which pg_ctl puts in a session of its own) that waits
    /// for end of file on its stdin and then stops the server and removes its
    /// directory. We hold the only write end; the kernel closes it when we die.
    fn spawn_watchdog(&self) {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                r#"trap '' HUP INT; read -r line; dir=$1; shift
                   [ -e "$dir/data/postmaster.pid" ] && "$@" >/dev/null 2>&1
                   rm -rf -- "$dir""#,
            )
            .arg("sf2520-pg-watchdog")
            .arg(&self.root)
            .args(self.stop_argv())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL watchdog (sh)");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = watchdog.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Removes the server directories (`<base>/sf2520-pg-*`) that nobody will stop:
/// those whose owner process is gone (its postmaster, if still running, is shut
/// down first), and those without an owner file whose postmaster.pid names a
/// process that is not their postmaster. Directories we may not read are left.
pub(crate) fn remove_stale_servers(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_server_dir = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX)
            && fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir());
        if !is_server_dir {
            continue;
        }
        // The owner file appears by a rename, complete or not at all.
        let stale = match fs::read_to_string(dir.join(OWNER_FILE)) {
            Ok(owner) => !owner_alive(&owner),
            Err(_) => {
                dir.join("data/postmaster.pid").is_file() && running_postmaster(&dir).is_none()
            }
        };
        if !stale {
            continue;
        }
        if let Some(pid) = running_postmaster(&dir) {
            // SIGQUIT is PostgreSQL's immediate shutdown.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while running_postmaster(&dir).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// The pid of the postmaster of the server in `dir`, if it runs: the pid its
/// postmaster.pid names, if that process's command line names `dir` (a pid file
/// outliving its server may name an unrelated process by now).
fn running_postmaster(dir: &Path) -> Option<libc::pid_t> {
    let pid_file = fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
    let pid: libc::pid_t = pid_file.lines().next()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = dir.to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .contains(&*dir)
        .then_some(pid)
}

/// `<pid> <start time in clock ticks since boot>` of a running process, from
/// /proc/<pid>/stat (the start time is field 22; fields after the command name,
/// which is in parentheses and may hold spaces, start at field 3).
fn process_identity(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_time = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

/// Whether the process an owner file names still runs (the same pid, started at
/// the same time).
fn owner_alive(owner: &str) -> bool {
    let Some(pid) = owner
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
    else {
        return false;
    };
    process_identity(pid).is_some_and(|now| now == owner.trim())
}

/// Writes this process's identity into `root`'s owner file, atomically.
fn write_owner(root: &Path) {
    let me = process_identity(std::process::id()).expect("read /proc/self/stat");
    let partial = root.join(format!("{OWNER_FILE}.partial"));
    fs::write(&partial, me)
        .and_then(|()| fs::rename(&partial, root.join(OWNER_FILE)))
        .unwrap_or_else(|e| panic!("write {}: {e}", root.join(OWNER_FILE).display()));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .is_ok_and(|out| out.status.success())
}

fn chown(path: &Path, user: &str) {
    let status = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {user} {} failed", path.display());
}

/// Paths the server's tools get: under the system temp dir, which is UTF-8 on
/// any machine these tests run on.
fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {}", path.display()))
}

// The tests' server: one per test process.

static SHARED: OnceLock<Server> = OnceLock::new();

/// The server of this process, started on first use.
fn shared() -> &'static Server {
    SHARED.get_or_init(|| {
        let bin = installed_bin().unwrap_or_else(|| {
            panic!(
                "the PostgreSQL server is not installed (no /usr/lib/postgresql/<version>/bin/initdb; \
                 /usr/local/bin/pg_ctl or a client alone is not enough): \
                 run scripts/install-test-deps.sh, which installs Debian's postgresql"
            )
        });
        let server = Server::start(&bin, TEST_SETTINGS);
        // SAFETY: stop_at_exit is an `extern "C" fn()` that never unwinds.
        let registered = unsafe { libc::atexit(stop_at_exit) };
        assert_eq!(registered, 0, "atexit refused the PostgreSQL stop handler");
        server
    })
}

/// Statics are never dropped: the process's server is stopped here, at exit.
extern "C" fn stop_at_exit() {
    if let Some(server) = SHARED.get() {
        server.stop();
    }
}

/// The directory of the tests' server's unix socket (starts the server if needed).
pub(crate) fn socket_dir() -> PathBuf {
    shared().socket_dir().to_path_buf()
}

/// The tests' server's data directory (starts the server if needed): for tests
/// that search the server's files byte for byte.
pub(crate) fn data_directory() -> PathBuf {
    shared().data_dir()
}

/// The tests' server's `SHOW server_version` (starts the server if needed).
pub(crate) fn server_version() -> String {
    shared().version()
}

/// A fresh, empty database on the tests' server, named `t_<pid>_<counter>`
/// (created from `template1`); dropped (`WITH (FORCE)`, so open connections do not
/// keep it) when this value drops.
pub(crate) fn database() -> TestDatabase {
    create_database("template1")
}

/// A new database of the tests' server, a copy of `template` (`CREATE DATABASE
/// … TEMPLATE`, which PostgreSQL refuses while anyone else is connected to it).
/// A fresh database as [`database`] makes, but sorting text by the ICU collation
/// `locale` (e.g. `da-DK`) instead of the server's C order: what an operator's
/// database may well do.
pub(crate) fn database_collated(locale: &str) -> TestDatabase {
    create_database(&format!(
        "template0 LOCALE_PROVIDER icu ICU_LOCALE '{locale}' LOCALE 'C'"
    ))
}

fn create_database(template: &str) -> TestDatabase {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = shared();
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
    server
        .connect("postgres")
        .batch_execute(&create)
        .unwrap_or_else(|e| panic!("{create}: {e}"));
    TestDatabase { name, server }
}

/// One database of the tests' server; see [`database`].
pub(crate) struct TestDatabase {
    name: String,
    server: &'static Server,
}

impl TestDatabase {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// libpq's key=value form: `host=<socket dir> user=postgres dbname=<name>`.
    pub(crate) fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname={}",
            conninfo_value(path_str(self.server.socket_dir())),
            self.name
        )
    }

    /// The URI form: `postgresql://postgres@/<name>?host=<percent-encoded socket dir>`.
    pub(crate) fn uri(&self) -> String {
        let dir = path_str(self.server.socket_dir());
        let mut host = String::new();
        for byte in dir.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                host.push(char::from(byte));
            } else {
                host.push_str(&format!("%{byte:02X}"));
            }
        }
        format!("postgresql://postgres@/{}?host={host}", self.name)
    }

    /// A new database holding a copy of this one, as it is now (nobody may be
    /// connected to this one meanwhile); dropped with its value like any other.
    pub(crate) fn copy(&self) -> TestDatabase {
        create_database(&self.name)
    }

    /// A new connection to this database, made from [`TestDatabase::url`].
    pub(crate) fn client(&self) -> Client {
        Client::connect(&self.url(), NoTls).unwrap_or_else(|e| {
            panic!(
                "connect to {}: {e}\nserver log:\n{}",
                self.url(),
                self.server.log_tail()
            )
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Not `connect`: a panic here while a failed test unwinds would abort.
        let dropped = self.server.try_connect("postgres").and_then(|mut admin| {
            admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
        });
        if let Err(e) = dropped {
            if !std::thread::panicking() {
                panic!("DROP DATABASE {}: {e}", self.name);
            }
        }
    }
}

/// A value of a libpq key=value string, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
