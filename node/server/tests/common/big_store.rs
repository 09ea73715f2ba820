//! What the bounded-memory backup tests share: a store of tens of MB built
//! through the apply path, and a check of the bytes a step allocates at
//! once. Included by `#[path]` (it needs none of the cluster harness).

use flotilla_node::kv::{KvCommand, KvConfig, KvOp, KvStore};
use flotilla_proto::etcdserverpb::PutRequest;

/// Keys in the store, and their value size: about 40 MiB of values.
pub const KEYS: usize = 160_000;
pub const VALUE_BYTES: usize = 256;

/// A store of `KEYS` keys, some with two versions, through the apply path.
pub fn store() -> KvStore {
    let mut s = KvStore::new(KvConfig::default());
    let mut index = 0;
    let mut put = |s: &mut KvStore, key: String, fill: u8| {
        index += 1;
        let op = KvOp::Put(PutRequest {
            key: key.into_bytes(),
            value: vec![fill; VALUE_BYTES],
            ..Default::default()
        });
        let out = s.apply_entry(index, KvCommand::new(op).encode_to_bytes());
        assert!(out.result.is_ok(), "put {index}: {:?}", out.result);
    };
    for i in 0..KEYS {
        put(&mut s, format!("key/{i:08}"), b'a' + (i % 26) as u8);
    }
    for i in (0..KEYS).step_by(97) {
        put(&mut s, format!("key/{i:08}"), b'z');
    }
    s
}

/// Runs `step`, prints the most bytes it had allocated at once (the test
/// binary's global allocator counts them per thread), asserts that stays
/// under `bound`, and returns what `step` returned. `what` names the step
/// in both messages.
#[allow(dead_code)]
pub fn within_peak<R>(what: &str, bound: u64, step: impl FnOnce() -> R) -> R {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(step()));
    eprintln!("{what}: {} bytes allocated at once", info.bytes_max);
    assert!(
        info.bytes_max < bound,
        "{what}: {} bytes allocated at once (bound {bound})",
        info.bytes_max
    );
    out.expect("the step ran")
}
