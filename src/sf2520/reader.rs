//! The strict SF2520 reader: checks a file as the receiver would and parses it.
//!
//! It reports every defect it finds, up to [`ReadErrors::CAP`], each with line,
//! column, field and what was expected. A record whose length is wrong is reported
//! once and not read field by field (its positions mean nothing); a record with a bad
//! field is still checked in all its other fields. The control sums of the end record
//! are checked only when every detail record could be read, so that one bad amount
//! does not also show up as three wrong sums. It never panics, whatever the input.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use super::error::{ErrorSink, ReadErrorKind, ReadErrors};
use super::layout::{classify, Field, FieldId, RecordLayout, DETAIL, END, START};
use super::lex::{check_structure, lex, Line, Lines, RawRecord};
use super::writer::{DetailRecord, FileHeader, FileSummary};
use crate::domain::{AgreementRef, Amount, Cpr, DomainError, EntryKind, Kommune, KyRef};

/// A file that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFile {
    pub header: FileHeader,
    pub details: Vec<ParsedDetail>,
    /// The end record's count and sums (equal to those of the details).
    pub end: FileSummary,
}

/// One detail record and where it stood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDetail {
    /// 1-based line in the file.
    pub line: usize,
    /// The record number field: 1 for the first detail record.
    pub record_number: u64,
    pub record: DetailRecord,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A file that passed every check, read without keeping its detail records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFile {
    pub header: FileHeader,
    /// How many detail records it holds.
    pub detail_records: u64,
    /// The end record's count and sums (equal to those of the details).
    pub end: FileSummary,
}

/// Reads and checks a whole SF2520 file.
pub fn read_file(bytes: &[u8]) -> Result<ParsedFile, ReadErrors> {
    read(bytes, true).map(|(parsed, _)| parsed)
}

/// Checks a whole SF2520 file exactly as [`read_file`] does, in memory that does
/// not grow with the file: what the exporter reads each file back with.
pub fn check_file(bytes: &[u8]) -> Result<CheckedFile, ReadErrors> {
    read(bytes, false).map(|(parsed, detail_records)| CheckedFile {
        header: parsed.header,
        detail_records,
        end: parsed.end,
    })
}

/// The parsed file (its details only when `keep_details`) and its detail count.
fn read(bytes: &[u8], keep_details: bool) -> Result<(ParsedFile, u64), ReadErrors> {
    let mut reader = Reader {
        keep_details,
        ..Reader::default()
    };
    let body = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => {
            reader
                .sink
                .push(1, 1, "record", ReadErrorKind::ByteOrderMark);
            rest
        }
        None => bytes,
    };
    for line in Lines::new(body) {
        if reader.sink.is_full() {
            break;
        }
        if reader.state == State::AfterEnd {
            let kind = ReadErrorKind::DataAfterEndRecord;
            reader.sink.push(line.number, 1, "record type", kind);
            break;
        }
        reader.line(&line);
    }
    reader.finish()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    BeforeStart,
    Body,
    AfterEnd,
}

#[derive(Default)]
struct Reader {
    sink: ErrorSink,
    state: State,
    last_line: usize,
    header: Option<FileHeader>,
    /// The start record's kommune and løbenummer, when readable, even if another
    /// field of the start record is broken.
    start_kommune: Option<Kommune>,
    start_sequence: Option<u32>,
    /// Whether `details` keeps the records ([`check_file`] does not).
    keep_details: bool,
    details: Vec<ParsedDetail>,
    /// Detail records seen, readable or not: what the record numbers and the
    /// end record's count are checked against.
    detail_lines: u64,
    /// True once a detail record could not be read, so its amount is unknown.
    some_detail_unread: bool,
    plus_ore: i128,
    minus_ore: i128,
    end: Option<FileSummary>,
}

impl Reader {
    fn line(&mut self, line: &Line<'_>) {
        self.last_line = line.number;
        let readable = check_structure(line, &mut self.sink);
        let Some(layout) = self.ordered_layout(line, readable) else {
            return;
        };
        let raw = readable.then(|| lex(line.number, layout, line.bytes, &mut self.sink));
        // Layouts are told apart by their record type: consts have no stable address.
        match layout.record_type {
            code if code == START.record_type => {
                self.header = raw.and_then(|raw| self.start(&raw));
            }
            code if code == DETAIL.record_type => {
                self.detail_lines += 1;
                let detail = raw.and_then(|raw| self.detail(&raw));
                self.record_detail(detail);
            }
            code if code == END.record_type => {
                self.state = State::AfterEnd;
                self.end = raw.and_then(|raw| self.end(&raw));
            }
            _ => {}
        }
    }

