//! The reconciliation report: one kommune's official files in a period, read from
//! the log alone (files, uploads, receipts), with totals per month, the chain head
//! it was made at and the outcome of `verify`, as one self-contained HTML page (no
//! scripts, no network: inline CSS and an inline SVG chart).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::{Anchor, Verification};
use crate::domain::{format_kroner, Event, FileExported, Kommune};
use crate::ledger::{Ledger, LedgerError};

/// Where a file stands, from its delivery events (the last one decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Exported,
    Uploaded {
        attempt: u32,
    },
    Accepted {
        file_transfer_uuid: String,
    },
    Rejected {
        file_transfer_uuid: String,
        errors: String,
    },
    Reissued,
}

impl Delivery {
    pub fn label(&self) -> String {
        match self {
            Delivery::Exported => "exported, not yet delivered".into(),
            Delivery::Uploaded { attempt } => {
                format!("uploaded (attempt {attempt}), no receipt yet")
            }
            Delivery::Accepted { .. } => "accepted".into(),
            Delivery::Rejected { .. } => "rejected".into(),
            Delivery::Reissued => "reissued, waiting for delivery".into(),
        }
    }

    /// The technical receipt, if one was recorded.
    pub fn receipt(&self) -> String {
        match self {
            Delivery::Accepted { file_transfer_uuid } => {
                format!("FileTransferUUID {file_transfer_uuid}")
            }
            Delivery::Rejected {
                file_transfer_uuid,
                errors,
            } => format!("FileTransferUUID {file_transfer_uuid}: {errors}"),
            _ => String::new(),
        }
    }
}

/// One official file in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFile {
    /// Position of its `FileExported` event.
    pub position: u64,
    pub file: FileExported,
    pub delivery: Delivery,
}

/// The totals of the files created in one month.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthTotals {
    pub files: u64,
    pub records: u64,
    /// Sums of the files' end records, in i128: no number of i64 sums overflows it.
    pub plus_ore: i128,
    pub minus_ore: i128,
}

impl MonthTotals {
    pub fn net_ore(&self) -> i128 {
        self.plus_ore - self.minus_ore
    }

