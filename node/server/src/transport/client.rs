//! [`GrpcTransport`]: the driver's [`Transport`] over gRPC streams, one
//! queue and one task per peer.

use super::TransportConfig;
use super::batch::Batcher;
use super::fault::FaultControl;
use super::peer::PeerTask;
use super::stats::{Counter, TransportMetrics, TransportStats};
use crate::driver::Transport;
use flotilla_client::resolve::Resolver;
use flotilla_raft::{Message, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

/// Why a peer cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer's URL is not a valid gRPC endpoint.
    #[error("peer {peer}: invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The peer.
        peer: NodeId,
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Sends Raft messages to peers over one long-lived gRPC stream each.
///
/// `send` never waits: each message goes into its peer's bounded queue, and a
/// full queue drops it (Raft resends). A task per peer drains the queue into
/// batches. Cheap to clone; clones share the peers, so the node can keep one
/// to follow membership changes while the driver owns another. When the last
/// clone is dropped (or [`shutdown`](Self::shutdown) is called) every peer
/// task stops.
#[derive(Clone)]
pub struct GrpcTransport {
    shared: Arc<Shared>,
}

struct Shared {
    cluster_id: u64,
    config: Arc<TransportConfig>,
    faults: FaultControl,
    metrics: TransportMetrics,
    runtime: tokio::runtime::Handle,
    connector: flotilla_client::coalesce::Connector,
    peers: Mutex<HashMap<NodeId, PeerEntry>>,
}

/// A peer's queue and task; dropping it stops the task.
struct PeerEntry {
    url: String,
    queue: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

impl Drop for PeerEntry {
    fn drop(&mut self) {
        // Dropping the queue's sender ends an idle task; aborting also ends
        // one that is connecting or backing off, without waiting for it.
        self.task.abort();
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<(NodeId, String)> = self
            .lock_peers()
            .iter()
            .map(|(id, p)| (*id, p.url.clone()))
            .collect();
        f.debug_struct("GrpcTransport")
            .field("cluster_id", &self.shared.cluster_id)
            .field("peers", &peers)
            .field("stats", &self.stats())
            .finish()
    }
}

impl GrpcTransport {
    /// A transport with no peers yet, for messages of cluster `cluster_id`,
    /// resolving peers' names through the system's resolver.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: peer tasks are spawned on the current one.
    pub fn new(cluster_id: u64, config: TransportConfig, faults: FaultControl) -> Self {
        GrpcTransport::with_resolver(cluster_id, config, faults, Resolver::system())
    }

    /// [`GrpcTransport::new`], resolving peers' names through `resolver`.
    /// A peer URL may name its host (`http://n1.peers.ns.svc:2380`): every
    /// connection attempt resolves it again, so a peer that restarts on a
    /// new address is reached there, and one whose name does not resolve
    /// yet is retried with the usual backoff.
    pub fn with_resolver(
        cluster_id: u64,
        config: TransportConfig,
        faults: FaultControl,
        resolver: Resolver,
    ) -> Self {
        GrpcTransport {
            shared: Arc::new(Shared {
                cluster_id,
                config: Arc::new(config),
                faults,
                metrics: TransportMetrics::default(),
                runtime: tokio::runtime::Handle::current(),
                // One batch per peer per `Ready` already; the driver
                // yields for it to leave before its own disk write.
                connector: flotilla_client::coalesce::Connector::new(resolver).direct(),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<NodeId, PeerEntry>> {
        // The map stays consistent through a panic elsewhere: entries are
        // inserted and removed whole.
        self.shared.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault layer of this transport.
    pub fn faults(&self) -> &FaultControl {
        &self.shared.faults
    }

    /// The live counters, to share with this node's
    /// [`PeerService`](super::PeerService) so both sides count in one place.
    pub fn metrics(&self) -> TransportMetrics {
        self.shared.metrics.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> TransportStats {
        self.shared.metrics.snapshot()
    }

    /// The peers and their URLs.
    pub fn peers(&self) -> HashMap<NodeId, String> {
        self.lock_peers()
            .iter()
            .map(|(id, p)| (*id, p.url.clone()))
            .collect()
    }

    /// Adds `peer` at `url` (e.g. `http://10.0.0.2:2380`), or moves it to a
    /// new URL. Adding it again at the same URL keeps its connection.
    pub fn add_peer(&self, peer: NodeId, url: &str) -> Result<(), TransportError> {
        let mut peers = self.lock_peers();
        if peers.get(&peer).is_some_and(|p| p.url == url) {
            return Ok(());
        }
        let entry = self.spawn_peer(peer, url)?;
        // Replacing drops the old entry, which stops its task.
        peers.insert(peer, entry);
        Ok(())
    }

    /// Forgets `peer`; messages to it are dropped from now on.
    pub fn remove_peer(&self, peer: NodeId) {
        let removed = self.lock_peers().remove(&peer);
        drop(removed);
    }

    /// Makes the peers exactly `peers` (this node excluded): adds the new
    /// ones, moves changed URLs and removes the rest. Checks every URL first,
    /// so an error changes nothing.
    pub fn set_peers(&self, peers: &HashMap<NodeId, String>) -> Result<(), TransportError> {
        for (id, url) in peers {
            endpoint(*id, url, &self.shared.config)?;
        }
        self.lock_peers().retain(|id, _| peers.contains_key(id));
        for (id, url) in peers {
            self.add_peer(*id, url)?;
        }
        Ok(())
    }

    /// Stops every peer task and forgets every peer.
    pub fn shutdown(&self) {
        let peers = std::mem::take(&mut *self.lock_peers());
        drop(peers);
    }

    fn spawn_peer(&self, peer: NodeId, url: &str) -> Result<PeerEntry, TransportError> {
        let s = &self.shared;
        let endpoint = endpoint(peer, url, &s.config)?;
        let (queue_tx, queue_rx) = mpsc::channel(s.config.queue_messages.max(1));
        let task = PeerTask {
            peer,
            endpoint,
            connector: s.connector.clone(),
            queue: queue_rx,
            config: s.config.clone(),
            faults: s.faults.clone(),
            metrics: s.metrics.clone(),
            batcher: Batcher::new(peer, s.cluster_id, &s.config, s.metrics.clone()),
        };
        Ok(PeerEntry {
            url: url.to_string(),
            queue: queue_tx,
            task: s.runtime.spawn(task.run()),
        })
    }
}

/// The endpoint for `url` with the configured timeouts and keep-alive.
fn endpoint(peer: NodeId, url: &str, config: &TransportConfig) -> Result<Endpoint, TransportError> {
    let invalid = |reason: String| TransportError::InvalidUrl {
        peer,
        url: url.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| invalid(e.to_string()))?;
    if endpoint.uri().host().is_none() {
        return Err(invalid("no host".into()));
    }
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true))
}

impl Transport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let s = &self.shared;
        let peers = self.lock_peers();
        for m in messages {
            if s.faults.drops(m.to) {
                s.metrics.incr(Counter::DroppedFault);
                continue;
            }
            let Some(peer) = peers.get(&m.to) else {
                tracing::trace!(to = %m.to, "no such peer; dropping message");
                s.metrics.incr(Counter::DroppedUnknownPeer);
                continue;
            };
            match peer.queue.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.metrics.incr(Counter::DroppedQueueFull)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    s.metrics.incr(Counter::DroppedDisconnected)
                }
            }
        }
    }
}
