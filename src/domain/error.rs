//! DomainError: every reason a value or a command is rejected, one variant each.

use chrono::NaiveDate;
use thiserror::Error;

/// Why a value or command was rejected. Messages name the offending value; a CPR
/// only ever appears masked (`DDMMYY-xxxx`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("kommune {code:?} is not one of the 98 kommunekoder (see data/kommuner.csv)")]
    UnknownKommune { code: String },

    #[error("CPR {masked} is invalid: {why}")]
    InvalidCpr { masked: String, why: &'static str },

    #[error("amount {raw:?} is invalid: {why}")]
    InvalidAmount { raw: String, why: &'static str },

    #[error("{field} {value:?} is invalid: {why}")]
    InvalidReference {
        field: &'static str,
        value: String,
        why: String,
    },

    #[error("agreement {agreement} is already registered with different content (conflict)")]
    AgreementConflict { agreement: String },

    #[error("agreement {agreement}: valid_to {valid_to} is before valid_from {valid_from}")]
    AgreementEndsBeforeStart {
        agreement: String,
        valid_from: NaiveDate,
        valid_to: NaiveDate,
    },

    #[error("agreement {agreement} already ended on {existing}; cannot end it on {requested} (conflict)")]
    AgreementEndConflict {
        agreement: String,
        existing: NaiveDate,
        requested: NaiveDate,
    },

    #[error("agreement {agreement} is not registered; register it (type \"agreement\") first")]
    UnknownAgreement { agreement: String },

    #[error("agreement {agreement} belongs to kommune {registered}, not {given}")]
    AgreementKommuneMismatch {
        agreement: String,
        registered: String,
        given: String,
    },

    #[error("agreement {agreement} is registered for CPR {registered}, not {given}")]
    AgreementCprMismatch {
        agreement: String,
        registered: String,
        given: String,
    },

    #[error("agreement {agreement} is not active on payout date {payout_date} (valid {valid_from} to {valid_to})")]
    AgreementNotActive {
        agreement: String,
        payout_date: NaiveDate,
        valid_from: NaiveDate,
        valid_to: String,
    },

    #[error("withholding {reference}: amount {amount} must be greater than 0")]
    WithholdingNotPositive { reference: String, amount: String },

    #[error("withholding {reference}: period_from {period_from} is after period_to {period_to}")]
    PeriodReversed {
        reference: String,
        period_from: NaiveDate,
        period_to: NaiveDate,
    },

    #[error("reference {reference} already exists in kommune {kommune} with different content (conflict)")]
    ReferenceConflict { kommune: String, reference: String },

    #[error("correction {reference}: amount must not be 0")]
    CorrectionZero { reference: String },

    #[error(
        "correction {reference} corrects {corrects}, which is no withholding of kommune {kommune}"
    )]
    UnknownWithholding {
        reference: String,
        corrects: String,
        kommune: String,
    },

    #[error("correction {reference} corrects {corrects}, which is itself a correction; correct the withholding")]
    CorrectsACorrection { reference: String, corrects: String },

    #[error("correction {reference} of {amount} would bring withholding {corrects} below 0 (its net is {net})")]
    WithholdingExceedsNet {
        reference: String,
        corrects: String,
        net: String,
        amount: String,
    },

    #[error("withholding {corrects}: net would exceed the largest amount a file can carry")]
    NetOutOfRange { corrects: String },
}
