//! Flotilla partition log.
