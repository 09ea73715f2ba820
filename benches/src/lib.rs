//! Shared helpers for the Flotilla benchmarks.
