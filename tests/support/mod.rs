//! Shared test helpers: the backend the conformance suites run on, a ledger in a
//! temporary directory, JSON Lines builders, exporter checks, SF2520 golden files,
//! a real sshd, a real PostgreSQL server and a Serviceplatformen stand-in.

// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub mod backend;
pub mod cli;
pub mod export;
pub mod format;
pub mod ledger;
pub mod platform;
pub mod postgres;
pub mod process;
pub mod sshd;
pub mod tmpfs;
pub mod transfer;

// The format tests were written against these names at the top of `support`.
#[allow(unused_imports)]
pub use format::*;
