//! `sf2520 ingest`: read JSON Lines, check every line, append all or nothing.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::domain::mask_in_text;
use crate::input::{parse_lines, InputLineError, ParsedInput};
use crate::ledger::{IngestReport, Ledger, LedgerError, LineError, LineOutcome};

use super::IngestArgs;

fn read_input(file: &Path) -> anyhow::Result<ParsedInput> {
    if file == Path::new("-") {
        Ok(parse_lines(io::stdin().lock())?)
    } else {
        let handle =
            File::open(file).with_context(|| format!("cannot open input {}", file.display()))?;
        parse_lines(BufReader::new(handle))
            .with_context(|| format!("cannot read {}", file.display()))
    }
}

/// One rejected line, from parsing or from the rules, for the report.
struct Rejection {
    line: usize,
    reason: String,
}

pub fn run(data_dir: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let mut ledger = Ledger::open(data_dir)?;
    for file in &args.files {
        if ingest_file(&mut ledger, file, args)? != ExitCode::SUCCESS {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ingest_file(ledger: &mut Ledger, file: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let parsed = read_input(file)?;
    let total_lines = parsed.commands.len() + parsed.errors.len();
    let mut rejected: Vec<Rejection> = parsed.errors.iter().map(from_input).collect();
    // Even when some lines did not parse, the rest are checked against the ledger
    // (and rolled back) so that one run reports every bad line.
    let dry_run = args.dry_run || !rejected.is_empty();
    let result = ledger.ingest_checked(parsed.commands, !dry_run);
    let report = match result {
        Ok(report) => Some(report),
        Err(LedgerError::Rejected(errors)) => {
            rejected.extend(errors.iter().map(from_rule));
            None
        }
        Err(other) => return Err(other.into()),
    };
    rejected.sort_by_key(|rejection| rejection.line);
    let mut out = io::stdout().lock();
    if !rejected.is_empty() {
        print_rejections(&mut out, file, total_lines, &rejected, args.json)?;
        return Ok(ExitCode::FAILURE);
    }
    let report = report.expect("no rejection means a report");
    print_report(&mut out, file, &report, args.dry_run, args.json)?;
    // Flushed per file: a caller may rely on each printed line meaning "durable".
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// Reasons may quote input verbatim (a CPR sent in the kommune field, say), so
// CPR-shaped numbers are masked before they reach the operator (DESIGN.md §7.6).

fn from_input(error: &InputLineError) -> Rejection {
    Rejection {
        line: error.line,
        reason: mask_in_text(&error.error.to_string()),
    }
}

fn from_rule(error: &LineError) -> Rejection {
    Rejection {
        line: error.line,
        reason: mask_in_text(&error.error.to_string()),
    }
}

fn print_rejections(
    out: &mut dyn Write,
    file: &Path,
    total_lines: usize,
    rejected: &[Rejection],
    json: bool,
) -> io::Result<()> {
    if json {
        let lines: Vec<_> = rejected
            .iter()
            .map(|r| json!({"line": r.line, "reason": r.reason}))
            .collect();
        writeln!(out, "{}", json!({"written": 0, "rejected": lines}))
    } else {
        for rejection in rejected {
            writeln!(
                out,
                "{}:{}: {}",
                file.display(),
                rejection.line,
                rejection.reason
            )?;
        }
        writeln!(
            out,
            "rejected: {} of {} line(s) failed; nothing was written",
            rejected.len(),
            total_lines
        )
    }
}

fn print_report(
    out: &mut dyn Write,
    file: &Path,
    report: &IngestReport,
    dry_run: bool,
    json: bool,
) -> io::Result<()> {
    let verb = if dry_run { "would append" } else { "appended" };
    if json {
        let duplicates: Vec<usize> = report
            .lines
            .iter()
            .filter(|(_, outcome)| *outcome == LineOutcome::Duplicate)
            .map(|(line, _)| *line)
            .collect();
        return writeln!(
            out,
            "{}",
            json!({
                "file": file.display().to_string(),
                "dry_run": dry_run,
                "appended": report.appended(),
                "duplicates": report.duplicates(),
                "duplicate_lines": duplicates,
                "head_position": report.head.position,
                "head": crate::audit::Anchor::of(&report.head).to_string(),
            })
        );
    }
    for (line, outcome) in &report.lines {
        if *outcome == LineOutcome::Duplicate {
            writeln!(
                out,
                "line {line}: duplicate (already recorded with identical content)"
            )?;
        }
    }
    writeln!(
        out,
        "{}: {verb} {} event(s); {} duplicate(s); log head is position {}",
        file.display(),
        report.appended(),
        report.duplicates(),
        report.head.position
    )?;
    writeln!(out, "head: {}", crate::audit::Anchor::of(&report.head))
}
