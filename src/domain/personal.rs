//! A debtor's CPR as an event carries it: the number while it is decided and
//! rendered, sealed under its subject's data key in storage (crypto-shredding,
//! docs/decisions/0010-personal-data-sealed-per-agreement.md).
//!
//! The domain does no IO and holds no keys: sealing and opening happen in the
//! ledger (`ledger::keys`), which turns every `Plain` into a `Sealed` before it is
//! stored and every `Sealed` it reads into a `Plain` when the number is needed.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Cpr;

/// Bytes of a sealed CPR: a 12-byte nonce, the 10 sealed digits and a 16-byte
/// authentication tag (ChaCha20-Poly1305).
pub const SEALED_CPR_LEN: usize = 12 + 10 + 16;

/// A CPR sealed under its subject's data key; the bytes as stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealedCpr([u8; SEALED_CPR_LEN]);

impl SealedCpr {
    pub fn from_bytes(bytes: [u8; SEALED_CPR_LEN]) -> Self {
        SealedCpr(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SEALED_CPR_LEN] {
        &self.0
    }
}

impl fmt::Debug for SealedCpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedCpr(..)")
    }
}

/// A debtor's CPR in an agreement or a withholding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersonalCpr {
    /// The number: as KY sent it, or opened with its subject's data key.
    Plain(Cpr),
    /// As a ledger with sealed personal data stores it; opened only by the ledger.
    Sealed(SealedCpr),
}

impl PersonalCpr {
    /// The number, if this is not sealed.
    pub fn plain(&self) -> Option<&Cpr> {
        match self {
            PersonalCpr::Plain(cpr) => Some(cpr),
            PersonalCpr::Sealed(_) => None,
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, PersonalCpr::Sealed(_))
    }

    /// `DDMMYY-xxxx`, or `sealed` for a number not opened here.
    pub fn masked(&self) -> String {
        match self {
            PersonalCpr::Plain(cpr) => cpr.masked(),
            PersonalCpr::Sealed(_) => "sealed".to_string(),
        }
    }
}

impl From<Cpr> for PersonalCpr {
    fn from(cpr: Cpr) -> Self {
        PersonalCpr::Plain(cpr)
    }
}

/// Stored as a length-prefixed byte string: the ten ASCII digits of a plain
/// number (as `Cpr` always was, so payloads written before sealing decode
/// unchanged), or the [`SEALED_CPR_LEN`] bytes of a sealed one. The length tells
/// the two apart; which one an envelope must hold, the codec checks.
impl Serialize for PersonalCpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PersonalCpr::Plain(cpr) => serializer.serialize_str(cpr.digits()),
            PersonalCpr::Sealed(sealed) => serializer.serialize_bytes(sealed.as_bytes()),
        }
    }
}

impl<'de> Deserialize<'de> for PersonalCpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(PersonalCprVisitor)
    }
}

struct PersonalCprVisitor;

impl Visitor<'_> for PersonalCprVisitor {
    type Value = PersonalCpr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a CPR: ten ASCII digits, or {SEALED_CPR_LEN} bytes sealed"
        )
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<PersonalCpr, E> {
        if let Ok(sealed) = <[u8; SEALED_CPR_LEN]>::try_from(bytes) {
            return Ok(PersonalCpr::Sealed(SealedCpr(sealed)));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| E::custom(format!("a CPR field of {} bytes", bytes.len())))?;
        self.visit_str(text)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<PersonalCpr, E> {
        Cpr::parse(text).map(PersonalCpr::Plain).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_number_is_stored_as_cpr_always_was() {
        let cpr = Cpr::parse("0101901234").unwrap();
        let plain = postcard::to_stdvec(&PersonalCpr::Plain(cpr)).unwrap();
        assert_eq!(plain, postcard::to_stdvec(&cpr).unwrap());
        let back: PersonalCpr = postcard::from_bytes(&plain).unwrap();
        assert_eq!(back, PersonalCpr::Plain(cpr));
    }

    #[test]
    fn a_sealed_number_round_trips_and_others_are_refused() {
        let sealed = PersonalCpr::Sealed(SealedCpr::from_bytes([7; SEALED_CPR_LEN]));
        let bytes = postcard::to_stdvec(&sealed).unwrap();
        assert_eq!(bytes.len(), 1 + SEALED_CPR_LEN);
        assert_eq!(postcard::from_bytes::<PersonalCpr>(&bytes).unwrap(), sealed);
        for bad in [&b"\x0b01019012345"[..], b"\x05abcde", b"\x0a0101901x34"] {
            assert!(postcard::from_bytes::<PersonalCpr>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(sealed.masked(), "sealed");
        assert!(!format!("{sealed:?}").contains('7'));
    }
}
