//! Shared test helpers: the backend the conformance suites run on, a ledger in a
//! temporary directory, JSON Lines builders, exporter checks, SF2520 golden files,
//! a real sshd, a real PostgreSQL server and a Serviceplatformen stand-in.

// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub(crate) mod backend;
pub(crate) mod cli;
pub(crate) mod export;
pub(crate) mod format;
pub(crate) mod ledger;
pub(crate) mod platform;
pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod sshd;
pub(crate) mod tmpfs;
pub(crate) mod transfer;

// The format tests were written against these names at the top of `support`.
#[allow(unused_imports)]
pub(crate) use format::*;
