//! References: UDK's agreement reference and KY's entry reference, as validated text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DomainError;

/// True for the characters an X field may hold: printable ISO-8859-1
/// (U+0020–U+007E and U+00A0–U+00FF).
pub fn is_printable_latin1(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xFF)
}

fn validate(field: &'static str, raw: &str, max_chars: usize) -> Result<(), DomainError> {
    let invalid = |why: String| DomainError::InvalidReference {
        field,
        value: raw.escape_debug().to_string(),
        why,
    };
    if raw.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    // The common case, checked byte by byte: printable ASCII, within the limit, no
    // space at either end. Anything else takes the careful path below.
    let bytes = raw.as_bytes();
    if bytes.len() <= max_chars
        && bytes
            .iter()
            .all(|&byte| (0x21..=0x7E).contains(&byte) || byte == b' ')
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
    {
        return Ok(());
    }
    let chars = raw.chars().count();
    if chars > max_chars {
        return Err(invalid(format!(
            "{chars} characters; at most {max_chars} fit"
        )));
    }
    if let Some(bad) = raw.chars().find(|&c| !is_printable_latin1(c)) {
        return Err(invalid(format!(
            "character {:?} (U+{:04X}) is not printable ISO-8859-1",
            bad,
            u32::from(bad)
        )));
    }
    if raw.starts_with(' ') || raw.ends_with(' ') {
        return Err(invalid("leading or trailing spaces".into()));
    }
    Ok(())
}

macro_rules! reference_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        ///
        /// Held inline (no heap allocation): a reference is made and dropped for
        /// every entry ingested and every record exported. Its `MAX_CHARS`
        /// ISO-8859-1 characters take at most twice as many bytes in UTF-8.
        #[derive(Clone)]
        pub struct $name {
            len: u8,
            bytes: [u8; $max * 2],
        }

        impl $name {
            /// The most characters (= ISO-8859-1 bytes) the reference may have.
            pub const MAX_CHARS: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, DomainError> {
                validate($field, raw, Self::MAX_CHARS)?;
                // Validated: at most MAX_CHARS characters of at most 2 bytes each.
                let mut bytes = [0; $max * 2];
                bytes[..raw.len()].copy_from_slice(raw.as_bytes());
                let len = u8::try_from(raw.len()).expect("a valid reference is short");
                Ok(Self { len, bytes })
            }

            pub fn as_str(&self) -> &str {
                // Copied from a &str whole, so always UTF-8.
                std::str::from_utf8(&self.bytes[..usize::from(self.len)])
                    .expect("a reference holds the UTF-8 it was parsed from")
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }

                    // Borrowed or not, the text is copied inline: no String in between.
                    fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<$name, E> {
                        $name::parse(raw).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }
    };
}

reference_type!(
    /// UDK's reference of a betalingsadministrationsaftale: at most 15 characters.
    AgreementRef,
    "agreement",
    15
);

reference_type!(
    /// KY's reference of a withholding or correction: at most 20 characters,
    /// unique within its kommune.
    KyRef,
    "reference",
    20
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_danish_letters_and_limits() {
        assert!(KyRef::parse("KY-ÆØÅ-æøå-2026").is_ok());
        assert!(KyRef::parse(&"x".repeat(20)).is_ok());
        assert!(AgreementRef::parse(&"Ø".repeat(15)).is_ok());
    }

    #[test]
    fn rejects_empty_long_spaced_and_non_latin1() {
        assert!(KyRef::parse("").is_err());
        assert!(KyRef::parse(&"x".repeat(21)).is_err());
        assert!(AgreementRef::parse(&"x".repeat(16)).is_err());
        assert!(KyRef::parse(" KY-1").is_err());
        assert!(KyRef::parse("KY-1 ").is_err());
        assert!(KyRef::parse("KY\t1").is_err());
        assert!(KyRef::parse("KY\u{7f}1").is_err());
        assert!(KyRef::parse("KY€1").is_err());
        assert!(KyRef::parse("KY\u{85}1").is_err());
    }
}
