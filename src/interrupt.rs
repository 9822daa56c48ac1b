//! SIGINT and SIGTERM as a request to stop at the next safe point: the binary
//! installs the handlers, long-running work asks [`check`] between steps and
//! unwinds through its own clean-up (temporary files removed, transactions rolled
//! back). A second signal ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

/// Set by the first SIGINT or SIGTERM; arms the immediate exit on a second one.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Which of the two it was (both may be set).
static SIGINT_SEEN: AtomicBool = AtomicBool::new(false);
static SIGTERM_SEEN: AtomicBool = AtomicBool::new(false);

/// A run stopped because a signal asked it to; it cleaned up after itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error(
    "stopped by {} at a safe point: nothing half-done was kept (temporary files were \
     removed, an unfinished transaction was rolled back); run the command again",
    .signal.name()
)]
pub struct Interrupted {
    pub signal: StopSignal,
}

/// The signals that ask for a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT (Ctrl-C)",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit status of a process that stopped for this signal: 128 + its number,
    /// as a shell reports a process the signal ended (130, 143).
    pub fn exit_status(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// Installs the handlers for SIGINT and SIGTERM. The first sets the request that
/// [`check`] reports; the second, while the first is being handled, exits at once
/// with 128 + the signal's number.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for (signal, seen, status) in [(SIGINT, &SIGINT_SEEN, 130), (SIGTERM, &SIGTERM_SEEN, 143)] {
        // The order matters: the exit is armed only once a first signal set the flag.
        signal_hook::flag::register_conditional_shutdown(signal, status, &REQUESTED)?;
        signal_hook::flag::register(signal, seen)?;
        signal_hook::flag::register(signal, &REQUESTED)?;
    }
    Ok(())
}

/// `Err` once a signal asked the process to stop.
pub fn check() -> Result<(), Interrupted> {
    if !REQUESTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let signal = if SIGTERM_SEEN.load(Ordering::SeqCst) {
        StopSignal::Terminate
    } else {
        StopSignal::Interrupt
    };
    Err(Interrupted { signal })
}
