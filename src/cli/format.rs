//! The `check` and `show` commands: validate SF2520 files and print their records.
//!
//! Output is for operators' screens, so a CPR is always masked (`DDMMYY-xxxx`,
//! ARCHITECTURE.md, invariant 6), in the table and in JSON alike.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::domain::format_kroner;
use crate::sf2520::{read_file, ParsedDetail, ParsedFile, ReadErrors};

/// `sf2520 check FILE...`: every file validated; exit code 3 when any is invalid.
pub(super) fn run_check(args: &super::CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    let valid = if args.json {
        check_json(&args.files, &mut std::io::stdout().lock())?
    } else {
        check(&args.files, &mut std::io::stdout().lock())?
    };
    Ok(if valid {
        std::process::ExitCode::SUCCESS
    } else {
        super::exit::Exit::InputRejected.into()
    })
}

/// Checks each file; one line per valid file, the path and every error for an
/// invalid one. True when all files are valid. A file that cannot be read counts as
/// invalid and does not stop the others from being checked.
pub fn check(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut all_valid = true;
    for path in paths {
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                writeln!(out, "{shown}: cannot read: {error}")?;
                all_valid = false;
                continue;
            }
        };
        match read_file(&bytes) {
            Ok(file) => writeln!(out, "{shown}: {}", summary_line(&file))?,
            Err(errors) => {
                all_valid = false;
                write_errors(&shown.to_string(), &errors, out)?;
            }
        }
    }
    Ok(all_valid)
}

/// [`check`] as one JSON document: `{"files": [{"path", "valid", "summary" or
/// "errors"}]}`.
pub fn check_json(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut all_valid = true;
    let mut items = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let item = match std::fs::read(path) {
            Err(error) => {
                serde_json::json!({"path": shown, "valid": false, "errors": [format!("cannot read: {error}")]})
            }
            Ok(bytes) => match read_file(&bytes) {
                Ok(file) => {
                    serde_json::json!({"path": shown, "valid": true, "summary": summary_line(&file)})
                }
                Err(errors) => {
                    let listed: Vec<String> =
                        errors.errors.iter().map(ToString::to_string).collect();
                    serde_json::json!({"path": shown, "valid": false, "errors": listed, "truncated": errors.truncated})
                }
            },
        };
        all_valid &= item["valid"] == true;
        items.push(item);
    }
    writeln!(out, "{}", serde_json::json!({"files": items}))?;
    Ok(all_valid)
}

fn summary_line(file: &ParsedFile) -> String {
    let header = &file.header;
    let test = if header.test_marker {
        ", test file"
    } else {
        ""
    };
    format!(
        "valid: kommune {} {}, løbenummer {:06}, {} records, net {} kr{test}",
        header.kommune,
        header.kommune.name(),
        header.sequence,
        file.end.record_count,
        format_kroner(i128::from(file.end.net_ore)),
    )
}

fn write_errors(path: &str, errors: &ReadErrors, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{path}: invalid, {} error(s)", errors.errors.len())?;
    for error in &errors.errors {
        writeln!(out, "  {error}")?;
    }
    if errors.truncated {
        writeln!(out, "  (stopped after {} errors)", ReadErrors::CAP)?;
    }
    Ok(())
}

/// Prints a valid file's records as an aligned table or as JSON. An invalid file is
/// an error listing what is wrong.
pub fn show(path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = match read_file(&bytes) {
        Ok(file) => file,
        Err(errors) => bail!("{} is not a valid SF2520 file: {errors}", path.display()),
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &file_json(&file))?;
        writeln!(out)?;
    } else {
        write_table(&file, out)?;
    }
    Ok(())
}

const TABLE_HEADINGS: [&str; 10] = [
    "line",
    "nr",
    "tx",
    "cpr",
    "agreement",
    "payout",
    "period",
    "amount",
    "reference",
    "corrects",
];

