//! `sf2520 report`: the reconciliation page's content, read back with Python's
//! `html.parser` (tables, the head, the verify verdict, no script or network
//! reference), and the page rendered once in a real headless Chromium, whose
//! screenshot must show the page (not a blank one).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sf2520::audit::report::{render_html, Delivery, MonthTotals, Report, ReportFile};
use sf2520::audit::Anchor;
use sf2520::domain::{Event, FileExported, FileUploaded, Kommune, ReceiptError, ReceiptReceived};
use support::cli::sf2520;
use support::ledger::*;

/// Parses an HTML page with Python's html.parser: every table by id as rows of
/// cell texts, the text of elements with an id, and what would need a script or
/// the network.
const PARSE: &str = r#"
import json, sys
from html.parser import HTMLParser

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.texts, self.scripts, self.remote = {}, {}, 0, []
        self.table = None; self.row = None; self.cell = None; self.ids = []
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script": self.scripts += 1
        for key in ("src", "href"):
            if key in attrs and "://" in attrs[key] and not attrs[key].startswith("http://www.w3.org/"):
                self.remote.append(attrs[key])
        if tag == "table": self.table = attrs.get("id"); self.tables[self.table] = []
        if tag == "tr": self.row = []
        if tag in ("td", "th"): self.cell = ""
        self.ids.append((tag, attrs.get("id"), ""))
    def handle_endtag(self, tag):
        while self.ids:
            open_tag, ident, text = self.ids.pop()
            if ident: self.texts[ident] = text.strip()
            if self.ids:
                t, i, parent = self.ids[-1]; self.ids[-1] = (t, i, parent + text)
            if open_tag == tag: break
        if tag in ("td", "th") and self.row is not None: self.row.append(self.cell.strip()); self.cell = None
        if tag == "tr" and self.table is not None: self.tables[self.table].append(self.row); self.row = None
    def handle_data(self, data):
        if self.cell is not None: self.cell += data
        if self.ids:
            t, i, text = self.ids[-1]; self.ids[-1] = (t, i, text + data)

page = Page()
page.feed(open(sys.argv[1], encoding="utf-8").read())
page.close()
print(json.dumps({"tables": page.tables, "texts": page.texts, "scripts": page.scripts, "remote": page.remote}))
"#;

/// Decodes a PNG (8-bit RGB or RGBA, non-interlaced, as Chromium writes) with the
/// standard library and prints its size, the share of pixels that differ from
/// the top-left one, and how many pixels are the report's bar blue.
const PNG_STATS: &str = r#"
import json, struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
at, idat, width = 8, b"", 0
while at < len(data):
    length, kind = struct.unpack(">I4s", data[at:at + 8]); body = data[at + 8:at + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        channels = 3 if colour == 2 else 4
    if kind == b"IDAT": idat += body
    at += 12 + length
raw = zlib.decompress(idat); stride = width * channels; rows = []; previous = bytearray(stride); at = 0
for _ in range(height):
    kind = raw[at]; line = bytearray(raw[at + 1:at + 1 + stride]); at += 1 + stride
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0; b = previous[i]; c = previous[i - channels] if i >= channels else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); previous = line
background = rows[0][:3]; differing = blue = 0
for line in rows:
    for x in range(0, stride, channels):
        pixel = line[x:x + 3]
        if pixel != background: differing += 1
        if abs(pixel[0] - 0x2a) < 8 and abs(pixel[1] - 0x6f) < 8 and abs(pixel[2] - 0xb0) < 8: blue += 1
print(json.dumps({"width": width, "height": height, "differing": differing / (width * height), "blue": blue}))
"#;

