//! `sf2520 report`: the reconciliation page's content, read back with Python's
//! `html.parser` (tables, the head, the verify verdict, no script or network
//! reference): one language per page (Danish by default, English with `--lang
//! en`), totals per payout month and per month of the files' creation, each file's
//! delivery history with the platform's texts escaped, no CPR; and the page
//! rendered once in a real headless Chromium, whose screenshot must show the page
//! (not a blank one).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sf2520::audit::Anchor;
use sf2520::domain::{
    BusinessReceiptReceived, Event, FileAcceptance, FileReissued, FileUploaded, Kommune,
    ReceiptError, ReceiptErrorCode, ReceiptReceived, TechnicalReceiptReceived,
};
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
        self.visible, self.hidden = [], 0; self.lang = None
    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html": self.lang = attrs.get("lang")
        if tag in ("style", "script"): self.hidden += 1
        if tag == "script": self.scripts += 1
        for key in ("src", "href"):
            if key in attrs and "://" in attrs[key] and not attrs[key].startswith("http://www.w3.org/"):
                self.remote.append(attrs[key])
        if tag == "table": self.table = attrs.get("id"); self.tables[self.table] = []
        if tag == "tr": self.row = []
        if tag in ("td", "th"): self.cell = ""
        self.ids.append((tag, attrs.get("id"), ""))
    def handle_endtag(self, tag):
        if tag in ("style", "script"): self.hidden -= 1
        while self.ids:
            open_tag, ident, text = self.ids.pop()
            if ident: self.texts[ident] = text.strip()
            if self.ids:
                t, i, parent = self.ids[-1]; self.ids[-1] = (t, i, parent + text)
            if open_tag == tag: break
        if tag in ("td", "th") and self.row is not None: self.row.append(self.cell.strip()); self.cell = None
        if tag == "tr" and self.table is not None: self.tables[self.table].append(self.row); self.row = None
    def handle_data(self, data):
        if not self.hidden: self.visible.append(data)
        if self.cell is not None: self.cell += data
        if self.ids:
            t, i, text = self.ids[-1]; self.ids[-1] = (t, i, text + data)

page = Page()
page.feed(open(sys.argv[1], encoding="utf-8").read())
page.close()
print(json.dumps({"tables": page.tables, "texts": page.texts, "scripts": page.scripts, "remote": page.remote,
                  "visible": " ".join(page.visible), "lang": page.lang}))
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

/// Runs `sf2520 report --kommune 0751 EXTRA... --out OUT` and parses the page.
fn report(data_dir: &Path, out: &Path, extra: &[&str]) -> (String, Value) {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["report".as_ref(), "--kommune".as_ref(), "0751".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend(["--out".as_ref(), out.as_os_str()]);
    let run = sf2520(data_dir, args).expect_success("report");
    (run.stdout, python(PARSE, out))
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
    let (stdout, page) = report(&data_dir, &out, &[]);
    assert!(stdout.contains("2 file(s) of kommune 0751"), "{stdout}");
    assert_eq!(page["scripts"], 0, "no script is needed to read it");
    assert_eq!(
        page["remote"],
        serde_json::json!([]),
        "nothing from the network"
    );
    assert_eq!(text(&page, "head"), head);
    assert!(
        text(&page, "verify").starts_with("verify bestået"),
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
        ("1.623,50", "200,00", "1.423,50")
    );
    let sha: String = files[0].sha256.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first[7], sha);
    assert_eq!(first[8], "godkendt");
    assert!(
        first[9].ends_with(" UTC"),
        "the time it was accepted: {first:?}"
    );
    let second = &rows[2];
    assert_eq!(second[8], "afvist (E17)");
    assert_eq!(second[9], "", "never accepted");
    assert_eq!(rows[3][0], "2 filer");
    assert_eq!(rows[3][4], "1.723,50", "the net of both files");
    let history = cells(&page, "history");
    let rejected = history
        .iter()
        .find(|row| row.get(2).is_some_and(|event| event.contains("afvist")))
        .unwrap_or_else(|| panic!("no rejected receipt in the history: {history:?}"));
    assert!(
        rejected[4].contains("E17 Ugyldig fil: Slutpost mangler")
            && rejected[4].contains("c3d4e5f6-0718-4293-a4b5-000000000002"),
        "{rejected:?}"
    );
    let months = cells(&page, "file-months");
    assert_eq!(months.len(), 3, "header, one month, total: {months:?}");
    assert_eq!(months[1][1], "2");
    assert_eq!(months[1][5], "1.723,50");
    // The period excludes files created before it.
    let (stdout, _) = report(&data_dir, &out, &["--from", "2999-01-01"]);
    assert!(stdout.contains("0 file(s)"), "{stdout}");
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
        text(&page, "verify").starts_with("verify FEJLEDE"),
        "{}",
        text(&page, "verify")
    );
    assert!(
        text(&page, "problems").contains("kommune 0101 løbenummer 1"),
        "{}",
        text(&page, "problems")
    );
}

