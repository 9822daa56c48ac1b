//! A real OpenSSH server on 127.0.0.1 for the SFTP tests, with throwaway keys, killed on drop.
//!
//! Everything lives in one temporary directory: host and client keys, the
//! authorized_keys file, the config, the pid file, the log, and `root/` with `OUT/`
//! and `IN/`. `ForceCommand internal-sftp -d <root>` makes relative paths resolve
//! there, never in a real home directory. Works as root (as CI runs) and as a normal
//! user (who can only log in as themself). If sshd cannot start, the test panics with
//! sshd's own output: a missing server is a broken test machine, not a reason to skip.
//! Run as a normal user, that user's account must not be locked: sshd without PAM
//! refuses locked accounts even for key logins, and says so in its log.

use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sf2520::transport::{RetryConfig, SftpConfig};
use tempfile::TempDir;

pub(crate) const SSHD: &str = "/usr/sbin/sshd";

/// How long sshd may take to accept connections before the test gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for an event to appear in sshd's log before it fails.
const LOG_WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How the server is set up: its host key type, and which public-key signature
/// algorithms it accepts from clients.
#[derive(Clone, Debug)]
pub(crate) struct SshdSetup {
    /// `ssh-keygen` arguments for the host key, e.g. `["-t", "rsa", "-b", "3072"]`.
    pub host_key: Vec<String>,
    /// `ssh-keygen` arguments for more host keys the server also has (as an
    /// OpenSSH server has RSA, ECDSA and ed25519 keys), listed after `host_key`.
    pub more_host_keys: Vec<Vec<String>>,
    /// `PubkeyAcceptedAlgorithms`, when it should be narrower than sshd's default.
    pub pubkey_accepted_algorithms: Option<String>,
}

impl Default for SshdSetup {
    fn default() -> Self {
        SshdSetup {
            host_key: vec!["-t".into(), "ed25519".into()],
            more_host_keys: Vec::new(),
            pubkey_accepted_algorithms: None,
        }
    }
}

