//! One member over on-disk storage in a temporary folder, with the Watch
//! and Lease services on a loopback port and the lease expiry loop: the
//! fixture of the watch and lease tests.

use super::{WatchConfig, WatchService};
use crate::driver::{Driver, DriverConfig, RaftHandle, Transport};
use crate::kv::{KvCommand, KvOp, KvOutput, KvResponse, Lessor};
use crate::lease::{LeaseExpiryConfig, LeaseService, spawn_lease_expiry};
use crate::state::{NodeStateMachine, StateConfig};
use flotilla_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use flotilla_proto::mvccpb::KeyValue;
use flotilla_raft::{Message, Role};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

/// A single member has no one to talk to.
struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, _messages: Vec<Message>) {}
}

/// A running single-member node.
pub(crate) struct TestNode {
    pub(crate) handle: RaftHandle<NodeStateMachine>,
    pub(crate) lessor: Arc<Mutex<Lessor>>,
    pub(crate) channel: Channel,
    /// The state machine's event broadcast.
    pub(crate) events: tokio::sync::broadcast::Sender<Arc<crate::state::AppliedEvents>>,
    stops: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts the member, waits until it leads, serves the services.
    pub(crate) async fn start(watch: WatchConfig, state: StateConfig) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft = crate::test_support::single_voter_raft(dir.path(), |_| {});
        let (sm, lessor) = NodeStateMachine::new(state);
        let events = sm.event_sender();
        let watched = sm.watched_keys();
        let gauge = sm.gauge();
        let member_ids = sm.member_ids();
        let (driver, handle) = Driver::new(
            raft,
            sm,
            NoPeers,
            DriverConfig {
                tick_interval: Duration::from_millis(5),
                ..DriverConfig::default()
            },
        );
        let mut stops = Vec::new();
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(async move {
            driver
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("storage works");
        });
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        spawn_lease_expiry(
            handle.clone(),
            lessor.clone(),
            LeaseExpiryConfig {
                check_interval: Duration::from_millis(20),
            },
            async {
                let _ = stopped.await;
            },
        );

        let watch = WatchService::new(handle.clone(), events.clone(), watch).with_watched(watched);
        let ctx = crate::api::ApiContext {
            raft: handle.clone(),
            header: crate::api::HeaderSource::new(7, 1, handle.watch_status()),
            member_id: 1,
            max_request_bytes: 1 << 20,
            forwarder: crate::api::Forwarder::new(1, Duration::from_secs(5)),
            lessor: lessor.clone(),
            admission: crate::api::Admission::new(
                crate::api::AdmissionConfig {
                    member_id: 1,
                    limits: crate::kv::KvConfig::default().limits(),
                    max_request_bytes: 1 << 20,
                    quota_bytes: None,
                },
                gauge,
            ),
            raising_nospace: Arc::default(),
            features: crate::api::FeatureGate::new(
                1,
                crate::transport::FEATURES,
                crate::transport::PeerFeatures::default(),
                member_ids.clone(),
            ),
        };
        let forward = crate::api::WriteForwardConfig::for_request_limit(1 << 20);
        let writes = crate::api::Writes::new(
            ctx.clone(),
            crate::api::WriteForwarder::spawn(ctx.clone(), 7, forward),
        );
        let lease = LeaseService::new(ctx, writes);
        let closers = (watch.stream_closer(), lease.stream_closer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(watch.into_server())
                .add_service(lease.into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stopped.await;
                    closers.0.close();
                    closers.1.close();
                }),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let node = TestNode {
            handle,
            lessor,
            channel,
            events,
            stops,
            _dir: dir,
        };
        node.wait_leader().await;
        node
    }

    async fn wait_leader(&self) {
        for _ in 0..1000 {
            if self.handle.status().role == Role::Leader
                && self.lessor.lock().expect("lessor").is_primary()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the single member did not become leader");
    }

    /// Proposes `op`; panics on a rejection.
    pub(crate) async fn apply(&self, op: KvOp) -> KvOutput {
        let output = self
            .handle
            .propose(KvCommand::new(op).encode_to_bytes())
            .await
            .expect("proposal applied");
        assert!(output.result.is_ok(), "{:?}", output.result);
        output
    }

    /// Puts `key` = `value` (with `lease` unless 0); returns the revision.
    pub(crate) async fn put(&self, key: &str, value: &str, lease: i64) -> i64 {
        let out = self
            .apply(KvOp::Put(PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
                ..Default::default()
            }))
            .await;
        assert!(matches!(out.result, Ok(KvResponse::Put(_))));
        out.revision
    }

    /// Deletes `key`; returns the revision.
    pub(crate) async fn delete(&self, key: &str) -> i64 {
        self.apply(KvOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }))
        .await
        .revision
    }

    /// The live value of `key`, read linearizably.
    pub(crate) async fn get(&self, key: &str) -> Option<KeyValue> {
        let req = RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        self.handle
            .read(move |sm| sm.kv().range(&req).expect("range").kvs.into_iter().next())
            .await
            .expect("read")
    }

    /// Stops the server, the expiry loop and the driver.
    pub(crate) fn stop(mut self) {
        for stop in self.stops.drain(..).rev() {
            let _ = stop.send(());
        }
    }
}