/// Whether `word` stands in `text` as a word (or words) of its own.
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphabetic) && !after.is_some_and(char::is_alphabetic)
    })
}

/// Words of the other language that must not be on a page (its visible text).
const ENGLISH: &[&str] = &[
    "Official files",
    "Totals per",
    "Records",
    "Delivery",
    "Created",
    "accepted",
    "rejected",
    "passed",
    "Made",
    "file(s)",
    "Net ",
    "Reconciliation",
    "Payout",
    "Uploaded",
    "Reissued",
    "Technical receipt",
    "Business receipt",
    "Details",
    "Total",
    "The log",
    "December",
];
const DANISH: &[&str] = &[
    "Officielle",
    "Totaler",
    "Poster",
    "Levering",
    "Dannet",
    "godkendt",
    "afvist",
    "bestået",
    "filer",
    "Netto",
    "Afstemningsrapport",
    "Udbetalingsmåned",
    "Uploadet",
    "Genudsendt",
    "Forretningskvittering",
    "Detaljer",
    "I alt",
    "Loggen",
    "december",
    "Løbenr",
    "Hændelse",
    "kr.",
];

#[test]
fn the_page_is_danish_by_default_and_english_with_lang_en() {
    let t = given_history();
    let data_dir = t.data_dir();
    drop(t.ledger);
    let out = t.dir.path().join("report.html");
    let (_, page) = report(&data_dir, &out, &[]);
    let raw = std::fs::read(&out).unwrap();
    let raw = String::from_utf8(raw).expect("the page is UTF-8, as its meta charset says");
    assert!(raw.contains("<meta charset=\"utf-8\">"));
    assert_eq!(page["lang"], "da");
    let visible = page["visible"].as_str().unwrap();
    for word in ENGLISH {
        assert!(
            !contains_word(visible, word),
            "English `{word}` on the Danish page: {visible}"
        );
    }
    for word in [
        "Løbenr.",
        "Hændelse",
        "Udbetalingsmåned",
        "Leveringshistorik",
        "Forretningskvittering fra UDK: godkendt",
    ] {
        assert!(
            visible.contains(word),
            "`{word}` is not on the Danish page: {visible}"
        );
    }
    assert_eq!(text(&page, "period"), "Alle kommunens officielle filer.");
    let files = cells(&page, "files");
    assert_eq!(files[3][4], "5.650,00", "Danish amounts: {files:?}");
    let created = &files[1][2];
    assert!(
        created.len() == 23 && created.as_bytes()[2] == b'-' && created.as_bytes()[5] == b'-',
        "dd-mm-åååå: {created}"
    );
    assert!(
        !raw.contains(CPR) && !raw.contains("010190-1234") && !raw.contains("010190"),
        "no CPR on the page"
    );

    let (_, page) = report(&data_dir, &out, &["--lang", "en", "--from", "2000-01-01"]);
    assert_eq!(page["lang"], "en");
    let visible = page["visible"].as_str().unwrap();
    for word in DANISH {
        assert!(
            !contains_word(visible, word),
            "Danish `{word}` on the English page: {visible}"
        );
    }
    for word in [
        "Seq. no.",
        "Payout month",
        "Delivery history",
        "Business receipt from UDK: accepted",
    ] {
        assert!(
            visible.contains(word),
            "`{word}` is not on the English page: {visible}"
        );
    }
    assert!(text(&page, "period").starts_with("Created: 2000-01-01 – today"));
    assert_eq!(cells(&page, "files")[3][4], "5,650.00");
    assert!(text(&page, "verify").starts_with("verify passed"));
}

