//! The ingest policy, one function for the CLI and the tests: a JSON Lines input
//! is parsed, every line that parsed is checked against the rules (even when
//! others did not, so that one run reports every bad line), and the whole is
//! committed only when no line failed and the run is not a dry run.
//!
//! A rejected line is an outcome ([`IngestOutcome::Rejected`]), not an error: the
//! error type is kept for an input that cannot be read and a ledger that fails.

use std::io::BufRead;

use thiserror::Error;

use crate::input::{parse_lines, InputLineError};
use crate::ledger::{BatchOutcome, IngestMode, IngestReport, Ledger, LedgerError, LineError};

/// What became of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "the input may have been rejected"]
pub enum IngestOutcome {
    /// Every line accepted; the batch is durable.
    Committed(IngestReport),
    /// A dry run in which every line was accepted; nothing was written.
    Checked(IngestReport),
    /// At least one line failed; nothing was written.
    Rejected {
        /// The input's lines that are not blank (blank lines are skipped).
        total_lines: usize,
        /// Every line that failed, in line order.
        lines: Vec<RejectedLine>,
    },
}

/// One input line that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RejectedLine {
    /// The line is not a command (not JSON, a missing field, a bad amount, …).
    #[error(transparent)]
    Parse(InputLineError),
    /// The line is a command the rules refuse (an unknown agreement, a reference
    /// taken with other content, …).
    #[error(transparent)]
    Rule(LineError),
}

impl RejectedLine {
    /// The line's 1-based number in the input.
    pub fn line(&self) -> usize {
        match self {
            RejectedLine::Parse(error) => error.line,
            RejectedLine::Rule(error) => error.line,
        }
    }

    /// Why the line failed, without its number. It may quote the input, so an
    /// operator sees it only through `domain::mask_in_text`.
    pub fn reason(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            RejectedLine::Parse(error) => &error.error,
            RejectedLine::Rule(error) => &error.error,
        }
    }
}

/// Why an input could not be ingested at all (as opposed to being rejected).
#[derive(Debug, Error)]
pub enum IngestError {
    /// Reading the input failed; the caller knows its name and says it.
    #[error("cannot read the input: {0}; nothing of it was written")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Ingests one JSON Lines input: parses every line, checks every command against
/// the ledger, and commits the batch only when no line failed and `mode` is
/// [`IngestMode::Commit`]; otherwise nothing is written. Rejections from parsing
/// and from the rules come back together, sorted by line.
pub fn ingest_lines(
    ledger: &mut Ledger,
    input: impl BufRead,
    mode: IngestMode,
) -> Result<IngestOutcome, IngestError> {
    let parsed = parse_lines(input).map_err(IngestError::Read)?;
    let total_lines = parsed.commands.len() + parsed.errors.len();
    let mut rejected: Vec<RejectedLine> =
        parsed.errors.into_iter().map(RejectedLine::Parse).collect();
    // With a line that did not parse the rest are still checked, then rolled back.
    let batch_mode = if rejected.is_empty() {
        mode
    } else {
        IngestMode::DryRun
    };
    match ledger.ingest(parsed.commands, batch_mode)? {
        BatchOutcome::Accepted(report) if rejected.is_empty() => {
            return Ok(match mode {
                IngestMode::Commit => IngestOutcome::Committed(report),
                IngestMode::DryRun => IngestOutcome::Checked(report),
            });
        }
        BatchOutcome::Accepted(_) => {}
        BatchOutcome::Rejected(lines) => rejected.extend(lines.into_iter().map(RejectedLine::Rule)),
    }
    // A line either parsed or did not, so no two rejections share a number.
    rejected.sort_by_key(RejectedLine::line);
    Ok(IngestOutcome::Rejected {
        total_lines,
        lines: rejected,
    })
}
