//! Test support for Flotilla.
//!
//! - [`linearizability`]: a Porcupine-style checker for client histories in the
//!   format of `HISTORY.md`, with an HTML timeline for failing histories.

pub mod linearizability;