    /// Counts one more file and adds its end record's sums.
    fn add(&mut self, file: &FileExported) {
        self.files += 1;
        self.records += file.record_count;
        self.plus_ore += i128::from(file.plus_ore);
        self.minus_ore += i128::from(file.minus_ore);
    }
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct Report {
    pub kommune: Kommune,
    /// Files created on these dates (UTC), inclusive; `None` is open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub files: Vec<ReportFile>,
    /// (year, month) -> totals.
    pub months: BTreeMap<(i32, u32), MonthTotals>,
    /// The head the report was made at.
    pub head: Anchor,
    pub made_at: DateTime<Utc>,
    /// `verify`'s outcome at that head: every problem it found (none if it passed).
    pub verify_problems: Vec<String>,
    /// The outbox `verify` checked, if any.
    pub outbox_checked: Option<String>,
}

/// The creation date (UTC) of a file.
fn created_date(file: &FileExported) -> Option<NaiveDate> {
    DateTime::<Utc>::from_timestamp_micros(file.created_at_us).map(|time| time.date_naive())
}

/// Builds the report from one walk of the log up to `verification`'s head.
pub fn build(
    ledger: &Ledger,
    kommune: Kommune,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    verification: &Verification,
) -> Result<Report, LedgerError> {
    let head = ledger.head()?;
    let mut files: BTreeMap<u32, ReportFile> = BTreeMap::new();
    let mut uploads: BTreeMap<u32, u32> = BTreeMap::new();
    ledger.for_each_event(1, head.position, |stored| {
        apply(
            &mut files,
            &mut uploads,
            kommune,
            stored.position,
            stored.event()?,
        );
        Ok(())
    })?;
    let in_period = |file: &FileExported| {
        created_date(file).is_some_and(|date| {
            from.is_none_or(|from| date >= from) && to.is_none_or(|to| date <= to)
        })
    };
    let files: Vec<ReportFile> = files
        .into_values()
        .filter(|file| in_period(&file.file))
        .collect();
    let mut months: BTreeMap<(i32, u32), MonthTotals> = BTreeMap::new();
    for file in &files {
        let Some(date) = created_date(&file.file) else {
            continue;
        };
        let month = months.entry((date.year(), date.month())).or_default();
        month.add(&file.file);
    }
    Ok(Report {
        kommune,
        from,
        to,
        files,
        months,
        head: Anchor::of(&head),
        made_at: Utc::now(),
        verify_problems: verification.problems(),
        outbox_checked: verification
            .outbox_checked
            .as_ref()
            .map(|dir| dir.display().to_string()),
    })
}

/// Applies one event of the log to the files of `kommune`. Exhaustive on purpose:
/// a new event type must say whether it changes a file's delivery.
fn apply(
    files: &mut BTreeMap<u32, ReportFile>,
    uploads: &mut BTreeMap<u32, u32>,
    kommune: Kommune,
    position: u64,
    event: Event,
) {
    let delivery = match event {
        Event::AgreementRegistered(_)
        | Event::AgreementEnded(_)
        | Event::WithholdingRecorded(_)
        | Event::WithholdingCorrected(_)
        | Event::RetentionApplied(_)
        | Event::LedgerSealed(_)
        | Event::LossAccepted(_) => return,
        Event::FileExported(file) => {
            if file.kommune == kommune {
                files.insert(
                    file.sequence,
                    ReportFile {
                        position,
                        file,
                        delivery: Delivery::Exported,
                    },
                );
            }
            return;
        }
        Event::FileReissued(reissue) if reissue.kommune == kommune => {
            (reissue.sequence, Delivery::Reissued)
        }
        Event::FileUploaded(upload) if upload.kommune == kommune => {
            let count = uploads.entry(upload.sequence).or_insert(0);
            *count += 1;
            (upload.sequence, Delivery::Uploaded { attempt: *count })
        }
        Event::ReceiptReceived(receipt) if receipt.kommune == kommune => (
            receipt.sequence,
            receipt_delivery(
                receipt.accepted,
                receipt.file_transfer_uuid,
                &receipt.errors,
            ),
        ),
        Event::TechnicalReceiptReceived(receipt) if receipt.kommune == kommune => (
            receipt.sequence,
            receipt_delivery(
                receipt.accepted,
                receipt.file_transfer_uuid,
                &receipt.errors,
            ),
        ),
        // A business receipt tells what the recipient did with a file the platform
        // accepted; the file's delivery state stays the technical receipt's.
        Event::BusinessReceiptReceived(_) => return,
        Event::FileReissued(_)
        | Event::FileUploaded(_)
        | Event::ReceiptReceived(_)
        | Event::TechnicalReceiptReceived(_) => return,
    };
    let (sequence, delivery) = delivery;
    if let Some(file) = files.get_mut(&sequence) {
        file.delivery = delivery;
    }
}

/// What a technical receipt (of either recorded layout) makes of a delivery.
fn receipt_delivery(
    accepted: bool,
    file_transfer_uuid: String,
    errors: &[impl std::fmt::Display],
) -> Delivery {
    if accepted {
        Delivery::Accepted { file_transfer_uuid }
    } else {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Delivery::Rejected {
            file_transfer_uuid,
            errors: errors.join("; "),
        }
    }
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn kroner(ore: impl Into<i128>) -> String {
    format_kroner(ore.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn time_us(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("<{us} µs: out of range>"))
}

const STYLE: &str =
    "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em;color:#1a1a1a;background:#fff}
h1{font-size:1.5em;margin-bottom:0.2em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #999;padding:0.3em 0.6em;text-align:left;vertical-align:top}
th{background:#e8eef5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.hash{font-family:'DejaVu Sans Mono',monospace;font-size:0.8em;word-break:break-all}
.ok{color:#0a6b2b;font-weight:bold}
.bad{color:#b00020;font-weight:bold}
tfoot td{font-weight:bold}";

/// The report as one self-contained HTML page.
pub fn render_html(report: &Report) -> String {
    let mut page = String::new();
    let title = format!(
        "Reconciliation report: kommune {} {}",
        report.kommune,
        report.kommune.name()
    );
    let period = match (report.from, report.to) {
        (None, None) => "all files".to_string(),
        (from, to) => format!(
            "files created {} to {} (UTC)",
            from.map_or("the first".into(), |d| d.to_string()),
            to.map_or("today".into(), |d| d.to_string())
        ),
    };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"da\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n<p id=\"period\">{}</p>\n",
        escape(&title),
        escape(&title),
        escape(&period)
    );
    write_verification(&mut page, report);
    write_months(&mut page, report);
    write_files(&mut page, report);
    page.push_str("</body>\n</html>\n");
    page
}

fn write_verification(page: &mut String, report: &Report) {
    let _ = write!(
        page,
        "<h2>The log</h2>\n<p>Made at {} from the log at head <code id=\"head\">{}</code>. Keep this head: <code>sf2520 verify --expect-head {}</code> shows later that the log still holds it.</p>\n",
        escape(&report.made_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        escape(&report.head.to_string()),
        escape(&report.head.to_string())
    );
    if report.verify_problems.is_empty() {
        let outbox = report
            .outbox_checked
            .as_ref()
            .map_or("no outbox was checked".to_string(), |dir| {
                format!("every official file in the outbox {dir} has the SHA-256 of its event")
            });
        let _ = writeln!(
            page,
            "<p id=\"verify\" class=\"ok\">verify passed: hash chain intact, projections equal a replay, {}.</p>",
            escape(&outbox)
        );
    } else {
        let _ = writeln!(
            page,
            "<p id=\"verify\" class=\"bad\">verify FAILED: the figures below come from a damaged ledger.</p>\n<ul id=\"problems\">"
        );
        for problem in &report.verify_problems {
            let _ = writeln!(page, "<li>{}</li>", escape(problem));
        }
        page.push_str("</ul>\n");
    }
}

fn write_files(page: &mut String, report: &Report) {
    let _ = writeln!(
        page,
        "<h2>Official files</h2>\n<table id=\"files\">\n<thead><tr><th>løbenummer</th><th>file</th><th>created</th><th>records</th><th>plus (kr)</th><th>minus (kr)</th><th>net (kr)</th><th>SHA-256</th><th>delivery</th><th>receipt</th></tr></thead>\n<tbody>"
    );
    let mut total = MonthTotals::default();
    for entry in &report.files {
        let file = &entry.file;
        total.add(file);
        let _ = writeln!(
            page,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"hash\">{}</td><td>{}</td><td>{}</td></tr>",
            file.sequence,
            escape(&file.file_name),
            escape(&time_us(file.created_at_us)),
            file.record_count,
            kroner(file.plus_ore),
            kroner(file.minus_ore),
            kroner(file.plus_ore - file.minus_ore),
            hex(&file.sha256),
            escape(&entry.delivery.label()),
            escape(&entry.delivery.receipt())
        );
    }
    if report.files.is_empty() {
        page.push_str(
            "<tr><td colspan=\"10\">No official file of this kommune in the period.</td></tr>\n",
        );
    }
    let _ = writeln!(
        page,
        "</tbody>\n<tfoot><tr><td>{} file(s)</td><td></td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td colspan=\"3\"></td></tr></tfoot>\n</table>",
        total.files,
        total.records,
        kroner(total.plus_ore),
        kroner(total.minus_ore),
        kroner(total.net_ore())
    );
}

fn write_months(page: &mut String, report: &Report) {
    page.push_str("<h2>Totals per month</h2>\n<table id=\"months\">\n<thead><tr><th>month</th><th>files</th><th>records</th><th>plus (kr)</th><th>minus (kr)</th><th>net (kr)</th></tr></thead>\n<tbody>\n");
    for ((year, month), totals) in &report.months {
        let _ = writeln!(
            page,
            "<tr><td>{year:04}-{month:02}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            totals.files,
            totals.records,
            kroner(totals.plus_ore),
            kroner(totals.minus_ore),
            kroner(totals.net_ore())
        );
    }
    page.push_str("</tbody>\n</table>\n");
    page.push_str(&month_chart(&report.months));
}

/// Net per month as bars: an inline SVG, scaled to the largest month, with the
/// zero line where negative months (more corrections than withholdings) go below.
fn month_chart(months: &BTreeMap<(i32, u32), MonthTotals>) -> String {
    // Coordinates in i128: the span of two i64 sums cannot overflow it.
    const WIDTH: i128 = 720;
    const HEIGHT: i128 = 260;
    const TOP: i128 = 30;
    const BOTTOM: i128 = 40;
    let nets: Vec<i128> = months.values().map(MonthTotals::net_ore).collect();
    // The zero line is always in the chart, so the folds start from it.
    let high = nets.iter().copied().fold(0, i128::max);
    let low = nets.iter().copied().fold(0, i128::min);
    let span = (high - low).max(1);
    let plot = HEIGHT - TOP - BOTTOM;
    let y_of = |ore: i128| TOP + (high - ore) * plot / span;
    let zero = y_of(0);
    let count = i128::try_from(months.len().max(1)).expect("a count of months fits i128");
    let slot = (WIDTH - 40) / count;
    let bar = (slot * 3 / 5).clamp(4, 90);
    let mut svg = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"net per month\">\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f7f9fc\" stroke=\"#999\"/>\n<text x=\"20\" y=\"20\" font-size=\"13\" font-family=\"DejaVu Sans, Arial, sans-serif\">Net per month (kr)</text>\n"
    );
    for (index, ((year, month), totals)) in months.iter().enumerate() {
        let index = i128::try_from(index).expect("a month index fits i128");
        let x = 20 + index * slot + (slot - bar) / 2;
        let net = totals.net_ore();
        let y = y_of(net);
        let (top, height) = if y < zero {
            (y, zero - y)
        } else {
            (zero, y - zero)
        };
        let colour = if net < 0 { "#b00020" } else { "#2a6fb0" };
        let _ = writeln!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{top}\" width=\"{bar}\" height=\"{}\" fill=\"{colour}\"><title>{year:04}-{month:02}: {} kr</title></rect>\n<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" font-family=\"DejaVu Sans, Arial, sans-serif\">{year:04}-{month:02}</text>\n<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" font-family=\"DejaVu Sans, Arial, sans-serif\">{}</text>",
            height.max(1),
            kroner(net),
            x + bar / 2,
            HEIGHT - BOTTOM + 16,
            x + bar / 2,
            (top - 4).max(TOP - 2),
            kroner(net)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"16\" y1=\"{zero}\" x2=\"{}\" y2=\"{zero}\" stroke=\"#333\"/>\n</svg>",
        WIDTH - 16
    );
    svg
}
