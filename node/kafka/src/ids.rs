//! Kafka node ids are `int32`; Flotilla broker ids are the members' `u64`
//! ids. The mapping: the low 31 bits of the member id, so it is the same
//! on every node and every run, non-negative, and needs no stored state.
//! Two live brokers that map to one node id would make clients mix them up:
//! [`node_ids`] finds that and names both.

use std::collections::BTreeMap;

/// The Kafka node id of Flotilla broker `id`.
pub fn node_id(id: u64) -> i32 {
    (id & 0x7fff_ffff) as i32
}

/// Two brokers with one Kafka node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "brokers {a} and {b} both map to Kafka node id {node}; Kafka clients cannot tell them apart \
     (rename one member so its id changes)"
)]
pub struct Collision {
    /// The node id.
    pub node: i32,
    /// One broker id.
    pub a: u64,
    /// The other.
    pub b: u64,
}

/// The node id of each broker in `ids`, or the first collision.
pub fn node_ids(ids: impl IntoIterator<Item = u64>) -> Result<BTreeMap<u64, i32>, Collision> {
    let mut by_node: BTreeMap<i32, u64> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for id in ids {
        let node = node_id(id);
        if let Some(&other) = by_node.get(&node)
            && other != id
        {
            return Err(Collision {
                node,
                a: other.min(id),
                b: other.max(id),
            });
        }
        by_node.insert(node, id);
        out.insert(id, node);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_the_low_31_bits_and_collisions_are_named() {
        assert_eq!(node_id(7), 7);
        assert_eq!(node_id(u64::MAX), i32::MAX);
        assert_eq!(node_id(0x8000_0000), 0);
        assert_eq!(node_id(0x1_2345_6789), 0x2345_6789);
        let m = node_ids([1, 2, 0xffff_ffff_0000_0003]).unwrap();
        assert_eq!(m[&0xffff_ffff_0000_0003], 3);
        let e = node_ids([5, 0x8000_0005]).unwrap_err();
        assert_eq!(
            e,
            Collision {
                node: 5,
                a: 5,
                b: 0x8000_0005
            }
        );
        assert!(e.to_string().contains("both map to Kafka node id 5"));
    }
}
