//! The record layout table: every field of the `000`, `010` and `999` records.
//!
//! This is the only place in the code that knows a byte position. The writer, the
//! reader and `docs/sf2520-format.md` are all driven by it, so that the official
//! SF2520 v3.1 record description can replace our layout (docs/sf2520-format.md) here alone.

/// Bytes in every record, without the CR LF that follows it.
pub const RECORD_LEN: usize = 128;

/// The two bytes that end every record, the last one included.
pub const RECORD_END: [u8; 2] = *b"\r\n";

/// A record as it stands in the file: its bytes and its CR LF.
pub const RECORD_WITH_END_LEN: usize = RECORD_LEN + RECORD_END.len();

/// What a field holds, in the words of the SF2520 catalogue's record description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ASCII digits, right-aligned, zero-padded.
    N,
    /// Printable ISO-8859-1, left-aligned, space-padded.
    X,
}

/// Whether a field carries data or a value fixed by the layout itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// A value the writer supplies and the reader interprets.
    Data,
    /// Exactly these bytes, e.g. the record type `000` or the integration `SF2520`.
    Constant(&'static str),
    /// Spaces only (filler).
    Blank,
}

/// The meaning of a field, independent of where a layout puts it. The writer asks
/// for values and the reader hands them out by this identity, never by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldId {
    RecordType,
    Integration,
    Version,
    Kommune,
    Sequence,
    CreatedDate,
    CreatedTime,
    /// Positions 37–50: the moment the file's contents are the log as of (the
    /// catalogue's "cut-off time"; see decision 0009).
    AsOf,
    TestMarker,
    Filler,
    RecordNumber,
    Cpr,
    Agreement,
    TransactionCode,
    PayoutDate,
    PeriodFrom,
    PeriodTo,
    Sign,
    Amount,
    Reference,
    Corrected,
    RecordCount,
    PlusSum,
    MinusSum,
    NetSign,
    NetSum,
}

/// One field of a record layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub id: FieldId,
    /// The field's name in error messages and in the format document.
    pub name: &'static str,
    /// 1-based byte position of the field's first byte, as the tables print it.
    pub start: usize,
    /// Width in bytes.
    pub len: usize,
    pub kind: Kind,
    pub content: Content,
}

impl Field {
    /// The field's bytes within a record: `start - 1 .. start - 1 + len`.
    pub const fn range(&self) -> std::ops::Range<usize> {
        (self.start - 1)..(self.start - 1 + self.len)
    }

    /// The 1-based position of the field's last byte.
    pub const fn end(&self) -> usize {
        self.start + self.len - 1
    }
}

/// One record type: its code and its fields in byte order.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordLayout {
    /// The record type code, e.g. `"010"`; also the constant of its first field.
    pub record_type: &'static str,
    /// What the record is, for the format document.
    pub title: &'static str,
    pub fields: &'static [Field],
}

impl RecordLayout {
    /// The field with this identity, if the layout has one.
    pub fn field(&self, id: FieldId) -> Option<&'static Field> {
        self.fields.iter().find(|field| field.id == id)
    }
}

const fn field(
    id: FieldId,
    name: &'static str,
    start: usize,
    len: usize,
    kind: Kind,
    content: Content,
) -> Field {
    Field {
        id,
        name,
        start,
        len,
        kind,
        content,
    }
}

const fn data(id: FieldId, name: &'static str, start: usize, len: usize, kind: Kind) -> Field {
    field(id, name, start, len, kind, Content::Data)
}

const fn constant(
    id: FieldId,
    name: &'static str,
    start: usize,
    len: usize,
    kind: Kind,
    value: &'static str,
) -> Field {
    field(id, name, start, len, kind, Content::Constant(value))
}

const fn filler(start: usize, len: usize) -> Field {
    field(
        FieldId::Filler,
        "filler",
        start,
        len,
        Kind::X,
        Content::Blank,
    )
}

use FieldId as F;
use Kind::{N, X};

/// Start record `000`: who sends which file when.
pub const START: RecordLayout = RecordLayout {
    record_type: "000",
    title: "Start record",
    fields: &[
        constant(F::RecordType, "record type", 1, 3, N, "000"),
        constant(F::Integration, "integration", 4, 6, X, "SF2520"),
        constant(F::Version, "layout version", 10, 3, N, "031"),
        data(F::Kommune, "kommunekode", 13, 4, N),
        data(F::Sequence, "løbenummer", 17, 6, N),
        data(F::CreatedDate, "creation date ÅÅÅÅMMDD (UTC)", 23, 8, N),
        data(F::CreatedTime, "creation time TTMMSS (UTC)", 31, 6, N),
        data(F::AsOf, "as-of time ÅÅÅÅMMDDTTMMSS (UTC)", 37, 14, N),
        data(F::TestMarker, "test marker", 51, 1, X),
        filler(52, 77),
    ],
};

/// Detail record `010`: one entry (withholding or correction).
pub const DETAIL: RecordLayout = RecordLayout {
    record_type: "010",
    title: "Detail record",
    fields: &[
        constant(F::RecordType, "record type", 1, 3, N, "010"),
        data(F::RecordNumber, "record number", 4, 7, N),
        data(F::Kommune, "kommunekode", 11, 4, N),
        data(F::Cpr, "CPR", 15, 10, N),
        data(F::Agreement, "agreement reference", 25, 15, X),
        data(F::TransactionCode, "transaction code", 40, 2, N),
        data(F::PayoutDate, "payout date ÅÅÅÅMMDD", 42, 8, N),
        data(F::PeriodFrom, "period from ÅÅÅÅMMDD", 50, 8, N),
        data(F::PeriodTo, "period to ÅÅÅÅMMDD", 58, 8, N),
        data(F::Sign, "sign", 66, 1, X),
        data(F::Amount, "amount in øre", 67, 13, N),
        data(F::Reference, "KY reference", 80, 20, X),
        data(F::Corrected, "corrected KY reference", 100, 20, X),
        filler(120, 9),
    ],
};

