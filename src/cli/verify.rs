//! `sf2520 verify`: the hash chain and the projections against a replay.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::ledger::Ledger;

use super::exit::Exit;
use super::output::hex;
use super::VerifyArgs;

pub fn run(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let mut out = io::stdout().lock();
    match ledger.verify(|_| {})? {
        Ok(report) => {
            if args.json {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "ok": true, "events": report.events, "head_hash": hex(&report.head_hash),
                        "projection_rows": report.projection_rows,
                    })
                )?;
            } else {
                writeln!(
                    out,
                    "ok: {} event(s), hash chain intact (head {}), {} projection row(s) equal a replay",
                    report.events,
                    hex(&report.head_hash),
                    report.projection_rows
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            if args.json {
                writeln!(
                    out,
                    "{}",
                    json!({"ok": false, "damage": failure.to_string()})
                )?;
            } else {
                writeln!(out, "DAMAGED: {failure}")?;
            }
            Ok(Exit::LedgerDamaged.into())
        }
    }
}
