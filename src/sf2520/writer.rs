//! The SF2520 file writer: typed header and entries in, ISO-8859-1 records with CR LF out.
//!
//! It streams: each record goes to the output as soon as it is rendered, and only the
//! running count and sums are kept, so memory does not grow with the number of records.

use std::io::Write;

use chrono::{Datelike, NaiveDate, NaiveDateTime};

use super::error::WriteError;
use super::layout::{max_for_digits, FieldId, RecordLayout, DETAIL, END, START};
use super::render::{render_record, FieldValue};
use crate::domain::{AgreementRef, Amount, Cpr, EntryKind, Kommune, KyRef};

/// What the start record says about the file.
///
/// The format has two times: when the file was made, and the moment its contents
/// are the log as of (the catalogue calls the second "cut-off time"; in this crate
/// a cut-off is a log position, see decision 0009). Files our exporter makes carry
/// one time in both ([`FileHeader::exported`]); the reader accepts any pair, as
/// the format does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub kommune: Kommune,
    /// Løbenummer: gapless per kommune from 1, at most 6 digits.
    pub sequence: u32,
    /// Creation time, UTC, whole seconds (a fraction is an error, never dropped).
    pub created_at: NaiveDateTime,
    /// The file holds the entries recorded up to this moment (positions 37–50),
    /// UTC, whole seconds.
    pub as_of: NaiveDateTime,
    /// `T` in the start record: the receiver must not book the file.
    pub test_marker: bool,
}

impl FileHeader {
    /// The header of a file our exporter makes: its contents are the log as of its
    /// creation time, so both times are `created_at` (decision 0003: a batch fixes
    /// its cut-off position and its creation time together, so that the log as of
    /// that time is the log up to that position).
    pub fn exported(
        kommune: Kommune,
        sequence: u32,
        created_at: NaiveDateTime,
        test_marker: bool,
    ) -> FileHeader {
        FileHeader {
            kommune,
            sequence,
            created_at,
            as_of: created_at,
            test_marker,
        }
    }
}

/// One entry as a detail record. The record number and the kommune come from the
/// writer, so that they cannot disagree with the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetailRecord {
    pub cpr: Cpr,
    pub agreement: AgreementRef,
    /// Written as the transaction code (`01` withholding, `02` correction).
    pub kind: EntryKind,
    /// For a correction: the payout date of the withholding it corrects.
    pub payout_date: NaiveDate,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    /// Signed; the record carries the sign and the absolute øre separately.
    pub amount: Amount,
    pub reference: KyRef,
    /// The corrected reference: `Some` exactly for a correction.
    pub corrects: Option<KyRef>,
}

/// What the end record says: count and sums over the detail records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub record_count: u64,
    /// Sum of the positive amounts, in øre.
    pub plus_ore: i64,
    /// Sum of the negative amounts, absolute, in øre.
    pub minus_ore: i64,
    /// `plus_ore - minus_ore`.
    pub net_ore: i64,
}

/// Writes one SF2520 file record by record: the start record on `new`, a detail
/// record per `write_detail`, the end record on `finish`.
///
/// Each record goes to `out` in one `write_all` of 130 bytes: give it a `BufWriter`
/// when `out` is a file or a socket.
///
/// After an `Io` error the output holds a partial file and must be discarded. After
/// any other error nothing of the refused record was written and the writer can go on.
pub struct FileWriter<W: Write> {
    out: W,
    kommune: Kommune,
    sequence: u32,
    summary: FileSummary,
}

