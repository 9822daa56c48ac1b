//! The report as one self-contained HTML page in one language: inline CSS, an
//! inline SVG chart, no script, nothing fetched. Every text that comes from
//! outside the program (file names, receipt codes and texts, recipients, paths,
//! verify's problems) is escaped.

use std::fmt::Write as _;

use uuid::Uuid;

use super::words::{Lang, Words};
use super::{Delivery, Month, MonthTotals, Report, ReportFile, Step, StepKind};

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A time from the log for a table cell: the date kept on one line, the time
/// free to wrap below it.
fn when(w: &Words, us: i64) -> String {
    let text = w.time_us(us);
    match text.split_once(' ') {
        Some((date, time)) => format!(
            "<span class=\"date\">{}</span> {}",
            escape(date),
            escape(time)
        ),
        None => escape(&text),
    }
}

const STYLE: &str =
    "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em;color:#1a1a1a;background:#fff;max-width:80em}
h1{font-size:1.5em;margin-bottom:0.2em}
h2{font-size:1.2em;margin-top:1.6em}
p.intro{max-width:60em;font-size:0.9em;color:#333}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #999;padding:0.3em 0.6em;text-align:left;vertical-align:top}
th{background:#e8eef5}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.hash,td.id,code{font-family:'DejaVu Sans Mono',monospace;font-size:0.8em}
table.wide{width:100%}
td.hash{word-break:break-all;min-width:9em;max-width:14em}
td.id{white-space:nowrap}
span.date{white-space:nowrap}
tr.group th{background:#f3f3f3;font-weight:bold}
ul.errors{margin:0.2em 0 0 1.2em;padding:0}
.ok{color:#0a6b2b;font-weight:bold}
.bad{color:#b00020;font-weight:bold}
tfoot td{font-weight:bold}";

/// The report as one self-contained HTML page in `lang`.
pub fn render_html(report: &Report, lang: Lang) -> String {
    let w = lang.words();
    let mut page = String::new();
    let title = format!("{} {} {}", w.title, report.kommune, report.kommune.name());
    let period = match (report.from, report.to) {
        (None, None) => w.all_files.to_string(),
        (from, to) => format!(
            "{}: {} – {} (UTC).",
            w.created,
            from.map_or(w.the_first.into(), |d| w.date(d)),
            to.map_or(w.today.into(), |d| w.date(d))
        ),
    };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n<p id=\"period\">{}</p>\n",
        w.lang,
        escape(&title),
        escape(&title),
        escape(&period)
    );
    write_verification(&mut page, w, report);
    write_payout_months(&mut page, w, report);
    write_file_months(&mut page, w, report);
    write_files(&mut page, w, report);
    write_history(&mut page, w, report);
    page.push_str("</body>\n</html>\n");
    page
}

fn write_verification(page: &mut String, w: &Words, report: &Report) {
    let head = escape(&report.head.to_string());
    let _ = write!(
        page,
        "<h2>{}</h2>\n<p>{} {} {} <code id=\"head\">{head}</code>. {} <code>sf2520 verify --expect-head {head}</code> {}</p>\n",
        w.log,
        w.made_at,
        escape(&w.time(report.made_at)),
        w.at_head,
        w.keep_head,
        w.keep_head_after,
    );
    if report.verify_problems.is_empty() {
        let outbox = report
            .outbox_checked
            .as_ref()
            .map_or(w.no_outbox.to_string(), |dir| {
                format!(
                    "{} {} {}",
                    w.outbox_checked,
                    escape(dir),
                    w.outbox_checked_after
                )
            });
        let _ = writeln!(
            page,
            "<p id=\"verify\" class=\"ok\">{} {outbox}</p>",
            w.verify_passed
        );
    } else {
        let _ = writeln!(
            page,
            "<p id=\"verify\" class=\"bad\">{}</p>\n<p>{}</p>\n<ul id=\"problems\">",
            w.verify_failed, w.problems_in_english
        );
        for problem in &report.verify_problems {
            let _ = writeln!(page, "<li>{}</li>", escape(problem));
        }
        page.push_str("</ul>\n");
    }
}

/// A table of totals, one row per (label, totals), with a row for their sum.
fn month_table<'a>(
    page: &mut String,
    w: &Words,
    id: &str,
    first_column: &str,
    rows: impl Iterator<Item = (String, &'a MonthTotals)>,
) {
    let _ = writeln!(
        page,
        "<table id=\"{id}\">\n<thead><tr><th>{first_column}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th></tr></thead>\n<tbody>",
        w.files, w.records, w.plus, w.minus, w.net
    );
    let mut sum = MonthTotals::default();
    for (label, totals) in rows {
        sum.records += totals.records;
        sum.plus_ore += totals.plus_ore;
        sum.minus_ore += totals.minus_ore;
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&label),
            w.count(totals.files),
            w.count(totals.records),
            w.kroner(totals.plus_ore),
            w.kroner(totals.minus_ore),
            w.kroner(totals.net_ore())
        );
    }
    // A file with entries of several payout months counts in each: the sum of
    // the files column would count it twice, so the total row leaves it empty.
    let _ = writeln!(
        page,
        "</tbody>\n<tfoot><tr><td>{}</td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>\n</table>",
        w.total,
        w.count(sum.records),
        w.kroner(sum.plus_ore),
        w.kroner(sum.minus_ore),
        w.kroner(sum.net_ore())
    );
}

fn payout_label(w: &Words, month: Option<Month>, short: bool) -> String {
    month.map_or_else(
        || w.unknown_month.to_string(),
        |month| w.month(month, short),
    )
}

fn write_payout_months(page: &mut String, w: &Words, report: &Report) {
    let _ = writeln!(
        page,
        "<h2>{}</h2>\n<p class=\"intro\">{}</p>",
        w.payout_months, w.payout_months_intro
    );
    let rows = report
        .payout_months
        .iter()
        .map(|(month, totals)| (payout_label(w, *month, false), totals));
    month_table(page, w, "payout-months", w.payout_month, rows);
    let bars: Vec<(String, i128)> = report
        .payout_months
        .iter()
        .map(|(month, totals)| (payout_label(w, *month, true), totals.net_ore()))
        .collect();
    page.push_str(&month_chart(w, &bars));
}

fn write_file_months(page: &mut String, w: &Words, report: &Report) {
    let _ = writeln!(
        page,
        "<h2>{}</h2>\n<p class=\"intro\">{}</p>",
        w.file_months, w.file_months_intro
    );
    let rows = report
        .file_months
        .iter()
        .map(|(month, totals)| (w.month(*month, false), totals));
    month_table(page, w, "file-months", w.file_month, rows);
}

fn delivery_label(w: &Words, delivery: &Delivery) -> String {
    match delivery {
        Delivery::Exported => w.state_exported.into(),
        Delivery::Uploaded { attempt } => w.uploaded_state(*attempt),
        Delivery::Accepted => w.state_accepted.into(),
        Delivery::Rejected { codes } if codes.is_empty() => w.state_rejected.into(),
        Delivery::Rejected { codes } => format!("{} ({})", w.state_rejected, codes.join(", ")),
        Delivery::Reissued => w.state_reissued.into(),
    }
}

fn write_files(page: &mut String, w: &Words, report: &Report) {
    let _ = writeln!(
        page,
        "<h2>{}</h2>\n<table id=\"files\" class=\"wide\">\n<thead><tr><th class=\"num\">{}</th><th>{}</th><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th>SHA-256</th><th>{}</th><th>{}</th></tr></thead>\n<tbody>",
        w.official_files, w.sequence, w.file, w.created, w.records, w.plus, w.minus, w.net, w.delivery, w.accepted_at
    );
    let mut total = MonthTotals::default();
    for entry in &report.files {
        let file = &entry.file;
        total.add_file(file);
        let delivery = entry.delivery();
        let class = match delivery {
            Delivery::Accepted => " class=\"ok\"",
            Delivery::Rejected { .. } => " class=\"bad\"",
            _ => "",
        };
        let _ = writeln!(
            page,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"hash\">{}</td><td{class}>{}</td><td>{}</td></tr>",
            file.sequence,
            escape(&file.file_name),
            when(w, file.created_at_us),
            w.count(file.record_count),
            w.kroner(file.plus_ore),
            w.kroner(file.minus_ore),
            w.kroner(file.plus_ore - file.minus_ore),
            hex(&file.sha256),
            escape(&delivery_label(w, &delivery)),
            entry.accepted_at_us().map(|us| when(w, us)).unwrap_or_default()
        );
    }
    if report.files.is_empty() {
        let _ = writeln!(page, "<tr><td colspan=\"10\">{}</td></tr>", w.no_files);
    }
    let _ = writeln!(
        page,
        "</tbody>\n<tfoot><tr><td colspan=\"3\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td colspan=\"3\"></td></tr></tfoot>\n</table>",
        w.file_count(total.files),
        w.count(total.records),
        w.kroner(total.plus_ore),
        w.kroner(total.minus_ore),
        w.kroner(total.net_ore())
    );
}

fn write_history(page: &mut String, w: &Words, report: &Report) {
    let _ = writeln!(
        page,
        "<h2>{}</h2>\n<p class=\"intro\">{}</p>\n<table id=\"history\" class=\"wide\">\n<thead><tr><th class=\"num\">{}</th><th>{}</th><th>{}</th><th>SendersFileId</th><th>{}</th></tr></thead>",
        w.history, w.history_intro, w.sequence, w.time, w.event, w.details
    );
    for file in &report.files {
        write_file_history(page, w, file);
    }
    if report.files.is_empty() {
        let _ = writeln!(
            page,
            "<tbody><tr><td colspan=\"5\">{}</td></tr></tbody>",
            w.no_history
        );
    }
    page.push_str("</table>\n");
}

fn write_file_history(page: &mut String, w: &Words, file: &ReportFile) {
    let _ = writeln!(
        page,
        "<tbody id=\"history-{}\">\n<tr class=\"group\"><th colspan=\"5\">{} {} · {}</th></tr>",
        file.file.sequence,
        w.sequence,
        file.file.sequence,
        escape(&file.file.file_name)
    );
    for step in &file.history {
        let (event, class, details) = step_texts(w, step);
        let _ = writeln!(
            page,
            "<tr><td class=\"num\">{}</td><td>{}</td><td{class}>{}</td><td class=\"id\">{}</td><td>{details}</td></tr>",
            file.file.sequence,
            when(w, step.recorded_at_us),
            escape(&event),
            Uuid::from_bytes(step.senders_file_id)
        );
    }
    page.push_str("</tbody>\n");
}

/// A step's event text, the class of its cell and its details as HTML (every
/// text from outside escaped).
fn step_texts(w: &Words, step: &Step) -> (String, &'static str, String) {
    match &step.kind {
        StepKind::Exported => (w.step_exported.into(), "", String::new()),
        StepKind::Uploaded {
            attempt,
            remote_path,
            size_bytes,
        } => (
            w.uploaded(*attempt),
            "",
            format!(
                "<code>{}</code>, {} {}",
                escape(remote_path),
                w.count(*size_bytes),
                w.bytes
            ),
        ),
        StepKind::TechnicalReceipt {
            accepted,
            file_transfer_uuid,
            errors,
        } => {
            let mut details = format!(
                "FileTransferUUID <code>{}</code>",
                escape(file_transfer_uuid)
            );
            if !errors.is_empty() {
                details.push_str(" <ul class=\"errors\">");
                for error in errors {
                    let _ = write!(
                        details,
                        "<li><code>{}</code> {}: {}</li>",
                        escape(&error.code),
                        escape(&error.code_description),
                        escape(&error.description)
                    );
                }
                details.push_str("</ul>");
            }
            if *accepted {
                (w.step_accepted.into(), " class=\"ok\"", details)
            } else {
                (w.step_rejected.into(), " class=\"bad\"", details)
            }
        }
        StepKind::Reissued => (w.step_reissued.into(), "", String::new()),
        StepKind::BusinessReceipt {
            file_transfer_uuid,
            recipient,
            acceptance,
            reason,
        } => {
            let event = format!(
                "{} {} {}: {}",
                w.step_business,
                w.from_recipient,
                recipient,
                w.acceptance(*acceptance)
            );
            let mut details = format!(
                "FileTransferUUID <code>{}</code>",
                escape(file_transfer_uuid)
            );
            if let Some(reason) = reason {
                let _ = write!(details, "<br>{} {}", w.reason, escape(reason));
            }
            (event, "", details)
        }
    }
}

/// Net per month as bars: an inline SVG, scaled to the largest month, with the
/// zero line where negative months (more corrections than withholdings) go below.
fn month_chart(w: &Words, bars: &[(String, i128)]) -> String {
    // Coordinates in i128: the span of two i64 sums cannot overflow it.
    const WIDTH: i128 = 720;
    const HEIGHT: i128 = 260;
    const TOP: i128 = 30;
    const BOTTOM: i128 = 40;
    // The zero line is always in the chart, so the folds start from it.
    let high = bars.iter().map(|(_, net)| *net).fold(0, i128::max);
    let low = bars.iter().map(|(_, net)| *net).fold(0, i128::min);
    let span = (high - low).max(1);
    let plot = HEIGHT - TOP - BOTTOM;
    let y_of = |ore: i128| TOP + (high - ore) * plot / span;
    let zero = y_of(0);
    let count = i128::try_from(bars.len().max(1)).expect("a count of months fits i128");
    let slot = (WIDTH - 40) / count;
    let bar = (slot * 3 / 5).clamp(4, 90);
    let font = "font-family=\"DejaVu Sans, Arial, sans-serif\"";
    let mut svg = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f7f9fc\" stroke=\"#999\"/>\n<text x=\"20\" y=\"20\" font-size=\"13\" {font}>{}</text>\n",
        w.chart_title, w.chart_title
    );
    for (index, (label, net)) in bars.iter().enumerate() {
        let index = i128::try_from(index).expect("a month index fits i128");
        let x = 20 + index * slot + (slot - bar) / 2;
        let y = y_of(*net);
        let (top, height) = if y < zero {
            (y, zero - y)
        } else {
            (zero, y - zero)
        };
        let colour = if *net < 0 { "#b00020" } else { "#2a6fb0" };
        let label = escape(label);
        let amount = w.kroner(*net);
        let _ = writeln!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{top}\" width=\"{bar}\" height=\"{}\" fill=\"{colour}\"><title>{label}: {amount} {}</title></rect>\n<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" {font}>{label}</text>\n<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" {font}>{amount}</text>",
            height.max(1),
            w.currency,
            x + bar / 2,
            HEIGHT - BOTTOM + 16,
            x + bar / 2,
            (top - 4).max(TOP - 2),
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"16\" y1=\"{zero}\" x2=\"{}\" y2=\"{zero}\" stroke=\"#333\"/>\n</svg>",
        WIDTH - 16
    );
    svg
}
