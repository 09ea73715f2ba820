//! [`Forwarder`]: channels to other members' client URLs, for the
//! follower's forwarding stream to the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 keep-alive pings on forwarding channels, so that a connection to
/// a member that vanished without closing it (a pod gone with its IP) is
/// noticed and the next call reconnects, resolving the name again.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a keep-alive ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A bounded cache of lazily connected channels, by URL. Cheap to clone.
/// A channel resolves its URL's host on every (re)connection.
#[derive(Clone, Debug)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    channels_max: usize,
    timeout: Duration,
    connector: flotilla_client::coalesce::Connector,
}

impl Forwarder {
    /// A cache of at most `channels_max` channels; each forwarded call may
    /// take `timeout`. Names resolve through the system's resolver.
    pub fn new(channels_max: usize, timeout: Duration) -> Self {
        Forwarder {
            channels: Arc::default(),
            channels_max: channels_max.max(1),
            timeout,
            connector: flotilla_client::coalesce::Connector::default(),
        }
    }

    /// This forwarder, resolving names through `resolver`.
    pub fn with_resolver(mut self, resolver: flotilla_client::resolve::Resolver) -> Self {
        self.connector = flotilla_client::coalesce::Connector::new(resolver);
        self
    }

    /// The channel to `url`, made (without connecting) if not cached.
    pub fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::unavailable(format!("etcdserver: bad leader URL {url}: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        let channel = endpoint.connect_with_connector_lazy(self.connector.clone());
        if channels.len() >= self.channels_max {
            // Members change rarely; dropping everything keeps this simple
            // and the bound exact.
            channels.clear();
        }
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}
