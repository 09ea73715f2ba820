//! [`CompactionPolicy`]: when to compact and to which revision, as etcd's
//! compactors decide it. Pure: every method takes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What auto-compaction keeps (etcd's `--auto-compaction-mode` and
/// `--auto-compaction-retention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// No automatic compaction (etcd's default).
    Off,
    /// Keep at least the history written during the last `retention`.
    Periodic {
        /// How far back history is kept.
        retention: Duration,
    },
    /// Keep the last `revisions` revisions, looking every `check_interval`.
    Revision {
        /// Revisions kept below the current one.
        revisions: i64,
        /// How often the current revision is looked at (etcd: 5 minutes).
        check_interval: Duration,
    },
}

/// etcd compacts at most hourly in periodic mode, however long the
/// retention.
const PERIODIC_COMPACT_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Periodic mode samples the revision this many times per compaction
/// interval (etcd's `retryDivisor`).
const SAMPLES_PER_INTERVAL: u32 = 10;

/// The compactor's memory. Every member keeps one and samples its applied
/// revision at [`CompactionPolicy::sample_interval`]; only the leader asks
/// [`CompactionPolicy::due`] and proposes the Compact, so a member that
/// becomes leader already knows the revisions of the retention window.
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    Periodic {
        retention: Duration,
        /// Between compactions once the first is done: the retention, at
        /// most an hour.
        compact_interval: Duration,
        /// The wait before the next compaction: the retention until the
        /// first, then `compact_interval`.
        wait: Duration,
        /// (when, revision) samples, oldest first: the newest one at least
        /// `retention` old, and those after it.
        samples: VecDeque<(Instant, i64)>,
        last_success: Instant,
        last_revision: i64,
    },
    Revision {
        revisions: i64,
        check_interval: Duration,
        latest: i64,
        last_revision: i64,
    },
}

impl CompactionPolicy {
    /// The policy for `config`, started at `now`; `None` when it is off.
    pub fn new(config: AutoCompaction, now: Instant) -> Option<CompactionPolicy> {
        let mode = match config {
            AutoCompaction::Off => return None,
            AutoCompaction::Periodic { retention } => Mode::Periodic {
                retention,
                compact_interval: retention.min(PERIODIC_COMPACT_INTERVAL_MAX),
                wait: retention,
                samples: VecDeque::new(),
                last_success: now,
                last_revision: 0,
            },
            AutoCompaction::Revision {
                revisions,
                check_interval,
            } => Mode::Revision {
                revisions: revisions.max(0),
                check_interval,
                latest: 0,
                last_revision: 0,
            },
        };
        Some(CompactionPolicy { mode })
    }

    /// How often the revision is to be sampled: a tenth of the retention
    /// (of an hour at most) in periodic mode, the check interval in
    /// revision mode. Never zero.
    pub fn sample_interval(&self) -> Duration {
        let every = match &self.mode {
            Mode::Periodic {
                compact_interval, ..
            } => *compact_interval / SAMPLES_PER_INTERVAL,
            Mode::Revision { check_interval, .. } => *check_interval,
        };
        every.max(Duration::from_millis(1))
    }

