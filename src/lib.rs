//! SF2520 settlement ledger: an event-sourced record of child-support withholdings
//! and the SF2520 files that report them to Udbetaling Danmark.
//!
//! Module map:
//! - [`domain`]: validated values (kommune, CPR, amounts, references), commands,
//!   events and the rules that decide them. No IO.
//! - [`sf2520`]: the SF2520 file format: the layout table, the streaming writer, the
//!   strict reader and the generated format document.
//! - [`cli`]: what the command-line commands do (`check`, `show`), printing to a writer.

pub mod cli;
pub mod domain;
pub mod sf2520;
