//! Endpoint selection and retry policy of the client.

use super::LEADER_ENDPOINT_HEADER;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Timeouts and retry bounds.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Time for a whole call, retries included.
    pub request_timeout: Duration,
    /// Time for one attempt.
    pub attempt_timeout: Duration,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_min: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            max_attempts: 20,
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        }
    }
}

impl ClientConfig {
    /// Delay before attempt `attempt + 1`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16).saturating_sub(1);
        (self.backoff_min * factor).min(self.backoff_max)
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoints were given, or one is malformed.
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
    /// The cluster answered with an error (after retries, if retryable).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

/// Whether a call that failed with `status` may be retried elsewhere: the
/// member was unreachable, not the leader, or had no leader. Writes carry
/// their sequence number, so retrying them is safe.
pub(crate) fn is_retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted
    ) || status.message().contains("not leader")
        || status.message().contains("leader changed")
        || status.message().contains("no leader")
}

#[derive(Debug)]
struct State {
    /// Index of the endpoint in use.
    current: usize,
    /// A leader endpoint learned from an error, tried next.
    leader: Option<Channel>,
}

/// The cluster's endpoints, with lazily connected channels.
#[derive(Debug)]
pub(crate) struct Endpoints {
    channels: Vec<Channel>,
    connect_timeout: Duration,
    state: Mutex<State>,
}

impl Endpoints {
    pub(crate) fn new(urls: &[String], config: &ClientConfig) -> Result<Endpoints, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::BadEndpoint("no endpoints given".into()));
        }
        let channels = urls
            .iter()
            .map(|u| connect_lazy(u, config.connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoints {
            channels,
            connect_timeout: config.connect_timeout,
            state: Mutex::new(State {
                current: 0,
                leader: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to use now, and its index (usize::MAX for a learned
    /// leader endpoint).
    pub(crate) fn current(&self) -> Result<(usize, Channel), ClientError> {
        let state = self.state();
        if let Some(leader) = &state.leader {
            return Ok((usize::MAX, leader.clone()));
        }
        Ok((state.current, self.channels[state.current].clone()))
    }

    /// After a failed attempt: go to the leader the error named, or to the
    /// next endpoint.
    pub(crate) fn after_failure(&self, index: usize, status: &tonic::Status) {
        let hint = status
            .metadata()
            .get(LEADER_ENDPOINT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|u| connect_lazy(u, self.connect_timeout).ok());
        let mut state = self.state();
        match hint {
            Some(leader) if index != usize::MAX => state.leader = Some(leader),
            _ => {
                state.leader = None;
                if index != usize::MAX {
                    state.current = (index + 1) % self.channels.len();
                }
            }
        }
    }
}

fn connect_lazy(url: &str, timeout: Duration) -> Result<Channel, ClientError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::BadEndpoint(format!("{url}: {e}")))
        .map(|e| {
            e.connect_timeout(timeout)
                .connect_with_connector_lazy(crate::coalesce::Connector::default())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let c = ClientConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(20));
        assert_eq!(c.backoff(2), Duration::from_millis(40));
        assert_eq!(c.backoff(30), c.backoff_max);
    }

    #[test]
    fn retryable_statuses() {
        assert!(is_retryable(&tonic::Status::unavailable(
            "etcdserver: no leader"
        )));
        assert!(is_retryable(&tonic::Status::failed_precondition(
            "etcdserver: not leader"
        )));
        assert!(!is_retryable(&tonic::Status::invalid_argument(
            "etcdserver: key is not provided"
        )));
    }

    #[tokio::test]
    async fn endpoints_rotate_and_follow_the_leader_hint() {
        let e = Endpoints::new(
            &["http://127.0.0.1:1".into(), "127.0.0.1:2".into()],
            &ClientConfig::default(),
        )
        .expect("valid endpoints");
        assert_eq!(e.current().expect("current").0, 0);
        e.after_failure(0, &tonic::Status::unavailable("down"));
        assert_eq!(e.current().expect("current").0, 1);
        let mut status = tonic::Status::unavailable("etcdserver: not leader");
        status.metadata_mut().insert(
            LEADER_ENDPOINT_HEADER,
            "http://127.0.0.1:3".parse().expect("ascii"),
        );
        e.after_failure(1, &status);
        assert_eq!(
            e.current().expect("current").0,
            usize::MAX,
            "the leader is tried next"
        );
        e.after_failure(usize::MAX, &tonic::Status::unavailable("gone"));
        assert_eq!(e.current().expect("current").0, 1);
        assert!(Endpoints::new(&[], &ClientConfig::default()).is_err());
    }
}