    /// Records the store's revision as sampled at `now`.
    pub fn record(&mut self, now: Instant, revision: i64) {
        match &mut self.mode {
            Mode::Periodic {
                retention, samples, ..
            } => {
                samples.push_back((now, revision));
                // Keep one sample at least `retention` old: the newest such.
                while samples
                    .get(1)
                    .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= *retention)
                {
                    samples.pop_front();
                }
            }
            Mode::Revision { latest, .. } => *latest = revision,
        }
    }

    /// The revision to compact at now, if it is time: in periodic mode the
    /// newest sample at least the retention old, once the wait since the
    /// last compaction has passed; in revision mode the latest sample less
    /// the revisions kept. Nothing at or below `compact_revision` (the
    /// store's compaction point) or already compacted by this policy.
    pub fn due(&self, now: Instant, compact_revision: i64) -> Option<i64> {
        let (at, last) = match &self.mode {
            Mode::Periodic {
                retention,
                wait,
                samples,
                last_success,
                last_revision,
                ..
            } => {
                if now.saturating_duration_since(*last_success) < *wait {
                    return None;
                }
                let (sampled, revision) = samples.front()?;
                if now.saturating_duration_since(*sampled) < *retention {
                    return None;
                }
                (*revision, *last_revision)
            }
            Mode::Revision {
                revisions,
                latest,
                last_revision,
                ..
            } => (latest - revisions, *last_revision),
        };
        (at > 0 && at != last && at > compact_revision).then_some(at)
    }

    /// The store was compacted at `revision` (by this policy's proposal, or
    /// past it already) at `now`.
    pub fn compacted(&mut self, now: Instant, revision: i64) {
        match &mut self.mode {
            Mode::Periodic {
                compact_interval,
                wait,
                last_success,
                last_revision,
                ..
            } => {
                *last_success = now;
                *last_revision = revision;
                *wait = *compact_interval;
            }
            Mode::Revision { last_revision, .. } => *last_revision = revision,
        }
    }

    /// Samples held (periodic mode), for tests of the bound.
    #[cfg(test)]
    fn samples_held(&self) -> usize {
        match &self.mode {
            Mode::Periodic { samples, .. } => samples.len(),
            Mode::Revision { .. } => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Drives a policy on a clock the test moves: samples every interval,
    /// the revision growing by `writes_per_sample`, and compacts whenever
    /// due. Returns (minute of the compaction, revision compacted at).
    fn drive(
        config: AutoCompaction,
        minutes: u32,
        writes_per_sample: i64,
    ) -> (CompactionPolicy, Vec<(f64, i64)>) {
        let t0 = Instant::now();
        let mut p = CompactionPolicy::new(config, t0).expect("on");
        let every = p.sample_interval();
        let (mut now, mut revision, mut compact_revision) = (t0, 1, 0);
        let mut done = Vec::new();
        while now.duration_since(t0) <= MIN * minutes {
            p.record(now, revision);
            if let Some(at) = p.due(now, compact_revision) {
                assert!(at <= revision, "never a future revision");
                assert!(at > compact_revision, "never behind the store");
                compact_revision = at;
                p.compacted(now, at);
                done.push((now.duration_since(t0).as_secs_f64() / 60.0, at));
            }
            now += every;
            revision += writes_per_sample;
        }
        (p, done)
    }

    #[test]
    fn off_has_no_policy() {
        assert!(CompactionPolicy::new(AutoCompaction::Off, Instant::now()).is_none());
    }

    #[test]
    fn periodic_keeps_the_retention_window_and_compacts_every_retention() {
        let retention = 10 * MIN;
        let (p, done) = drive(AutoCompaction::Periodic { retention }, 35, 1);
        assert_eq!(p.sample_interval(), MIN, "a tenth of the retention");
        // One write per minute from revision 1 at minute 0: the revision
        // sampled at minute m is m + 1. The first compaction comes one
        // retention after the start, keeping exactly the last ten minutes;
        // then every retention.
        assert_eq!(done, vec![(10.0, 1), (20.0, 11), (30.0, 21)]);
        assert!(p.samples_held() <= 11, "one retention of samples");
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly_to_the_revision_a_retention_ago() {
        let retention = 180 * MIN;
        let (p, done) = drive(AutoCompaction::Periodic { retention }, 300, 1);
        assert_eq!(p.sample_interval(), 6 * MIN, "a tenth of an hour");
        let minutes: Vec<f64> = done.iter().map(|d| d.0).collect();
        assert_eq!(minutes, vec![180.0, 240.0, 300.0]);
        for (minute, at) in done {
            // Sampled every 6 minutes at revision minute/6 + 1.
            let kept_from = (minute - 180.0) / 6.0 + 1.0;
            assert_eq!(at as f64, kept_from, "compacted at minute {minute}");
        }
        assert!(p.samples_held() <= 31, "bounded by the retention");
    }

    #[test]
    fn periodic_skips_a_revision_already_compacted_and_an_idle_store() {
        let t0 = Instant::now();
        let retention = 10 * MIN;
        let mut p = CompactionPolicy::new(AutoCompaction::Periodic { retention }, t0).expect("on");
        // No writes at all: the revision stays 1.
        for m in 0..=10 {
            p.record(t0 + MIN * m, 1);
        }
        let now = t0 + retention;
        assert_eq!(p.due(now, 0), Some(1));
        assert_eq!(p.due(now, 1), None, "the store is compacted there already");
        p.compacted(now, 1);
        for m in 11..=40 {
            p.record(t0 + MIN * m, 1);
            assert_eq!(p.due(t0 + MIN * m, 1), None, "nothing new to compact");
        }
    }

    #[test]
    fn periodic_with_irregular_samples_never_compacts_inside_the_window() {
        let t0 = Instant::now();
        let retention = 10 * MIN;
        let mut p = CompactionPolicy::new(AutoCompaction::Periodic { retention }, t0).expect("on");
        // Samples at minutes 0, 3, 9 and 14 (a leader busy or absent).
        for (m, rev) in [(0, 5), (3, 8), (9, 20), (14, 30)] {
            p.record(t0 + MIN * m, rev);
        }
        // At minute 14 only the sample of minute 3 is ten minutes old.
        assert_eq!(p.due(t0 + MIN * 14, 0), Some(8));
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let config = AutoCompaction::Revision {
            revisions: 100,
            check_interval: 5 * MIN,
        };
        let (p, done) = drive(config, 30, 40);
        assert_eq!(p.sample_interval(), 5 * MIN);
        // Revision 1 + 40 per five minutes: 1, 41, 81, 121 (minute 15), ...
        assert_eq!(done, vec![(15.0, 21), (20.0, 61), (25.0, 101), (30.0, 141)]);
    }

    #[test]
    fn revision_mode_waits_for_enough_history_and_new_writes() {
        let t0 = Instant::now();
        let mut p = CompactionPolicy::new(
            AutoCompaction::Revision {
                revisions: 10,
                check_interval: MIN,
            },
            t0,
        )
        .expect("on");
        p.record(t0, 10);
        assert_eq!(p.due(t0, 0), None, "fewer than 10 revisions below");
        p.record(t0 + MIN, 15);
        assert_eq!(p.due(t0 + MIN, 0), Some(5));
        p.compacted(t0 + MIN, 5);
        p.record(t0 + MIN * 2, 15);
        assert_eq!(p.due(t0 + MIN * 2, 5), None, "no writes since");
        p.record(t0 + MIN * 3, 16);
        assert_eq!(p.due(t0 + MIN * 3, 5), Some(6));
        assert_eq!(
            p.due(t0 + MIN * 3, 9),
            None,
            "an explicit Compact went further"
        );
    }
}
