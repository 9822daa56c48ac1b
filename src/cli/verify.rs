//! `sf2520 verify`: the hash chain and the projections against a replay.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::ledger::Ledger;

use super::output::hex;

pub fn run(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let mut out = io::stdout().lock();
    match ledger.verify(|_| {})? {
        Ok(report) => {
            writeln!(
                out,
                "ok: {} event(s), hash chain intact (head {}), {} projection row(s) equal a replay",
                report.events,
                hex(&report.head_hash),
                report.projection_rows
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            writeln!(out, "DAMAGED: {failure}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}
