//! Kommune: the 98 Danish municipality codes, embedded from `data/kommuner.csv`.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DomainError;

const KOMMUNER_CSV: &str = include_str!("../../data/kommuner.csv");

/// A municipality, identified by its 4-digit code. Only the 98 codes of
/// `data/kommuner.csv` can be built; Christiansø (0411) is not one of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kommune(u16);

struct Entry {
    code: u16,
    name: &'static str,
}

fn table() -> &'static [Entry] {
    static TABLE: OnceLock<Vec<Entry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let table: Vec<Entry> = KOMMUNER_CSV
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let (code, name) = line.split_once(',').expect("kommuner.csv: code,name");
                Entry {
                    code: code.parse().expect("kommuner.csv: numeric code"),
                    name,
                }
            })
            .collect();
        assert_eq!(
            table.len(),
            98,
            "kommuner.csv must list exactly 98 kommuner"
        );
        table
    })
}

impl Kommune {
    /// Parses a 4-digit code such as `"0751"`.
    pub fn parse(code: &str) -> Result<Self, DomainError> {
        let unknown = || DomainError::UnknownKommune {
            code: code.to_string(),
        };
        if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let number: u16 = code.parse().map_err(|_| unknown())?;
        Self::from_number(number).ok_or_else(unknown)
    }

    /// The kommune with this numeric code, if it is one of the 98.
    pub fn from_number(number: u16) -> Option<Self> {
        table()
            .binary_search_by_key(&number, |entry| entry.code)
            .ok()
            .map(|_| Kommune(number))
    }

    /// All 98 kommuner in code order.
    pub fn all() -> impl Iterator<Item = Kommune> {
        table().iter().map(|entry| Kommune(entry.code))
    }

    pub fn number(self) -> u16 {
        self.0
    }

    /// The 4-digit code, zero-padded.
    pub fn code(self) -> String {
        format!("{:04}", self.0)
    }

    pub fn name(self) -> &'static str {
        let index = table()
            .binary_search_by_key(&self.0, |entry| entry.code)
            .expect("a built Kommune is always in the table");
        table()[index].name
    }
}

impl fmt::Display for Kommune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Kommune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kommune({:04})", self.0)
    }
}

// Stored as the plain number, so that stored bytes never depend on a string format.
impl Serialize for Kommune {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Kommune {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = u16::deserialize(deserializer)?;
        Kommune::from_number(number)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown kommune {number:04}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_98_sorted_codes() {
        let codes: Vec<u16> = Kommune::all().map(Kommune::number).collect();
        assert_eq!(codes.len(), 98);
        assert!(codes.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn parses_known_and_rejects_unknown_codes() {
        assert_eq!(Kommune::parse("0751").unwrap().name(), "Aarhus");
        assert_eq!(Kommune::parse("0101").unwrap().code(), "0101");
        for bad in ["0411", "9999", "751", "07510", "07a1", "", " 751"] {
            assert!(Kommune::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
