//! The broker's client: topic administration, produce and fetch routed to
//! each partition's leader (learned from `Metadata`, refreshed when a broker
//! answers NotLeader), consumer group calls, and on top of them a batching,
//! idempotent [`Producer`] and a group [`Consumer`].

mod consumer;
mod producer;

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartFrom};
pub use producer::{Producer, ProducerConfig};

use flotilla_proto::broker as pb;
use pb::broker_admin_client::BrokerAdminClient;
use pb::broker_client::BrokerClient as RawBroker;
use pb::groups_client::GroupsClient;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerClientError {
    /// A gRPC failure (unreachable, refused request, admin error).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// A partition-level error from the broker, after retries.
    #[error("{}: {}", code_name(.0.code), .0.message)]
    Broker(pb::BrokerError),
    /// Bad input or configuration.
    #[error("{0}")]
    Invalid(String),
}

impl BrokerClientError {
    /// The partition error code, if it is one.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            BrokerClientError::Broker(e) => pb::ErrorCode::try_from(e.code).ok(),
            _ => None,
        }
    }
}

/// The name of an error code, as the CLI prints it.
pub fn code_name(code: i32) -> String {
    pb::ErrorCode::try_from(code)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("ERROR_CODE_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("ERROR_{code}"))
}

/// Whether a partition error is worth a retry after refreshing metadata.
pub fn is_retryable(code: i32) -> bool {
    use pb::ErrorCode as C;
    matches!(
        pb::ErrorCode::try_from(code),
        Ok(C::NotLeader
            | C::NotAvailable
            | C::LeaseExpiring
            | C::NotEnoughReplicas
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::RequestTimedOut
            | C::UnknownTopicOrPartition)
    )
}

/// How long one metadata or admin attempt may take before the next
/// endpoint is tried.
const ADMIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker client of one cluster.
#[derive(Debug)]
pub struct BrokerClient {
    bootstrap: Vec<Channel>,
    next: Mutex<usize>,
    channels: Mutex<HashMap<String, Channel>>,
    /// topic → leader address per partition ("" if none known).
    leaders: Mutex<HashMap<String, Vec<String>>>,
    /// How long a routed call keeps retrying.
    pub retry_timeout: Duration,
}

fn connect(url: &str) -> Result<Channel, BrokerClientError> {
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Ok(Endpoint::from_shared(url.clone())
        .map_err(|e| BrokerClientError::Invalid(format!("endpoint {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        // A node that stopped answering (paused, partitioned) must not hold
        // a call for ever; above the longest fetch long-poll (30 s).
        .timeout(Duration::from_secs(35))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl BrokerClient {
    /// A client that reaches the cluster through `endpoints` (client URLs
    /// of any nodes).
    pub fn new(endpoints: &[String]) -> Result<BrokerClient, BrokerClientError> {
        if endpoints.is_empty() {
            return Err(BrokerClientError::Invalid("no endpoints given".into()));
        }
        Ok(BrokerClient {
            bootstrap: endpoints
                .iter()
                .map(|e| connect(e))
                .collect::<Result<_, _>>()?,
            next: Mutex::new(0),
            channels: Mutex::default(),
            leaders: Mutex::default(),
            retry_timeout: Duration::from_secs(30),
        })
    }

    /// A bootstrap channel (rotating on each call, so a dead node is passed
    /// over on the next try).
    fn any(&self) -> Channel {
        let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *n = (*n + 1) % self.bootstrap.len();
        self.bootstrap[*n].clone()
    }

    fn channel(&self, addr: &str) -> Result<Channel, BrokerClientError> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(addr) {
            return Ok(c.clone());
        }
        let c = connect(addr)?;
        g.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn admin(&self) -> BrokerAdminClient<Channel> {
        BrokerAdminClient::new(self.any())
    }

    /// The groups service at any node.
    pub fn groups(&self) -> GroupsClient<Channel> {
        GroupsClient::new(self.any())
    }

    fn raw(channel: Channel) -> RawBroker<Channel> {
        RawBroker::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Runs an admin call, retrying unreachable nodes on the next endpoint.
    async fn admin_call<T, F, Fut>(&self, mut f: F) -> Result<T, BrokerClientError>
    where
        F: FnMut(BrokerAdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for _ in 0..self.bootstrap.len().max(1) * 2 {
            let r = tokio::time::timeout(ADMIN_ATTEMPT_TIMEOUT, f(self.admin()))
                .await
                .unwrap_or_else(|_| Err(tonic::Status::unavailable("no answer in time")));
            match r {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable => last = Some(s),
                Err(s) => return Err(BrokerClientError::Status(s)),
            }
        }
        Err(BrokerClientError::Status(
            last.expect("at least one attempt"),
        ))
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        config: pb::TopicConfig,
    ) -> Result<pb::TopicDescription, BrokerClientError> {
        let req = pb::CreateTopicRequest {
            name: name.to_string(),
            config: Some(config),
        };
        let r = self
            .admin_call(|mut c| {
                let req = req.clone();
                async move { c.create_topic(req).await }
            })
            .await?;
        r.topic
            .ok_or_else(|| BrokerClientError::Invalid("empty answer".into()))
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerClientError> {
        let req = pb::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.admin_call(|mut c| {
            let req = req.clone();
            async move { c.delete_topic(req).await }
        })
        .await?;
        Ok(())
    }

    /// Lists topics.
    pub async fn list_topics(&self) -> Result<Vec<pb::TopicDescription>, BrokerClientError> {
        Ok(self
            .admin_call(|mut c| async move { c.list_topics(pb::ListTopicsRequest {}).await })
            .await?
            .topics)
    }

    /// Describes a topic.
    pub async fn describe_topic(
        &self,
        name: &str,
    ) -> Result<pb::TopicDescription, BrokerClientError> {
        let req = pb::DescribeTopicRequest {
            name: name.to_string(),
        };
        self.admin_call(|mut c| {
            let req = req.clone();
            async move { c.describe_topic(req).await }
        })
        .await?
        .topic
        .ok_or_else(|| BrokerClientError::Invalid("empty answer".into()))
    }

    /// Alters a topic.
    pub async fn alter_topic(
        &self,
        req: pb::AlterTopicRequest,
    ) -> Result<pb::TopicDescription, BrokerClientError> {
        self.admin_call(|mut c| {
            let req = req.clone();
            async move { c.alter_topic(req).await }
        })
        .await?
        .topic
        .ok_or_else(|| BrokerClientError::Invalid("empty answer".into()))
    }

    /// Refreshes the leaders of `topic`'s partitions; returns the
    /// partition count.
    pub async fn refresh(&self, topic: &str) -> Result<u32, BrokerClientError> {
        let mut last = None;
        for _ in 0..self.bootstrap.len().max(1) * 2 {
            let mut raw = Self::raw(self.any());
            let call = raw.metadata(pb::MetadataRequest {
                topic: topic.to_string(),
            });
            let r = tokio::time::timeout(ADMIN_ATTEMPT_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| Err(tonic::Status::unavailable("no answer in time")));
            match r {
                Ok(r) => {
                    let t = r
                        .into_inner()
                        .topic
                        .ok_or_else(|| BrokerClientError::Invalid("empty answer".into()))?;
                    let leaders: Vec<String> =
                        t.partitions.iter().map(|p| p.leader_addr.clone()).collect();
                    let n = leaders.len() as u32;
                    self.leaders
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(topic.to_string(), leaders);
                    return Ok(n);
                }
                Err(s) if s.code() == tonic::Code::Unavailable => last = Some(s),
                Err(s) => return Err(BrokerClientError::Status(s)),
            }
        }
        Err(BrokerClientError::Status(
            last.expect("at least one attempt"),
        ))
    }

    /// The partition count of `topic` (from the cache, else the cluster).
    pub async fn partitions(&self, topic: &str) -> Result<u32, BrokerClientError> {
        if let Some(l) = self
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(l.len() as u32);
        }
        self.refresh(topic).await
    }

    async fn leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Channel>, BrokerClientError> {
        let known = self
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .map(|l| l.get(partition as usize).cloned());
        let addr = match known {
            Some(Some(a)) => a,
            Some(None) => {
                return Err(BrokerClientError::Invalid(format!(
                    "topic {topic:?} has no partition {partition}"
                )));
            }
            None => {
                self.refresh(topic).await?;
                return Box::pin(self.leader(topic, partition)).await;
            }
        };
        if addr.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.channel(&addr)?))
    }

    /// Runs a routed partition call until it succeeds, fails for good, or
    /// `retry_timeout` passes. `err` extracts the partition error.
    async fn routed<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        err: fn(&T) -> Option<&pb::BrokerError>,
        mut f: F,
    ) -> Result<T, BrokerClientError>
    where
        F: FnMut(RawBroker<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let failure = match self.leader(topic, partition).await? {
                None => {
                    BrokerClientError::Invalid(format!("{topic}-{partition} has no leader yet"))
                }
                Some(ch) => match f(Self::raw(ch)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        match err(&r) {
                            Some(e) if e.code != 0 => {
                                if !is_retryable(e.code) {
                                    return Err(BrokerClientError::Broker(e.clone()));
                                }
                                BrokerClientError::Broker(e.clone())
                            }
                            _ => return Ok(r),
                        }
                    }
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                        ) =>
                    {
                        BrokerClientError::Status(s)
                    }
                    Err(s) => return Err(BrokerClientError::Status(s)),
                },
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            let _ = self.refresh(topic).await;
        }
    }

    /// Produces a batch to one partition at its leader, retrying (with the
    /// same producer id and sequence, so at most once) on leader changes.
    pub async fn produce(
        &self,
        req: pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse, BrokerClientError> {
        let (topic, partition) = (req.topic.clone(), req.partition);
        self.routed(
            &topic,
            partition,
            |r: &pb::ProduceResponse| r.error.as_ref(),
            |mut c| {
                let req = req.clone();
                async move { c.produce(req).await }
            },
        )
        .await
    }

    /// Fetches from one partition at its leader.
    pub async fn fetch(
        &self,
        req: pb::FetchRequest,
    ) -> Result<pb::FetchResponse, BrokerClientError> {
        let (topic, partition) = (req.topic.clone(), req.partition);
        self.routed(
            &topic,
            partition,
            |r: &pb::FetchResponse| r.error.as_ref(),
            |mut c| {
                let req = req.clone();
                async move { c.fetch(req).await }
            },
        )
        .await
    }

    /// An offset of one partition.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: pb::OffsetSpec,
        timestamp_ns: i64,
    ) -> Result<u64, BrokerClientError> {
        let req = pb::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec as i32,
            timestamp_ns,
        };
        Ok(self
            .routed(
                topic,
                partition,
                |r: &pb::ListOffsetsResponse| r.error.as_ref(),
                |mut c| {
                    let req = req.clone();
                    async move { c.list_offsets(req).await }
                },
            )
            .await?
            .offset)
    }

    /// Lists consumer groups.
    pub async fn list_groups(&self) -> Result<Vec<String>, BrokerClientError> {
        Ok(self
            .groups()
            .list_groups(pb::ListGroupsRequest {})
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner()
            .groups)
    }

    /// Describes a consumer group.
    pub async fn describe_group(
        &self,
        group: &str,
    ) -> Result<pb::DescribeGroupResponse, BrokerClientError> {
        Ok(self
            .groups()
            .describe_group(pb::DescribeGroupRequest {
                group: group.to_string(),
            })
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner())
    }
}
