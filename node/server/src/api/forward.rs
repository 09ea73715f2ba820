//! [`Forwarder`]: channels to other members' client URLs, for the
//! follower's forwarding stream to the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// A bounded cache of lazily connected channels, by URL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    channels_max: usize,
    timeout: Duration,
}

impl Forwarder {
    /// A cache of at most `channels_max` channels; each forwarded call may
    /// take `timeout`.
    pub fn new(channels_max: usize, timeout: Duration) -> Self {
        Forwarder {
            channels: Arc::default(),
            channels_max: channels_max.max(1),
            timeout,
        }
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
            .timeout(self.timeout);
        let channel = endpoint.connect_with_connector_lazy(flotilla_client::coalesce::Connector);
        if channels.len() >= self.channels_max {
            // Members change rarely; dropping everything keeps this simple
            // and the bound exact.
            channels.clear();
        }
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}
