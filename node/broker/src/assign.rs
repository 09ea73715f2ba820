//! Consumer group assignment: Kafka's range assignor, deterministic over the
//! sorted members and each topic's partitions. Pure.

use std::collections::BTreeMap;

/// Assigns every partition of `topics` (name → partition count) to
/// `members`: per topic, the sorted members get consecutive ranges, the
/// first `count % members` one partition more. Returns each member's
/// `(topic, partition)` list, sorted.
pub fn range_assign(
    members: &[String],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Vec<(String, u32)>> {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out: BTreeMap<String, Vec<(String, u32)>> =
        sorted.iter().map(|m| (m.clone(), Vec::new())).collect();
    if sorted.is_empty() {
        return out;
    }
    let n = sorted.len() as u32;
    for (topic, &count) in topics {
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in sorted.iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            let list = out.get_mut(m).expect("every member has a list");
            list.extend((next..next + take).map(|p| (topic.clone(), p)));
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn ranges_follow_the_sorted_members() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let a = range_assign(&members, &topics(&[("t", 7)]));
        assert_eq!(
            a["a"],
            vec![("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
        assert_eq!(a["b"], vec![("t".into(), 3), ("t".into(), 4)]);
        assert_eq!(a["c"], vec![("t".into(), 5), ("t".into(), 6)]);
        // More members than partitions: some get none.
        let a = range_assign(&members, &topics(&[("t", 2)]));
        assert!(a["c"].is_empty());
        assert!(range_assign(&[], &topics(&[("t", 2)])).is_empty());
    }

    proptest! {
        /// Every partition is assigned exactly once, loads differ by at most
        /// one per topic, and the result does not depend on member order.
        #[test]
        fn each_partition_exactly_once(
            n_members in 1usize..8,
            counts in proptest::collection::vec(0u32..40, 1..4),
            seed in any::<u64>(),
        ) {
            let members: Vec<String> = (0..n_members).map(|i| format!("m{i}")).collect();
            let ts: BTreeMap<String, u32> =
                counts.iter().enumerate().map(|(i, c)| (format!("t{i}"), *c)).collect();
            let a = range_assign(&members, &ts);
            let mut shuffled = members.clone();
            shuffled.rotate_left((seed as usize) % n_members);
            prop_assert_eq!(&a, &range_assign(&shuffled, &ts));
            for (t, &count) in &ts {
                let mut seen: Vec<u32> = a.values().flatten().filter(|(x, _)| x == t).map(|(_, p)| *p).collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, (0..count).collect::<Vec<_>>());
                let loads: Vec<usize> = a.values().map(|l| l.iter().filter(|(x, _)| x == t).count()).collect();
                prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
            }
        }
    }
}
