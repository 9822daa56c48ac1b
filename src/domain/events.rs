//! Commands KY sends and the events the ledger records, with their stored encoding.
//!
//! A command that passes the rules in `decide` becomes the event of the same shape,
//! so the payload structs below serve both. Dates are stored as days since
//! 0001-01-01 and amounts as integer øre, so stored bytes never depend on a
//! crate's serde defaults.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{AgreementRef, Amount, Kommune, KyRef, PersonalCpr};

/// A betalingsadministrationsaftale as KY learned it from SF2530.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub agreement: AgreementRef,
    pub kommune: Kommune,
    /// The debtor; sealed under the agreement's data key in storage.
    pub cpr: PersonalCpr,
    #[serde(with = "date_days")]
    pub valid_from: NaiveDate,
    #[serde(with = "optional_date_days")]
    pub valid_to: Option<NaiveDate>,
}

/// The end of an agreement: it covers no payout after `valid_to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementEnd {
    pub agreement: AgreementRef,
    pub kommune: Kommune,
    #[serde(with = "date_days")]
    pub valid_to: NaiveDate,
}

/// A tilbageholdelse: an amount withheld from one payout to cover one agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withholding {
    pub reference: KyRef,
    pub agreement: AgreementRef,
    pub kommune: Kommune,
    /// The debtor, the agreement's; sealed under the agreement's data key in storage.
    pub cpr: PersonalCpr,
    #[serde(with = "date_days")]
    pub payout_date: NaiveDate,
    #[serde(with = "date_days")]
    pub period_from: NaiveDate,
    #[serde(with = "date_days")]
    pub period_to: NaiveDate,
    /// Always positive.
    pub amount: Amount,
}

/// A korrektion: a signed change to an earlier withholding of the same kommune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub reference: KyRef,
    pub corrects: KyRef,
    pub kommune: Kommune,
    /// Never zero; negative reduces or reverses, positive increases.
    pub amount: Amount,
    pub reason: String,
}

/// What KY asks the ledger to do; one line of input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    RegisterAgreement(Agreement),
    EndAgreement(AgreementEnd),
    RecordWithholding(Withholding),
    CorrectWithholding(Correction),
}

/// One SF2520 file the batch export made official.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileExported {
    /// The file's UUID; Serviceplatformen's `SendersFileId` of its first delivery.
    pub file_id: [u8; 16],
    pub kommune: Kommune,
    /// Løbenummer: gapless per kommune from 1.
    pub sequence: u32,
    pub file_name: String,
    /// Creation time written into the start record, whole seconds, µs since the Unix epoch UTC.
    pub created_at_us: i64,
    /// The file holds the kommune's entries at positions in
    /// `(previous_cutoff_position, cutoff_position]`.
    pub previous_cutoff_position: u64,
    pub cutoff_position: u64,
    pub test_marker: bool,
    pub record_count: u64,
    pub plus_ore: i64,
    pub minus_ore: i64,
    pub sha256: [u8; 32],
}

/// An official file put back into the outbox, byte for byte, to be delivered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReissued {
    pub kommune: Kommune,
    pub sequence: u32,
    /// The new `SendersFileId` for the re-delivery.
    pub delivery_id: [u8; 16],
}

/// A data file and its trigger uploaded to Serviceplatformen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUploaded {
    pub kommune: Kommune,
    pub sequence: u32,
    pub remote_path: String,
    pub size_bytes: u64,
    pub senders_file_id: [u8; 16],
    pub attempt: u32,
}

/// One `ErrorMessage` of a rejecting technical receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptError {
    pub code: String,
    pub code_description: String,
    pub description: String,
}

/// `<code> <code description>: <description>`, as operators and the report show it.
impl std::fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code, self.code_description, self.description
        )
    }
}

/// Serviceplatformen's `TechnicalReceipt` for an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptReceived {
    pub kommune: Kommune,
    pub sequence: u32,
    pub senders_file_id: [u8; 16],
    pub file_transfer_uuid: String,
    pub accepted: bool,
    pub errors: Vec<ReceiptError>,
}

/// One `ErrorMessage` of a rejecting technical receipt, with the schema's integer
/// `ErrorCode` (`xs:int`). Recorded by [`TechnicalReceiptReceived`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptErrorCode {
    pub code: i32,
    pub code_description: String,
    pub description: String,
}

/// `<code> <code description>: <description>`, as operators and the report show it.
impl std::fmt::Display for ReceiptErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.code, self.code_description, self.description
        )
    }
}

