//! `sf2520 backup` and `sf2520 restore`: a verified copy of the ledger, and
//! putting one back.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::ledger::{backup, restore};

use super::output::hex;
use super::{BackupArgs, RestoreArgs};

pub(super) fn run_backup(data_dir: &Path, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let report = backup(data_dir, &args.destination, args.force)?;
    let key_file = crate::ledger::key_file_path(data_dir);
    let key_file = key_file.exists().then(|| key_file.display().to_string());
    if args.json {
        writeln!(
            io::stdout().lock(),
            "{}",
            json!({
                "destination": args.destination.display().to_string(), "events": report.events,
                "head_hash": hex(&report.head_hash), "projection_rows": report.projection_rows,
                "key_file": key_file,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        io::stdout().lock(),
        "backup: {} event(s), head {} written to {} (owner-only) and verified: hash chain \
         intact, {} projection row(s) equal a replay",
        report.events,
        hex(&report.head_hash),
        args.destination.display(),
        report.projection_rows
    )?;
    if let Some(key_file) = key_file {
        writeln!(
            io::stdout().lock(),
            "backup: its CPRs are sealed under data keys that only the key file {key_file} \
             opens, and the backup does not hold it: keep a copy of the key file, apart from \
             the backups (a restore on a new machine needs both)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_restore(data_dir: &Path, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let report = restore(data_dir, &args.source, args.force)?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "source": args.source.display().to_string(), "events": report.restored.events,
                "head_hash": hex(&report.restored.head_hash),
                "previous_events": report.previous_events, "discarded_events": report.discarded_events,
                "kept_aside": report.kept_aside.as_ref().map(|path| path.display().to_string()),
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let previous = match report.previous_events {
        Some(events) => format!("the ledger it replaced had {events} event(s)"),
        None => "there was no ledger before".into(),
    };
    writeln!(
        out,
        "restored: {} event(s), head {}, from {} into {} (verified before it was put in \
         place); {previous}",
        report.restored.events,
        hex(&report.restored.head_hash),
        args.source.display(),
        data_dir.display()
    )?;
    writeln!(
        out,
        "head: {}:{}",
        report.restored.events,
        hex(&report.restored.head_hash)
    )?;
    if let Some(aside) = &report.kept_aside {
        writeln!(
            out,
            "forced: {} event(s) of the replaced ledger are not in the backup; it is kept as {}",
            report.discarded_events,
            aside.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
