//! An in-memory broker behind [`BrokerAdmin`], for Topic reconcile tests:
//! it records every call that changes something, keeps the broker's rules
//! (partitions only grow, a replication factor no larger than the brokers,
//! names unique) and can be made unreachable.

use super::AdminError;
use super::broker::{BrokerAdmin, NewTopic, PartitionInfo, TopicInfo, TopicSettings};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One call that changed something, as the test asserts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerCall {
    /// CreateTopic.
    Create(NewTopic),
    /// AlterTopic adding partitions up to the count.
    AddPartitions(String, u32),
    /// AlterTopic changing settings.
    Alter(String, TopicSettings),
    /// DeleteTopic.
    Delete(String),
}

#[derive(Debug)]
struct State {
    brokers: Vec<String>,
    default_rf: u32,
    topics: BTreeMap<String, TopicInfo>,
    calls: Vec<BrokerCall>,
    endpoints_seen: Vec<Vec<String>>,
    unreachable: bool,
}

/// The fake broker; clones share it.
#[derive(Clone, Debug)]
pub struct FakeBroker {
    state: Arc<Mutex<State>>,
}

/// The defaults a created topic gets for settings left unset.
pub const DEFAULT_SETTINGS: TopicSettings = TopicSettings {
    retention_ms: Some(7 * 24 * 3600 * 1000),
    retention_bytes: Some(-1),
    segment_bytes: Some(1 << 30),
    min_insync_replicas: Some(1),
    fsync: Some(super::broker::FsyncPolicy::Never),
};

impl FakeBroker {
    /// A broker on the members named `brokers`, default replication
    /// factor `default_rf`.
    pub fn new(brokers: &[&str], default_rf: u32) -> Self {
        FakeBroker {
            state: Arc::new(Mutex::new(State {
                brokers: brokers.iter().map(|b| b.to_string()).collect(),
                default_rf,
                topics: BTreeMap::new(),
                calls: Vec::new(),
                endpoints_seen: Vec::new(),
                unreachable: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake broker lock")
    }

    /// Makes every call fail as if no member answered (or answer again).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// Every changing call since the last take.
    pub fn take_calls(&self) -> Vec<BrokerCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The endpoint lists the operator passed, oldest first.
    pub fn endpoints_seen(&self) -> Vec<Vec<String>> {
        self.lock().endpoints_seen.clone()
    }

    /// The topic as the broker holds it.
    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.lock().topics.get(name).cloned()
    }

    /// Creates a topic behind the operator's back (as `flotilla topic
    /// create` would).
    pub fn insert(&self, topic: &NewTopic) {
        let mut s = self.lock();
        let info = s.build(topic);
        s.topics.insert(topic.name.clone(), info);
    }

    fn enter(&self, endpoints: &[String]) -> Result<MutexGuard<'_, State>, AdminError> {
        let mut s = self.lock();
        s.endpoints_seen.push(endpoints.to_vec());
        if endpoints.is_empty() {
            return Err(AdminError::NoEndpoints);
        }
        if s.unreachable {
            return Err(AdminError::Unreachable {
                endpoints: endpoints.join(","),
                reason: "connection refused".to_string(),
            });
        }
        Ok(s)
    }
}

fn refused(code: &str, message: String) -> AdminError {
    AdminError::Refused {
        endpoint: "fake".to_string(),
        code: code.to_string(),
        message,
    }
}

impl State {
    fn partition(&self, id: u32, rf: u32) -> PartitionInfo {
        let n = self.brokers.len().max(1);
        let replicas: Vec<String> = (0..rf as usize)
            .map(|r| self.brokers[(id as usize + r) % n].clone())
            .collect();
        PartitionInfo {
            id,
            leader: replicas.first().cloned(),
            isr: replicas.clone(),
            replicas,
        }
    }

    fn build(&self, topic: &NewTopic) -> TopicInfo {
        let rf = topic.replication_factor.unwrap_or(self.default_rf);
        let d = DEFAULT_SETTINGS;
        let s = topic.settings;
        TopicInfo {
            name: topic.name.clone(),
            replication_factor: rf,
            partitions: (0..topic.partitions)
                .map(|p| self.partition(p, rf))
                .collect(),
            settings: TopicSettings {
                retention_ms: s.retention_ms.or(d.retention_ms),
                retention_bytes: s.retention_bytes.or(d.retention_bytes),
                segment_bytes: s.segment_bytes.or(d.segment_bytes),
                min_insync_replicas: s.min_insync_replicas.or(d.min_insync_replicas),
                fsync: s.fsync.or(d.fsync),
            },
        }
    }
}

impl BrokerAdmin for FakeBroker {
    async fn describe_topic(
        &self,
        endpoints: &[String],
        name: &str,
    ) -> Result<Option<TopicInfo>, AdminError> {
        Ok(self.enter(endpoints)?.topics.get(name).cloned())
    }

    async fn create_topic(&self, endpoints: &[String], topic: &NewTopic) -> Result<(), AdminError> {
        let mut s = self.enter(endpoints)?;
        if s.topics.contains_key(&topic.name) {
            return Err(refused(
                "AlreadyExists",
                format!("topic {} already exists", topic.name),
            ));
        }
        let rf = topic.replication_factor.unwrap_or(s.default_rf);
        if rf as usize > s.brokers.len() {
            return Err(refused(
                "InvalidArgument",
                format!(
                    "replication factor {rf} is larger than the {} brokers",
                    s.brokers.len()
                ),
            ));
        }
        let info = s.build(topic);
        s.topics.insert(topic.name.clone(), info);
        s.calls.push(BrokerCall::Create(topic.clone()));
        Ok(())
    }

    async fn add_partitions(
        &self,
        endpoints: &[String],
        name: &str,
        partitions: u32,
    ) -> Result<(), AdminError> {
        let mut s = self.enter(endpoints)?;
        let Some(topic) = s.topics.get(name).cloned() else {
            return Err(refused("NotFound", format!("no topic {name}")));
        };
        let have = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        if partitions <= have {
            return Err(refused(
                "InvalidArgument",
                format!("topic {name} has {have} partitions; partitions only grow"),
            ));
        }
        let added: Vec<PartitionInfo> = (have..partitions)
            .map(|p| s.partition(p, topic.replication_factor))
            .collect();
        if let Some(t) = s.topics.get_mut(name) {
            t.partitions.extend(added);
        }
        s.calls
            .push(BrokerCall::AddPartitions(name.to_string(), partitions));
        Ok(())
    }

    async fn alter_topic(
        &self,
        endpoints: &[String],
        name: &str,
        settings: &TopicSettings,
    ) -> Result<(), AdminError> {
        let mut s = self.enter(endpoints)?;
        let Some(t) = s.topics.get_mut(name) else {
            return Err(refused("NotFound", format!("no topic {name}")));
        };
        let c = &mut t.settings;
        c.retention_ms = settings.retention_ms.or(c.retention_ms);
        c.retention_bytes = settings.retention_bytes.or(c.retention_bytes);
        c.segment_bytes = settings.segment_bytes.or(c.segment_bytes);
        c.min_insync_replicas = settings.min_insync_replicas.or(c.min_insync_replicas);
        c.fsync = settings.fsync.or(c.fsync);
        s.calls.push(BrokerCall::Alter(name.to_string(), *settings));
        Ok(())
    }

    async fn delete_topic(&self, endpoints: &[String], name: &str) -> Result<(), AdminError> {
        let mut s = self.enter(endpoints)?;
        s.topics.remove(name);
        s.calls.push(BrokerCall::Delete(name.to_string()));
        Ok(())
    }
}
