//! `docs/sf2520-format.md`, generated from the layout table and a rendered example.
//!
//! The tables come from [`layout`](super::layout) and the example from the writer, so
//! the document cannot drift from the code; a test compares it with the committed copy.

use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveDateTime};

use super::error::WriteError;
use super::layout::{Content, Field, FieldId, Kind, RecordLayout, RECORDS, RECORD_LEN};
use super::writer::{file_name, render_file, DetailRecord, FileHeader};
use crate::domain::{AgreementRef, Amount, Cpr, EntryKind, Kommune, KyRef};

const INTRO: &str = "\
# The SF2520 file format

<!-- Generated from src/sf2520/layout.rs by sf2520::sf2520::doc::format_document.
     Do not edit by hand: run `UPDATE_GOLDEN=1 cargo test --test format`. -->

This is the layout our exporter writes and our reader checks (after the record description of the SF2520 catalogue page). The
official SF2520 v3.1 record description is not public; ours follows the conventions
of Danish fixed-width public and bank files, and lives in one table in
`src/sf2520/layout.rs`, so that the official one can replace it in one place.

- Every record is exactly **128 bytes** of **ISO-8859-1**, followed by **CR LF**. No
  byte order mark, nothing after the last CR LF.
- **N** fields: ASCII digits, right-aligned, zero-padded. **X** fields: printable
  ISO-8859-1 (0x20–0x7E, 0xA0–0xFF), left-aligned, space-padded.
- A value that does not fit its field is an error; nothing is ever truncated, and a
  character outside ISO-8859-1 is an error, never substituted.
- Dates are ÅÅÅÅMMDD and times TTMMSS, both UTC. Amounts are øre with a separate sign;
  zero carries `+`.
- Records: one `000` start, zero or more `010` detail records (one per entry, in log
  order, numbered from 1), one `999` end record with the count and sums of the details.
- File name: `SF2520_<kommunekode>_<ÅÅÅÅMMDD creation date>_<løbenummer, 6 digits>.txt`.

## What the reader checks

`sf2520 check` (and every reader of our files) rejects a file unless all of these hold,
and names line (record number in the file), byte column, field and what was expected
for each defect, up to 100 per file:

- the bytes: no BOM; every record 128 bytes followed by CR LF, the last one too, and
  nothing after it; N fields all ASCII digits; X fields printable ISO-8859-1 (a UTF-8
  sequence such as `Ø` written as two bytes is named as such); filler blank;
- the order: one `000` first, then only `010`, one `999` last;
- the constants: integration `SF2520`, layout version `031`, test marker `T` or blank;
- the values: real dates and times; kommunekode one of the 98 and the same in every
  record; løbenummer from 1 and the same in start and end; CPR valid (date and century
  rule, no modulus 11); references as the ledger accepts them (not empty, no leading
  space, within length); record numbers 1, 2, 3, … in order; transaction code `01` with
  a blank corrected reference or `02` with one; sign `+` or `-`, `+` for zero;
- the control totals: the count of `010` records, the sums of `+` and `-` amounts and
  the net sum and its sign (checked when every detail record could be read).

A record of the wrong length is reported once and not read field by field. Lower-case
æ, ø and å written as UTF-8 are two printable ISO-8859-1 characters each (`Ã¦`, `Ã¸`,
`Ã¥`) and so cannot be told from legal text; upper-case ones and most other UTF-8 can.
";

/// Extra words for a field in the tables: what its values mean.
fn note(id: FieldId) -> Option<&'static str> {
    Some(match id {
        FieldId::Sequence => "file sequence number, gapless per kommune from 1",
        FieldId::AsOf => {
            "the catalogue's cut-off time: the file holds the entries recorded up to \
             this moment; our exporter writes the creation time here, see decision 0009"
        }
        FieldId::TestMarker => "`T` for a test file, blank in production",
        FieldId::RecordNumber => "from 1, in file order",
        FieldId::Cpr => "of the debtor (bidragspligtig)",
        FieldId::TransactionCode => "`01` withholding, `02` correction",
        FieldId::PayoutDate => "for a correction: that of the withholding it corrects",
        FieldId::Sign => "`+` or `-`; `+` for zero",
        FieldId::Amount => "absolute",
        FieldId::Reference => "of this entry",
        FieldId::Corrected => "corrections only, else blank",
        FieldId::MinusSum => "absolute",
        FieldId::NetSign => "`+` when zero",
        FieldId::NetSum => "absolute",
        _ => return None,
    })
}

/// The whole document.
pub fn format_document() -> Result<String, WriteError> {
    let mut document = String::from(INTRO);
    for layout in RECORDS {
        document.push('\n');
        document.push_str(&record_table(layout));
    }
    document.push('\n');
    document.push_str(&worked_example()?);
    Ok(document)
}