fn python(script: &str, arg: &Path) -> Value {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .output()
        .expect("python3 runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn cells(page: &Value, table: &str) -> Vec<Vec<String>> {
    page["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("no table {table}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|cell| cell.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn text<'a>(page: &'a Value, id: &str) -> &'a str {
    page["texts"][id]
        .as_str()
        .unwrap_or_else(|| panic!("no element #{id}"))
}

/// A ledger with two files of 0751 (the first delivered and accepted, the
/// second rejected) and one of 0101.
fn given_delivered() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", "0751", CPR, "2026-01-01"),
        agreement("BA2", "0101", CPR, "2026-01-01"),
        withholding("KY-1", "BA1", "0751", "2026-10-01", "1623.50"),
        withholding("KY-2", "BA2", "0101", "2026-10-01", "250.00"),
        correction("KO-1", "KY-1", "0751", "-200.00"),
    ]));
    export(&mut t);
    t.given(&lines(&[withholding(
        "KY-3",
        "BA1",
        "0751",
        "2026-11-01",
        "300.00",
    )]));
    export(&mut t);
    let aarhus = Kommune::parse("0751").unwrap();
    t.ledger
        .write(|appender| {
            for (sequence, accepted) in [(1, true), (2, false)] {
                let senders_file_id = [u8::try_from(sequence).unwrap(); 16];
                appender.append(&Event::FileUploaded(FileUploaded {
                    kommune: aarhus,
                    sequence,
                    remote_path: format!("OUT/file-{sequence}"),
                    size_bytes: 520,
                    senders_file_id,
                    attempt: 1,
                }))?;
                appender.append(&Event::ReceiptReceived(ReceiptReceived {
                    kommune: aarhus,
                    sequence,
                    senders_file_id,
                    file_transfer_uuid: format!("c3d4e5f6-0718-4293-a4b5-00000000000{sequence}"),
                    accepted,
                    errors: if accepted {
                        Vec::new()
                    } else {
                        vec![ReceiptError {
                            code: "E17".into(),
                            code_description: "Ugyldig fil".into(),
                            description: "Slutpost mangler".into(),
                        }]
                    },
                }))?;
            }
            Ok(())
        })
        .unwrap();
    t
}

fn export(t: &mut TestLedger) {
    let outbox = sf2520::export::default_outbox(&t.data_dir());
    sf2520::export::run_batch(
        &mut t.ledger,
        &sf2520::export::ExportRequest::default(),
        &outbox,
        &sf2520::export::Quiet,
    )
    .unwrap();
}

