//! `EntryKind`: whether an entry is a withholding or a correction, and the two
//! numbers that say so outside the program (the `entries.kind` column and the
//! SF2520 transaction code).
//!
//! Both numbers are stored bytes (a database row, a file KY sends): they are
//! written out here once and read back only through the checked `from_*`
//! conversions, which refuse any other number rather than pick a kind for it.

use super::Event;

/// What an entry is. Every entry of the log is one of these two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A tilbageholdelse (`WithholdingRecorded`): stored kind 1, transaction code `01`.
    Withholding,
    /// A korrektion of an earlier withholding (`WithholdingCorrected`): stored kind
    /// 2, transaction code `02`.
    Correction,
}

impl EntryKind {
    /// Both kinds, withholding first.
    pub const ALL: [EntryKind; 2] = [EntryKind::Withholding, EntryKind::Correction];

    /// The value of the `entries.kind` column (SQLite and PostgreSQL alike). Part of
    /// the stored schema: never renumber.
    pub fn stored(self) -> i64 {
        match self {
            EntryKind::Withholding => 1,
            EntryKind::Correction => 2,
        }
    }

    /// The kind stored as `value`, if it is one; the caller reports anything else
    /// as damage, naming where it read it.
    pub fn from_stored(value: i64) -> Option<EntryKind> {
        EntryKind::ALL
            .into_iter()
            .find(|kind| kind.stored() == value)
    }

    /// The SF2520 detail record's two-digit transaction code, as a number: 1 or 2.
    pub fn transaction_code(self) -> u8 {
        match self {
            EntryKind::Withholding => 1,
            EntryKind::Correction => 2,
        }
    }

    /// The kind with transaction code `code`, if it is 1 or 2.
    pub fn from_transaction_code(code: u8) -> Option<EntryKind> {
        EntryKind::ALL
            .into_iter()
            .find(|kind| kind.transaction_code() == code)
    }

    /// The event's kind, if it is an entry (a withholding or a correction).
    pub fn of_event(event: &Event) -> Option<EntryKind> {
        match event {
            Event::WithholdingRecorded(_) => Some(EntryKind::Withholding),
            Event::WithholdingCorrected(_) => Some(EntryKind::Correction),
            _ => None,
        }
    }

    /// The glossary word, for messages and JSON: `withholding` or `correction`.
    pub fn word(self) -> &'static str {
        match self {
            EntryKind::Withholding => "withholding",
            EntryKind::Correction => "correction",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_kinds_are_the_schema_numbers_and_read_back() {
        // The numbers are stored bytes (schema.rs, docs/log-format.md): pinned here
        // so that a renumbering fails a test instead of misreading old ledgers.
        assert_eq!(EntryKind::Withholding.stored(), 1);
        assert_eq!(EntryKind::Correction.stored(), 2);
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::from_stored(kind.stored()), Some(kind));
        }
    }

    #[test]
    fn a_stored_kind_that_is_neither_is_refused_not_defaulted() {
        for damaged in [0, 3, -1, i64::MAX, i64::MIN] {
            assert_eq!(EntryKind::from_stored(damaged), None, "{damaged}");
        }
    }

    #[test]
    fn transaction_codes_are_01_and_02_and_nothing_else() {
        assert_eq!(EntryKind::Withholding.transaction_code(), 1);
        assert_eq!(EntryKind::Correction.transaction_code(), 2);
        for kind in EntryKind::ALL {
            assert_eq!(
                EntryKind::from_transaction_code(kind.transaction_code()),
                Some(kind)
            );
        }
        for other in [0, 3, 10, 99, u8::MAX] {
            assert_eq!(EntryKind::from_transaction_code(other), None, "{other}");
        }
    }
}