/// One record's table, in the shape of the SF2520 catalogue's record description.
pub fn record_table(layout: &RecordLayout) -> String {
    let mut table = format!("## {} `{}`\n\n", layout.title, layout.record_type);
    table.push_str("| pos | len | type | field |\n|---|---|---|---|\n");
    for field in layout.fields {
        let kind = match field.kind {
            Kind::N => "N",
            Kind::X => "X",
        };
        let _ = writeln!(
            table,
            "| {} | {} | {kind} | {} |",
            position(field),
            field.len,
            description(field)
        );
    }
    table
}

fn position(field: &Field) -> String {
    if field.len == 1 {
        field.start.to_string()
    } else {
        format!("{}–{}", field.start, field.end())
    }
}

fn description(field: &Field) -> String {
    let base = match field.content {
        Content::Constant(value) => format!("{} `{value}`", field.name),
        Content::Blank => "blank".to_string(),
        Content::Data => field.name.to_string(),
    };
    match note(field.id) {
        Some(note) => format!("{base} ({note})"),
        None => base,
    }
}

fn worked_example() -> Result<String, WriteError> {
    let (header, records) = example();
    let name = file_name(header.kommune, header.created_at.date(), header.sequence)?;
    let (bytes, summary) = render_file(header, records)?;
    let mut text = String::from("## Worked example\n\n");
    let _ = writeln!(
        text,
        "`{name}`: Aarhus's file 42 with two withholdings and a correction of −200.00 kr \
         (net {} øre). Each line below is one record; the bytes on disk are ISO-8859-1 \
         and every line ends with CR LF. The two ruler lines on top count byte positions (tens, then units).\n",
        summary.net_ore
    );
    text.push_str("```text\n");
    text.push_str(&ruler());
    for record in bytes.chunks(RECORD_LEN + 2) {
        let line = record.get(..RECORD_LEN).unwrap_or(record);
        text.extend(line.iter().copied().map(char::from));
        text.push('\n');
    }
    text.push_str("```\n");
    Ok(text)
}

/// The last decimal digit of `value` as a character.
fn last_digit(value: usize) -> char {
    let digit = u32::try_from(value % 10).expect("below 10");
    char::from_digit(digit, 10).expect("below 10 is one decimal digit")
}

/// Two lines: the tens of each position, then the units.
fn ruler() -> String {
    let tens: String = (1..=RECORD_LEN)
        .map(|position| match position % 10 {
            0 => last_digit(position / 10),
            _ => ' ',
        })
        .collect();
    let units: String = (1..=RECORD_LEN).map(last_digit).collect();
    format!("{tens}\n{units}\n")
}

/// A debtor of the worked example and the agreement its entries are withheld for.
struct Debtor {
    cpr: &'static str,
    agreement: &'static str,
}

fn example() -> (FileHeader, Vec<DetailRecord>) {
    // Constant, valid data: a failure here is a bug in this function, not bad input.
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("example date");
    let at = |day: NaiveDate, h, m, s| -> NaiveDateTime {
        day.and_hms_opt(h, m, s).expect("example time")
    };
    let ky = |raw: &str| KyRef::parse(raw).expect("example reference");
    let header = FileHeader {
        kommune: Kommune::parse("0751").expect("Aarhus"),
        sequence: 42,
        created_at: at(date(2026, 2, 2), 6, 0, 0),
        as_of: at(date(2026, 2, 2), 5, 59, 58),
        test_marker: false,
    };
    let entry =
        |debtor: &Debtor, amount: i64, reference: &str, corrects: Option<&str>| DetailRecord {
            cpr: Cpr::parse(debtor.cpr).expect("example CPR"),
            agreement: AgreementRef::parse(debtor.agreement).expect("example agreement"),
            kind: match corrects {
                Some(_) => EntryKind::Correction,
                None => EntryKind::Withholding,
            },
            payout_date: date(2026, 2, 1),
            period_from: date(2026, 1, 1),
            period_to: date(2026, 1, 31),
            amount: Amount::from_ore(amount).expect("example amount"),
            reference: ky(reference),
            corrects: corrects.map(ky),
        };
    let first = Debtor {
        cpr: "0101901234",
        agreement: "BA000123456",
    };
    let second = Debtor {
        cpr: "2512884321",
        agreement: "BA000777001",
    };
    let records = vec![
        entry(&first, 162_300, "KY-2026-000987", None),
        entry(&second, 95_050, "KY-Århus-000988", None),
        entry(&first, -20_000, "KY-2026-001234", Some("KY-2026-000987")),
    ];
    (header, records)
}
