//! CPR: the debtor's 10-digit personal number, validated by date and century rule.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DomainError;

/// A valid CPR number `DDMMYYSSSS`. There is deliberately no modulus-11 check:
/// numbers without it have been issued since 2007.
///
/// `Display` and `Debug` show only the masked form `DDMMYY-xxxx` so that a full
/// number cannot leak into a log line or an operator message by accident; the
/// full digits are available through [`Cpr::digits`] for files and storage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cpr([u8; 10]);

/// Masks a possibly invalid CPR-like input for an error message: the first six
/// characters followed by `-xxxx`. Input of other shapes is shown by length only.
pub fn mask_raw(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() == 10 {
        let head: String = chars[..6].iter().collect();
        format!("{head}-xxxx")
    } else {
        format!("<{} characters>", chars.len())
    }
}

/// Masks every CPR-shaped number in a message: a run of exactly ten digits, or six
/// digits, `-` and four digits, not touching another letter or digit. Applied to
/// operator messages at the program's edge, because some carry input verbatim (a
/// CPR sent in the kommune field, a date field, a JSON type error) and no single
/// error type can know that its text holds a CPR.
///
/// A digit is any numeric character, not only ASCII: a CPR typed in
/// Arabic-Indic (`١٠١٠٩٠١٢٣٤`), full-width or Devanagari digits is masked too
/// (its first six characters are kept, as for ASCII).
pub fn mask_in_text(text: &str) -> String {
    if text.chars().filter(|c| c.is_numeric()).take(10).count() < 10 {
        return text.to_owned();
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte_at = |index: usize| chars.get(index).map_or(text.len(), |(at, _)| *at);
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    let mut index = 0;
    while index < chars.len() {
        let starts_token = index == 0 || !continues_token(chars[index - 1].1);
        match cpr_shape_at(&chars, index).filter(|_| starts_token) {
            Some(length) => {
                masked.push_str(&text[copied..byte_at(index + 6)]);
                masked.push_str("-xxxx");
                index += length;
                copied = byte_at(index);
            }
            None => index += 1,
        }
    }
    masked.push_str(&text[copied..]);
    masked
}

/// A character that makes a digit run part of a longer word or number: an
/// ASCII letter or any digit (a letter such as `æ` does not).
fn continues_token(character: char) -> bool {
    character.is_ascii_alphanumeric() || character.is_numeric()
}

/// The length in characters of a CPR-shaped token starting at `start` (10 or
/// 11), if the character after it does not continue a word.
fn cpr_shape_at(chars: &[(usize, char)], start: usize) -> Option<usize> {
    let digits = |from: usize, count: usize| {
        chars
            .get(from..from + count)
            .is_some_and(|run| run.iter().all(|(_, c)| c.is_numeric()))
    };
    if !digits(start, 6) {
        return None;
    }
    let length = if digits(start + 6, 4) {
        10
    } else if chars.get(start + 6).map(|(_, c)| *c) == Some('-') && digits(start + 7, 4) {
        11
    } else {
        return None;
    };
    let ends_token = chars
        .get(start + length)
        .is_none_or(|(_, c)| !continues_token(*c));
    ends_token.then_some(length)
}

impl Cpr {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let invalid = |why: &'static str| DomainError::InvalidCpr {
            masked: mask_raw(raw),
            why,
        };
        let bytes = raw.as_bytes();
        if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(invalid("must be exactly 10 digits"));
        }
        let mut digits = [0u8; 10];
        digits.copy_from_slice(bytes);
        let cpr = Cpr(digits);
        if cpr.birth_date().is_none() {
            return Err(invalid(
                "the date part DDMMYY is not a real date under the century rule",
            ));
        }
        Ok(cpr)
    }

    fn number(&self, start: usize) -> u32 {
        u32::from(self.0[start] - b'0') * 10 + u32::from(self.0[start + 1] - b'0')
    }

    /// The birth date implied by the first six digits and the century digit (the 7th).
    pub fn birth_date(&self) -> Option<NaiveDate> {
        let day = self.number(0);
        let month = self.number(2);
        let yy = i32::try_from(self.number(4)).ok()?;
        let century_digit = self.0[6] - b'0';
        let century = match century_digit {
            0..=3 => 1900,
            4 | 9 if yy <= 36 => 2000,
            4 | 9 => 1900,
            5..=8 if yy <= 57 => 2000,
            5..=8 => 1800,
            _ => return None,
        };
        NaiveDate::from_ymd_opt(century + yy, month, day)
    }

    /// The full ten digits. Only for SF2520 files and storage, never for logs.
    pub fn digits(&self) -> &str {
        std::str::from_utf8(&self.0).expect("CPR digits are ASCII")
    }

    /// `DDMMYY-xxxx`, safe for logs and operator messages.
    pub fn masked(&self) -> String {
        format!("{}-xxxx", &self.digits()[..6])
    }
}

