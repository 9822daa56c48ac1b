//! Delivery progress on standard error: what is about to be delivered, one line
//! per file as it finishes, and a line at a fixed interval while files are still
//! uploading or waiting for their receipts (which can take up to
//! `receipt_timeout_secs` each), so that a long wait is never silent.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tracing::Level;

use super::logging::to_stderr;
use crate::export::{DeliveryReport, ExportError};
use crate::transport::SftpConfig;

/// Seconds between "still waiting" lines unless `SF2520_PROGRESS_SECS` says otherwise.
const DEFAULT_INTERVAL_SECS: u64 = 30;

/// The interval between "still waiting" lines: `SF2520_PROGRESS_SECS` (whole
/// seconds, at least 1) or 30 s.
fn interval() -> anyhow::Result<Duration> {
    match std::env::var("SF2520_PROGRESS_SECS") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_INTERVAL_SECS)),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
            _ => anyhow::bail!(
                "SF2520_PROGRESS_SECS is {text:?}; expected a whole number of seconds, at least 1"
            ),
        },
    }
}

/// Runs `work` (a delivery of `pending` files), printing progress to standard
/// error unless `quiet` (JSON output keeps standard error for logs only).
pub(super) fn while_delivering<T>(
    quiet: bool,
    pending: usize,
    config: &SftpConfig,
    line: fn(&DeliveryReport) -> String,
    work: impl FnOnce(&(dyn Fn(&DeliveryReport) + Sync)) -> Result<T, ExportError>,
) -> anyhow::Result<T> {
    if quiet || pending == 0 {
        return Ok(work(&|_| {})?);
    }
    let every = interval()?;
    to_stderr(
        Level::INFO,
        &format!(
            "deliver: {pending} file(s) to {}; each waits up to {} s for its receipt \
             (receipt_timeout_secs); progress every {} s",
            config.address(),
            config.receipt_timeout_secs,
            every.as_secs()
        ),
    );
    let emit = |text: String| to_stderr(Level::INFO, &text);
    Ok(with_ticks(every, pending, &emit, line, work)?)
}

/// Runs `work`, emitting `line` of each file as it finishes and, every `every`
/// while `work` runs, how many of the `pending` files have finished.
fn with_ticks<T>(
    every: Duration,
    pending: usize,
    emit: &(dyn Fn(String) + Sync),
    line: fn(&DeliveryReport) -> String,
    work: impl FnOnce(&(dyn Fn(&DeliveryReport) + Sync)) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    let (finished, ticks) = mpsc::channel::<()>();
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut done = 0usize;
            // Ends when `work` returns and the sender is dropped.
            loop {
                match ticks.recv_timeout(every) {
                    Ok(()) => done += 1,
                    Err(RecvTimeoutError::Timeout) => emit(format!(
                        "deliver: {} s: {done} of {pending} file(s) finished; the rest are \
                         uploading or waiting for their receipts",
                        started.elapsed().as_secs()
                    )),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        let on_done = |report: &DeliveryReport| {
            emit(line(report));
            // Fails only once the ticker has stopped, which it does after `work`.
            let _ = finished.send(());
        };
        let result = work(&on_done);
        drop(finished);
        result
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// While a delivery is still waiting, progress lines appear: the "delivery"
    /// here waits until it has seen one, so no timing is assumed.
    #[test]
    fn a_long_wait_is_not_silent() {
        let lines = Mutex::new(Vec::new());
        let (seen, wait_for_tick) = mpsc::channel::<()>();
        let seen = Mutex::new(seen);
        let emit = |text: String| {
            lines.lock().unwrap().push(text);
            let _ = seen.lock().unwrap().send(());
        };
        let result = with_ticks(
            Duration::from_millis(1),
            3,
            &emit,
            |_| String::new(),
            |_| {
                wait_for_tick.recv().unwrap();
                Ok(42)
            },
        );
        assert_eq!(result.unwrap(), 42);
        let lines = lines.into_inner().unwrap();
        assert!(lines[0].contains("0 of 3 file(s) finished"), "{lines:?}");
    }
}
