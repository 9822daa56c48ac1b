//! The domain: validated values, commands, events and the rules. No IO.

mod cpr;
mod decide;
mod entry_kind;
mod error;
mod events;
mod kommune;
mod money;
mod personal;
mod reference;

pub use cpr::{mask_in_text, mask_raw, Cpr};
pub use decide::{decide, AgreementState, Decision, EntryState, LedgerView};
pub use entry_kind::EntryKind;
pub use error::DomainError;
pub use events::{
    date_days, optional_date_days, Agreement, AgreementEnd, BusinessReceiptReceived, Command,
    Correction, Event, FileAcceptance, FileExported, FileRef, FileReissued, FileUploaded,
    LedgerSealed, LossAccepted, ReceiptError, ReceiptErrorCode, ReceiptReceived, RetentionApplied,
    TechnicalReceiptReceived, Withholding,
};
pub use kommune::Kommune;
pub use money::{format_kroner, Amount, AmountOutOfRange, AMOUNT_ORE_MAX};
pub use personal::{PersonalCpr, SealedCpr, SEALED_CPR_LEN};
pub use reference::{is_printable_latin1, AgreementRef, KyRef};
