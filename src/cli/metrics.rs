//! `sf2520 metrics`: the ledger and the files register in the Prometheus text
//! exposition format (version 0.0.4), for node_exporter's textfile collector.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::domain::Kommune;
use crate::ledger::Ledger;

use super::output::for_terminal;
use super::status::Snapshot;
use super::MetricsArgs;

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

/// One family with a single sample.
fn gauge(text: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(text, name, help);
    let _ = writeln!(text, "{name} {value}");
}

/// One family with a sample per kommune.
fn per_kommune<V: std::fmt::Display>(
    text: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (Kommune, V)>,
) {
    family(text, name, help);
    for (kommune, value) in values {
        let _ = writeln!(
            text,
            "{name}{{kommune=\"{}\",kommune_name=\"{}\"}} {value}",
            kommune.code(),
            label(kommune.name()),
        );
    }
}

pub(super) fn render(ledger: &Ledger, snapshot: &Snapshot) -> anyhow::Result<String> {
    let mut text = String::new();
    gauge(
        &mut text,
        "sf2520_ledger_head_position",
        "Position of the last event in the log (0 when empty).",
        snapshot.head.position,
    );
    gauge(
        &mut text,
        "sf2520_ledger_head_timestamp_seconds",
        "When the last event was recorded (0 when the log is empty).",
        seconds(snapshot.head.recorded_at_us),
    );
    family(
        &mut text,
        "sf2520_files",
        "Official files by delivery state (exported, uploaded, accepted, rejected, reissued).",
    );
    for (state, count) in snapshot.counts() {
        let _ = writeln!(text, "sf2520_files{{state=\"{state}\"}} {count}");
    }
    gauge(
        &mut text,
        "sf2520_last_export_timestamp_seconds",
        "Creation time of the newest official file (0 when there is none).",
        // tidy: allow(unwrap-or): 0 is this gauge's documented "no file yet".
        seconds(snapshot.last_export_us().unwrap_or(0)),
    );
    gauge(
        &mut text,
        "sf2520_oldest_pending_file_timestamp_seconds",
        "Creation time of the oldest file not yet accepted nor rejected (0 when none).",
        seconds(
            snapshot
                .oldest_pending()
                .map_or(0, |f| f.file.created_at_us),
        ),
    );
    let totals = ledger.kommune_totals(snapshot.head.position)?;
    per_kommune(
        &mut text,
        "sf2520_entries",
        "Withholdings and corrections recorded, per kommune.",
        totals
            .iter()
            .map(|(kommune, totals)| (*kommune, totals.entries)),
    );
    per_kommune(
        &mut text,
        "sf2520_net_ore",
        "Net withheld (withholdings plus corrections) per kommune, in øre.",
        totals
            .iter()
            .map(|(kommune, totals)| (*kommune, totals.net_ore)),
    );
    Ok(text)
}

/// On PostgreSQL: whether the primary keeps the promise that a committed write
/// survives a failover (a synchronous standby attached), and how many
/// standbys stream from it. Nothing on SQLite.
fn render_replication(text: &mut String, snapshot: &Snapshot) {
    match &snapshot.replication {
        None => {}
        Some(Err(message)) => super::logging::to_stderr(
            tracing::Level::WARN,
            &format!("replication: {}", for_terminal(message)),
        ),
        Some(Ok((replication, required))) => {
            gauge(
                text,
                "sf2520_database_synchronous",
                "1 when the PostgreSQL primary has a synchronous standby and commits wait for it; 0 when a failover may lose acknowledged writes.",
                u8::from(replication.shortfall().is_none()),
            );
            gauge(
                text,
                "sf2520_database_synchronous_required",
                "1 when writes are refused without a synchronous standby ([database] require_synchronous).",
                u8::from(*required),
            );
            gauge(
                text,
                "sf2520_database_standbys",
                "Standbys the PostgreSQL primary lists in pg_stat_replication.",
                replication.standbys.len(),
            );
        }
    }
}

/// KY's inbox, when one is named: its waiting files, the oldest one's age and
/// its rejected files. An inbox that cannot be listed has no samples (the
/// collector's series go stale) and is said on stderr.
fn render_inbox(text: &mut String, snapshot: &Snapshot, now_us: i64) {
    match &snapshot.inbox {
        None => {}
        Some(Err(message)) => super::logging::to_stderr(
            tracing::Level::WARN,
            &format!("inbox: {}", for_terminal(message)),
        ),
        Some(Ok(inbox)) => {
            gauge(
                text,
                "sf2520_inbox_waiting_files",
                "Files in KY's inbox waiting for `sf2520 ingest --inbox`.",
                inbox.waiting,
            );
            gauge(
                text,
                "sf2520_inbox_oldest_waiting_seconds",
                "How long the oldest waiting inbox file has been there, by its modification time (0 when none).",
                seconds(
                    inbox
                        .oldest_waiting_us
                        .map_or(0, |at| now_us.saturating_sub(at).max(0)),
                ),
            );
            gauge(
                text,
                "sf2520_inbox_rejected_files",
                "Files `sf2520 ingest --inbox` set aside in the inbox's rejected/.",
                inbox.rejected,
            );
        }
    }
}

pub(super) fn run(
    data_dir: &Path,
    config: Option<&Path>,
    args: &MetricsArgs,
) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_existing(data_dir)?;
    let snapshot = Snapshot::read(&ledger, data_dir, config, args.inbox.as_deref())?;
    let mut text = render(&ledger, &snapshot)?;
    render_inbox(&mut text, &snapshot, chrono::Utc::now().timestamp_micros());
    render_replication(&mut text, &snapshot);
    if let Some(Ok(record)) = &snapshot.last_verify {
        gauge(
            &mut text,
            "sf2520_last_verify_timestamp_seconds",
            "When `sf2520 verify` last ran on this data directory.",
            seconds(record.at_us),
        );
        gauge(
            &mut text,
            "sf2520_last_verify_ok",
            "1 when the last `sf2520 verify` found the ledger intact, 0 when damaged.",
            u8::from(record.ok),
        );
    }
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
