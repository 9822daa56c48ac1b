//! `sf2520 metrics`: the ledger and the files register in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile collector.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::ledger::Ledger;

use super::status::Snapshot;

/// A label value escaped as the exposition format asks: backslash, double quote
/// and line feed.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// µs since the epoch as seconds with microseconds, exactly (no float).
fn seconds(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn family(text: &mut String, name: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} gauge");
}

pub fn render(ledger: &Ledger, snapshot: &Snapshot) -> anyhow::Result<String> {
    let mut text = String::new();
    family(
        &mut text,
        "sf2520_ledger_head_position",
        "Position of the last event in the log (0 when empty).",
    );
    let _ = writeln!(
        text,
        "sf2520_ledger_head_position {}",
        snapshot.head.position
    );
    family(
        &mut text,
        "sf2520_ledger_head_timestamp_seconds",
        "When the last event was recorded (0 when the log is empty).",
    );
    let _ = writeln!(
        text,
        "sf2520_ledger_head_timestamp_seconds {}",
        seconds(snapshot.head.recorded_at_us)
    );
    family(
        &mut text,
        "sf2520_files",
        "Official files by delivery state (exported, uploaded, accepted, rejected, reissued).",
    );
    for (state, count) in snapshot.counts() {
        let _ = writeln!(text, "sf2520_files{{state=\"{state}\"}} {count}");
    }
    family(
        &mut text,
        "sf2520_last_export_timestamp_seconds",
        "Creation time of the newest official file (0 when there is none).",
    );
    let _ = writeln!(
        text,
        "sf2520_last_export_timestamp_seconds {}",
        // tidy: allow(unwrap-or): 0 is the documented "no file yet" of this gauge.
        seconds(snapshot.last_export_us().unwrap_or(0))
    );
    family(
        &mut text,
        "sf2520_oldest_pending_file_timestamp_seconds",
        "Creation time of the oldest file not yet accepted nor rejected (0 when none).",
    );
    let _ = writeln!(
        text,
        "sf2520_oldest_pending_file_timestamp_seconds {}",
        seconds(
            snapshot
                .oldest_pending()
                .map_or(0, |f| f.file.created_at_us)
        )
    );
    let totals = ledger.kommune_totals(snapshot.head.position)?;
    family(
        &mut text,
        "sf2520_entries",
        "Withholdings and corrections recorded, per kommune.",
    );
    for (kommune, totals) in &totals {
        let _ = writeln!(
            text,
            "sf2520_entries{{kommune=\"{}\",kommune_name=\"{}\"}} {}",
            kommune.code(),
            label(kommune.name()),
            totals.entries
        );
    }
    family(
        &mut text,
        "sf2520_net_ore",
        "Net withheld (withholdings plus corrections) per kommune, in øre.",
    );
    for (kommune, totals) in &totals {
        let _ = writeln!(
            text,
            "sf2520_net_ore{{kommune=\"{}\",kommune_name=\"{}\"}} {}",
            kommune.code(),
            label(kommune.name()),
            totals.net_ore
        );
    }
    Ok(text)
}

pub fn run(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_existing(data_dir)?;
    let snapshot = Snapshot::read(&ledger, data_dir, None)?;
    let text = render(&ledger, &snapshot)?;
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(1_700_000_000_123_456), "1700000000.123456");
        assert_eq!(seconds(0), "0.000000");
        assert_eq!(seconds(-1), "-0.000001");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
