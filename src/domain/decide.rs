//! The rules of docs/input-format.md and decision 0004: `decide(view, command)` says what a command records.
//!
//! Pure: the ledger's current state is seen through [`LedgerView`], so the same rules
//! run against SQLite, an in-batch overlay, or a test model.

use chrono::NaiveDate;

use super::{Agreement, AgreementEnd, AgreementRef, Command, Correction, DomainError, Event};
use super::{Amount, Kommune, KyRef, Withholding};

/// What the rules need to know about an agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgreementState {
    pub registered: Agreement,
    /// Set once an `AgreementEnded` was recorded.
    pub ended: Option<NaiveDate>,
}

impl AgreementState {
    /// The last day the agreement covers, from its end or its registration.
    pub fn valid_to(&self) -> Option<NaiveDate> {
        self.ended.or(self.registered.valid_to)
    }

    pub fn is_active_on(&self, date: NaiveDate) -> bool {
        self.registered.valid_from <= date && self.valid_to().is_none_or(|to| date <= to)
    }
}

/// What the rules need to know about an entry reference of a kommune.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// A withholding and its net: the original amount plus all corrections, in øre.
    Withholding {
        withholding: Withholding,
        net_ore: i64,
    },
    Correction(Correction),
}

/// Read access to the state the rules consult. `Error` is the store's own failure
/// (an IO error, say), kept apart from rule violations.
pub trait LedgerView {
    type Error;
    fn agreement(&self, agreement: &AgreementRef) -> Result<Option<AgreementState>, Self::Error>;
    fn entry(&self, kommune: Kommune, reference: &KyRef)
        -> Result<Option<EntryState>, Self::Error>;
}

/// Why `decide` did not decide: a rule said no, or the view could not be read.
enum Stop<E> {
    Rule(DomainError),
    View(E),
}

impl<E> From<DomainError> for Stop<E> {
    fn from(error: DomainError) -> Self {
        Stop::Rule(error)
    }
}

fn read<T, E>(result: Result<T, E>) -> Result<T, Stop<E>> {
    result.map_err(Stop::View)
}

/// What a command that passed the rules leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Append(Event),
    /// The same content was recorded before: an accepted no-op.
    Duplicate,
}

/// Applies every rule of docs/input-format.md and decision 0004 to one command. The outer `Result` carries
/// the view's own failure; the inner one the rules' verdict.
pub fn decide<V: LedgerView>(
    view: &V,
    command: Command,
) -> Result<Result<Decision, DomainError>, V::Error> {
    let verdict = match &command {
        Command::RegisterAgreement(agreement) => decide_register(view, agreement),
        Command::EndAgreement(end) => decide_end(view, end),
        Command::RecordWithholding(withholding) => decide_withholding(view, withholding),
        Command::CorrectWithholding(correction) => decide_correction(view, correction),
    };
    match verdict {
        Ok(true) => Ok(Ok(Decision::Append(command.into_event()))),
        Ok(false) => Ok(Ok(Decision::Duplicate)),
        Err(Stop::Rule(error)) => Ok(Err(error)),
        Err(Stop::View(error)) => Err(error),
    }
}

/// `Ok(true)` to append, `Ok(false)` for a duplicate.
fn decide_register<V: LedgerView>(view: &V, agreement: &Agreement) -> Result<bool, Stop<V::Error>> {
    if let Some(valid_to) = agreement.valid_to {
        if valid_to < agreement.valid_from {
            return Err(Stop::Rule(DomainError::AgreementEndsBeforeStart {
                agreement: agreement.agreement.to_string(),
                valid_from: agreement.valid_from,
                valid_to,
            }));
        }
    }
    match read(view.agreement(&agreement.agreement))? {
        None => Ok(true),
        Some(existing) if existing.registered == *agreement => Ok(false),
        Some(_) => Err(Stop::Rule(DomainError::AgreementConflict {
            agreement: agreement.agreement.to_string(),
        })),
    }
}

fn decide_end<V: LedgerView>(view: &V, end: &AgreementEnd) -> Result<bool, Stop<V::Error>> {
    let state = registered_agreement(view, &end.agreement, end.kommune)?;
    if end.valid_to < state.registered.valid_from {
        return Err(Stop::Rule(DomainError::AgreementEndsBeforeStart {
            agreement: end.agreement.to_string(),
            valid_from: state.registered.valid_from,
            valid_to: end.valid_to,
        }));
    }
    match state.ended {
        None => Ok(true),
        Some(existing) if existing == end.valid_to => Ok(false),
        Some(existing) => Err(Stop::Rule(DomainError::AgreementEndConflict {
            agreement: end.agreement.to_string(),
            existing,
            requested: end.valid_to,
        })),
    }
}