/// A technical receipt as the platform wrote it, matched to its delivery by name and,
/// when the receipt carries one, by `SendersFileId`. Replaces [`ReceiptReceived`]
/// for new receipts; old ones stay in the log as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TechnicalReceiptReceived {
    pub kommune: Kommune,
    pub sequence: u32,
    /// The delivery this receipt answers (the `SendersFileId` we sent).
    pub senders_file_id: [u8; 16],
    /// Whether the receipt itself carried that `SendersFileId` (it is optional).
    pub receipt_named_senders_file_id: bool,
    pub file_transfer_uuid: String,
    pub accepted: bool,
    /// Every `ErrorMessage`, in document order; empty when accepted.
    pub errors: Vec<ReceiptErrorCode>,
    /// SHA-256 of the receipt's bytes as read from `IN/`.
    pub receipt_sha256: [u8; 32],
    /// The archived copy's name in `<data-dir>/receipts/`.
    pub archive_name: String,
}

/// The recipient's verdict in a `BusinessReceipt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAcceptance {
    Accepted,
    Rejected,
    CouldNotNotifyRecipient,
}

impl FileAcceptance {
    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FileAcceptance::Accepted => "ACCEPTED",
            FileAcceptance::Rejected => "REJECTED",
            FileAcceptance::CouldNotNotifyRecipient => "COULD_NOT_NOTIFY_RECIPIENT",
        }
    }
}

/// A `BusinessReceipt`: what the recipient made of a delivered file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessReceiptReceived {
    pub kommune: Kommune,
    pub sequence: u32,
    /// The delivery it concerns, found through its recorded `FileTransferUUID`.
    pub senders_file_id: [u8; 16],
    pub file_transfer_uuid: String,
    pub recipient: String,
    pub acceptance: FileAcceptance,
    pub reason: Option<String>,
    /// SHA-256 of the receipt's bytes as read from `IN/`.
    pub receipt_sha256: [u8; 32],
    /// The archived copy's name in `<data-dir>/receipts/`.
    pub archive_name: String,
}

/// A file whose outbox copy `sf2520 retention --apply` removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub kommune: Kommune,
    pub sequence: u32,
}

/// `sf2520 retention --apply`: the data keys of `agreements` were destroyed, so
/// the CPRs sealed under them can never be read again, and the outbox copies of
/// `files` (each holding an erased agreement's entries, or past its own
/// retention) were removed; the files register keeps their names, hashes, counts
/// and sums. Names agreements by reference, never a CPR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionApplied {
    /// In reference order.
    pub agreements: Vec<AgreementRef>,
    /// In (kommune, løbenummer) order.
    pub files: Vec<FileRef>,
    /// The date the retention rule was applied as of.
    #[serde(with = "date_days")]
    pub as_of: NaiveDate,
    /// Full financial years that had to lie between an agreement's (or a file's)
    /// last financial year and `as_of`.
    pub retention_years: u32,
}

impl Event {
    /// The agreement whose data key seals this event's CPR, and the CPR, for the
    /// events that carry one.
    pub fn personal_cpr(&self) -> Option<(&AgreementRef, &PersonalCpr)> {
        match self {
            Event::AgreementRegistered(a) => Some((&a.agreement, &a.cpr)),
            Event::WithholdingRecorded(w) => Some((&w.agreement, &w.cpr)),
            _ => None,
        }
    }

    /// [`Event::personal_cpr`], to be replaced (sealed or opened).
    pub fn personal_cpr_mut(&mut self) -> Option<(&AgreementRef, &mut PersonalCpr)> {
        match self {
            Event::AgreementRegistered(a) => Some((&a.agreement, &mut a.cpr)),
            Event::WithholdingRecorded(w) => Some((&w.agreement, &mut w.cpr)),
            _ => None,
        }
    }
}

/// `sf2520 seal`: this ledger is a copy of a ledger written before CPRs were
/// sealed, every event at the same position with its CPR sealed (so its hash is
/// new); this event, after the last copied one, names the old ledger's head so
/// that an auditor can link the two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSealed {
    /// The old ledger's head: its position (the events copied) and hash.
    pub source_head_position: u64,
    pub source_head_hash: [u8; 32],
    /// Events whose CPR was sealed in the copy.
    pub sealed_events: u64,
}

