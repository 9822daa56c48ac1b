//! The `sf2520` binary: parse arguments, set up logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = sf2520::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match sf2520::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // The last line of defence for DESIGN.md §7.6: a message may quote input
            // that holds a CPR where none was expected.
            eprintln!(
                "error: {}",
                sf2520::domain::mask_in_text(&format!("{error:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
