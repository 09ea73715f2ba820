//! Flotilla Raft core.
