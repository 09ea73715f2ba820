//! No allocation sized by the attacker: a counting global allocator
//! (`allocation-counter`) records the most bytes held at once, so at least
//! the largest single allocation, while the listener decodes a request
//! frame, over valid frames of every served API and version,
//! the same frames with each length and count forged, every truncation,
//! and seeded random mutations (the stable-Rust twin of the cargo-fuzz
//! target). The bound is [`RATIO`] times the frame's length plus
//! [`SLACK_BYTES`].
//!
//! Iterations: `KAFKA_FUZZ_ITERS` (default 300 mutations per API version),
//! seed: `KAFKA_FUZZ_SEED` (default: the clock; printed). A failure prints
//! the seed and the command that replays it. `KAFKA_FUZZ_CORPUS=<dir>`
//! also writes the valid frames there, a seed corpus for the cargo-fuzz
//! target.

mod common;

use bytes::Bytes;
use common::{Rng, build, forgeries, served};
use flotilla_kafka::{dispatch, frame, walk};
use kafka_protocol::messages::ApiKey;
/// Peak bytes held per byte of frame. Not 64: bounded by the bytes sent
/// is not the same as small per byte. Each structure with a tagged field
/// costs the crate a `BTreeMap` node (~400 bytes) for 3 bytes on the
/// wire (count, tag, size); see `tag_heavy_frames_stay_within_the_ratio`.
const RATIO: usize = 256;
/// Allowed above that: error messages and small fixed buffers.
const SLACK_BYTES: usize = 4 << 10;

/// Decodes `f` as the listener does (an API and version it serves, then
/// `frame::decode_request`) and returns the most bytes held at once by
/// allocations made while decoding: at least the largest single
/// allocation. (`allocation-counter` counts on this thread only, so
/// tests running beside this one do not disturb it.)
fn peak_bytes(f: &[u8]) -> usize {
    let f = Bytes::copy_from_slice(f);
    let info = allocation_counter::measure(|| {
        if let Ok(prefix) = frame::header_prefix(&f)
            && let Ok(api) = ApiKey::try_from(prefix.api_key)
            && dispatch::supported(api)
                .is_some_and(|(min, max)| (min..=max).contains(&prefix.api_version))
        {
            let _ = frame::decode_request(f.clone(), api);
        }
    });
    info.bytes_max as usize
}

/// Returns the peak bytes held.
fn check(f: &[u8], what: &str, seed: u64) -> usize {
    let largest = peak_bytes(f);
    let bound = RATIO * f.len() + SLACK_BYTES;
    assert!(
        largest <= bound,
        "{what}: {largest} bytes held decoding a frame of {} bytes (bound {bound}): {f:?}\n\
         replay: KAFKA_FUZZ_SEED={seed} cargo test -p flotilla-kafka --test alloc_bound",
        f.len()
    );
    largest
}

/// One random mutation of `f`.
fn mutate(f: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = f.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(m.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 if at < m.len() => m[at] ^= 1 << rng.below(8),
            1 if at < m.len() => m[at] = rng.next() as u8,
            2 => m.insert(at, rng.next() as u8),
            3 if at < m.len() => {
                m.remove(at);
            }
            // A large count or length, four or five bytes, dropped in
            // anywhere (a varint or a big-endian int).
            4 => {
                let end = (at + 4).min(m.len());
                m.splice(at..end, [0x7f, 0xff, 0xff, 0xff]);
            }
            _ => {
                let end = (at + 1 + rng.below(5) as usize).min(m.len());
                m.splice(at..end, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    m
}

#[test]
fn decoding_allocates_in_proportion_to_the_bytes_sent() {
    let seed = std::env::var("KAFKA_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("KAFKA_FUZZ_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let iters: usize = std::env::var("KAFKA_FUZZ_ITERS")
        .ok()
        .map(|s| s.parse().expect("KAFKA_FUZZ_ITERS is a count"))
        .unwrap_or(300);
    eprintln!("alloc_bound: seed {seed}, {iters} mutations per API version");
    let corpus = std::env::var_os("KAFKA_FUZZ_CORPUS").map(std::path::PathBuf::from);
    let mut rng = Rng::new(seed);
    let mut frames = 0usize;
    // The highest peak per byte among frames of 64 bytes and more (below
    // that the slack dominates), for the log.
    let mut worst = (0usize, 1usize);
    let mut seen = |held: usize, len: usize| {
        if len >= 64 && held * worst.1 > worst.0 * len {
            worst = (held, len.max(1));
        }
    };
    for (api, min, max) in served() {
        for version in min..=max {
            let case = format!("{api:?} v{version}");
            let built = build(api, version, &mut rng).unwrap_or_else(|e| panic!("{case}: {e}"));
            let f = &built.frame[..];
            if let Some(dir) = &corpus {
                std::fs::create_dir_all(dir).expect("corpus directory");
                std::fs::write(dir.join(format!("{api:?}-v{version}-{seed}")), f)
                    .expect("corpus file");
            }
            seen(check(f, &format!("{case} valid"), seed), f.len());
            for at in walk::lengths(f, api, version).expect("a built frame walks") {
                for bad in forgeries(f, at) {
                    seen(
                        check(&bad, &format!("{case} forged {at:?}"), seed),
                        bad.len(),
                    );
                    frames += 1;
                }
            }
            for cut in 0..f.len() {
                seen(check(&f[..cut], &format!("{case} cut at {cut}"), seed), cut);
            }
            for _ in 0..iters {
                let m = mutate(f, &mut rng);
                seen(check(&m, &format!("{case} mutated"), seed), m.len());
            }
            frames += 1 + f.len() + iters;
        }
    }
    eprintln!(
        "alloc_bound: {frames} frames decoded within the bound; highest peak per byte {} bytes for a {}-byte frame",
        worst.0, worst.1
    );
}

/// The costliest frame per byte found: Metadata v9 (flexible) whose
/// topics are each a null name and one empty unknown tagged field, 4
/// bytes a topic.
#[test]
fn tag_heavy_frames_stay_within_the_ratio() {
    for topics in [1usize, 10, 100, 1000] {
        // Header v2: key 3, version 9, correlation id, null client id, no tags.
        let mut f = vec![0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0];
        let mut n = topics as u32 + 1;
        while n >= 0x80 {
            f.push((n as u8) | 0x80);
            n >>= 7;
        }
        f.push(n as u8);
        for i in 0..topics {
            f.extend_from_slice(&[0, 1, 20 + (i % 100) as u8, 0]);
        }
        f.extend_from_slice(&[1, 0, 0, 0]); // allow auto create, ops, tags
        let d = frame::decode_request(Bytes::from(f.clone()), ApiKey::Metadata);
        assert!(d.is_ok(), "{d:?}");
        let held = check(&f, &format!("{topics} tagged topics"), 0);
        eprintln!(
            "tag_heavy: {topics} topics, {} bytes, {held} bytes held",
            f.len()
        );
    }
}

/// A hand-made frame the crate alone would choke on: Metadata v1 whose
/// topic array claims 2³¹ - 1 names in a 14-byte frame.
#[test]
fn a_lying_array_count_costs_nothing() {
    let mut f = vec![0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xff];
    f.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(peak_bytes(&f) <= SLACK_BYTES);
}
