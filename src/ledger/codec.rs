//! How an event is stored: the postcard envelope and the SHA-256 hash chain.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::LedgerError;
use crate::domain::Event;

/// The payload envelope. A new schema adds a variant (and an upcast in [`decode`]);
/// stored bytes of older variants are never rewritten.
///
/// V2 has V1's fields; it says that the event's CPR is sealed under its
/// agreement's data key (`keys`), where V1 holds the ten digits. Events without a
/// CPR are V1 in every ledger.
#[derive(Serialize, Deserialize)]
enum Envelope {
    V1(Event),
    V2(Event),
}

/// The schema version of events without personal data (and of every event of a
/// ledger written before sealing).
pub const CURRENT_SCHEMA_VERSION: u16 = 1;

/// The schema version of an event whose CPR is sealed (envelope V2).
pub(super) const SEALED_SCHEMA_VERSION: u16 = 2;

/// The schema version `encode` writes `event` under.
pub(super) fn schema_version(event: &Event) -> u16 {
    if sealed(event) {
        SEALED_SCHEMA_VERSION
    } else {
        CURRENT_SCHEMA_VERSION
    }
}

fn sealed(event: &Event) -> bool {
    event.personal_cpr().is_some_and(|(_, cpr)| cpr.is_sealed())
}

/// The hash that precedes position 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// [`Envelope`] borrowing its event, so that encoding needs no clone. postcard
/// writes a variant as its index and a reference as what it points to, so both
/// give the same bytes (tested below).
#[derive(Serialize)]
enum EnvelopeRef<'a> {
    V1(&'a Event),
    V2(&'a Event),
}

/// The stored payload of `event`: V2 if its CPR is sealed, else V1.
pub fn encode(event: &Event) -> Vec<u8> {
    let envelope = if sealed(event) {
        EnvelopeRef::V2(event)
    } else {
        EnvelopeRef::V1(event)
    };
    // Encoding into a Vec cannot fail for these types: every field is a plain value.
    postcard::to_stdvec(&envelope).expect("postcard encodes events")
}

/// The event in a stored payload, its CPR (if any) as stored: sealed in V2,
/// plain in V1; any other mix is a damaged payload.
pub fn decode(position: u64, payload: &[u8]) -> Result<Event, LedgerError> {
    let corrupt = |reason: String| LedgerError::CorruptPayload { position, reason };
    match postcard::from_bytes::<Envelope>(payload) {
        Ok(Envelope::V1(event)) if sealed(&event) => Err(corrupt(
            "a V1 payload holds a sealed CPR (only V2 may)".into(),
        )),
        Ok(Envelope::V2(event)) if event.personal_cpr().is_none() || !sealed(&event) => Err(
            corrupt("a V2 payload must hold a sealed CPR, and this one holds none".into()),
        ),
        Ok(Envelope::V1(event) | Envelope::V2(event)) => Ok(event),
        Err(error) => Err(corrupt(error.to_string())),
    }
}

/// One row of the `events` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: u64,
    pub event_id: Uuid,
    pub stream: String,
    pub event_type: String,
    pub schema_version: u16,
    /// Microseconds since the Unix epoch, UTC; never decreases along the log.
    pub recorded_at_us: i64,
    pub payload: Vec<u8>,
    /// SHA-256 over the previous event's hash and this event's fields.
    pub hash: [u8; 32],
}

impl StoredEvent {
    pub const COLUMNS: &'static str =
        "position, event_id, stream, event_type, schema_version, recorded_at_us, payload, hash";

    pub(crate) fn from_row(row: &super::sql::Row<'_>) -> Result<Self, LedgerError> {
        const EVENTS: super::sql::Source = super::sql::Source { table: "events" };
        let position = row.unsigned(EVENTS, 0)?;
        let bad = |what: &str| LedgerError::CorruptLedger {
            position: Some(position),
            what: what.to_string(),
        };
        Ok(StoredEvent {
            position,
            event_id: Uuid::from_slice(row.blob(EVENTS, 1)?)
                .map_err(|_| bad("the event id is not 16 bytes"))?,
            stream: row.text(EVENTS, 2)?.to_string(),
            event_type: row.text(EVENTS, 3)?.to_string(),
            schema_version: row
                .narrow(EVENTS, 4)
                .map_err(|_| bad("the schema version is out of range"))?,
            recorded_at_us: row.int(EVENTS, 5)?,
            payload: row.blob(EVENTS, 6)?.to_vec(),
            hash: row
                .bytes(EVENTS, 7)
                .map_err(|_| bad("the hash is not 32 bytes"))?,
        })
    }

