//! The listener's request decoding (`frame::decode_request`: the bounded
//! walk, then the crate's codec) against requests the crate encodes, at
//! every API and version served, and against the same requests with their
//! lengths forged and their bytes cut short.
//!
//! A failing case prints its seed; replay it with
//! `KAFKA_SEED=<seed> cargo test -p flotilla-kafka --test bounded_decode`.

mod common;

use bytes::Bytes;
use common::{Rng, build, forgeries, served};
use flotilla_kafka::{frame, schema, walk};
use proptest::prelude::*;

/// One case: every served API and version built from `seed`; an error
/// names the case.
fn round_trip(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    // The served versions, and the rest of what the crate decodes: a
    // frame at a version not served is answered before decoding, but the
    // layout holds those versions too and should be right.
    for (api, _, _) in served() {
        let m = schema::message(api).ok_or(format!("{api:?}: no layout"))?;
        for version in m.versions.0..=m.versions.1 {
            let case = format!("{api:?} v{version}, seed {seed}");
            let built = build(api, version, &mut rng).map_err(|e| format!("{case}: {e}"))?;
            if built.encoded != built.generated {
                return Err(format!(
                    "{case}: the layout and the crate disagree: generated {:?}, crate wrote {:?}",
                    built.generated, built.encoded
                ));
            }
            let d = frame::decode_request(built.frame.clone(), api)
                .map_err(|e| format!("{case}: our path refused a valid request: {e}"))?;
            if d.header != built.header || d.body != built.body || d.api != api {
                return Err(format!("{case}: decoded {d:?}, expected {:?}", built.body));
            }
        }
    }
    Ok(())
}

fn replay_command(seed: u64) -> String {
    format!("replay: KAFKA_SEED={seed} cargo test -p flotilla-kafka --test bounded_decode")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Requests the crate encodes (empty and multi-element arrays, null
    /// strings and arrays, long strings, unknown and known tagged fields)
    /// walk cleanly and decode to what the crate decodes.
    #[test]
    fn every_served_request_decodes_as_the_crate_does(seed in any::<u64>()) {
        let r = round_trip(seed);
        prop_assert!(r.is_ok(), "{}\n{}", r.unwrap_err(), replay_command(seed));
    }

    /// Every length and count of a valid request, forged large or
    /// negative, and every truncation: an error, never a panic.
    #[test]
    fn forged_lengths_and_truncations_are_errors(seed in any::<u64>()) {
        let r = forged(seed);
        prop_assert!(r.is_ok(), "{}\n{}", r.unwrap_err(), replay_command(seed));
    }
}

fn forged(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for (api, min, max) in served() {
        for version in min..=max {
            let case = format!("{api:?} v{version}, seed {seed}");
            let built = build(api, version, &mut rng).map_err(|e| format!("{case}: {e}"))?;
            let f = &built.frame[..];
            let lengths = walk::lengths(f, api, version).map_err(|e| format!("{case}: {e}"))?;
            for at in lengths {
                for bad in forgeries(f, at) {
                    if let Ok(d) = frame::decode_request(Bytes::from(bad.clone()), api) {
                        return Err(format!("{case}: forged {at:?} decoded: {bad:?} → {d:?}"));
                    }
                }
            }
            for cut in 0..f.len() {
                if frame::decode_request(built.frame.slice(..cut), api).is_ok() {
                    return Err(format!("{case}: cut at {cut} of {} decoded", f.len()));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn replay_a_seed() {
    let Ok(seed) = std::env::var("KAFKA_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("KAFKA_SEED is a u64");
    round_trip(seed).unwrap();
    forged(seed).unwrap();
}

/// The layout covers every version served, and the walk's notion of an
/// element's smallest size is never zero (an array count check needs it).
#[test]
fn the_layout_covers_what_is_served() {
    for (api, min, max) in served() {
        let m = schema::message(api).unwrap_or_else(|| panic!("{api:?} has no layout"));
        assert!(m.versions.0 <= min && max <= m.versions.1, "{api:?}");
        let crate_range =
            kafka_protocol::messages::RequestKind::decode(api, &mut Bytes::new(), m.versions.1 + 1);
        assert!(
            crate_range.is_err(),
            "{api:?}: the crate decodes past v{}",
            m.versions.1
        );
    }
}
