//! The receiving side checked with a raw gRPC client, and the sending side
//! checked against a service that records what arrives: cluster id refusal,
//! garbage skipped, order kept, faults applied.

use super::tests::test_config;
use super::*;
use flotilla_proto::raft::raft_peer_client::RaftPeerClient;
use flotilla_proto::raft::{PeerAck, PeerBatch, RaftMessage};
use flotilla_raft::{Message, MessageBody, NodeId, Term};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTER: u64 = 7;

type Received = Arc<Mutex<Vec<Message>>>;

/// A peer service on loopback that records the messages delivered to it.
struct Recording {
    addr: SocketAddr,
    received: Received,
    metrics: TransportMetrics,
    features: PeerFeatures,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Recording {
    async fn start() -> Recording {
        Recording::start_on("127.0.0.1:0").await
    }

    /// A recording service listening on `addr`.
    async fn start_on(addr: &str) -> Recording {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Received::default();
        let sink = {
            let received = received.clone();
            move |m: Message| received.lock().expect("lock").push(m)
        };
        let metrics = TransportMetrics::default();
        let service = PeerService::new(CLUSTER, sink, &test_config(), metrics.clone());
        let features = service.peer_features();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, service, async {
                let _ = stopped.await;
            })
            .await
            .expect("server ran");
        });
        Recording {
            addr,
            received,
            metrics,
            features,
            stop,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Message> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits (bounded) until `count` messages arrived.
    async fn wait_received(&self, count: usize) -> Vec<Message> {
        for _ in 0..1000 {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {count} messages arrived", self.received().len());
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.server)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

fn heartbeat(round: u64) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::Heartbeat { commit: 0, round },
    }
}

