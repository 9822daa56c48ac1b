//! `sf2520 ingest`: read JSON Lines, check every line, append all or nothing;
//! with `--inbox DIR` every complete file waiting in a directory (see `inbox`).

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::domain::mask_in_text;
use crate::ingest::{ingest_lines, IngestError, IngestOutcome, RejectedLine};
use crate::ledger::{IngestMode, IngestReport, Ledger, LineOutcome};

use super::exit::Exit;
use super::output::for_terminal as printable;
use super::IngestArgs;

/// Duplicate line numbers shown without `--verbose`.
const DUPLICATES_SHOWN: usize = 5;

/// An OS error said once, with the path (escaped: it may hold a name from
/// outside) and, for a permission problem, the permission the program needs there.
pub(super) fn os_error(action: &str, path: &Path, needs: &str, error: &io::Error) -> anyhow::Error {
    let advice = if error.kind() == io::ErrorKind::PermissionDenied {
        format!(" (sf2520 needs {needs} permission on it)")
    } else {
        String::new()
    };
    anyhow::anyhow!(
        "cannot {action} {}: {error}{advice}",
        printable(&path.display().to_string())
    )
}

/// Ingests one input file (or standard input for `-`) by the ingest policy; an
/// OS error says the path and the permission it needs.
pub(super) fn ingest_file(
    ledger: &mut Ledger,
    file: &Path,
    mode: IngestMode,
) -> anyhow::Result<IngestOutcome> {
    let result = if file == Path::new("-") {
        ingest_lines(ledger, io::stdin().lock(), mode)
    } else {
        let handle = File::open(file).map_err(|error| os_error("open", file, "read", &error))?;
        ingest_lines(ledger, BufReader::new(handle), mode)
    };
    result.map_err(|error| ingest_error(file, error))
}

/// An ingest's error as the operator sees it: a read error names the file and
/// the permission needed.
pub(super) fn ingest_error(file: &Path, error: IngestError) -> anyhow::Error {
    match error {
        IngestError::Read(error) if file == Path::new("-") => error.into(),
        IngestError::Read(error) => os_error("read", file, "read", &error),
        // The ledger's own error, so that `exit::classify` finds it.
        IngestError::Ledger(error) => error.into(),
    }
}

pub(super) fn run(data_dir: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let mut ledger = Ledger::open_existing(data_dir)?;
    if let Some(inbox) = &args.inbox {
        return super::inbox::run(&mut ledger, inbox, args);
    }
    let mut documents = Vec::new();
    let mut exit = Exit::Success;
    let mode = if args.dry_run {
        IngestMode::DryRun
    } else {
        IngestMode::Commit
    };
    for file in &args.files {
        let outcome = ingest_file(&mut ledger, file, mode)?;
        let name = file.display().to_string();
        log_outcome(&name, &outcome);
        if args.json {
            documents.push(outcome_json(&name, &outcome, args.verbose));
        } else {
            let mut out = io::stdout().lock();
            print_outcome(&mut out, &name, &outcome, args.verbose)?;
            // Flushed per file: a caller may rely on each printed line meaning "durable".
            out.flush()?;
        }
        if matches!(outcome, IngestOutcome::Rejected { .. }) {
            // The first rejected file stops the run; the files before it stay committed.
            exit = Exit::InputRejected;
            break;
        }
    }
    tracing::info!(
        files = args.files.len(),
        dry_run = args.dry_run,
        rejected = exit != Exit::Success,
        head = %crate::audit::Anchor::of(&ledger.head()?),
        "ingest finished"
    );
    if args.json {
        writeln!(
            io::stdout().lock(),
            "{}",
            json!({"dry_run": args.dry_run, "files": documents})
        )?;
    }
    Ok(exit.into())
}

/// Why a line was rejected, as the operator sees it. Reasons may quote input
/// verbatim (a CPR sent in the kommune field, say), so CPR-shaped numbers are
/// masked before they reach the operator (ARCHITECTURE.md, invariant 6).
fn shown_reason(rejected: &RejectedLine) -> String {
    mask_in_text(&rejected.reason().to_string())
}

fn duplicate_lines(report: &IngestReport) -> impl Iterator<Item = usize> + '_ {
    report
        .lines
        .iter()
        .filter(|(_, outcome)| *outcome == LineOutcome::Duplicate)
        .map(|(line, _)| *line)
}

