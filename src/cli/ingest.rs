//! `sf2520 ingest`: read JSON Lines, check every line, append all or nothing;
//! with `--inbox DIR` every complete file waiting in a directory (see `inbox`).

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::domain::mask_in_text;
use crate::input::{parse_lines, InputLineError};
use crate::ledger::{IngestReport, Ledger, LedgerError, LineError, LineOutcome};

use super::exit::Exit;
use super::IngestArgs;

/// Duplicate line numbers shown without `--verbose`.
const DUPLICATES_SHOWN: usize = 5;

/// Reads one input file (or standard input for `-`); an OS error says the path
/// and the permission it needs.
fn read_input(file: &Path) -> anyhow::Result<crate::input::ParsedInput> {
    if file == Path::new("-") {
        return Ok(parse_lines(io::stdin().lock())?);
    }
    let handle = File::open(file).map_err(|error| os_error("open", file, "read", &error))?;
    parse_lines(BufReader::new(handle)).map_err(|error| os_error("read", file, "read", &error))
}

/// An OS error said once, with the path and, for a permission problem, the
/// permission the program needs there.
pub fn os_error(action: &str, path: &Path, needs: &str, error: &io::Error) -> anyhow::Error {
    let advice = if error.kind() == io::ErrorKind::PermissionDenied {
        format!(" (sf2520 needs {needs} permission on it)")
    } else {
        String::new()
    };
    anyhow::anyhow!("cannot {action} {}: {error}{advice}", path.display())
}

/// One rejected line, from parsing or from the rules, for the report.
pub struct Rejection {
    pub line: usize,
    pub reason: String,
}

/// What became of one input file.
pub enum FileOutcome {
    /// Every line accepted (and committed unless a dry run).
    Accepted(IngestReport),
    /// Lines rejected; nothing of the file was written.
    Rejected {
        total_lines: usize,
        rejected: Vec<Rejection>,
    },
}

/// Checks every line of `file` against the ledger and, unless `dry_run`,
/// appends them all or none.
pub fn check_file(ledger: &mut Ledger, file: &Path, dry_run: bool) -> anyhow::Result<FileOutcome> {
    let parsed = read_input(file)?;
    let total_lines = parsed.commands.len() + parsed.errors.len();
    let mut rejected: Vec<Rejection> = parsed.errors.iter().map(from_input).collect();
    // Even when some lines did not parse, the rest are checked against the ledger
    // (and rolled back) so that one run reports every bad line.
    let commit = !dry_run && rejected.is_empty();
    match ledger.ingest_checked(parsed.commands, commit) {
        Ok(report) if rejected.is_empty() => return Ok(FileOutcome::Accepted(report)),
        Ok(_) => {}
        Err(LedgerError::Rejected(errors)) => rejected.extend(errors.iter().map(from_rule)),
        Err(other) => return Err(other.into()),
    }
    rejected.sort_by_key(|rejection| rejection.line);
    Ok(FileOutcome::Rejected {
        total_lines,
        rejected,
    })
}

pub fn run(data_dir: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let mut ledger = Ledger::open_existing(data_dir)?;
    if let Some(inbox) = &args.inbox {
        return super::inbox::run(&mut ledger, inbox, args);
    }
    let mut documents = Vec::new();
    let mut exit = Exit::Success;
    for file in &args.files {
        let outcome = check_file(&mut ledger, file, args.dry_run)?;
        let name = file.display().to_string();
        if args.json {
            documents.push(outcome_json(&name, &outcome, args.dry_run, args.verbose));
        } else {
            let mut out = io::stdout().lock();
            print_outcome(&mut out, &name, &outcome, args.dry_run, args.verbose)?;
            // Flushed per file: a caller may rely on each printed line meaning "durable".
            out.flush()?;
        }
        if matches!(outcome, FileOutcome::Rejected { .. }) {
            // The first rejected file stops the run; the files before it stay committed.
            exit = Exit::InputRejected;
            break;
        }
    }
    if args.json {
        writeln!(
            io::stdout().lock(),
            "{}",
            json!({"dry_run": args.dry_run, "files": documents})
        )?;
    }
    Ok(exit.into())
}

// Reasons may quote input verbatim (a CPR sent in the kommune field, say), so
// CPR-shaped numbers are masked before they reach the operator (ARCHITECTURE.md, invariant 6).

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

fn duplicate_lines(report: &IngestReport) -> impl Iterator<Item = usize> + '_ {
    report
        .lines
        .iter()
        .filter(|(_, outcome)| *outcome == LineOutcome::Duplicate)
        .map(|(line, _)| *line)
}

/// One file's outcome as a JSON object.
pub fn outcome_json(file: &str, outcome: &FileOutcome, dry_run: bool, verbose: bool) -> Value {
    match outcome {
        FileOutcome::Accepted(report) => {
            let shown = if verbose {
                usize::MAX
            } else {
                DUPLICATES_SHOWN
            };
            let duplicates: Vec<usize> = duplicate_lines(report).take(shown).collect();
            json!({
                "file": file,
                "outcome": "accepted",
                "dry_run": dry_run,
                "appended": report.appended(),
                "duplicates": report.duplicates(),
                "duplicate_lines": duplicates,
                "duplicate_lines_complete": duplicates.len() == report.duplicates(),
                "head_position": report.head.position,
                "head": crate::audit::Anchor::of(&report.head).to_string(),
            })
        }
        FileOutcome::Rejected {
            total_lines,
            rejected,
        } => {
            let lines: Vec<_> = rejected
                .iter()
                .map(|r| json!({"line": r.line, "reason": r.reason}))
                .collect();
            json!({
                "file": file, "outcome": "rejected", "lines": total_lines,
                "written": 0, "rejected": lines,
            })
        }
    }
}

/// One file's outcome as text: every rejected line, or a summary of the
/// duplicates (every one with `verbose`) and the appended count.
pub fn print_outcome(
    out: &mut dyn Write,
    file: &str,
    outcome: &FileOutcome,
    dry_run: bool,
    verbose: bool,
) -> io::Result<()> {
    match outcome {
        FileOutcome::Rejected {
            total_lines,
            rejected,
        } => {
            for rejection in rejected {
                writeln!(out, "{file}:{}: {}", rejection.line, rejection.reason)?;
            }
            writeln!(
                out,
                "rejected: {} of {} line(s) failed; nothing was written",
                rejected.len(),
                total_lines
            )
        }
        FileOutcome::Accepted(report) => {
            let verb = if dry_run { "would append" } else { "appended" };
            if verbose {
                for line in duplicate_lines(report) {
                    writeln!(
                        out,
                        "line {line}: duplicate (already recorded with identical content)"
                    )?;
                }
            } else if report.duplicates() > 0 {
                let first: Vec<String> = duplicate_lines(report)
                    .take(DUPLICATES_SHOWN)
                    .map(|line| line.to_string())
                    .collect();
                let more = report.duplicates() - first.len();
                writeln!(
                    out,
                    "{file}: {} line(s) already recorded with identical content (duplicates): line(s) {}{}",
                    report.duplicates(),
                    first.join(", "),
                    if more > 0 {
                        format!(" and {more} more (--verbose lists every one)")
                    } else {
                        String::new()
                    }
                )?;
            }
            writeln!(
                out,
                "{file}: {verb} {} event(s); {} duplicate(s); log head is position {}",
                report.appended(),
                report.duplicates(),
                report.head.position
            )?;
            writeln!(out, "head: {}", crate::audit::Anchor::of(&report.head))
        }
    }
}