fn registered_agreement<V: LedgerView>(
    view: &V,
    agreement: &AgreementRef,
    kommune: Kommune,
) -> Result<AgreementState, Stop<V::Error>> {
    let state = read(view.agreement(agreement))?.ok_or_else(|| DomainError::UnknownAgreement {
        agreement: agreement.to_string(),
    })?;
    if state.registered.kommune != kommune {
        return Err(Stop::Rule(DomainError::AgreementKommuneMismatch {
            agreement: agreement.to_string(),
            registered: state.registered.kommune.code(),
            given: kommune.code(),
        }));
    }
    Ok(state)
}

fn decide_withholding<V: LedgerView>(
    view: &V,
    withholding: &Withholding,
) -> Result<bool, Stop<V::Error>> {
    let reference = withholding.reference.to_string();
    match read(view.entry(withholding.kommune, &withholding.reference))? {
        Some(EntryState::Withholding {
            withholding: existing,
            ..
        }) if existing == *withholding => return Ok(false),
        Some(_) => {
            return Err(Stop::Rule(DomainError::ReferenceConflict {
                kommune: withholding.kommune.code(),
                reference,
            }))
        }
        None => {}
    }
    if withholding.amount.ore() <= 0 {
        return Err(Stop::Rule(DomainError::WithholdingNotPositive {
            reference,
            amount: withholding.amount.to_string(),
        }));
    }
    if withholding.period_from > withholding.period_to {
        return Err(Stop::Rule(DomainError::PeriodReversed {
            reference,
            period_from: withholding.period_from,
            period_to: withholding.period_to,
        }));
    }
    let state = registered_agreement(view, &withholding.agreement, withholding.kommune)?;
    if state.registered.cpr != withholding.cpr {
        return Err(Stop::Rule(DomainError::AgreementCprMismatch {
            agreement: withholding.agreement.to_string(),
            registered: state.registered.cpr.masked(),
            given: withholding.cpr.masked(),
        }));
    }
    if !state.is_active_on(withholding.payout_date) {
        return Err(Stop::Rule(DomainError::AgreementNotActive {
            agreement: withholding.agreement.to_string(),
            payout_date: withholding.payout_date,
            valid_from: state.registered.valid_from,
            valid_to: state
                .valid_to()
                .map_or_else(|| "open-ended".to_string(), |date| date.to_string()),
        }));
    }
    Ok(true)
}

fn decide_correction<V: LedgerView>(
    view: &V,
    correction: &Correction,
) -> Result<bool, Stop<V::Error>> {
    let reference = correction.reference.to_string();
    match read(view.entry(correction.kommune, &correction.reference))? {
        Some(EntryState::Correction(existing)) if existing == *correction => return Ok(false),
        Some(_) => {
            return Err(Stop::Rule(DomainError::ReferenceConflict {
                kommune: correction.kommune.code(),
                reference,
            }))
        }
        None => {}
    }
    if correction.amount.is_zero() {
        return Err(Stop::Rule(DomainError::CorrectionZero { reference }));
    }
    let net_ore = match read(view.entry(correction.kommune, &correction.corrects))? {
        Some(EntryState::Withholding { net_ore, .. }) => net_ore,
        Some(EntryState::Correction(_)) => {
            return Err(Stop::Rule(DomainError::CorrectsACorrection {
                reference,
                corrects: correction.corrects.to_string(),
            }))
        }
        None => {
            return Err(Stop::Rule(DomainError::UnknownWithholding {
                reference,
                corrects: correction.corrects.to_string(),
                kommune: correction.kommune.code(),
            }))
        }
    };
    let new_net = net_ore.checked_add(correction.amount.ore());
    match new_net {
        Some(new_net) if new_net < 0 => Err(Stop::Rule(DomainError::WithholdingExceedsNet {
            reference,
            corrects: correction.corrects.to_string(),
            net: crate::domain::format_kroner(i128::from(net_ore)),
            amount: correction.amount.to_string(),
        })),
        Some(new_net) if Amount::from_ore(new_net).is_some() => Ok(true),
        _ => Err(Stop::Rule(DomainError::NetOutOfRange {
            corrects: correction.corrects.to_string(),
        })),
    }
}