    /// The record's layout if its type is known and allowed here; reports the record
    /// otherwise. Moves past the start whatever the first line is, so that a missing
    /// start record is reported once.
    fn ordered_layout(&mut self, line: &Line<'_>, readable: bool) -> Option<&'static RecordLayout> {
        let Some(layout) = classify(line.bytes) else {
            self.unknown_record(line, readable);
            return None;
        };
        let is_start = layout.record_type == START.record_type;
        match self.state {
            State::BeforeStart if !is_start => {
                let found = layout.record_type.to_string();
                let kind = ReadErrorKind::MissingStartRecord { found };
                self.sink.push(line.number, 1, "record type", kind);
            }
            State::Body if is_start => {
                let kind = ReadErrorKind::UnexpectedRecord {
                    found: layout.record_type.to_string(),
                    expected: "a 010 detail or 999 end record",
                };
                self.sink.push(line.number, 1, "record type", kind);
                return None;
            }
            _ => {}
        }
        self.state = State::Body;
        Some(layout)
    }

    /// A record of no known type. A 128-byte one between start and end is most likely
    /// a detail record with a broken type, so it counts as an unreadable detail: one
    /// bad byte then does not also upset the record numbers and control totals after
    /// it. A line of the wrong length was already reported and is not counted (it may
    /// be the tail of a record split by a stray CR LF).
    fn unknown_record(&mut self, line: &Line<'_>, readable: bool) {
        if readable {
            let found = super::lex::decode(line.bytes.get(..3).unwrap_or(line.bytes));
            let kind = ReadErrorKind::UnknownRecordType { found };
            self.sink.push(line.number, 1, "record type", kind);
            if self.state == State::Body {
                self.detail_lines += 1;
                self.some_detail_unread = true;
            }
        }
        self.state = State::Body;
    }

    fn record_detail(&mut self, detail: Option<ParsedDetail>) {
        match detail {
            Some(detail) => {
                let ore = i128::from(detail.record.amount.ore());
                if ore >= 0 {
                    self.plus_ore += ore;
                } else {
                    self.minus_ore -= ore;
                }
                if self.keep_details {
                    self.details.push(detail);
                }
            }
            None => self.some_detail_unread = true,
        }
    }

    fn start(&mut self, raw: &RawRecord<'_>) -> Option<FileHeader> {
        let mut fields = Fields::new(raw, &mut self.sink);
        let kommune = fields.kommune(FieldId::Kommune);
        let sequence = fields.sequence();
        let created_date = fields.date(FieldId::CreatedDate);
        let created_time = fields.time(FieldId::CreatedTime);
        let as_of = fields.date_time(FieldId::AsOf);
        let test_marker = fields.test_marker();
        self.start_kommune = kommune;
        self.start_sequence = sequence;
        Some(FileHeader {
            kommune: kommune?,
            sequence: sequence?,
            created_at: NaiveDateTime::new(created_date?, created_time?),
            as_of: as_of?,
            test_marker: test_marker?,
        })
    }

    fn detail(&mut self, raw: &RawRecord<'_>) -> Option<ParsedDetail> {
        let expected_number = self.detail_lines;
        let start_kommune = self.start_kommune;
        let mut fields = Fields::new(raw, &mut self.sink);
        let record_number = fields.record_number(expected_number);
        let kommune = fields.kommune(FieldId::Kommune);
        fields.same_kommune(kommune, start_kommune);
        let cpr = fields.cpr();
        let agreement = fields.agreement();
        let kind = fields.kind();
        let payout_date = fields.date(FieldId::PayoutDate);
        let period_from = fields.date(FieldId::PeriodFrom);
        let period_to = fields.date(FieldId::PeriodTo);
        let amount = fields.amount();
        let reference = fields.ky_ref(FieldId::Reference);
        let corrects = fields.corrected(kind);
        kommune?;
        Some(ParsedDetail {
            line: raw.line,
            record_number: record_number?,
            record: DetailRecord {
                cpr: cpr?,
                agreement: agreement?,
                kind: kind?,
                payout_date: payout_date?,
                period_from: period_from?,
                period_to: period_to?,
                amount: amount?,
                reference: reference?,
                corrects: corrects?,
            },
        })
    }

    fn end(&mut self, raw: &RawRecord<'_>) -> Option<FileSummary> {
        let computed = (!self.some_detail_unread).then_some((self.plus_ore, self.minus_ore));
        let (start_kommune, start_sequence) = (self.start_kommune, self.start_sequence);
        let mut fields = Fields::new(raw, &mut self.sink);
        let kommune = fields.kommune(FieldId::Kommune);
        fields.same_kommune(kommune, start_kommune);
        let sequence = fields.number(FieldId::Sequence);
        fields.same_sequence(sequence, start_sequence);
        let record_count = fields.number(FieldId::RecordCount);
        fields.control_total(FieldId::RecordCount, record_count, Some(self.detail_lines));
        let plus = fields.number(FieldId::PlusSum);
        let minus = fields.number(FieldId::MinusSum);
        let net = fields.net();
        if let Some((plus_ore, minus_ore)) = computed {
            fields.control_totals(plus, minus, net, plus_ore, minus_ore);
        }
        let plus_ore = i64::try_from(plus?).ok()?;
        let minus_ore = i64::try_from(minus?).ok()?;
        Some(FileSummary {
            record_count: record_count?,
            plus_ore,
            minus_ore,
            net_ore: net?,
        })
    }

    fn finish(mut self) -> Result<(ParsedFile, u64), ReadErrors> {
        if !self.sink.is_full() {
            let next_line = self.last_line + 1;
            match self.state {
                State::BeforeStart => self.sink.push(1, 1, "record", ReadErrorKind::EmptyFile),
                State::Body => {
                    let kind = ReadErrorKind::MissingEndRecord;
                    self.sink.push(next_line, 1, "record type", kind);
                }
                State::AfterEnd => {}
            }
        }
        match (self.sink.is_empty(), self.header, self.end) {
            (true, Some(header), Some(end)) if !self.some_detail_unread => Ok((
                ParsedFile {
                    header,
                    details: self.details,
                    end,
                },
                self.detail_lines,
            )),
            // Every path that leaves a record unread reports why; this arm only
            // keeps a bug in that promise from passing a file.
            (true, header, _) => {
                let kind = match header {
                    None => ReadErrorKind::MissingStartRecord {
                        found: String::new(),
                    },
                    Some(_) => ReadErrorKind::MissingEndRecord,
                };
                self.sink.push(1, 1, "record", kind);
                Err(self.sink.into_errors())
            }
            (false, _, _) => Err(self.sink.into_errors()),
        }
    }
}

/// Typed access to one record's fields; every failure is reported where it is.
struct Fields<'a> {
    raw: &'a RawRecord<'a>,
    sink: &'a mut ErrorSink,
}