// By hand, so that the output need not be `Debug`.
impl<W: Write> std::fmt::Debug for FileWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("kommune", &self.kommune)
            .field("sequence", &self.sequence)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl<W: Write> FileWriter<W> {
    /// Writes the start record.
    pub fn new(mut out: W, header: FileHeader) -> Result<Self, WriteError> {
        check_sequence(&START, header.sequence)?;
        let record = render_record(&START, |id| start_value(id, &header))?;
        out.write_all(&record)?;
        Ok(FileWriter {
            out,
            kommune: header.kommune,
            sequence: header.sequence,
            summary: FileSummary::default(),
        })
    }

    /// Writes one detail record, numbered after the ones before it.
    pub fn write_detail(&mut self, record: &DetailRecord) -> Result<(), WriteError> {
        check_transaction(record)?;
        let summary = self.summary_with(record.amount)?;
        let record_number = summary.record_count;
        let kommune = self.kommune.number();
        let bytes = match super::fast::detail_bytes(record, record_number, kommune) {
            Some(bytes) => bytes,
            None => render_record(&DETAIL, |id| {
                detail_value(id, record, record_number, u64::from(kommune))
            })?,
        };
        self.out.write_all(&bytes)?;
        self.summary = summary;
        Ok(())
    }

    /// Writes the end record and hands back the output and the control totals.
    pub fn finish(mut self) -> Result<(W, FileSummary), WriteError> {
        let summary = self.summary;
        debug_assert_eq!(summary.net_ore, summary.plus_ore - summary.minus_ore);
        let kommune = u64::from(self.kommune.number());
        let sequence = u64::from(self.sequence);
        let bytes = render_record(&END, |id| end_value(id, &summary, kommune, sequence))?;
        self.out.write_all(&bytes)?;
        self.out.flush()?;
        Ok((self.out, summary))
    }

    /// The totals after adding `amount`, refused as soon as they would no longer fit
    /// the end record, so that a file is never half written before it fails.
    fn summary_with(&self, amount: Amount) -> Result<FileSummary, WriteError> {
        let mut next = self.summary;
        next.record_count += 1;
        let ore = amount.ore();
        if ore >= 0 {
            next.plus_ore = checked_total(FieldId::PlusSum, self.summary.plus_ore, ore)?;
        } else {
            // An `Amount` is bounded by AMOUNT_ORE_MAX, so this cannot fail; if the
            // bound ever widens to i64::MIN the record is refused, not saturated.
            let minus = ore.checked_neg().ok_or(WriteError::OutOfRange {
                record: DETAIL.record_type,
                field: "amount",
                value: ore.to_string(),
                why: "its absolute value does not fit 64 bits",
            })?;
            next.minus_ore = checked_total(FieldId::MinusSum, self.summary.minus_ore, minus)?;
        }
        next.net_ore = next.plus_ore - next.minus_ore;
        Ok(next)
    }
}

fn checked_total(id: FieldId, sum: i64, add: i64) -> Result<i64, WriteError> {
    let field = END.field(id).ok_or(WriteError::MissingValue {
        record: END.record_type,
        field: "control sum",
    })?;
    let max = max_for_digits(field.len).and_then(|max| i64::try_from(max).ok());
    let total = sum.checked_add(add);
    match (total, max) {
        (Some(total), Some(max)) if total <= max => Ok(total),
        (Some(total), None) => Ok(total),
        _ => Err(WriteError::DoesNotFit {
            record: END.record_type,
            field: field.name,
            value: (i128::from(sum) + i128::from(add)).to_string(),
            width: field.len,
        }),
    }
}

fn check_sequence(layout: &RecordLayout, sequence: u32) -> Result<(), WriteError> {
    if sequence == 0 {
        return Err(WriteError::OutOfRange {
            record: layout.record_type,
            field: layout
                .field(FieldId::Sequence)
                .map_or("løbenummer", |f| f.name),
            value: "0".into(),
            why: "løbenumre start at 1",
        });
    }
    Ok(())
}

/// A correction names what it corrects and a withholding does not; the reader
/// rejects anything else, so the writer refuses to produce it.
fn check_transaction(record: &DetailRecord) -> Result<(), WriteError> {
    let why = match (record.kind, &record.corrects) {
        (EntryKind::Withholding, Some(_)) => "must leave the corrected reference blank",
        (EntryKind::Correction, None) => "must name the reference it corrects",
        _ => return Ok(()),
    };
    Err(WriteError::CorrectedReference {
        record: DETAIL.record_type,
        field: DETAIL
            .field(FieldId::Corrected)
            .map_or("corrected", |f| f.name),
        kind: record.kind,
        why,
    })
}