#[test]
fn the_report_lists_the_kommunes_files_with_sums_hashes_delivery_and_receipt() {
    let t = given_delivered();
    let data_dir = t.data_dir();
    let files = t
        .ledger
        .official_files(Some(Kommune::parse("0751").unwrap()))
        .unwrap();
    let head = Anchor::of(&t.ledger.head().unwrap()).to_string();
    drop(t.ledger);
    let out = t.dir.path().join("report.html");
    let run = sf2520(
        &data_dir,
        [
            "report".as_ref(),
            "--kommune".as_ref(),
            "0751".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
    .expect_success("report");
    assert!(
        run.stdout.contains("2 file(s) of kommune 0751"),
        "{}",
        run.stdout
    );
    let page = python(PARSE, &out);
    assert_eq!(page["scripts"], 0, "no script is needed to read it");
    assert_eq!(
        page["remote"],
        serde_json::json!([]),
        "nothing from the network"
    );
    assert_eq!(text(&page, "head"), head);
    assert!(
        text(&page, "verify").starts_with("verify passed"),
        "{}",
        text(&page, "verify")
    );
    let rows = cells(&page, "files");
    assert_eq!(rows.len(), 4, "header, two files, totals: {rows:?}");
    let first = &rows[1];
    assert_eq!(first[0], "1");
    assert_eq!(first[1], files[0].file_name);
    assert_eq!(first[3], "2", "two records");
    assert_eq!(
        (first[4].as_str(), first[5].as_str(), first[6].as_str()),
        ("1623.50", "200.00", "1423.50")
    );
    let sha: String = files[0].sha256.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first[7], sha);
    assert_eq!(first[8], "accepted");
    assert!(
        first[9].contains("c3d4e5f6-0718-4293-a4b5-000000000001"),
        "{}",
        first[9]
    );
    let second = &rows[2];
    assert_eq!(second[8], "rejected");
    assert!(
        second[9].contains("E17 Ugyldig fil: Slutpost mangler"),
        "{}",
        second[9]
    );
    assert_eq!(rows[3][0], "2 file(s)");
    assert_eq!(rows[3][6], "1723.50", "the net of both files");
    let months = cells(&page, "months");
    assert_eq!(months.len(), 2, "one month: {months:?}");
    assert_eq!(months[1][1], "2");
    assert_eq!(months[1][5], "1723.50");
    // The period excludes files created before it.
    let run = sf2520(
        &data_dir,
        [
            "report".as_ref(),
            "--kommune".as_ref(),
            "0751".as_ref(),
            "--from".as_ref(),
            "2999-01-01".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
    .expect_success("report of an empty period");
    assert!(run.stdout.contains("0 file(s)"), "{}", run.stdout);
}

#[test]
fn a_report_on_a_damaged_ledger_says_verify_failed_and_lists_the_problem() {
    let t = given_delivered();
    let data_dir = t.data_dir();
    let file = t
        .ledger
        .official_file(Kommune::parse("0101").unwrap(), 1)
        .unwrap();
    drop(t.ledger);
    let path = sf2520::export::default_outbox(&data_dir).join(&file.file_name);
    std::fs::remove_file(&path).unwrap();
    let out = t.dir.path().join("report.html");
    sf2520(
        &data_dir,
        [
            "report".as_ref(),
            "--kommune".as_ref(),
            "0751".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
    .expect_refusal("verify FAILED");
    let page = python(PARSE, &out);
    assert!(
        text(&page, "verify").starts_with("verify FAILED"),
        "{}",
        text(&page, "verify")
    );
    assert!(
        text(&page, "problems").contains("kommune 0101 løbenummer 1"),
        "{}",
        text(&page, "problems")
    );
}

/// A page with several months, one of them negative, as the chart must draw it.
fn months_report() -> Report {
    let kommune = Kommune::parse("0751").unwrap();
    let mut months = BTreeMap::new();
    let mut files = Vec::new();
    for (index, (month, plus, minus)) in [
        (9u32, 500_000i64, 0i64),
        (10, 820_000, 20_000),
        (11, 10_000, 90_000),
        (12, 640_000, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let sequence = u32::try_from(index + 1).unwrap();
        months.insert(
            (2026, month),
            MonthTotals {
                files: 1,
                records: 3,
                plus_ore: i128::from(plus),
                minus_ore: i128::from(minus),
            },
        );
        files.push(ReportFile {
            position: u64::from(sequence) * 10,
            file: FileExported {
                file_id: [7; 16],
                kommune,
                sequence,
                file_name: format!("SF2520_0751_2026{month:02}01_{sequence:06}.txt"),
                created_at_us: chrono::NaiveDate::from_ymd_opt(2026, month, 1)
                    .unwrap()
                    .and_hms_opt(6, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp_micros(),
                previous_cutoff_position: 0,
                cutoff_position: 1,
                test_marker: false,
                record_count: 3,
                plus_ore: plus,
                minus_ore: minus,
                sha256: [0xab; 32],
            },
            delivery: Delivery::Accepted {
                file_transfer_uuid: "c3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b".into(),
            },
        });
    }
    Report {
        kommune,
        from: None,
        to: None,
        files,
        months,
        head: Anchor {
            position: 42,
            hash: [0x5a; 32],
        },
        made_at: chrono::Utc::now(),
        verify_problems: Vec::new(),
        outbox_checked: Some("/srv/sf2520/outbox".into()),
    }
}

#[test]
fn the_report_renders_in_headless_chromium_as_a_page_with_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let page = render_html(&months_report());
    assert_eq!(
        page.matches("class=\"bar\"").count(),
        4,
        "one bar per month"
    );
    std::fs::write(&html, &page).unwrap();
    let png = dir.path().join("report.png");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1400",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs (scripts/install-test-deps.sh installs it)");
    assert!(
        output.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Kept for a person to look at, when asked to.
    if let Some(keep) = std::env::var_os("SF2520_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    let stats = python(PNG_STATS, &png);
    assert_eq!(stats["width"], 1280);
    let differing = stats["differing"].as_f64().unwrap();
    assert!(differing > 0.02, "the screenshot is blank: {stats}");
    assert!(
        stats["blue"].as_u64().unwrap() > 2_000,
        "the chart's bars are drawn: {stats}"
    );
}