impl<'a> Fields<'a> {
    fn new(raw: &'a RawRecord<'a>, sink: &'a mut ErrorSink) -> Self {
        Fields { raw, sink }
    }

    fn report(&mut self, field: &Field, kind: ReadErrorKind) {
        self.sink.push(self.raw.line, field.start, field.name, kind);
    }

    /// The text of a field that passed the lexical checks, with its layout entry.
    fn text(&self, id: FieldId) -> Option<(&'static Field, &'a str)> {
        self.raw.get(id)
    }

    fn number(&mut self, id: FieldId) -> Option<u64> {
        let (field, digits) = self.text(id)?;
        let number = digits.parse::<u64>().ok();
        if number.is_none() {
            let kind = ReadErrorKind::OutOfRange {
                found: digits.to_string(),
                expected: "a number below 2^64",
            };
            self.report(field, kind);
        }
        number
    }

    fn kommune(&mut self, id: FieldId) -> Option<Kommune> {
        let (field, digits) = self.text(id)?;
        let kommune = Kommune::parse(digits).ok();
        if kommune.is_none() {
            let found = digits.to_string();
            self.report(field, ReadErrorKind::UnknownKommune { found });
        }
        kommune
    }

    fn same_kommune(&mut self, found: Option<Kommune>, expected: Option<Kommune>) {
        let (Some(found), Some(expected)) = (found, expected) else {
            return;
        };
        if found != expected {
            if let Some(field) = self.raw.field(FieldId::Kommune) {
                let kind = ReadErrorKind::KommuneMismatch {
                    found: found.code(),
                    expected: expected.code(),
                };
                self.report(field, kind);
            }
        }
    }

    fn sequence(&mut self) -> Option<u32> {
        let (field, digits) = self.text(FieldId::Sequence)?;
        let sequence = digits.parse::<u32>().ok().filter(|&number| number > 0);
        if sequence.is_none() {
            let kind = ReadErrorKind::OutOfRange {
                found: digits.to_string(),
                expected: "a løbenummer from 1 (løbenumre start at 1)",
            };
            self.report(field, kind);
        }
        sequence
    }