/// Agreement BA1 of 0751 from 2025; withholdings paid out in February, March and
/// April 2025 and a correction of February's in file 1; a correction of April's and
/// a withholding paid out in May in file 2. Both files are created now, long after.
/// File 1: uploaded, rejected by a receipt with hostile text, reissued, uploaded
/// under the new SendersFileId, accepted, and UDK's business receipt; file 2:
/// uploaded, no receipt yet. Each event one minute after the one before.
fn given_history() -> TestLedger {
    let mut t = TestLedger::new();
    t.given(&lines(&[
        agreement("BA1", "0751", CPR, "2025-01-01"),
        withholding("KY-1", "BA1", "0751", "2025-02-03", "1000.00"),
        withholding("KY-2", "BA1", "0751", "2025-03-03", "2000.00"),
        withholding("KY-3", "BA1", "0751", "2025-04-03", "3000.00"),
        correction("KO-1", "KY-1", "0751", "-250.00"),
    ]));
    export(&mut t);
    t.given(&lines(&[
        correction("KO-2", "KY-3", "0751", "-500.00"),
        withholding("KY-4", "BA1", "0751", "2025-05-05", "400.00"),
    ]));
    export(&mut t);
    let clock = t.with_test_clock();
    let aarhus = Kommune::parse("0751").unwrap();
    let first = t.ledger.official_file(aarhus, 1).unwrap();
    for event in delivery_events(aarhus, first.file_id) {
        clock.advance(chrono::Duration::minutes(1));
        t.ledger.write(|appender| appender.append(&event)).unwrap();
    }
    t
}

const HOSTILE_CODE_TEXT: &str = "<script>alert('kode')</script>";
const HOSTILE_DESCRIPTION: &str = "Slutpost mangler & \"<img src=x onerror=alert(1)>\"";
const REISSUED_ID: [u8; 16] = [0x5e; 16];

fn delivery_events(kommune: Kommune, file_id: [u8; 16]) -> Vec<Event> {
    let upload = |sequence, senders_file_id, attempt| {
        Event::FileUploaded(FileUploaded {
            kommune,
            sequence,
            remote_path: format!("OUT/SF2520_0751_{sequence}.txt"),
            size_bytes: 1040,
            senders_file_id,
            attempt,
        })
    };
    let receipt = |senders_file_id, accepted, errors| {
        Event::TechnicalReceiptReceived(TechnicalReceiptReceived {
            kommune,
            sequence: 1,
            senders_file_id,
            receipt_named_senders_file_id: true,
            file_transfer_uuid: format!(
                "f7a1c2d3-0000-4000-8000-00000000000{}",
                u8::from(accepted)
            ),
            accepted,
            errors,
            receipt_sha256: [1; 32],
            archive_name: "receipt.xml".into(),
        })
    };
    vec![
        upload(1, file_id, 1),
        receipt(
            file_id,
            false,
            vec![ReceiptErrorCode {
                code: 4711,
                code_description: HOSTILE_CODE_TEXT.into(),
                description: HOSTILE_DESCRIPTION.into(),
            }],
        ),
        Event::FileReissued(FileReissued {
            kommune,
            sequence: 1,
            delivery_id: REISSUED_ID,
        }),
        upload(1, REISSUED_ID, 2),
        receipt(REISSUED_ID, true, Vec::new()),
        Event::BusinessReceiptReceived(BusinessReceiptReceived {
            kommune,
            sequence: 1,
            senders_file_id: REISSUED_ID,
            file_transfer_uuid: "f7a1c2d3-0000-4000-8000-000000000001".into(),
            recipient: "UDK".into(),
            acceptance: FileAcceptance::Accepted,
            reason: None,
            receipt_sha256: [2; 32],
            archive_name: "business.xml".into(),
        }),
        upload(2, [0x22; 16], 1),
    ]
}

