//! The reader's first pass: bytes into lines, lines into checked field texts.
//!
//! A line ends at the first CR or LF, since neither may appear inside a record; so a
//! short or long record cannot shift every record after it. Field texts are checked
//! against their kind (N digits, X printable ISO-8859-1, constants, blank filler) and
//! decoded from ISO-8859-1; what they mean is the next pass's business.

use std::borrow::Cow;

use super::error::{ErrorSink, ReadErrorKind};
use super::layout::{Content, Field, FieldId, Kind, RecordLayout, RECORD_LEN};
use crate::domain::mask_raw;

/// How a line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    CrLf,
    Lf,
    Cr,
    EndOfFile,
}

/// One line: its 1-based number and its bytes without the line ending.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    pub number: usize,
    pub bytes: &'a [u8],
    pub ending: Ending,
}

/// Splits a file into lines; an empty input has none.
pub(crate) struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Lines {
            rest: bytes,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        self.number += 1;
        // The common line first: 128 bytes, none of them a control character
        // (so neither CR nor LF: the smallest byte is at least a space, found
        // without a branch per byte), then CR LF.
        if let Some((record, rest)) = self.rest.split_at_checked(RECORD_LEN) {
            let smallest = record.iter().fold(u8::MAX, |least, &b| least.min(b));
            if smallest >= b' ' && rest.starts_with(b"\r\n") {
                self.rest = rest.get(2..).unwrap_or_default();
                return Some(Line {
                    number: self.number,
                    bytes: record,
                    ending: Ending::CrLf,
                });
            }
        }
        let end = self.rest.iter().position(|&b| b == b'\r' || b == b'\n');
        let (bytes, ending, consumed) = match end {
            None => (self.rest, Ending::EndOfFile, self.rest.len()),
            Some(at) => {
                let after = self.rest.get(at..).unwrap_or_default();
                let (ending, width) = match after {
                    [b'\r', b'\n', ..] => (Ending::CrLf, 2),
                    [b'\r', ..] => (Ending::Cr, 1),
                    _ => (Ending::Lf, 1),
                };
                (self.rest.get(..at).unwrap_or_default(), ending, at + width)
            }
        };
        self.rest = self.rest.get(consumed..).unwrap_or_default();
        Some(Line {
            number: self.number,
            bytes,
            ending,
        })
    }
}

/// Reports a wrong length or line ending; true when the record's bytes can be read
/// field by field (exactly 128 of them, whatever ended the line).
pub(crate) fn check_structure(line: &Line<'_>, sink: &mut ErrorSink) -> bool {
    let length = line.bytes.len();
    if length != RECORD_LEN {
        let column = length.min(RECORD_LEN) + 1;
        sink.push(
            line.number,
            column,
            "record",
            ReadErrorKind::RecordLength { found: length },
        );
    }
    let found = match line.ending {
        Ending::CrLf => None,
        Ending::Lf => Some("LF alone"),
        Ending::Cr => Some("CR alone"),
        Ending::EndOfFile => Some("missing (the file ends)"),
    };
    if let Some(found) = found {
        sink.push(
            line.number,
            length + 1,
            "line end",
            ReadErrorKind::LineEnding { found },
        );
    }
    length == RECORD_LEN
}

/// The most fields a record layout has (the detail record's 14).
const MAX_FIELDS: usize = 14;
const _: () = {
    let mut at = 0;
    while at < super::layout::RECORDS.len() {
        assert!(super::layout::RECORDS[at].fields.len() <= MAX_FIELDS);
        at += 1;
    }
};

/// A record whose fields passed the lexical checks, or `None` for those that did
/// not (their errors are already reported).
///
/// It borrows the record's bytes: the fields of a record of ASCII (every record but
/// one with a letter like æ, ø or å) are slices of it, so reading one allocates
/// nothing; the fields of any other record are decoded from ISO-8859-1.
pub(crate) struct RawRecord<'a> {
    pub line: usize,
    pub layout: &'static RecordLayout,
    /// Per field of the layout, in its order: digits of an N field, decoded text of
    /// an X field (padding kept), `None` for constants, filler and failed fields.
    texts: [Option<Cow<'a, str>>; MAX_FIELDS],
}

impl RawRecord<'_> {
    /// The field with this identity and its text, if the field passed its checks.
    pub(crate) fn get(&self, id: FieldId) -> Option<(&'static Field, &str)> {
        self.layout
            .fields
            .iter()
            .zip(&self.texts)
            .find(|(field, _)| field.id == id)
            .and_then(|(field, text)| Some((field, text.as_deref()?)))
    }

    /// The field with this identity, for positions in errors.
    pub(crate) fn field(&self, id: FieldId) -> Option<&'static Field> {
        self.layout.field(id)
    }
}

