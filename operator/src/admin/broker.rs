//! The broker's topic administration as the operator uses it: the
//! [`BrokerAdmin`] trait over Flotilla's `flotilla.broker.v1` admin calls,
//! and the plain types a Topic reconcile compares.

use super::AdminError;
use std::future::Future;

/// When a partition log is fsynced, as the broker takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every produced batch.
    Always,
    /// Every `n` records.
    EveryRecords(u64),
    /// Every `n` milliseconds.
    EveryIntervalMs(u64),
    /// Never: replication alone keeps records.
    Never,
}

/// Per-topic settings. `None` leaves a setting at the broker's default
/// (on create) or as it is (on alter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Records older than this are deleted; `-1` keeps them.
    pub retention_ms: Option<i64>,
    /// Partition bytes beyond this are deleted, oldest segment first; `-1` keeps them.
    pub retention_bytes: Option<i64>,
    /// A segment rolls at this size.
    pub segment_bytes: Option<i64>,
    /// In-sync replicas an `acks=all` write needs.
    pub min_insync_replicas: Option<i32>,
    /// The fsync policy.
    pub fsync: Option<FsyncPolicy>,
}

impl TopicSettings {
    /// The settings of `self` that `current` does not already have: what
    /// an alter must send. Settings `self` leaves unset are never changed.
    pub fn changes_from(&self, current: &TopicSettings) -> TopicSettings {
        fn differs<T: PartialEq + Copy>(want: Option<T>, have: Option<T>) -> Option<T> {
            want.filter(|w| have != Some(*w))
        }
        TopicSettings {
            retention_ms: differs(self.retention_ms, current.retention_ms),
            retention_bytes: differs(self.retention_bytes, current.retention_bytes),
            segment_bytes: differs(self.segment_bytes, current.segment_bytes),
            min_insync_replicas: differs(self.min_insync_replicas, current.min_insync_replicas),
            fsync: differs(self.fsync, current.fsync),
        }
    }

    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == TopicSettings::default()
    }
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// Replicas per partition; the cluster's default when `None`.
    pub replication_factor: Option<u32>,
    /// Settings.
    pub settings: TopicSettings,
}

/// One partition as the broker describes it. Brokers are named by their
/// member names, which are the pods' names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: u32,
    /// Its leader, if it has one.
    pub leader: Option<String>,
    /// Its replicas.
    pub replicas: Vec<String>,
    /// Its in-sync replicas.
    pub isr: Vec<String>,
}

/// A topic as the broker describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Its partitions, by id.
    pub partitions: Vec<PartitionInfo>,
    /// Its effective settings (defaults filled in).
    pub settings: TopicSettings,
}

/// The topic calls the operator makes. Each takes the cluster's client
/// endpoints, tried in order until one answers; any member serves them.
pub trait BrokerAdmin: Send + Sync + 'static {
    /// The topic `name`, or `None` when it does not exist.
    fn describe_topic(
        &self,
        endpoints: &[String],
        name: &str,
    ) -> impl Future<Output = Result<Option<TopicInfo>, AdminError>> + Send;
    /// Creates a topic; an existing topic of that name is an error.
    fn create_topic(
        &self,
        endpoints: &[String],
        topic: &NewTopic,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    /// Grows topic `name` to `partitions` partitions.
    fn add_partitions(
        &self,
        endpoints: &[String],
        name: &str,
        partitions: u32,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    /// Changes the settings given in `settings`.
    fn alter_topic(
        &self,
        endpoints: &[String],
        name: &str,
        settings: &TopicSettings,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    /// Deletes topic `name` and its data; a missing topic is not an error.
    fn delete_topic(
        &self,
        endpoints: &[String],
        name: &str,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_settings_that_differ_are_changed() {
        let current = TopicSettings {
            retention_ms: Some(1000),
            retention_bytes: Some(-1),
            segment_bytes: Some(1 << 20),
            min_insync_replicas: Some(2),
            fsync: Some(FsyncPolicy::Never),
        };
        let want = TopicSettings {
            retention_ms: Some(1000),
            segment_bytes: Some(1 << 21),
            fsync: Some(FsyncPolicy::EveryRecords(10)),
            ..TopicSettings::default()
        };
        let changes = want.changes_from(&current);
        assert_eq!(
            changes,
            TopicSettings {
                segment_bytes: Some(1 << 21),
                fsync: Some(FsyncPolicy::EveryRecords(10)),
                ..TopicSettings::default()
            }
        );
        assert!(current.changes_from(&current).is_empty());
        assert!(TopicSettings::default().changes_from(&current).is_empty());
    }
}