/// `sf2520 accept-loss --apply`: the database lacked history that this node had
/// acknowledged (its head mark: a failover to a standby that had not received
/// it, an older copy put in place), and an operator accepted the loss. The
/// positions after `database_head_position` are given to new events from here
/// on; whatever named the lost ones (files, receipts, backups) names history
/// this chain does not hold. The node's outbox files the chain does not hold
/// were moved to `outbox/.lost/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossAccepted {
    /// The head this node had acknowledged and the database lacks.
    pub lost_position: u64,
    pub lost_hash: [u8; 32],
    /// The database's head when the loss was accepted (this event follows it).
    pub database_head_position: u64,
    /// The host that accepted it.
    pub node: String,
    /// The official files moved out of the outbox (names), in name order.
    pub files: Vec<String>,
}

/// Everything the log records. Variants are only ever added at the end, never
/// reordered: postcard encodes the variant by its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AgreementRegistered(Agreement),
    AgreementEnded(AgreementEnd),
    WithholdingRecorded(Withholding),
    WithholdingCorrected(Correction),
    FileExported(FileExported),
    FileReissued(FileReissued),
    FileUploaded(FileUploaded),
    ReceiptReceived(ReceiptReceived),
    TechnicalReceiptReceived(TechnicalReceiptReceived),
    BusinessReceiptReceived(BusinessReceiptReceived),
    RetentionApplied(RetentionApplied),
    LedgerSealed(LedgerSealed),
    LossAccepted(LossAccepted),
}

impl Event {
    /// The event type name stored beside the payload, for auditors and queries.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::AgreementRegistered(_) => "AgreementRegistered",
            Event::AgreementEnded(_) => "AgreementEnded",
            Event::WithholdingRecorded(_) => "WithholdingRecorded",
            Event::WithholdingCorrected(_) => "WithholdingCorrected",
            Event::FileExported(_) => "FileExported",
            Event::FileReissued(_) => "FileReissued",
            Event::FileUploaded(_) => "FileUploaded",
            Event::ReceiptReceived(_) => "ReceiptReceived",
            Event::TechnicalReceiptReceived(_) => "TechnicalReceiptReceived",
            Event::BusinessReceiptReceived(_) => "BusinessReceiptReceived",
            Event::RetentionApplied(_) => "RetentionApplied",
            Event::LedgerSealed(_) => "LedgerSealed",
            Event::LossAccepted(_) => "LossAccepted",
        }
    }

    /// The stream the event belongs to: the thing it is about.
    pub fn stream(&self) -> String {
        match self {
            Event::AgreementRegistered(a) => format!("agreement/{}", a.agreement),
            Event::AgreementEnded(e) => format!("agreement/{}", e.agreement),
            Event::WithholdingRecorded(w) => format!("entry/{}/{}", w.kommune, w.reference),
            Event::WithholdingCorrected(c) => format!("entry/{}/{}", c.kommune, c.reference),
            Event::FileExported(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::FileReissued(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::FileUploaded(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::ReceiptReceived(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::TechnicalReceiptReceived(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::BusinessReceiptReceived(f) => format!("file/{}/{:06}", f.kommune, f.sequence),
            Event::RetentionApplied(_) => "retention".to_string(),
            Event::LedgerSealed(_) | Event::LossAccepted(_) => "ledger".to_string(),
        }
    }
}

impl Command {
    /// The event this command records once it has passed the rules.
    pub fn into_event(self) -> Event {
        match self {
            Command::RegisterAgreement(a) => Event::AgreementRegistered(a),
            Command::EndAgreement(e) => Event::AgreementEnded(e),
            Command::RecordWithholding(w) => Event::WithholdingRecorded(w),
            Command::CorrectWithholding(c) => Event::WithholdingCorrected(c),
        }
    }
}

/// Dates as `i32` days since 0001-01-01 (chrono's `num_days_from_ce`).
pub mod date_days {
    use chrono::{Datelike, NaiveDate};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &NaiveDate, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(date.num_days_from_ce())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
        let days = i32::deserialize(deserializer)?;
        NaiveDate::from_num_days_from_ce_opt(days)
            .ok_or_else(|| serde::de::Error::custom(format!("day number {days} is out of range")))
    }
}

/// Optional dates, encoded like [`date_days`].
pub mod optional_date_days {
    use chrono::{Datelike, NaiveDate};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        date: &Option<NaiveDate>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match date {
            Some(date) => serializer.serialize_some(&date.num_days_from_ce()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<NaiveDate>, D::Error> {
        Option::<i32>::deserialize(deserializer)?
            .map(|days| {
                NaiveDate::from_num_days_from_ce_opt(days).ok_or_else(|| {
                    serde::de::Error::custom(format!("day number {days} is out of range"))
                })
            })
            .transpose()
    }
}