/// Checks every field of a 128-byte record against the layout.
pub(crate) fn lex<'a>(
    line: usize,
    layout: &'static RecordLayout,
    record: &'a [u8],
    sink: &mut ErrorSink,
) -> RawRecord<'a> {
    let mut texts: [Option<Cow<'a, str>>; MAX_FIELDS] = Default::default();
    // A record of ASCII (all but those with a letter like æ) is its own text,
    // checked as UTF-8 once rather than field by field.
    let ascii = record
        .is_ascii()
        .then(|| std::str::from_utf8(record).ok())
        .flatten();
    for (field, text) in layout.fields.iter().zip(texts.iter_mut()) {
        let bytes = record.get(field.range()).unwrap_or_default();
        let checked = lex_field(line, field, bytes, sink);
        *text = match ascii.and_then(|ascii| ascii.get(field.range())) {
            Some(borrowed) if checked => Some(Cow::Borrowed(borrowed)),
            _ if checked => Some(Cow::Owned(decode(bytes))),
            _ => None,
        };
    }
    RawRecord {
        line,
        layout,
        texts,
    }
}

/// Checks one field; true when it holds data that passed (its text is then the
/// caller's to take), false for constants, filler and failed fields.
fn lex_field(line: usize, field: &Field, bytes: &[u8], sink: &mut ErrorSink) -> bool {
    let mut report = |offset: usize, kind| sink.push(line, field.start + offset, field.name, kind);
    match (field.content, field.kind) {
        (Content::Constant(expected), _) => {
            if bytes != expected.as_bytes() {
                report(
                    0,
                    ReadErrorKind::WrongConstant {
                        expected,
                        found: decode(bytes),
                    },
                );
            }
            false
        }
        // Filler and data checked without a branch per byte (the common case);
        // the byte to blame is looked for only when a field fails.
        (Content::Blank, _) if all(bytes, |b| b == b' ') => false,
        (Content::Blank, _) => {
            if let Some(offset) = bytes.iter().position(|&b| b != b' ') {
                report(
                    offset,
                    ReadErrorKind::NotBlank {
                        found: decode(bytes),
                    },
                );
            }
            false
        }
        (Content::Data, Kind::N) if all(bytes, |b| b.is_ascii_digit()) => true,
        (Content::Data, Kind::X) if all(bytes, is_printable) => true,
        (Content::Data, Kind::N) => match bytes.iter().position(|b| !b.is_ascii_digit()) {
            Some(offset) => {
                report(
                    offset,
                    ReadErrorKind::NotDigits {
                        found: shown(field, bytes),
                    },
                );
                false
            }
            None => true,
        },
        (Content::Data, Kind::X) => match bytes.iter().position(|&b| !is_printable(b)) {
            Some(offset) => {
                let (offset, kind) = unprintable(bytes, offset);
                report(offset, kind);
                false
            }
            None => true,
        },
    }
}

/// Printable ISO-8859-1: 0x20–0x7E and 0xA0–0xFF (the domain's `is_printable_latin1`
/// on the decoded character; a test compares the two for every byte).
fn is_printable(byte: u8) -> bool {
    (byte.wrapping_sub(0x20) < 0x5F) | (byte >= 0xA0)
}

/// Whether every byte passes `test`, without an early exit (so it vectorises).
fn all(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |ok, &byte| ok & test(byte))
}

/// Why the byte at `offset` is not printable: when it is part of a UTF-8 sequence
/// (e.g. `Ø` as C3 98), say so and point at the sequence's first byte.
fn unprintable(bytes: &[u8], offset: usize) -> (usize, ReadErrorKind) {
    for back in 1..=3 {
        let Some(start) = offset.checked_sub(back) else {
            break;
        };
        let tail = bytes.get(start..).unwrap_or_default();
        if let Some((character, width)) = utf8_char(tail) {
            if start + width > offset {
                return (start, ReadErrorKind::Utf8InsteadOfLatin1 { character });
            }
        }
    }
    let byte = bytes.get(offset).copied().unwrap_or_default();
    (offset, ReadErrorKind::NotPrintable { byte })
}

