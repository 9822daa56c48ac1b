//! SF2520 settlement ledger: an event-sourced record of child-support withholdings
//! and the SF2520 files that report them to Udbetaling Danmark.
//!
//! Module map:
//! - [`domain`]: validated values (kommune, CPR, amounts, references), commands,
//!   events and the rules that decide them. No IO.
//! - [`transport`]: delivery to Serviceplatformen over SFTP (pinned host key, data
//!   file then trigger, technical receipt), with retry and its `[sftp]` config.

pub mod domain;
pub mod transport;