fn start_value(id: FieldId, header: &FileHeader) -> FieldValue<'static> {
    match id {
        FieldId::Kommune => FieldValue::Number(u64::from(header.kommune.number())),
        FieldId::Sequence => FieldValue::Number(u64::from(header.sequence)),
        FieldId::CreatedDate => FieldValue::Date(header.created_at.date()),
        FieldId::CreatedTime => FieldValue::Time(header.created_at.time()),
        FieldId::AsOf => FieldValue::DateTime(header.as_of),
        FieldId::TestMarker => FieldValue::Text(if header.test_marker { "T" } else { "" }),
        _ => FieldValue::Table,
    }
}

pub(super) fn detail_value(
    id: FieldId,
    record: &DetailRecord,
    record_number: u64,
    kommune: u64,
) -> FieldValue<'_> {
    match id {
        FieldId::RecordNumber => FieldValue::Number(record_number),
        FieldId::Kommune => FieldValue::Number(kommune),
        FieldId::Cpr => FieldValue::Digits(record.cpr.digits()),
        FieldId::Agreement => FieldValue::Text(record.agreement.as_str()),
        FieldId::TransactionCode => FieldValue::Number(u64::from(record.kind.transaction_code())),
        FieldId::PayoutDate => FieldValue::Date(record.payout_date),
        FieldId::PeriodFrom => FieldValue::Date(record.period_from),
        FieldId::PeriodTo => FieldValue::Date(record.period_to),
        FieldId::Sign => FieldValue::Text(sign(record.amount.ore())),
        FieldId::Amount => FieldValue::Number(record.amount.ore().unsigned_abs()),
        FieldId::Reference => FieldValue::Text(record.reference.as_str()),
        FieldId::Corrected => FieldValue::Text(record.corrects.as_ref().map_or("", KyRef::as_str)),
        _ => FieldValue::Table,
    }
}

fn end_value(
    id: FieldId,
    summary: &FileSummary,
    kommune: u64,
    sequence: u64,
) -> FieldValue<'static> {
    match id {
        FieldId::Kommune => FieldValue::Number(kommune),
        FieldId::Sequence => FieldValue::Number(sequence),
        FieldId::RecordCount => FieldValue::Number(summary.record_count),
        FieldId::PlusSum => FieldValue::Number(summary.plus_ore.unsigned_abs()),
        FieldId::MinusSum => FieldValue::Number(summary.minus_ore.unsigned_abs()),
        FieldId::NetSign => FieldValue::Text(sign(summary.net_ore)),
        FieldId::NetSum => FieldValue::Number(summary.net_ore.unsigned_abs()),
        _ => FieldValue::Table,
    }
}

/// `+` for zero and above: a file never carries a negative zero.
pub(crate) fn sign(ore: i64) -> &'static str {
    if ore < 0 {
        "-"
    } else {
        "+"
    }
}

/// The largest løbenummer a file name can carry: its six digits are fixed by the
/// naming convention, not by the record layout.
const FILE_NAME_SEQUENCE_MAX: u32 = 999_999;

/// `SF2520_<kommunekode>_<ÅÅÅÅMMDD>_<løbenummer, 6 digits>.txt`.
pub fn file_name(
    kommune: Kommune,
    created: NaiveDate,
    sequence: u32,
) -> Result<String, WriteError> {
    check_sequence(&START, sequence)?;
    if sequence > FILE_NAME_SEQUENCE_MAX {
        return Err(WriteError::DoesNotFit {
            record: "file name",
            field: "løbenummer",
            value: sequence.to_string(),
            width: 6,
        });
    }
    if !(0..=9999).contains(&created.year()) {
        return Err(WriteError::DoesNotFit {
            record: "file name",
            field: "creation date",
            value: created.to_string(),
            width: 8,
        });
    }
    Ok(format!(
        "SF2520_{kommune}_{}_{sequence:06}.txt",
        created.format("%Y%m%d")
    ))
}

/// Renders a whole file into memory: convenient for tests, examples and small files.
pub fn render_file(
    header: FileHeader,
    records: impl IntoIterator<Item = DetailRecord>,
) -> Result<(Vec<u8>, FileSummary), WriteError> {
    let mut writer = FileWriter::new(Vec::new(), header)?;
    for record in records {
        writer.write_detail(&record)?;
    }
    writer.finish()
}