/// The multi-byte UTF-8 character that `bytes` opens with, and its width in bytes.
fn utf8_char(bytes: &[u8]) -> Option<(char, usize)> {
    let width = match bytes.first()? {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let text = std::str::from_utf8(bytes.get(..width)?).ok()?;
    Some((text.chars().next()?, width))
}

/// ISO-8859-1 bytes to text: each byte is the character of the same number.
pub(crate) fn decode(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// A field's bytes for an error message; a CPR only masked.
fn shown(field: &Field, bytes: &[u8]) -> String {
    let text = decode(bytes);
    if field.id == FieldId::Cpr {
        mask_raw(&text)
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endings(bytes: &[u8]) -> Vec<(usize, Ending)> {
        Lines::new(bytes)
            .map(|line| (line.bytes.len(), line.ending))
            .collect()
    }

    #[test]
    fn splits_at_every_kind_of_line_end() {
        assert_eq!(endings(b""), vec![]);
        assert_eq!(endings(b"ab\r\n"), vec![(2, Ending::CrLf)]);
        assert_eq!(
            endings(b"a\nb\rc\r\n\r\nd"),
            vec![
                (1, Ending::Lf),
                (1, Ending::Cr),
                (1, Ending::CrLf),
                (0, Ending::CrLf),
                (1, Ending::EndOfFile)
            ]
        );
    }

    // Reading a record of ASCII allocates nothing; an ISO-8859-1 letter beyond
    // ASCII is still decoded to its character.
    #[test]
    fn borrows_ascii_records_and_decodes_latin1_ones() {
        let layout = &super::super::layout::DETAIL;
        let agreement = layout.field(FieldId::Agreement).unwrap();
        let reference = layout.field(FieldId::Reference).unwrap();
        let mut record = [b' '; RECORD_LEN];
        record[reference.range()][..4].copy_from_slice(b"KY-1");
        fn text<'a>(raw: &RawRecord<'a>, id: FieldId) -> Cow<'a, str> {
            let at = raw.layout.fields.iter().position(|f| f.id == id).unwrap();
            raw.texts[at].clone().unwrap()
        }
        let mut sink = ErrorSink::default();
        let raw = lex(1, layout, &record, &mut sink);
        assert!(matches!(text(&raw, FieldId::Reference), Cow::Borrowed(_)));
        assert_eq!(text(&raw, FieldId::Reference).trim_end(), "KY-1");
        record[agreement.range()][..2].copy_from_slice(b"\xD8K");
        let raw = lex(1, layout, &record, &mut sink);
        assert_eq!(text(&raw, FieldId::Agreement).trim_end(), "ØK");
        assert_eq!(text(&raw, FieldId::Reference).trim_end(), "KY-1");
    }

    /// Lines as the reader split them before the 128-byte fast path.
    fn lines_byte_by_byte(mut rest: &[u8]) -> Vec<(usize, Ending)> {
        let mut lines = Vec::new();
        while !rest.is_empty() {
            let at = rest.iter().position(|&b| b == b'\r' || b == b'\n');
            let Some(at) = at else {
                lines.push((rest.len(), Ending::EndOfFile));
                break;
            };
            let (ending, width) = match &rest[at..] {
                [b'\r', b'\n', ..] => (Ending::CrLf, 2),
                [b'\r', ..] => (Ending::Cr, 1),
                _ => (Ending::Lf, 1),
            };
            lines.push((at, ending));
            rest = &rest[at + width..];
        }
        lines
    }

    proptest::proptest! {
        // Records of 128 bytes and their neighbours, with CR, LF, a tab or a NUL
        // anywhere.
        #[test]
        fn the_fast_line_split_agrees_with_the_byte_by_byte_one(
            pieces in proptest::collection::vec(
                (125usize..=131, proptest::option::of((0usize..131, proptest::sample::select(vec![b'\r', b'\n', b'\t', 0])))),
                0..6,
            ),
            ends in proptest::collection::vec(proptest::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b"", b"\r\r\n"]), 6),
        ) {
            let mut bytes = Vec::new();
            for ((len, stray), ending) in pieces.into_iter().zip(ends) {
                let mut record = vec![b'0'; len];
                if let Some((at, byte)) = stray {
                    if let Some(slot) = record.get_mut(at) {
                        *slot = byte;
                    }
                }
                bytes.extend_from_slice(&record);
                bytes.extend_from_slice(ending);
            }
            proptest::prop_assert_eq!(endings(&bytes), lines_byte_by_byte(&bytes));
        }
    }

    #[test]
    fn printable_is_the_domains_printable_latin1_for_every_byte() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                is_printable(byte),
                crate::domain::is_printable_latin1(char::from(byte)),
                "{byte:#04x}"
            );
        }
    }

    #[test]
    fn recognises_utf8_sequences_in_text() {
        let bytes = "KØ".as_bytes();
        assert_eq!(
            unprintable(bytes, 2),
            (1, ReadErrorKind::Utf8InsteadOfLatin1 { character: 'Ø' })
        );
        assert_eq!(
            unprintable(b"K\x7f", 1),
            (1, ReadErrorKind::NotPrintable { byte: 0x7f })
        );
    }
}
