//! The `sf2520` binary: parse arguments, set up logging and signal handling, run,
//! map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use sf2520::export::ExportError;
use sf2520::ledger::{BackupError, LedgerError};

/// Another run holds what this one needs (the export lock, the ledger's write
/// lock): try again later (sysexits' EX_TEMPFAIL).
const EXIT_TRY_AGAIN: u8 = 75;

fn main() -> ExitCode {
    let cli = sf2520::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = sf2520::interrupt::install() {
        eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {error}");
        return ExitCode::FAILURE;
    }
    match sf2520::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // The last line of defence against a full CPR in a message: it may quote
            // input that holds a CPR where none was expected.
            eprintln!(
                "error: {}",
                sf2520::domain::mask_in_text(&format!("{error:#}"))
            );
            ExitCode::from(exit_status(&error))
        }
    }
}

/// The exit status of a failed run, from the typed error at its root.
fn exit_status(error: &anyhow::Error) -> u8 {
    let ledger = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<LedgerError>()
            .or_else(|| match cause.downcast_ref::<ExportError>() {
                Some(ExportError::Ledger(inner)) => Some(inner),
                _ => None,
            })
            .or_else(|| match cause.downcast_ref::<BackupError>() {
                Some(BackupError::Ledger(inner)) => Some(inner),
                _ => None,
            })
    });
    match ledger {
        Some(LedgerError::Interrupted(stop)) => stop.signal.exit_status(),
        Some(LedgerError::ExportRunning { .. } | LedgerError::Busy { .. }) => EXIT_TRY_AGAIN,
        _ => 1,
    }
}