    fn same_sequence(&mut self, found: Option<u64>, expected: Option<u32>) {
        let (Some(found), Some(expected)) = (found, expected) else {
            return;
        };
        if found != u64::from(expected) {
            if let Some(field) = self.raw.field(FieldId::Sequence) {
                let kind = ReadErrorKind::SequenceMismatch {
                    found: found.to_string(),
                    expected: expected.to_string(),
                };
                self.report(field, kind);
            }
        }
    }

    fn record_number(&mut self, expected: u64) -> Option<u64> {
        let found = self.number(FieldId::RecordNumber)?;
        if found != expected {
            let field = self.raw.field(FieldId::RecordNumber)?;
            self.report(field, ReadErrorKind::RecordNumber { found, expected });
        }
        Some(found)
    }

    fn date(&mut self, id: FieldId) -> Option<NaiveDate> {
        let (field, digits) = self.text(id)?;
        let date = parse_date(digits);
        if date.is_none() {
            let found = digits.to_string();
            self.report(field, invalid_date(found, "date ÅÅÅÅMMDD"));
        }
        date
    }

    fn time(&mut self, id: FieldId) -> Option<NaiveTime> {
        let (field, digits) = self.text(id)?;
        let time = parse_time(digits);
        if time.is_none() {
            let found = digits.to_string();
            self.report(field, invalid_date(found, "time TTMMSS"));
        }
        time
    }

    fn date_time(&mut self, id: FieldId) -> Option<NaiveDateTime> {
        let (field, digits) = self.text(id)?;
        let date = digits.get(..8).and_then(parse_date);
        let time = digits.get(8..).and_then(parse_time);
        let at = date
            .zip(time)
            .map(|(date, time)| NaiveDateTime::new(date, time));
        if at.is_none() {
            let found = digits.to_string();
            self.report(field, invalid_date(found, "time ÅÅÅÅMMDDTTMMSS"));
        }
        at
    }

    fn test_marker(&mut self) -> Option<bool> {
        let (field, text) = self.text(FieldId::TestMarker)?;
        match unpadded(text) {
            "T" => Some(true),
            "" => Some(false),
            _ => {
                let found = text.to_string();
                self.report(field, ReadErrorKind::TestMarker { found });
                None
            }
        }
    }

    fn cpr(&mut self) -> Option<Cpr> {
        let (field, digits) = self.text(FieldId::Cpr)?;
        match Cpr::parse(digits) {
            Ok(cpr) => Some(cpr),
            Err(DomainError::InvalidCpr { masked, why }) => {
                self.report(field, ReadErrorKind::InvalidCpr { masked, why });
                None
            }
            Err(_) => {
                let masked = crate::domain::mask_raw(digits);
                let why = "not a CPR number";
                self.report(field, ReadErrorKind::InvalidCpr { masked, why });
                None
            }
        }
    }

    fn agreement(&mut self) -> Option<AgreementRef> {
        let (field, text) = self.text(FieldId::Agreement)?;
        let value = unpadded(text);
        let parsed = AgreementRef::parse(value);
        self.reference(field, value, parsed)
    }

    fn ky_ref(&mut self, id: FieldId) -> Option<KyRef> {
        let (field, text) = self.text(id)?;
        let value = unpadded(text);
        let parsed = KyRef::parse(value);
        self.reference(field, value, parsed)
    }

    fn reference<T>(
        &mut self,
        field: &Field,
        value: &str,
        parsed: Result<T, DomainError>,
    ) -> Option<T> {
        match parsed {
            Ok(reference) => Some(reference),
            Err(error) => {
                let why = match error {
                    DomainError::InvalidReference { why, .. } => why,
                    other => other.to_string(),
                };
                let found = value.to_string();
                self.report(field, ReadErrorKind::InvalidReference { found, why });
                None
            }
        }
    }

    fn kind(&mut self) -> Option<EntryKind> {
        let (field, digits) = self.text(FieldId::TransactionCode)?;
        let code = digits
            .parse::<u8>()
            .ok()
            .and_then(EntryKind::from_transaction_code);
        if code.is_none() {
            let found = digits.to_string();
            self.report(field, ReadErrorKind::TransactionCode { found });
            return None;
        }
        code
    }

