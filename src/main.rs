//! The `sf2520` binary: parse arguments, set up logging and signal handling, run,
//! map to an exit code (the contract is `cli::exit`).

use std::process::ExitCode;

use clap::Parser;
use tracing::Level;

use sf2520::cli::logging::to_stderr;

fn main() -> ExitCode {
    let cli = match sf2520::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return sf2520::cli::usage_error(&error),
    };
    sf2520::cli::logging::init(cli.log_format);
    if let Err(error) = sf2520::interrupt::install() {
        to_stderr(
            Level::ERROR,
            &format!("cannot install the SIGINT/SIGTERM handlers: {error}"),
        );
        return ExitCode::FAILURE;
    }
    match sf2520::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // The last line of defence against a full CPR in a message: it may quote
            // input that holds a CPR where none was expected (to_stderr masks it).
            to_stderr(Level::ERROR, &sf2520::cli::error_text(&error));
            sf2520::cli::exit::classify(&error).into()
        }
    }
}