/// One file's outcome as a JSON object.
pub(super) fn outcome_json(file: &str, outcome: &IngestOutcome, verbose: bool) -> Value {
    match outcome {
        IngestOutcome::Committed(report) | IngestOutcome::Checked(report) => {
            let shown = if verbose {
                usize::MAX
            } else {
                DUPLICATES_SHOWN
            };
            let duplicates: Vec<usize> = duplicate_lines(report).take(shown).collect();
            let dry_run = matches!(outcome, IngestOutcome::Checked(_));
            let mut document = json!({
                "file": file,
                "outcome": "accepted",
                "dry_run": dry_run,
                "appended": report.appended(),
                "duplicates": report.duplicates(),
                "duplicate_lines": duplicates,
                "duplicate_lines_complete": duplicates.len() == report.duplicates(),
            });
            // A dry run's head never exists: under its own keys, so that nothing
            // collecting `head` can take it for one the log holds.
            let (position, head) = if dry_run {
                ("would_be_head_position", "would_be_head")
            } else {
                ("head_position", "head")
            };
            document[position] = json!(report.head.position);
            document[head] = json!(crate::audit::Anchor::of(&report.head).to_string());
            document
        }
        IngestOutcome::Rejected {
            total_lines,
            lines: rejected,
        } => {
            let lines: Vec<_> = rejected
                .iter()
                .map(|line| json!({"line": line.line(), "reason": shown_reason(line)}))
                .collect();
            json!({
                "file": file, "outcome": "rejected", "lines": total_lines,
                "written": 0, "rejected": lines,
            })
        }
    }
}

/// One file's outcome as one log line (info; warn when rejected), with the fields
/// an operator searches for: `file`, `appended`, `duplicates`, `head` (POS:HASH);
/// a dry run's is `would_be_head`, never `head`.
pub(super) fn log_outcome(file: &str, outcome: &IngestOutcome) {
    let file = printable(file);
    match outcome {
        IngestOutcome::Rejected { total_lines, lines } => tracing::warn!(
            file,
            rejected_lines = lines.len(),
            total_lines,
            "file rejected; nothing was written"
        ),
        IngestOutcome::Committed(report) => tracing::info!(
            file,
            appended = report.appended(),
            duplicates = report.duplicates(),
            head = %crate::audit::Anchor::of(&report.head),
            "file ingested"
        ),
        IngestOutcome::Checked(report) => tracing::info!(
            file,
            appended = report.appended(),
            duplicates = report.duplicates(),
            would_be_head = %crate::audit::Anchor::of(&report.head),
            "file checked (dry run); nothing was written"
        ),
    }
}

/// One file's outcome as text: every rejected line, or a summary of the
/// duplicates (every one with `verbose`) and the appended count.
pub(super) fn print_outcome(
    out: &mut dyn Write,
    file: &str,
    outcome: &IngestOutcome,
    verbose: bool,
) -> io::Result<()> {
    // A name from outside (KY's inbox): escaped, so it cannot forge a line.
    let file = &printable(file);
    match outcome {
        IngestOutcome::Rejected {
            total_lines,
            lines: rejected,
        } => {
            for line in rejected {
                writeln!(out, "{file}:{}: {}", line.line(), shown_reason(line))?;
            }
            writeln!(
                out,
                "rejected: {} of {} line(s) failed; nothing was written",
                rejected.len(),
                total_lines
            )
        }
        IngestOutcome::Committed(report) | IngestOutcome::Checked(report) => {
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
            print_head(
                out,
                file,
                matches!(outcome, IngestOutcome::Checked(_)),
                report,
            )
        }
    }
}

/// The appended count and the head a run leaves; a dry run's head is the one the
/// log would have, never printed as `head:` (auditors collect `^head:` lines).
fn print_head(
    out: &mut dyn Write,
    file: &str,
    dry_run: bool,
    report: &IngestReport,
) -> io::Result<()> {
    let anchor = crate::audit::Anchor::of(&report.head);
    if dry_run {
        writeln!(
            out,
            "{file}: would append {} event(s); {} duplicate(s); nothing was written; the log head would be position {}",
            report.appended(),
            report.duplicates(),
            report.head.position
        )?;
        return writeln!(out, "would-be head: {anchor} (dry run: not in the log)");
    }
    writeln!(
        out,
        "{file}: appended {} event(s); {} duplicate(s); log head is position {}",
        report.appended(),
        report.duplicates(),
        report.head.position
    )?;
    writeln!(out, "head: {anchor}")
}
