//! `sf2520 demo`: generate the seeded demo month, ingest it, print a summary.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::demo::demo_month;
use crate::export::{default_outbox, run_batch, ExportRequest};
use anyhow::Context;

use crate::domain::Command;
use crate::ledger::{IngestMode, IngestReport, Ledger};

use super::export::{exported_json, print_exported, Bar};

use super::output::kroner;
use super::DemoArgs;

/// Appends the demo month, its commands numbered as lines from 1; a line the
/// rules refuse is a bug in the generator.
fn ingest_demo(
    ledger: &mut Ledger,
    commands: Vec<Command>,
    seed: u64,
) -> anyhow::Result<IngestReport> {
    let lines = commands
        .into_iter()
        .enumerate()
        .map(|(index, command)| (index + 1, command))
        .collect();
    ledger
        .ingest(lines, IngestMode::Commit)?
        .accepted()
        .map_err(|refused| {
            anyhow::anyhow!(
                "the rules refused {} line(s) of the demo month (seed {seed}): {}; this is a \
                 bug in the demo's generator. Nothing was written",
                refused.len(),
                refused
                    .iter()
                    .take(3)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
}

pub(super) fn run(data_dir: &Path, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let commands = demo_month(args.seed);
    let mut out = io::stdout().lock();
    let command_count = commands.len();
    if !args.json {
        writeln!(
            out,
            "demo: {command_count} commands for October 2026 across 98 kommuner (seed {}), data directory {}",
            args.seed,
            data_dir.display()
        )?;
    }
    // The demo, like `init`, may create the ledger.
    let mut ledger = Ledger::open(data_dir)?;
    let report = ingest_demo(&mut ledger, commands, args.seed)?;
    let totals = ledger.kommune_totals(report.head.position)?;
    let entries: u64 = totals.iter().map(|(_, t)| t.entries).sum();
    let net = totals
        .iter()
        .try_fold(0i64, |sum, (_, t)| sum.checked_add(t.net_ore))
        .context("the kommuner's nets overflow i64 øre together")?;
    if !args.json {
        writeln!(
            out,
            "ingest: appended {} event(s), {} duplicate(s); log head is position {}",
            report.appended(),
            report.duplicates(),
            report.head.position
        )?;
        writeln!(
            out,
            "ledger: {} kommuner, {} entries, net withheld {} kr",
            totals.len(),
            entries,
            kroner(net)
        )?;
    }
    let outbox = default_outbox(data_dir);
    let bar = Bar::new();
    let files = run_batch(&mut ledger, &ExportRequest::default(), &outbox, &bar)?;
    drop(bar);
    if args.json {
        let head = crate::audit::Anchor::of(&ledger.head()?).to_string();
        let mut document = exported_json(&files, Some(head));
        document["seed"] = json!(args.seed);
        document["commands"] = json!(command_count);
        document["appended"] = json!(report.appended());
        document["duplicates"] = json!(report.duplicates());
        document["head_position"] = json!(report.head.position);
        document["kommuner"] = json!(totals.len());
        document["entries"] = json!(entries);
        document["net"] = json!(kroner(net));
        writeln!(out, "{document}")?;
        return Ok(ExitCode::SUCCESS);
    }
    print_exported(
        &mut out,
        &files,
        &format!("official files into {}", outbox.display()),
        Some(ledger.head()?),
        false,
    )?;
    writeln!(
        out,
        "next: `sf2520 files` lists every official file; `sf2520 check {}/*.txt` validates them",
        outbox.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
