//! The broker's lease: one KV lease holds its registration (`broker:<id>`)
//! and every partition leadership it takes, so a broker that dies drops out
//! of placement and loses its leaderships at the same moment.
//!
//! The leader-side deadline: a keepalive sent at `t` and answered makes the
//! lease live at the KV until at least `t + TTL` (the KV's clock starts when
//! it receives the keepalive, after `t`). The broker acts as leader only
//! until `t + TTL × 3/4`, so it stops accepting writes before the lease can
//! have expired anywhere, with a quarter of the TTL left for clock rate
//! differences and scheduling delays. Only monotonic time is used.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The current lease and how long this broker may act on it.
#[derive(Debug, Default)]
pub struct LeaseClock {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Inner {
    id: i64,
    valid_until: Option<Instant>,
}

impl LeaseClock {
    /// A new lease `id`, granted by a request sent at `sent`.
    pub fn granted(&self, id: i64, sent: Instant, ttl: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = Inner {
            id,
            valid_until: Some(sent + safe_window(ttl)),
        };
    }

    /// A keepalive of lease `id` sent at `sent` was answered.
    pub fn renewed(&self, id: i64, sent: Instant, ttl: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.id == id {
            let until = sent + safe_window(ttl);
            g.valid_until = Some(g.valid_until.map_or(until, |u| u.max(until)));
        }
    }

    /// The lease is gone (expired or revoked).
    pub fn lost(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.valid_until = None;
    }

    /// The lease id, if this broker may act on it now.
    pub fn valid_id(&self, now: Instant) -> Option<i64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.valid_until {
            Some(until) if now < until => Some(g.id),
            _ => None,
        }
    }

    /// Whether this broker may act now on what it took under lease `id`
    /// (a partition leadership): `id` is its current lease and valid. A
    /// lease granted after losing `id` does not hold what `id` held.
    pub fn holds(&self, id: i64, now: Instant) -> bool {
        self.valid_id(now) == Some(id)
    }

    /// The current lease id (valid or not; 0 before the first grant).
    pub fn id(&self) -> i64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).id
    }
}

/// The part of the TTL the broker acts on: three quarters.
pub fn safe_window(ttl: Duration) -> Duration {
    ttl * 3 / 4
}

/// The lease TTL in whole seconds (the etcd API's unit), rounded up, at
/// least 1.
pub fn ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_millis().div_ceil(1000) as i64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_measured_from_the_send_and_shorter_than_the_ttl() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        let ttl = Duration::from_millis(2000);
        assert_eq!(c.valid_id(t0), None);
        c.granted(7, t0, ttl);
        assert_eq!(c.valid_id(t0 + Duration::from_millis(1499)), Some(7));
        assert_eq!(c.valid_id(t0 + Duration::from_millis(1500)), None);
        c.renewed(7, t0 + Duration::from_millis(1000), ttl);
        assert_eq!(c.valid_id(t0 + Duration::from_millis(2400)), Some(7));
        // A late answer to an older keepalive never shortens the window.
        c.renewed(7, t0, ttl);
        assert_eq!(c.valid_id(t0 + Duration::from_millis(2400)), Some(7));
        // Renewals of another lease do not count.
        c.renewed(8, t0 + Duration::from_secs(10), ttl);
        assert_eq!(c.valid_id(t0 + Duration::from_millis(2600)), None);
        c.lost();
        assert_eq!(c.valid_id(t0), None);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(100)), 1);
    }

    #[test]
    fn a_new_lease_does_not_hold_what_the_lost_one_held() {
        let c = LeaseClock::default();
        let t0 = Instant::now();
        let ttl = Duration::from_millis(2000);
        c.granted(7, t0, ttl);
        assert!(c.holds(7, t0));
        c.lost();
        assert!(!c.holds(7, t0));
        c.granted(8, t0, ttl);
        assert!(c.holds(8, t0));
        assert!(!c.holds(7, t0), "lease 7's leaderships are not lease 8's");
        assert!(
            !c.holds(8, t0 + Duration::from_millis(1500)),
            "past the safe window"
        );
    }
}