    /// The corrected reference: `Some(Some(_))` for a correction, `Some(None)` for a
    /// withholding; a mismatch with the transaction code is reported here.
    fn corrected(&mut self, kind: Option<EntryKind>) -> Option<Option<KyRef>> {
        let (field, text) = self.text(FieldId::Corrected)?;
        let blank = unpadded(text).is_empty();
        match (kind, blank) {
            (Some(EntryKind::Correction), true) => {
                self.report(field, ReadErrorKind::MissingCorrectedReference);
                None
            }
            (Some(EntryKind::Withholding), false) => {
                let found = unpadded(text).to_string();
                let kind = ReadErrorKind::UnexpectedCorrectedReference { found };
                self.report(field, kind);
                None
            }
            (_, true) => Some(None),
            (_, false) => self.ky_ref(FieldId::Corrected).map(Some),
        }
    }

    fn amount(&mut self) -> Option<Amount> {
        let ore = self.number(FieldId::Amount)?;
        let negative = self.sign(FieldId::Sign, ore == 0)?;
        let ore = i64::try_from(ore).ok()?;
        let signed = if negative { -ore } else { ore };
        let amount = Amount::from_ore(signed);
        if amount.is_none() {
            let field = self.raw.field(FieldId::Amount)?;
            let kind = ReadErrorKind::OutOfRange {
                found: ore.to_string(),
                expected: "at most 9999999999999 øre",
            };
            self.report(field, kind);
        }
        amount
    }

    /// The net sum as a signed number of øre.
    fn net(&mut self) -> Option<i64> {
        let net = self.number(FieldId::NetSum)?;
        let negative = self.sign(FieldId::NetSign, net == 0)?;
        let net = i64::try_from(net).ok()?;
        Some(if negative { -net } else { net })
    }

    /// True for `-`. A zero carries `+`, so that every value has one spelling.
    fn sign(&mut self, id: FieldId, zero: bool) -> Option<bool> {
        let (field, text) = self.text(id)?;
        let expected = match (text, zero) {
            ("+", _) => return Some(false),
            ("-", false) => return Some(true),
            ("-", true) => "+ for zero",
            _ => "+ or -",
        };
        let found = text.to_string();
        self.report(field, ReadErrorKind::InvalidSign { found, expected });
        None
    }

    fn control_total<T>(&mut self, id: FieldId, found: Option<T>, computed: Option<T>)
    where
        T: PartialEq + ToString,
    {
        let (Some(found), Some(computed)) = (found, computed) else {
            return;
        };
        if found != computed {
            if let Some(field) = self.raw.field(id) {
                let kind = ReadErrorKind::ControlTotal {
                    found: found.to_string(),
                    computed: computed.to_string(),
                };
                self.report(field, kind);
            }
        }
    }

    fn control_totals(
        &mut self,
        plus: Option<u64>,
        minus: Option<u64>,
        net: Option<i64>,
        plus_ore: i128,
        minus_ore: i128,
    ) {
        self.control_total(FieldId::PlusSum, plus.map(i128::from), Some(plus_ore));
        self.control_total(FieldId::MinusSum, minus.map(i128::from), Some(minus_ore));
        let net_ore = plus_ore - minus_ore;
        let net_sign = net.map(|net| if net < 0 { "-" } else { "+" });
        let computed_sign = if net_ore < 0 { "-" } else { "+" };
        self.control_total(FieldId::NetSign, net_sign, Some(computed_sign));
        let net_abs = net.map(|net| i128::from(net).abs());
        self.control_total(FieldId::NetSum, net_abs, Some(net_ore.abs()));
    }
}

/// An X field's value: its padding removed, leading spaces kept (and refused by the
/// reference types).
fn unpadded(text: &str) -> &str {
    text.trim_end_matches(' ')
}

fn invalid_date(found: String, format: &'static str) -> ReadErrorKind {
    ReadErrorKind::InvalidDate { found, format }
}

fn parse_date(digits: &str) -> Option<NaiveDate> {
    if digits.len() != 8 {
        return None;
    }
    let year = digits.get(..4)?.parse().ok()?;
    let month = digits.get(4..6)?.parse().ok()?;
    let day = digits.get(6..8)?.parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

fn parse_time(digits: &str) -> Option<NaiveTime> {
    if digits.len() != 6 {
        return None;
    }
    let hour = digits.get(..2)?.parse().ok()?;
    let minute = digits.get(2..4)?.parse().ok()?;
    let second = digits.get(4..6)?.parse().ok()?;
    NaiveTime::from_hms_opt(hour, minute, second)
}
