//! Tests of [`Lessor`]: expiry only on the leader, full TTLs on promotion,
//! keepalive, bounded expiry batches, retry of unapplied revokes.

use super::*;
use std::time::{Duration, Instant};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn follower_never_expires_and_promotion_restarts_full_ttl() {
    let t0 = Instant::now();
    let mut l = Lessor::new(10, secs(3));
    l.apply(
        &[LeaseChange::Granted {
            id: 1,
            ttl_secs: 10,
        }],
        t0,
    );
    assert!(l.expired(t0 + secs(100)).is_empty());
    assert_eq!(l.keepalive(1, t0), Err(KeepAliveError::NotPrimary));
    assert_eq!(l.time_to_live(1, t0), Some((10, 10)));
    // Becomes leader late: the lease still gets its whole TTL from now.
    let t1 = t0 + secs(50);
    l.promote(t1);
    assert!(l.expired(t1 + secs(9)).is_empty());
    assert_eq!(
        l.time_to_live(1, t1 + Duration::from_millis(4500)),
        Some((6, 10))
    );
    assert_eq!(l.expired(t1 + secs(10)), vec![1]);
}

#[test]
fn keepalive_refreshes_and_revoke_forgets() {
    let t0 = Instant::now();
    let mut l = Lessor::new(10, secs(30));
    l.promote(t0);
    l.apply(
        &[
            LeaseChange::Granted { id: 1, ttl_secs: 5 },
            LeaseChange::Granted { id: 2, ttl_secs: 5 },
        ],
        t0,
    );
    assert_eq!(l.keepalive(1, t0 + secs(4)), Ok(5));
    assert_eq!(l.expired(t0 + secs(6)), vec![2]);
    assert_eq!(l.expired(t0 + secs(9)), vec![1]);
    l.apply(&[LeaseChange::Revoked { id: 1 }], t0);
    assert_eq!(l.keepalive(1, t0), Err(KeepAliveError::NotFound));
    assert_eq!(l.time_to_live(1, t0), None);
    l.demote();
    assert!(l.expired(t0 + secs(1000)).is_empty());
}

#[test]
fn expired_is_bounded_and_retried_until_revoked() {
    let t0 = Instant::now();
    let mut l = Lessor::new(2, secs(3));
    l.promote(t0);
    let grants: Vec<_> = (1..=5)
        .map(|id| LeaseChange::Granted { id, ttl_secs: 1 })
        .collect();
    l.apply(&grants, t0);
    let t = t0 + secs(2);
    assert_eq!(l.expired(t), vec![1, 2]);
    assert_eq!(l.expired(t), vec![3, 4]);
    assert_eq!(l.expired(t), vec![5]);
    assert!(
        l.expired(t).is_empty(),
        "reported ones wait for the retry interval"
    );
    l.apply(&[LeaseChange::Revoked { id: 1 }], t);
    assert_eq!(l.expired(t + secs(3)), vec![2, 3]);
    l.reset([(9, 4)], t);
    assert_eq!(l.len(), 1);
    assert_eq!(l.expired(t + secs(4)), vec![9]);
}
