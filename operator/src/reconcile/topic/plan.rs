//! The pure half of a Topic reconcile: the broker calls that take the
//! topic from what the broker describes to what the spec asks, and what
//! the spec asks that the broker cannot do.

use super::settings;
use crate::admin::AdminError;
use crate::admin::broker::{BrokerAdmin, NewTopic, TopicInfo, TopicSettings};
use crate::crd::Topic;

/// One broker call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicStep {
    /// Create the topic.
    Create(NewTopic),
    /// Grow it to this many partitions.
    AddPartitions(u32),
    /// Change these settings.
    Alter(TopicSettings),
}

impl TopicStep {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicStep::Create(_) => "TopicCreated",
            TopicStep::AddPartitions(_) => "PartitionsAdded",
            TopicStep::Alter(_) => "TopicConfigChanged",
        }
    }

    /// What it does, for events and messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            TopicStep::Create(t) => format!(
                "create topic {name} with {} partitions, replication factor {}",
                t.partitions,
                t.replication_factor
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "the cluster's default".to_string())
            ),
            TopicStep::AddPartitions(n) => format!("grow topic {name} to {n} partitions"),
            TopicStep::Alter(s) => format!("change settings of topic {name}: {s:?}"),
        }
    }

    /// Makes the call.
    pub async fn run<B: BrokerAdmin>(
        &self,
        broker: &B,
        endpoints: &[String],
        name: &str,
    ) -> Result<(), AdminError> {
        match self {
            TopicStep::Create(t) => broker.create_topic(endpoints, t).await,
            TopicStep::AddPartitions(n) => broker.add_partitions(endpoints, name, *n).await,
            TopicStep::Alter(s) => broker.alter_topic(endpoints, name, s).await,
        }
    }
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPlan {
    /// The calls, in order.
    pub steps: Vec<TopicStep>,
    /// What the spec asks that cannot be done, if anything.
    pub not_supported: Option<String>,
}

/// The plan for `topic` given the broker's description (`None`: absent).
pub fn plan(topic: &Topic, current: Option<&TopicInfo>) -> TopicPlan {
    let want_partitions = u32::try_from(topic.spec.partitions.max(1)).unwrap_or(1);
    let want_rf = topic
        .spec
        .replication_factor
        .and_then(|r| u32::try_from(r).ok());
    let want = settings(topic);
    let Some(current) = current else {
        return TopicPlan {
            steps: vec![TopicStep::Create(NewTopic {
                name: topic.topic_name().to_string(),
                partitions: want_partitions,
                replication_factor: want_rf,
                settings: want,
            })],
            not_supported: None,
        };
    };
    let mut steps = Vec::new();
    let mut refused = Vec::new();
    let have = u32::try_from(current.partitions.len()).unwrap_or(u32::MAX);
    if want_partitions > have {
        steps.push(TopicStep::AddPartitions(want_partitions));
    } else if want_partitions < have {
        refused.push(format!(
            "partitions can only grow: the topic has {have}, the spec asks for {want_partitions}"
        ));
    }
    if let Some(rf) = want_rf.filter(|rf| *rf != current.replication_factor) {
        refused.push(format!(
            "the replication factor of an existing topic cannot change: it is {}, the spec asks for {rf}",
            current.replication_factor
        ));
    }
    let changes = want.changes_from(&current.settings);
    if !changes.is_empty() {
        steps.push(TopicStep::Alter(changes));
    }
    TopicPlan {
        steps,
        not_supported: (!refused.is_empty()).then(|| refused.join("; ")),
    }
}