async fn send_raw(addr: SocketAddr, batches: Vec<PeerBatch>) -> Result<PeerAck, tonic::Status> {
    let mut client = RaftPeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let ack = tokio::time::timeout(
        Duration::from_secs(20),
        client.stream(tokio_stream::iter(batches)),
    )
    .await
    .expect("call ends");
    ack.map(|a| a.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_another_cluster_is_refused() {
    let r = Recording::start().await;
    let batch = PeerBatch {
        cluster_id: CLUSTER + 1,
        messages: vec![RaftMessage::from(&heartbeat(1))],
        features: FEATURES,
    };
    let status = send_raw(r.addr, vec![batch]).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("cluster id mismatch"),
        "{status:?}"
    );
    assert!(r.received().is_empty());
    assert_eq!(r.metrics.snapshot().batches_refused, 1);

    // A transport configured for another cluster never gets a message in:
    // its streams are refused, and it keeps backing off and retrying.
    let foreign = GrpcTransport::new(CLUSTER + 1, test_config(), FaultControl::default());
    foreign.add_peer(NodeId(2), &r.url()).expect("valid URL");
    let mut sender = foreign.clone();
    for _ in 0..200 {
        crate::driver::Transport::send(&mut sender, vec![heartbeat(2)]);
        if foreign.stats().stream_failures >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        foreign.stats().stream_failures >= 2,
        "{:?}",
        foreign.stats()
    );
    assert!(r.received().is_empty());
    foreign.shutdown();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_message_is_counted_and_skipped() {
    let r = Recording::start().await;
    let garbage = RaftMessage {
        from: 1,
        to: 2,
        term: 3,
        body: None,
    };
    let batch = PeerBatch {
        cluster_id: CLUSTER,
        messages: vec![
            RaftMessage::from(&heartbeat(1)),
            garbage,
            RaftMessage::from(&heartbeat(2)),
        ],
        features: 0,
    };
    let ack = send_raw(r.addr, vec![batch]).await.expect("accepted");
    assert_eq!((ack.batches, ack.messages), (1, 2));
    assert_eq!(r.received(), vec![heartbeat(1), heartbeat(2)]);
    let stats = r.metrics.snapshot();
    assert_eq!(stats.decode_errors, 1);
    assert_eq!(stats.messages_received, 2);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_keeps_order_and_applies_faults() {
    let r = Recording::start().await;
    let faults = FaultControl::new(42);
    let transport = GrpcTransport::new(CLUSTER, test_config(), faults.clone());
    transport.add_peer(NodeId(2), &r.url()).expect("valid URL");
    let mut sender = transport.clone();
    let send = |sender: &mut GrpcTransport, rounds: std::ops::Range<u64>| {
        crate::driver::Transport::send(sender, rounds.map(heartbeat).collect());
    };

    // In order, batched.
    send(&mut sender, 0..100);
    let got = r.wait_received(100).await;
    let rounds: Vec<u64> = got
        .iter()
        .map(|m| match m.body {
            MessageBody::Heartbeat { round, .. } => round,
            _ => panic!("unexpected {m:?}"),
        })
        .collect();
    assert_eq!(rounds, (0..100).collect::<Vec<_>>());

    // Partitioned: dropped before queueing, counted.
    faults.partition([NodeId(2)]);
    send(&mut sender, 100..110);
    assert_eq!(transport.stats().dropped_fault, 10);
    faults.heal();

    // Every message dropped by the dice.
    faults.set_drop_probability(1.0);
    send(&mut sender, 110..120);
    assert_eq!(transport.stats().dropped_fault, 20);
    faults.clear();

    // Delayed, still delivered; unknown peers counted.
    faults.set_delay(Duration::from_millis(30));
    send(&mut sender, 120..125);
    let got = r.wait_received(105).await;
    assert_eq!(got.len(), 105, "nothing dropped by a fault arrived");
    let unknown = Message {
        to: NodeId(9),
        ..heartbeat(0)
    };
    crate::driver::Transport::send(&mut sender, vec![unknown]);
    let stats = transport.stats();
    assert_eq!(stats.dropped_unknown_peer, 1);
    assert_eq!(stats.messages_sent, 105);
    assert_eq!(stats.connects, 1);

    transport.shutdown();
    r.stop().await;
}

/// A peer URL may name its host, as in Kubernetes. While the name does not
/// resolve, messages are dropped and the failed lookups counted, and the
/// transport keeps retrying (never an error); once it resolves, messages
/// flow; when the name moves to another address — the peer restarted on a
/// new IP — the transport reconnects there, because every connection
/// attempt resolves the name again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_peer_is_resolved_again_on_every_connection() {
    use flotilla_client::resolve::{Resolver, StaticResolve};
    let table = StaticResolve::new();
    let resolver = Resolver::new(Arc::new(table.clone()), Default::default());
    let first = Recording::start().await;
    let port = first.addr.port();
    let transport = GrpcTransport::with_resolver(
        CLUSTER,
        test_config(),
        FaultControl::default(),
        resolver.clone(),
    );
    transport
        .add_peer(NodeId(2), &format!("http://peer-2.flotilla.test:{port}"))
        .expect("a name is a valid peer URL");
    let mut sender = transport.clone();
    let mut round = 0;
    let mut send_until = async |what: &str, done: &dyn Fn() -> bool| {
        for _ in 0..2000 {
            if done() {
                return;
            }
            round += 1;
            crate::driver::Transport::send(&mut sender, vec![heartbeat(round)]);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}: {:?}", transport.stats());
    };

    send_until("failed lookups", &|| resolver.failures() >= 3).await;
    assert!(first.received().is_empty());
    assert!(transport.stats().connect_failures >= 3);

    table.set("peer-2.flotilla.test", &["127.0.0.1".parse().expect("ip")]);
    send_until("delivery once the name resolves", &|| {
        !first.received().is_empty()
    })
    .await;

    // The peer comes back on another address, same name and port.
    let second = Recording::start_on(&format!("127.0.0.2:{port}")).await;
    first.stop().await;
    table.set("peer-2.flotilla.test", &["127.0.0.2".parse().expect("ip")]);
    send_until("delivery at the new address", &|| {
        !second.received().is_empty()
    })
    .await;
    assert!(transport.stats().reconnects >= 1, "{:?}", transport.stats());
    transport.shutdown();
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_features_of_each_senders_last_batch_are_recorded() {
    let r = Recording::start().await;
    let batch = |cluster_id: u64, features: u64| PeerBatch {
        cluster_id,
        messages: vec![RaftMessage::from(&heartbeat(1))],
        features,
    };
    // Another cluster's batch tells nothing.
    send_raw(r.addr, vec![batch(CLUSTER + 1, WINDOWED_SESSIONS)])
        .await
        .expect_err("refused");
    assert_eq!(r.features.get(1), None);
    send_raw(r.addr, vec![batch(CLUSTER, WINDOWED_SESSIONS)])
        .await
        .expect("accepted");
    assert_eq!(r.features.get(1), Some(WINDOWED_SESSIONS));
    // A member of the previous release sends no features: the last batch
    // counts.
    send_raw(r.addr, vec![batch(CLUSTER, 0)])
        .await
        .expect("accepted");
    assert_eq!(r.features.get(1), Some(0));
    assert!(!r.features.has(1, WINDOWED_SESSIONS));

    // A transport advertises this release's features, unless told not to.
    for advertised in [FEATURES, 0] {
        let config = TransportConfig {
            advertised_features: advertised,
            ..test_config()
        };
        let transport = GrpcTransport::new(CLUSTER, config, FaultControl::default());
        transport.add_peer(NodeId(2), &r.url()).expect("valid URL");
        let mut sender = transport.clone();
        let from_five = Message {
            from: NodeId(5),
            ..heartbeat(advertised)
        };
        crate::driver::Transport::send(&mut sender, vec![from_five]);
        for _ in 0..1000 {
            if r.features.get(5) == Some(advertised) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.features.get(5), Some(advertised));
        transport.shutdown();
    }
    r.stop().await;
}
