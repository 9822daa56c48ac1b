//! The `sf2520` binary: parse arguments, set up logging, run, map to an exit code
//! (the contract is `cli::exit`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sf2520::cli::Cli::parse();
    sf2520::cli::logging::init(cli.log_format);
    match sf2520::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // The last line of defence for DESIGN.md §7.6: a message may quote input
            // that holds a CPR where none was expected.
            eprintln!(
                "error: {}",
                sf2520::domain::mask_in_text(&sf2520::cli::error_text(&error))
            );
            sf2520::cli::exit::classify(&error).into()
        }
    }
}