impl fmt::Display for Cpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Cpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cpr({})", self.masked())
    }
}

impl Serialize for Cpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.digits())
    }
}

impl<'de> Deserialize<'de> for Cpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Cpr::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn century_rule() {
        let date = |raw: &str| Cpr::parse(raw).unwrap().birth_date().unwrap();
        assert_eq!(
            date("0101901234"),
            NaiveDate::from_ymd_opt(1990, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101104234"),
            NaiveDate::from_ymd_opt(2010, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101504234"),
            NaiveDate::from_ymd_opt(1950, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101205234"),
            NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101605234"),
            NaiveDate::from_ymd_opt(1860, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101369234"),
            NaiveDate::from_ymd_opt(2036, 1, 1).unwrap()
        );
        assert_eq!(
            date("0101379234"),
            NaiveDate::from_ymd_opt(1937, 1, 1).unwrap()
        );
    }

    #[test]
    fn no_modulus_eleven_check() {
        // 0101901235 fails modulus 11 but is a valid CPR since 2007.
        assert!(Cpr::parse("0101901235").is_ok());
    }

    #[test]
    fn rejects_bad_dates_and_shapes_and_masks_them() {
        for bad in [
            "3102901234",
            "2902011234",
            "0013901234",
            "010190123",
            "01019012a4",
            "0101901234 ",
        ] {
            let error = Cpr::parse(bad).unwrap_err().to_string();
            assert!(!error.contains(bad), "{error} leaks the full number");
        }
        // 29 Feb 2000 is real (century digit 4, YY 00 -> 2000).
        assert!(Cpr::parse("2902004000").is_ok());
        // 29 Feb 1900 is not (century digit 0 -> 1900, not a leap year).
        assert!(Cpr::parse("2902000000").is_err());
    }

    #[test]
    fn cpr_shaped_numbers_in_text_are_masked() {
        assert_eq!(
            mask_in_text("kommune \"1010901234\" is not one of the 98"),
            "kommune \"101090-xxxx\" is not one of the 98"
        );
        assert_eq!(mask_in_text("1010901234"), "101090-xxxx");
        assert_eq!(mask_in_text("cpr 101090-1234."), "cpr 101090-xxxx.");
        assert_eq!(
            mask_in_text("a 1010901234 b 0101901234"),
            "a 101090-xxxx b 010190-xxxx"
        );
        // Not CPR-shaped: longer runs, parts of words and hex, short runs.
        for kept in [
            "12345678901",
            "KY1010901234",
            "1010901234ab",
            "123456789",
            "position 42",
        ] {
            assert_eq!(mask_in_text(kept), kept);
        }
        assert_eq!(mask_in_text("æ1010901234ø"), "æ101090-xxxxø");
    }

    /// Regression: a CPR in Arabic-Indic or full-width digits was echoed in full.
    #[test]
    fn cpr_shaped_numbers_in_any_script_are_masked() {
        assert_eq!(
            mask_in_text("kommune \"١٠١٠٩٠١٢٣٤\" is not one of the 98"),
            "kommune \"١٠١٠٩٠-xxxx\" is not one of the 98"
        );
        assert_eq!(mask_in_text("１０１０９０１２３４"), "１０１０９０-xxxx");
        assert_eq!(mask_in_text("१०१०९०-१२३४."), "१०१०९०-xxxx.");
        assert_eq!(mask_in_text("mixed 10109０１２３４"), "mixed 10109０-xxxx");
        for kept in ["١٠١٠٩٠١٢٣٤٥", "1١٠١٠٩٠١٢٣٤", "١٠١٠٩٠١٢٣"] {
            assert_eq!(mask_in_text(kept), kept);
        }
    }

    #[test]
    fn display_and_debug_are_masked() {
        let cpr = Cpr::parse("0101901234").unwrap();
        assert_eq!(cpr.to_string(), "010190-xxxx");
        assert_eq!(format!("{cpr:?}"), "Cpr(010190-xxxx)");
        assert_eq!(cpr.digits(), "0101901234");
    }
}
