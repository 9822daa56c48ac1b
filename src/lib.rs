//! SF2520 settlement ledger: an event-sourced record of child-support withholdings
//! and the SF2520 files that report them to Udbetaling Danmark.
//!
//! Module map:
//! - [`audit`]: anchored heads (`POS:HASH`), the outbox checked against the log's
//!   `FileExported` events, and the reconciliation report (HTML).
//! - [`cli`]: clap arguments and one function per subcommand (`anyhow` only here).
//! - [`demo`]: the seeded demo month for all 98 kommuner (pure: builds commands).
//! - [`domain`]: validated values (kommune, CPR, amounts, references), commands,
//!   events and the rules that decide them. No IO.
//! - [`export`]: the batch export job, files as of any past time, byte-identical
//!   reconstruction, reissue, the files register, the atomic outbox.
//! - [`ingest`]: the ingest policy: one JSON Lines input parsed, every line checked
//!   against the rules, committed only when none failed; rejected lines are an
//!   outcome, with their numbers and typed reasons.
//! - [`interrupt`]: SIGINT/SIGTERM as a request to stop at the next safe point.
//! - [`input`]: KY's JSON Lines, read with a bounded line length, parsed into commands.
//! - [`ledger`]: the append-only event log on SQLite (hash chain, idempotent
//!   all-or-nothing ingest, durable commits), projections as of any position, and
//!   `verify` by replay.
//! - [`sf2520`]: the SF2520 file format: the layout table, the streaming writer, the
//!   strict reader and the generated format document.
//! - [`transport`]: delivery to Serviceplatformen over SFTP (pinned host key, data
//!   file then trigger, technical receipt), with retry and its `[sftp]` config.
//!
//! Values are validated once, when they are built; money, for example, is parsed
//! from kroner strings and held as integer øre, never rounded:
//!
//! ```
//! use sf2520::domain::Amount;
//!
//! assert_eq!(Amount::parse_kroner("1623.50").unwrap().ore(), 162_350);
//! assert!(Amount::parse_kroner("1623.505").is_err());
//! ```

pub mod audit;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod export;
pub mod ingest;
pub mod input;
pub mod interrupt;
pub mod ledger;
pub mod sf2520;
pub mod transport;
