//! Amounts of money: parsed from kroner strings with rust_decimal, held as integer øre.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::DomainError;

/// The largest absolute amount one entry may carry: what the 13-digit øre field of a
/// detail record can hold.
pub const AMOUNT_ORE_MAX: i64 = 9_999_999_999_999;

/// A signed amount in øre (1/100 krone). Never a float.
///
/// Serialized as its øre, an `i64` (the log's payloads, docs/log-format.md), and
/// deserialized through [`Amount::try_from`], so that a decoded amount is checked
/// like any other.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(into = "i64", try_from = "i64")]
pub struct Amount(i64);

/// An amount in øre beyond [`AMOUNT_ORE_MAX`] either way, met where amounts are
/// decoded rather than parsed (a stored payload, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "amount {ore} øre is out of range: at most {AMOUNT_ORE_MAX} øre either way (what a \
     detail record's 13 digits hold)"
)]
pub struct AmountOutOfRange {
    pub ore: i64,
}

impl TryFrom<i64> for Amount {
    type Error = AmountOutOfRange;

    fn try_from(ore: i64) -> Result<Self, Self::Error> {
        Amount::from_ore(ore).ok_or(AmountOutOfRange { ore })
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> i64 {
        amount.0
    }
}

impl Amount {
    /// Parses kroner with at most two decimals, e.g. `"1623.00"`, `"-200"`, `"0.5"`.
    /// More decimals, exponents, signs other than a leading `-`, spaces and values
    /// beyond [`AMOUNT_ORE_MAX`] are errors; nothing is ever rounded.
    pub fn parse_kroner(raw: &str) -> Result<Self, DomainError> {
        let invalid = |why: &'static str| DomainError::InvalidAmount {
            raw: raw.to_string(),
            why,
        };
        let unsigned = raw.strip_prefix('-').unwrap_or(raw);
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
            return Err(invalid(
                "expected kroner like \"1623.00\": digits, an optional '-' and '.'",
            ));
        }
        if unsigned.contains('.') && fraction.is_empty() {
            return Err(invalid("a '.' must be followed by one or two decimals"));
        }
        let decimal = Decimal::from_str(raw).map_err(|_| invalid("out of range"))?;
        if decimal.scale() > 2 {
            return Err(invalid("more than two decimals; amounts are never rounded"));
        }
        let ore = decimal
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|d| i64::try_from(d.normalize()).ok())
            .ok_or_else(|| invalid("out of range"))?;
        Self::from_ore(ore).ok_or_else(|| invalid("larger than 99,999,999,999.99 kroner"))
    }

    /// An amount in øre, if its absolute value fits [`AMOUNT_ORE_MAX`].
    pub fn from_ore(ore: i64) -> Option<Self> {
        (ore.checked_abs()? <= AMOUNT_ORE_MAX).then_some(Amount(ore))
    }

    pub fn ore(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Formats øre as kroner with two decimals, e.g. `-200.00`.
pub fn format_kroner(ore: i128) -> String {
    let sign = if ore < 0 { "-" } else { "" };
    let abs = ore.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_kroner(i128::from(self.0)))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({} øre)", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kroner_into_ore() {
        let ore = |raw: &str| Amount::parse_kroner(raw).unwrap().ore();
        assert_eq!(ore("1623.00"), 162_300);
        assert_eq!(ore("-200.00"), -20_000);
        assert_eq!(ore("0.5"), 50);
        assert_eq!(ore("7"), 700);
        assert_eq!(ore("-0.01"), -1);
        assert_eq!(ore("99999999999.99"), AMOUNT_ORE_MAX);
    }

    #[test]
    fn rejects_what_would_need_rounding_or_guessing() {
        for bad in [
            "1623.000",
            "1623.005",
            "1e3",
            "+5.00",
            " 5.00",
            "5.00 ",
            "5,00",
            "",
            "-",
            ".5",
            "5.",
            "100000000000.00",
            "--1",
            "0x10",
            "NaN",
            "١٢٣",
        ] {
            assert!(
                Amount::parse_kroner(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    /// Regression: `Amount` derived `Deserialize`, so a stored or sent amount beyond
    /// [`AMOUNT_ORE_MAX`] was built without the check every other way applies.
    #[test]
    fn deserializing_applies_the_range_check() {
        for ore in [AMOUNT_ORE_MAX + 1, -AMOUNT_ORE_MAX - 1, i64::MAX, i64::MIN] {
            let json = ore.to_string();
            assert!(
                serde_json::from_str::<Amount>(&json).is_err(),
                "JSON {json} must not be an amount"
            );
            let postcard = postcard::to_stdvec(&ore).unwrap();
            assert!(
                postcard::from_bytes::<Amount>(&postcard).is_err(),
                "postcard {postcard:02x?} ({ore} øre) must not be an amount"
            );
        }
        let error = serde_json::from_str::<Amount>("10000000000000").unwrap_err();
        assert!(
            error.to_string().contains("10000000000000 øre"),
            "the error names the value: {error}"
        );
    }

    /// The wire format is an i64 of øre, as docs/log-format.md says, in both
    /// directions: stored payloads decode as they always did.
    #[test]
    fn an_amount_is_encoded_as_its_ore() {
        for ore in [0, 1, -1, 162_300, -20_000, AMOUNT_ORE_MAX, -AMOUNT_ORE_MAX] {
            let amount = Amount::from_ore(ore).unwrap();
            let bytes = postcard::to_stdvec(&amount).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&ore).unwrap(), "{ore}");
            assert_eq!(postcard::from_bytes::<Amount>(&bytes).unwrap(), amount);
            assert_eq!(serde_json::to_string(&amount).unwrap(), ore.to_string());
            assert_eq!(
                serde_json::from_str::<Amount>(&ore.to_string()).unwrap(),
                amount
            );
        }
    }

    #[test]
    fn formats_ore_as_kroner() {
        assert_eq!(format_kroner(162_300), "1623.00");
        assert_eq!(format_kroner(-5), "-0.05");
        assert_eq!(format_kroner(0), "0.00");
        assert_eq!(Amount::from_ore(-20_000).unwrap().to_string(), "-200.00");
    }
}