#[test]
fn totals_per_payout_month_follow_the_withholdings_payout_dates() {
    let t = given_history();
    let data_dir = t.data_dir();
    let created = t.ledger.official_files(None).unwrap()[0].created_at_us;
    drop(t.ledger);
    let out = t.dir.path().join("report.html");
    let (_, page) = report(&data_dir, &out, &[]);
    let payout = cells(&page, "payout-months");
    let expected = [
        [
            "Udbetalingsmåned",
            "Filer",
            "Poster",
            "Plus (kr.)",
            "Minus (kr.)",
            "Netto (kr.)",
        ],
        ["februar 2025", "1", "2", "1.000,00", "250,00", "750,00"],
        ["marts 2025", "1", "1", "2.000,00", "0,00", "2.000,00"],
        ["april 2025", "2", "2", "3.000,00", "500,00", "2.500,00"],
        ["maj 2025", "1", "1", "400,00", "0,00", "400,00"],
        ["I alt", "", "6", "6.400,00", "750,00", "5.650,00"],
    ];
    assert_eq!(
        payout,
        expected.map(|row| row.map(String::from).to_vec()).to_vec()
    );
    // The files' own month, as before, and labelled as such.
    let created = chrono::DateTime::from_timestamp_micros(created).unwrap();
    let months = [
        "januar",
        "februar",
        "marts",
        "april",
        "maj",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "december",
    ];
    let month = format!(
        "{} {}",
        months[usize::try_from(chrono::Datelike::month0(&created)).unwrap()],
        chrono::Datelike::year(&created)
    );
    let by_file = cells(&page, "file-months");
    assert_eq!(by_file[0][0], "Filen dannet");
    assert_eq!(
        by_file[1],
        [month.as_str(), "2", "6", "6.400,00", "750,00", "5.650,00"]
    );
    assert_eq!(by_file.len(), 3, "one month, then the total: {by_file:?}");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap())
            .unwrap()
            .matches("class=\"bar\"")
            .count(),
        4,
        "one bar per payout month"
    );
}

#[test]
fn the_delivery_history_shows_receipts_and_reissues_with_outside_text_escaped() {
    let t = given_history();
    let data_dir = t.data_dir();
    let exported = t
        .ledger
        .official_file(Kommune::parse("0751").unwrap(), 1)
        .unwrap();
    let mut times = Vec::new();
    t.ledger
        .for_each_event(
            exported.position,
            t.ledger.head().unwrap().position,
            |stored| {
                if stored.stream == "file/0751/000001" {
                    times.push(stored.recorded_at_us);
                }
                Ok(())
            },
        )
        .unwrap();
    drop(t.ledger);
    let out = t.dir.path().join("report.html");
    let (_, page) = report(&data_dir, &out, &[]);
    let raw = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    assert!(
        !raw.contains("<script") && !raw.contains("<img"),
        "outside text is escaped"
    );
    assert!(raw.contains("&lt;script&gt;alert(&#39;kode&#39;)&lt;/script&gt;"));
    assert_eq!(page["scripts"], 0);
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .format("%d-%m-%Y %H:%M:%S UTC")
            .to_string()
    };
    let first_id = uuid::Uuid::from_bytes(exported.file_id).to_string();
    let new_id = uuid::Uuid::from_bytes(REISSUED_ID).to_string();
    let history = cells(&page, "history");
    let rows: Vec<&Vec<String>> = history
        .iter()
        .filter(|row| row.first().is_some_and(|c| c == "1"))
        .collect();
    let events: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    // The file's export, then its six delivery events.
    let at = |index: usize| time(times[index]);
    assert_eq!(
        events,
        [
            (
                at(0).as_str(),
                "Dannet (filens UUID er første leverings SendersFileId)",
                first_id.as_str()
            ),
            (at(1).as_str(), "Uploadet (forsøg 1)", first_id.as_str()),
            (
                at(2).as_str(),
                "Teknisk kvittering: afvist",
                first_id.as_str()
            ),
            (
                at(3).as_str(),
                "Genudsendt med nyt SendersFileId",
                new_id.as_str()
            ),
            (at(4).as_str(), "Uploadet (forsøg 2)", new_id.as_str()),
            (
                at(5).as_str(),
                "Teknisk kvittering: godkendt",
                new_id.as_str()
            ),
            (
                at(6).as_str(),
                "Forretningskvittering fra UDK: godkendt",
                new_id.as_str()
            ),
        ],
        "{history:?}"
    );
    assert_eq!(rows[1][4], "OUT/SF2520_0751_1.txt, 1.040 byte");
    assert_eq!(
        rows[2][4],
        format!("FileTransferUUID f7a1c2d3-0000-4000-8000-000000000000 4711 {HOSTILE_CODE_TEXT}: {HOSTILE_DESCRIPTION}")
    );
    let files = cells(&page, "files");
    assert_eq!(
        (files[1][8].as_str(), files[1][9].as_str()),
        ("godkendt", at(5).as_str())
    );
    assert_eq!(
        (files[2][8].as_str(), files[2][9].as_str()),
        ("uploadet (forsøg 1), venter på kvittering", "")
    );
}

#[test]
fn the_report_renders_in_headless_chromium_as_a_page_with_its_chart() {
    let t = given_history();
    let data_dir = t.data_dir();
    drop(t.ledger);
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    report(&data_dir, &html, &[]);
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
            "--hide-scrollbars",
            "--window-size=1280,2200",
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
