//! Shared helpers for the integration tests: a real sshd and a Serviceplatformen stand-in.

// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

pub mod platform;
pub mod sshd;
