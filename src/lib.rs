//! SF2520 settlement ledger: an event-sourced record of child-support withholdings
//! and the SF2520 files that report them to Udbetaling Danmark.
//!
//! Module map:
//! - [`domain`]: validated values (kommune, CPR, amounts, references), commands,
//!   events and the rules that decide them. No IO.

pub mod domain;
