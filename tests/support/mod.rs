//! Shared test helpers: a ledger in a temporary directory and JSON Lines builders.
#![allow(dead_code)]

pub mod export;
pub mod ledger;