/// End record `999`: control count and sums over the detail records.
pub const END: RecordLayout = RecordLayout {
    record_type: "999",
    title: "End record",
    fields: &[
        constant(F::RecordType, "record type", 1, 3, N, "999"),
        data(F::Kommune, "kommunekode", 4, 4, N),
        data(F::Sequence, "løbenummer", 8, 6, N),
        data(F::RecordCount, "number of 010 records", 14, 7, N),
        data(F::PlusSum, "sum of + amounts in øre", 21, 15, N),
        data(F::MinusSum, "sum of - amounts in øre", 36, 15, N),
        data(F::NetSign, "net sign", 51, 1, X),
        data(F::NetSum, "net sum in øre", 52, 15, N),
        filler(67, 62),
    ],
};

/// All record layouts, in the order they appear in a file.
pub const RECORDS: [&RecordLayout; 3] = [&START, &DETAIL, &END];

/// True when the fields tile bytes 1..=RECORD_LEN exactly, in order, with no gap or
/// overlap, and every constant has its field's width and kind.
const fn tiles_exactly(layout: &RecordLayout) -> bool {
    let fields = layout.fields;
    let mut next_start = 1;
    let mut index = 0;
    while index < fields.len() {
        let field = &fields[index];
        if field.start != next_start || field.len == 0 {
            return false;
        }
        if let Content::Constant(value) = field.content {
            if !constant_fits(value, field.len, field.kind) {
                return false;
            }
        }
        next_start += field.len;
        index += 1;
    }
    next_start == RECORD_LEN + 1
}

const fn constant_fits(value: &str, len: usize, kind: Kind) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != len {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        let ok = match kind {
            Kind::N => bytes[index].is_ascii_digit(),
            Kind::X => bytes[index] >= 0x20 && bytes[index] <= 0x7E,
        };
        if !ok {
            return false;
        }
        index += 1;
    }
    true
}

/// True when the first field is the record type, holding the layout's code, so a
/// reader can tell the record types apart by the same bytes in every layout.
const fn starts_with_record_type(layout: &RecordLayout) -> bool {
    let Some(first) = layout.fields.first() else {
        return false;
    };
    let Content::Constant(code) = first.content else {
        return false;
    };
    matches!(first.id, FieldId::RecordType)
        && first.start == 1
        && first.len == 3
        && bytes_equal(code.as_bytes(), layout.record_type.as_bytes())
}

const fn bytes_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let mut index = 0;
    while index < left.len() {
        if left[index] != right[index] {
            return false;
        }
        index += 1;
    }
    true
}

const _: () = assert!(tiles_exactly(&START), "000 fields must tile 128 bytes");
const _: () = assert!(tiles_exactly(&DETAIL), "010 fields must tile 128 bytes");
const _: () = assert!(tiles_exactly(&END), "999 fields must tile 128 bytes");
const _: () = assert!(starts_with_record_type(&START));
const _: () = assert!(starts_with_record_type(&DETAIL));
const _: () = assert!(starts_with_record_type(&END));

/// The position of the record type, shared by all layouts (asserted above), so that
/// a reader can classify a record before it knows its layout.
pub const RECORD_TYPE_LEN: usize = 3;

/// The layout whose record type code opens `record`, if any.
pub fn classify(record: &[u8]) -> Option<&'static RecordLayout> {
    let code = record.get(..RECORD_TYPE_LEN)?;
    RECORDS
        .into_iter()
        .find(|layout| layout.record_type.as_bytes() == code)
}

/// The largest value an N field of `len` digits holds, if it fits a `u64`.
pub fn max_for_digits(len: usize) -> Option<u64> {
    let digits = u32::try_from(len).ok()?;
    10u64.checked_pow(digits).map(|limit| limit - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_match_design_section_5() {
        let spot = |layout: &RecordLayout, id: FieldId| {
            let field = layout.field(id).unwrap();
            (field.start, field.len)
        };
        assert_eq!(spot(&START, FieldId::AsOf), (37, 14));
        assert_eq!(spot(&DETAIL, FieldId::Amount), (67, 13));
        assert_eq!(spot(&DETAIL, FieldId::Corrected), (100, 20));
        assert_eq!(spot(&END, FieldId::NetSum), (52, 15));
    }

    #[test]
    fn classifies_by_record_type() {
        assert_eq!(classify(b"010xyz"), Some(&DETAIL));
        assert_eq!(classify(b"999"), Some(&END));
        assert_eq!(classify(b"01"), None);
        assert_eq!(classify(b"020"), None);
    }

    #[test]
    fn field_ids_are_unique_within_a_record_except_filler() {
        for layout in RECORDS {
            for (index, field) in layout.fields.iter().enumerate() {
                let later = &layout.fields[index + 1..];
                assert!(
                    field.id == FieldId::Filler || later.iter().all(|other| other.id != field.id),
                    "{} repeats {:?}",
                    layout.record_type,
                    field.id
                );
            }
        }
    }
}