pub(crate) struct Sshd {
    setup: SshdSetup,
    dir: TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl Sshd {
    /// Generates keys and config, starts sshd on a free port and waits until it listens.
    pub(crate) fn start() -> Sshd {
        Sshd::start_with(SshdSetup::default())
    }

    /// Like [`Sshd::start`], with the given host key type and accepted algorithms.
    pub(crate) fn start_with(setup: SshdSetup) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/install-test-deps.sh"
        );
        let dir = tempfile::tempdir().expect("create temp dir for sshd");
        let root = dir.path().join("root");
        for sub in ["OUT", "IN"] {
            fs::create_dir_all(root.join(sub)).expect("create OUT/IN");
        }
        let host_args: Vec<&str> = setup.host_key.iter().map(String::as_str).collect();
        generate_key_with(dir.path(), "host_key", &host_args);
        for (index, args) in setup.more_host_keys.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            generate_key_with(dir.path(), &format!("host_key_{}", index + 2), &args);
        }
        let client_key = generate_key(dir.path(), "client_ed25519");
        fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("write authorized_keys");
        let mut sshd = Sshd {
            setup,
            port: free_port(),
            user: current_user(),
            dir,
            child: None,
        };
        sshd.write_config();
        sshd.restart();
        sshd
    }

    fn write_config(&self) {
        let dir = self.dir.path().display();
        let more_host_keys: String = (2..self.setup.more_host_keys.len() + 2)
            .map(|number| format!("HostKey {dir}/host_key_{number}\n"))
            .collect();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {dir}/host_key\n{more_host_keys}\
             PidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AllowUsers {user}\n\
             Subsystem sftp internal-sftp\n\
             ForceCommand internal-sftp -d {dir}/root\n{accepted}",
            port = self.port,
            user = self.user,
            accepted = self
                .setup
                .pubkey_accepted_algorithms
                .as_ref()
                .map_or(String::new(), |a| format!("PubkeyAcceptedAlgorithms {a}\n")),
        );
        fs::write(self.config_path(), config).expect("write sshd_config");
    }

    /// Starts sshd (again) on the same port; a running one is stopped first.
    pub(crate) fn restart(&mut self) {
        self.stop();
        ensure_privilege_separation_dir();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SSHD}: {e}"));
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("sshd was started");
            if let Some(status) = child.try_wait().expect("poll sshd") {
                panic!(
                    "sshd exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "sshd did not listen on {address} within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills sshd and its per-connection processes, as a crash would: open
    /// connections drop, and the port refuses new ones until [`Sshd::restart`].
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Sessions are forked children that outlive the listener, so they go first,
        // while the listener still anchors the process tree.
        for pid in descendants(child.id()) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The SFTP login directory; `OUT/` and `IN/` are in it.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub(crate) fn out_dir(&self) -> PathBuf {
        self.root().join("OUT")
    }

    pub(crate) fn in_dir(&self) -> PathBuf {
        self.root().join("IN")
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The host's public key as an OpenSSH line: `ssh-ed25519 AAAA... comment`.
    pub(crate) fn host_key_line(&self) -> String {
        read_trimmed(&self.dir.path().join("host_key.pub"))
    }

    /// Every host key's OpenSSH line, `host_key` first, then `more_host_keys` in order.
    pub(crate) fn host_key_lines(&self) -> Vec<String> {
        let mut lines = vec![self.host_key_line()];
        for number in 2..self.setup.more_host_keys.len() + 2 {
            let path = self.dir.path().join(format!("host_key_{number}.pub"));
            lines.push(read_trimmed(&path));
        }
        lines
    }

    /// The host key's `SHA256:` fingerprint, as `ssh-keygen -l` prints it.
    pub(crate) fn host_key_fingerprint(&self) -> String {
        fingerprint(&self.dir.path().join("host_key.pub"))
    }

    /// Generates a client key with `ssh-keygen` and these arguments (`-t rsa -b 4096
    /// -m PEM`, ...), authorizes its public key, and returns the private key's path.
    pub(crate) fn add_client_key(&self, name: &str, args: &[&str]) -> PathBuf {
        use std::io::Write;
        let key = generate_key_with(self.dir.path(), name, args);
        let public = fs::read(key.with_extension("pub")).expect("read the new public key");
        OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .and_then(|mut file| file.write_all(&public))
            .expect("authorize the new key");
        key
    }

    /// Waits until sshd has logged `needle` at least `count` times (every restart
    /// appends to the same log) and returns the count; panics, naming `what` it
    /// waited for and showing the log, after [`LOG_WAIT_TIMEOUT`].
    pub(crate) fn wait_for_log(&self, needle: &str, count: usize, what: &str) -> usize {
        let started = Instant::now();
        loop {
            let seen = self.log().matches(needle).count();
            if seen >= count {
                return seen;
            }
            if started.elapsed() > LOG_WAIT_TIMEOUT {
                panic!(
                    "waited {LOG_WAIT_TIMEOUT:?} for {what} ({count} × {needle:?} in sshd's log), \
                     saw {seen}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything sshd has logged so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no sshd log: {e})"))
    }

    /// A config that names no running server, for tests that only render triggers.
    pub(crate) fn placeholder_config() -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: 22,
            user: "ky".into(),
            private_key: PathBuf::from("/nonexistent"),
            host_key: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
                .parse()
                .expect("fingerprint parses"),
            sender: "KY-TEST".into(),
            recipients: vec!["UDK-DEBITOR".into()],
            remote_out_dir: "OUT".into(),
            remote_in_dir: "IN".into(),
            connect_timeout_secs: 5,
            receipt_timeout_secs: 10,
            receipt_poll_interval_ms: 50,
            retry: RetryConfig::default(),
            concurrency: 1,
            routing: None,
        }
    }

    /// A config for this server with short timeouts, so tests stay fast.
    pub(crate) fn config(&self) -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            private_key: self.client_key(),
            host_key: self.host_key_line().parse().expect("host key line parses"),
            sender: "KY-TEST".into(),
            recipients: vec!["UDK-DEBITOR".into()],
            remote_out_dir: "OUT".into(),
            remote_in_dir: "IN".into(),
            connect_timeout_secs: 5,
            receipt_timeout_secs: 10,
            receipt_poll_interval_ms: 50,
            retry: RetryConfig {
                max_attempts: 3,
                initial_delay_ms: 50,
                max_delay_ms: 200,
            },
            concurrency: 4,
            routing: None,
        }
    }

    /// Writes an owner-only `sf2520.toml` for this server into `dir` (receipts
    /// polled every 50 ms); `extra` lines are added to the `[sftp]` section.
    pub(crate) fn write_sf2520_config(&self, dir: &Path, extra: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("sf2520.toml");
        let text = format!(
            "[sftp]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\n\
             host_key = \"{}\"\nsender = \"KY-TEST\"\nrecipients = [\"UDK-DEBITOR\"]\n\
             receipt_poll_interval_ms = 50\n{extra}",
            self.port,
            self.user,
            self.client_key().display(),
            self.host_key_line()
        );
        fs::write(&path, text).expect("write sf2520.toml");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod sf2520.toml");
        path
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates an unencrypted ed25519 key pair `<dir>/<name>` and `<name>.pub`.
pub(crate) fn generate_key(dir: &Path, name: &str) -> PathBuf {
    generate_key_with(dir, name, &["-t", "ed25519"])
}

/// Creates an unencrypted key pair `<dir>/<name>` and `<name>.pub` with these
/// `ssh-keygen` arguments for type, size and format.
pub(crate) fn generate_key_with(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let output = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", name])
        .args(args)
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ssh-keygen ({e}): run scripts/install-test-deps.sh")
        });
    assert!(
        output.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// `SHA256:...` of a public key file, computed by ssh-keygen rather than by the code
/// under test.
pub(crate) fn fingerprint(public_key: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public_key)
        .output()
        .expect("run ssh-keygen -l");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {text:?}"))
        .to_owned()
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Every process below `root` in the process tree, found through /proc.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(|pid: u32| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// The parent pid from `/proc/<pid>/stat`; the command name before it may hold
/// spaces and parentheses, so the fields are read after the last `)`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Asks the kernel for a free port; the small race until sshd binds it is acceptable
/// in tests, and a lost race shows up as sshd's "Address already in use".
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(
        output.status.success(),
        "id -un failed: is this user in /etc/passwd?"
    );
    String::from_utf8(output.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_owned()
}

/// sshd started as root refuses to run without its privilege-separation directory,
/// which a container without a running sshd service may not have.
fn ensure_privilege_separation_dir() {
    let privsep = Path::new("/run/sshd");
    if privsep.exists() || !is_root() {
        return;
    }
    fs::create_dir_all(privsep).expect("create /run/sshd");
    fs::set_permissions(privsep, fs::Permissions::from_mode(0o755)).expect("chmod /run/sshd");
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}
