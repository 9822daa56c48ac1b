//! `sf2520 verify`: the hash chain, the projections against a replay, the heads the
//! operator anchored, and the outbox against the `FileExported` events.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use crate::audit::{read_anchors, verify, Anchor, AuditChecks};
use crate::export::default_outbox;
use crate::ledger::Ledger;

use super::VerifyArgs;

/// The checks `args` ask for: anchors from the flags and the file, and the outbox
/// (`--outbox DIR`, else the data directory's default outbox if it exists).
fn checks(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<AuditChecks> {
    let mut anchors: Vec<Anchor> = args.expect_head.clone();
    for path in &args.expect_heads {
        anchors.extend(read_anchors(path).map_err(anyhow::Error::msg)?);
    }
    let outbox = match &args.outbox {
        Some(dir) if !dir.is_dir() => bail!(
            "--outbox {} is not a directory; name the directory the official files were exported into",
            dir.display()
        ),
        Some(dir) => Some(dir.clone()),
        None if args.no_outbox => None,
        None => Some(default_outbox(data_dir)).filter(|dir| dir.is_dir()),
    };
    Ok(AuditChecks { anchors, outbox })
}

pub fn run(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let checks = checks(data_dir, args)?;
    let ledger = Ledger::open(data_dir)?;
    let verification = verify(&ledger, &checks)?;
    let mut out = io::stdout().lock();
    let head = Anchor::of(&ledger.head()?);
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "ok": verification.passed(), "head": head.to_string(),
                "anchors_checked": checks.anchors.len(),
                "outbox": verification.outbox_checked.as_ref().map(|dir| dir.display().to_string()),
                "problems": verification.problems(),
            })
        )?;
    } else if verification.passed() {
        let report = verification.ledger.as_ref().expect("passed");
        writeln!(
            out,
            "ok: {} event(s), hash chain intact, {} projection row(s) equal a replay",
            report.events, report.projection_rows
        )?;
        writeln!(out, "head: {head}")?;
        if !checks.anchors.is_empty() {
            writeln!(
                out,
                "ok: the log still holds all {} expected head(s)",
                checks.anchors.len()
            )?;
        }
        match &verification.outbox_checked {
            Some(dir) => writeln!(
                out,
                "ok: all {} official file(s) in {} have the SHA-256 of their FileExported event",
                report.files.len(),
                dir.display()
            )?,
            None => writeln!(out, "outbox: not checked (no outbox directory)")?,
        }
    } else {
        for problem in verification.problems() {
            writeln!(out, "DAMAGED: {problem}")?;
        }
    }
    Ok(if verification.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
