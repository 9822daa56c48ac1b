//! Bounded waits for the tests that run sf2520 as a child process: every wait
//! has a limit and says what it waited for (polling a state, never a delay that
//! stands in for one).

use std::io::Read;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// How long a test waits for a child or a state before it fails, naming what.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// Waits for a child, killing it (and failing) if it runs past [`PATIENCE`].
pub(crate) fn wait_bounded(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > PATIENCE {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "sf2520 did not finish within {PATIENCE:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Polls `condition` until it holds, failing after [`PATIENCE`].
pub(crate) fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < PATIENCE, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `probe` until it gives a value. If `child` ends first, fails with what it
/// printed: the state will never come.
pub(crate) fn wait_for<T>(
    what: &str,
    mut child: Option<&mut Child>,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if let Some(child) = child.as_deref_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    stdout.read_to_string(&mut out).unwrap();
                }
                if let Some(mut stderr) = child.stderr.take() {
                    stderr.read_to_string(&mut err).unwrap();
                }
                panic!("sf2520 ended ({status}) before {what}\nstdout: {out}\nstderr: {err}");
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what} in vain"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`, …) to `child` with kill(1).
pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}