fn write_table(file: &ParsedFile, out: &mut dyn Write) -> std::io::Result<()> {
    let header = &file.header;
    writeln!(
        out,
        "kommune {} {}, løbenummer {:06}, created {} UTC, as of {} UTC{}",
        header.kommune,
        header.kommune.name(),
        header.sequence,
        header.created_at,
        header.as_of,
        if header.test_marker {
            ", TEST FILE"
        } else {
            ""
        },
    )?;
    let rows: Vec<[String; 10]> = file.details.iter().map(table_row).collect();
    let mut widths = TABLE_HEADINGS.map(|heading| heading.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_row(&TABLE_HEADINGS.map(String::from), &widths, out)?;
    for row in &rows {
        write_row(row, &widths, out)?;
    }
    let end = &file.end;
    writeln!(
        out,
        "{} records, plus {} kr, minus {} kr, net {} kr",
        end.record_count,
        format_kroner(i128::from(end.plus_ore)),
        format_kroner(i128::from(end.minus_ore)),
        format_kroner(i128::from(end.net_ore)),
    )
}

/// Numbers right-aligned, text left-aligned; no trailing spaces.
fn write_row(row: &[String; 10], widths: &[usize; 10], out: &mut dyn Write) -> std::io::Result<()> {
    const RIGHT_ALIGNED: [bool; 10] = [
        true, true, false, false, false, false, false, true, false, false,
    ];
    let cells: Vec<String> = row
        .iter()
        .zip(widths)
        .zip(RIGHT_ALIGNED)
        .map(|((cell, &width), right)| {
            if right {
                format!("{cell:>width$}")
            } else {
                format!("{cell:<width$}")
            }
        })
        .collect();
    writeln!(out, "{}", cells.join("  ").trim_end())
}

fn table_row(detail: &ParsedDetail) -> [String; 10] {
    let record = &detail.record;
    [
        detail.line.to_string(),
        detail.record_number.to_string(),
        format!("{:02}", record.kind.transaction_code()),
        record.cpr.masked(),
        record.agreement.to_string(),
        record.payout_date.to_string(),
        format!("{}..{}", record.period_from, record.period_to),
        record.amount.to_string(),
        record.reference.to_string(),
        record
            .corrects
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    ]
}

fn file_json(file: &ParsedFile) -> Value {
    let header = &file.header;
    let as_of = header.as_of.format("%Y-%m-%dT%H:%M:%S").to_string();
    let end = &file.end;
    json!({
        "header": {
            "kommune": header.kommune.code(),
            "kommune_name": header.kommune.name(),
            "sequence": header.sequence,
            "created_at_utc": header.created_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "as_of_utc": as_of,
            // The key before decision 0009 named this time a cut-off; kept, with
            // the same value, so that scripts reading it go on working.
            "cutoff_at_utc": as_of,
            "test_marker": header.test_marker,
        },
        "details": file.details.iter().map(detail_json).collect::<Vec<_>>(),
        "end": {
            "record_count": end.record_count,
            "plus_ore": end.plus_ore,
            "minus_ore": end.minus_ore,
            "net_ore": end.net_ore,
            "net_kroner": format_kroner(i128::from(end.net_ore)),
        },
    })
}

fn detail_json(detail: &ParsedDetail) -> Value {
    let record = &detail.record;
    json!({
        "line": detail.line,
        "record_number": detail.record_number,
        "cpr_masked": record.cpr.masked(),
        "agreement": record.agreement.as_str(),
        "transaction": record.kind.word(),
        "transaction_code": format!("{:02}", record.kind.transaction_code()),
        "payout_date": record.payout_date.to_string(),
        "period_from": record.period_from.to_string(),
        "period_to": record.period_to.to_string(),
        "amount_ore": record.amount.ore(),
        "amount_kroner": record.amount.to_string(),
        "reference": record.reference.as_str(),
        "corrects": record.corrects.as_ref().map(|reference| reference.as_str()),
    })
}
