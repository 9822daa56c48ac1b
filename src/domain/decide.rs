//! The rules of DESIGN.md §3: `decide(view, command)` says what a command records.
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

/// Read access to the state the rules consult.
pub trait LedgerView {
    fn agreement(&self, agreement: &AgreementRef) -> Option<AgreementState>;
    fn entry(&self, kommune: Kommune, reference: &KyRef) -> Option<EntryState>;
}

/// What a command that passed the rules leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Append(Event),
    /// The same content was recorded before: an accepted no-op.
    Duplicate,
}

/// Applies every rule of DESIGN.md §3 to one command.
pub fn decide(view: &dyn LedgerView, command: Command) -> Result<Decision, DomainError> {
    let append = match &command {
        Command::RegisterAgreement(agreement) => decide_register(view, agreement)?,
        Command::EndAgreement(end) => decide_end(view, end)?,
        Command::RecordWithholding(withholding) => decide_withholding(view, withholding)?,
        Command::CorrectWithholding(correction) => decide_correction(view, correction)?,
    };
    Ok(if append {
        Decision::Append(command.into_event())
    } else {
        Decision::Duplicate
    })
}

/// `Ok(true)` to append, `Ok(false)` for a duplicate.
fn decide_register(view: &dyn LedgerView, agreement: &Agreement) -> Result<bool, DomainError> {
    if let Some(valid_to) = agreement.valid_to {
        if valid_to < agreement.valid_from {
            return Err(DomainError::AgreementEndsBeforeStart {
                agreement: agreement.agreement.to_string(),
                valid_from: agreement.valid_from,
                valid_to,
            });
        }
    }
    match view.agreement(&agreement.agreement) {
        None => Ok(true),
        Some(existing) if existing.registered == *agreement => Ok(false),
        Some(_) => Err(DomainError::AgreementConflict {
            agreement: agreement.agreement.to_string(),
        }),
    }
}

fn decide_end(view: &dyn LedgerView, end: &AgreementEnd) -> Result<bool, DomainError> {
    let state = registered_agreement(view, &end.agreement, end.kommune)?;
    if end.valid_to < state.registered.valid_from {
        return Err(DomainError::AgreementEndsBeforeStart {
            agreement: end.agreement.to_string(),
            valid_from: state.registered.valid_from,
            valid_to: end.valid_to,
        });
    }
    match state.ended {
        None => Ok(true),
        Some(existing) if existing == end.valid_to => Ok(false),
        Some(existing) => Err(DomainError::AgreementEndConflict {
            agreement: end.agreement.to_string(),
            existing,
            requested: end.valid_to,
        }),
    }
}

fn registered_agreement(
    view: &dyn LedgerView,
    agreement: &AgreementRef,
    kommune: Kommune,
) -> Result<AgreementState, DomainError> {
    let state = view
        .agreement(agreement)
        .ok_or_else(|| DomainError::UnknownAgreement {
            agreement: agreement.to_string(),
        })?;
    if state.registered.kommune != kommune {
        return Err(DomainError::AgreementKommuneMismatch {
            agreement: agreement.to_string(),
            registered: state.registered.kommune.code(),
            given: kommune.code(),
        });
    }
    Ok(state)
}

fn decide_withholding(
    view: &dyn LedgerView,
    withholding: &Withholding,
) -> Result<bool, DomainError> {
    let reference = withholding.reference.to_string();
    match view.entry(withholding.kommune, &withholding.reference) {
        Some(EntryState::Withholding {
            withholding: existing,
            ..
        }) if existing == *withholding => return Ok(false),
        Some(_) => {
            return Err(DomainError::ReferenceConflict {
                kommune: withholding.kommune.code(),
                reference,
            })
        }
        None => {}
    }
    if withholding.amount.ore() <= 0 {
        return Err(DomainError::WithholdingNotPositive {
            reference,
            amount: withholding.amount.to_string(),
        });
    }
    if withholding.period_from > withholding.period_to {
        return Err(DomainError::PeriodReversed {
            reference,
            period_from: withholding.period_from,
            period_to: withholding.period_to,
        });
    }
    let state = registered_agreement(view, &withholding.agreement, withholding.kommune)?;
    if state.registered.cpr != withholding.cpr {
        return Err(DomainError::AgreementCprMismatch {
            agreement: withholding.agreement.to_string(),
            registered: state.registered.cpr.masked(),
            given: withholding.cpr.masked(),
        });
    }
    if !state.is_active_on(withholding.payout_date) {
        return Err(DomainError::AgreementNotActive {
            agreement: withholding.agreement.to_string(),
            payout_date: withholding.payout_date,
            valid_from: state.registered.valid_from,
            valid_to: state
                .valid_to()
                .map_or_else(|| "open-ended".to_string(), |date| date.to_string()),
        });
    }
    Ok(true)
}

fn decide_correction(view: &dyn LedgerView, correction: &Correction) -> Result<bool, DomainError> {
    let reference = correction.reference.to_string();
    match view.entry(correction.kommune, &correction.reference) {
        Some(EntryState::Correction(existing)) if existing == *correction => return Ok(false),
        Some(_) => {
            return Err(DomainError::ReferenceConflict {
                kommune: correction.kommune.code(),
                reference,
            })
        }
        None => {}
    }
    if correction.amount.is_zero() {
        return Err(DomainError::CorrectionZero { reference });
    }
    let net_ore = match view.entry(correction.kommune, &correction.corrects) {
        Some(EntryState::Withholding { net_ore, .. }) => net_ore,
        Some(EntryState::Correction(_)) => {
            return Err(DomainError::CorrectsACorrection {
                reference,
                corrects: correction.corrects.to_string(),
            })
        }
        None => {
            return Err(DomainError::UnknownWithholding {
                reference,
                corrects: correction.corrects.to_string(),
                kommune: correction.kommune.code(),
            })
        }
    };
    let new_net = net_ore.checked_add(correction.amount.ore());
    match new_net {
        Some(new_net) if new_net < 0 => Err(DomainError::WithholdingExceedsNet {
            reference,
            corrects: correction.corrects.to_string(),
            net: crate::domain::format_kroner(i128::from(net_ore)),
            amount: correction.amount.to_string(),
        }),
        Some(new_net) if Amount::from_ore(new_net).is_some() => Ok(true),
        _ => Err(DomainError::NetOutOfRange {
            corrects: correction.corrects.to_string(),
        }),
    }
}
