//! Running the real `sf2520` binary: with `RUST_LOG=trace` and under `umask 000`,
//! so that every log line can be inspected and every file the program creates
//! gets only the mode the program itself asks for.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// What one run printed and how it ended.
pub(crate) struct Run {
    pub success: bool,
    /// The exit code (`None` when a signal ended the run).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything printed unless the run succeeded.
    pub(crate) fn expect_success(self, what: &str) -> Run {
        assert!(
            self.success,
            "{what} failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run failed with `fragment` in its output.
    pub(crate) fn expect_refusal(self, fragment: &str) -> Run {
        assert!(
            !self.success,
            "expected a refusal with {fragment:?}; stdout: {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(fragment) || self.stdout.contains(fragment),
            "the refusal lacks {fragment:?}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

impl Run {
    /// Panics unless the run ended with exit code `code`.
    pub(crate) fn expect_code(self, code: i32, what: &str) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `sf2520 --data-dir DATA_DIR ARGS...` under `umask 000` with `RUST_LOG=trace`,
/// run in `DATA_DIR`'s nearest existing ancestor (so files written to the current directory land in
/// the test's temporary directory).
pub(crate) fn command<I, S>(data_dir: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .current_dir(existing_ancestor(data_dir))
        .env("RUST_LOG", "trace")
        .env_remove("SF2520_DATA_DIR");
    database(&mut command, data_dir);
    command
}

/// `sf2520 --data-dir DATA_DIR ARGS...` itself (no shell in between, so its pid is
/// the one a test kills), with `RUST_LOG=warn`: for tests that spawn the binary
/// and kill it.
pub(crate) fn binary<I, S>(data_dir: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_sf2520"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SF2520_DATA_DIR");
    database(&mut command, data_dir);
    command
}

/// The test backend's database of `data_dir` in `SF2520_DATABASE_URL` (none on
/// SQLite: see `support::backend`).
fn database(command: &mut Command, data_dir: &Path) {
    match super::backend::database_url(data_dir) {
        Some(url) => command.env("SF2520_DATABASE_URL", url),
        None => command.env_remove("SF2520_DATABASE_URL"),
    };
}

/// The nearest ancestor of `path` that exists (the data directory may not yet).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .skip(1)
        .find(|ancestor| ancestor.is_dir())
        .expect("the root exists")
}

/// Runs `sf2520` (see [`command`]) to completion.
pub(crate) fn sf2520<I, S>(data_dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command(data_dir, args).output().expect("run sf2520").into()
}

/// The permission bits of a file or directory.
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Starts `sf2520 --data-dir DATA_DIR ARGS...` as a node of the PostgreSQL ledger
/// at `url` (through `SF2520_DATABASE_URL`), with `RUST_LOG=warn` and its output
/// piped, for tests that watch it while it runs. Its busy wait is longer than any
/// of the test's own: a loaded machine must not turn a held lock into a refusal.
pub(crate) fn spawn_node(data_dir: &Path, url: &str, args: &[&str]) -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_sf2520"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--busy-timeout", "600"])
        .args(args)
        .env("SF2520_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env_remove("SF2520_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sf2520")
}
