//! Test support for Flotilla.
//!
//! - [`linearizability`]: a Porcupine-style checker for client histories in the
//!   format of `HISTORY.md`, with an HTML timeline for failing histories.
//! - [`sim`]: deterministic simulation of Raft clusters with faults, invariant
//!   checks and recorded client histories.

pub mod linearizability;
pub mod sim;
pub mod storage_suite;