    /// The hash this event must carry, given the hash before it.
    pub fn expected_hash(&self, previous: &[u8; 32]) -> [u8; 32] {
        chain_hash(
            previous,
            self.position,
            &self.event_id,
            &self.stream,
            &self.event_type,
            self.schema_version,
            self.recorded_at_us,
            &self.payload,
        )
    }

    /// The event, its CPR as stored; a payload whose envelope disagrees with
    /// the stored schema version is damaged.
    pub fn event(&self) -> Result<Event, LedgerError> {
        let event = decode(self.position, &self.payload)?;
        if schema_version(&event) != self.schema_version {
            return Err(LedgerError::CorruptPayload {
                position: self.position,
                reason: format!(
                    "the schema version is {}, but the payload is of version {}",
                    self.schema_version,
                    schema_version(&event)
                ),
            });
        }
        Ok(event)
    }
}

// Every supported target has a usize of at most 64 bits, so a length always fits.
const _: () = assert!(usize::BITS <= u64::BITS);

/// A field's length in bytes as the chain hashes it (8 bytes, big-endian).
fn length(bytes: impl AsRef<[u8]>) -> u64 {
    u64::try_from(bytes.as_ref().len()).expect("usize fits u64 (asserted at compile time)")
}

/// SHA-256(previous hash ‖ position ‖ event id ‖ stream ‖ type ‖ schema version ‖
/// recorded-at ‖ payload), with lengths before variable fields so that no two
/// different events hash the same bytes.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    previous: &[u8; 32],
    position: u64,
    event_id: &Uuid,
    stream: &str,
    event_type: &str,
    schema_version: u16,
    recorded_at_us: i64,
    payload: &[u8],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(position.to_be_bytes());
    hasher.update(event_id.as_bytes());
    for text in [stream.as_bytes(), event_type.as_bytes()] {
        hasher.update(length(text).to_be_bytes());
        hasher.update(text);
    }
    hasher.update(schema_version.to_be_bytes());
    hasher.update(recorded_at_us.to_be_bytes());
    hasher.update(length(payload).to_be_bytes());
    hasher.update(payload);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgreementEnd, AgreementRef, Kommune};

    #[test]
    fn borrowed_envelope_encodes_the_stored_bytes() {
        let event = Event::AgreementEnded(AgreementEnd {
            agreement: AgreementRef::parse("BA000123456").unwrap(),
            kommune: Kommune::parse("0751").unwrap(),
            valid_to: chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(),
        });
        let owned = postcard::to_stdvec(&Envelope::V1(event.clone())).unwrap();
        assert_eq!(encode(&event), owned);
        assert!(matches!(decode(1, &owned), Ok(decoded) if decoded == event));
    }

    /// postcard's varint of an i64 (zigzag, then 7 bits a byte, low first).
    fn varint(value: i64) -> Vec<u8> {
        let mut zigzag = (value << 1) ^ (value >> 63);
        let mut out = Vec::new();
        loop {
            let low = u8::try_from(zigzag & 0x7f).expect("seven bits");
            zigzag >>= 7;
            if zigzag == 0 {
                out.push(low);
                return out;
            }
            out.push(low | 0x80);
        }
    }

    // Regression: `Amount` derived `Deserialize`, so a stored payload could carry an
    // amount beyond AMOUNT_ORE_MAX that no constructor would build.
    #[test]
    fn a_stored_amount_beyond_the_limit_is_a_corrupt_payload_at_its_position() {
        use crate::domain::{Amount, Cpr, KyRef, Withholding, AMOUNT_ORE_MAX};
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
        let at_limit = Event::WithholdingRecorded(Withholding {
            reference: KyRef::parse("KY-1").unwrap(),
            agreement: AgreementRef::parse("BA1").unwrap(),
            kommune: Kommune::parse("0101").unwrap(),
            cpr: Cpr::parse("0101901234").unwrap().into(),
            payout_date: day(1),
            period_from: day(1),
            period_to: day(30),
            amount: Amount::from_ore(AMOUNT_ORE_MAX).unwrap(),
        });
        let mut payload = encode(&at_limit);
        assert!(decode(7, &payload).is_ok(), "the limit itself is an amount");
        // The amount is the payload's last field.
        let limit = varint(AMOUNT_ORE_MAX);
        assert!(payload.ends_with(&limit));
        payload.truncate(payload.len() - limit.len());
        payload.extend(varint(AMOUNT_ORE_MAX + 1));
        match decode(7, &payload) {
            // postcard reports a refusal by the type's own constructor only as a
            // "Serde Deserialization Error": the position says where to look.
            Err(LedgerError::CorruptPayload { position: 7, .. }) => {}
            other => panic!("expected CorruptPayload at 7, got {other:?}"),
        }
    }
}
