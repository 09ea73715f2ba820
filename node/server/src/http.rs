//! The node's HTTP port, for Kubernetes' probes and hooks and for
//! Prometheus:
//!
//! | path | 200 when | 503 when | use |
//! |---|---|---|---|
//! | `/livez` | the Raft driver runs | it stopped, or a fatal error (a failed fsync, a server that died) ended the member | liveness probe: restart the container |
//! | `/readyz` | the member knows the leader and has caught up: applied everything committed when it started or joined (a ReadIndex barrier), and stays ready while it knows a leader | no leader known, still catching up, or not live | readiness probe: route client traffic |
//! | `/prestop` | this member does not lead (any more): on the leader it first hands leadership to the most caught-up voter and waits, bounded, until it knows the new leader | the hand-off did not finish within its bound (the body says why) | preStop `httpGet` hook, so a rolling restart never waits out an election |
//! | `/metrics` | always | — | Prometheus scrape |
//!
//! A member that meets a fatal error also exits (non-zero) within a second,
//! so `/livez` failing is a second line of defence. `/readyz` does not flap
//! while a busy follower applies: once caught up, it only needs a leader.

use crate::driver::NodeStatus;
use crate::lifecycle::{HandOffError, HandedOff};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What `/prestop` runs: the member's leadership hand-off.
pub type PreStop = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<HandedOff, HandOffError>> + Send>> + Send + Sync,
>;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The driver's status.
    pub status: watch::Receiver<NodeStatus>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the member caught up after start or joining
    /// ([`crate::lifecycle::track_readiness`]).
    pub caught_up: watch::Receiver<bool>,
    /// Why the member failed for good, once it has.
    pub fatal: watch::Receiver<Option<String>>,
    /// The hand-off `/prestop` runs.
    pub pre_stop: PreStop,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("status", &*self.status.borrow())
            .field("caught_up", &*self.caught_up.borrow())
            .field("fatal", &*self.fatal.borrow())
            .finish_non_exhaustive()
    }
}

/// Whether a member with this status, having caught up once, should
/// receive traffic.
pub fn is_ready(status: &NodeStatus, caught_up: bool) -> bool {
    status.leader.is_some() && caught_up
}

/// Why the member is not live, if it is not.
fn not_live(state: &HttpState) -> Option<String> {
    if let Some(reason) = state.fatal.borrow().as_ref() {
        return Some(format!("fatal: {reason}"));
    }
    // The status sender lives as long as the driver task.
    state
        .status
        .has_changed()
        .is_err()
        .then(|| "raft driver stopped".to_string())
}

async fn livez(State(state): State<HttpState>) -> impl IntoResponse {
    match not_live(&state) {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if let Some(reason) = not_live(&state) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"));
    }
    let s = *state.status.borrow();
    let caught_up = *state.caught_up.borrow();
    if is_ready(&s, caught_up) {
        (StatusCode::OK, "ok\n".to_string())
    } else if !s.leader.is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader known\n".to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "catching up with the leader: applied {} of commit {}\n",
                s.applied, s.commit
            ),
        )
    }
}

async fn prestop(State(state): State<HttpState>) -> impl IntoResponse {
    match (state.pre_stop)().await {
        Ok(done) => {
            tracing::info!(outcome = %done, "preStop hand-off done");
            (StatusCode::OK, format!("ok: {done}\n"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "preStop hand-off failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let s = *state.status.borrow();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&s),
    )
}

/// The routes, for serving or for tests.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/prestop", get(prestop))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the HTTP port on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::{NodeId, Role, Term};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf[9..12].parse().expect("status code");
        (code, buf)
    }

    fn status(leader: u64, commit: u64, applied: u64) -> NodeStatus {
        NodeStatus {
            id: NodeId(1),
            term: Term(3),
            role: if leader == 1 {
                Role::Leader
            } else {
                Role::Follower
            },
            leader: NodeId(leader),
            commit,
            applied,
        }
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let (tx, rx) = watch::channel(status(0, 5, 5));
        let (caught_up_tx, caught_up) = watch::channel(false);
        let (fatal_tx, fatal) = watch::channel(None);
        let metrics = Arc::new(Metrics::new());
        metrics.proposals.inc();
        metrics.observe_fsync(std::time::Duration::from_micros(300));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The hand-off answers from a script: first done, then timed out.
        let outcomes = Arc::new(std::sync::Mutex::new(vec![
            Err(HandOffError::TimedOut {
                bound: std::time::Duration::from_secs(2),
                detail: "still leading".into(),
            }),
            Ok(HandedOff::Transferred {
                to: NodeId(2),
                leader: NodeId(2),
            }),
        ]));
        let pre_stop: PreStop = Arc::new(move || {
            let next = outcomes.lock().expect("lock").pop().expect("scripted");
            Box::pin(async move { next })
        });
        let server = tokio::spawn(serve(
            listener,
            HttpState {
                status: rx,
                metrics,
                caught_up,
                fatal,
                pre_stop,
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        assert_eq!(get(addr, "/livez").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "no leader known: {body}");
        tx.send(status(2, 9, 7)).expect("send");
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("applied 7 of commit 9"), "{body}");
        caught_up_tx.send_replace(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        // Once caught up, applying behind the commit index (a busy
        // follower) does not make it unready; losing the leader does.
        tx.send(status(2, 90, 70)).expect("send");
        assert_eq!(get(addr, "/readyz").await.0, 200, "no flapping");
        tx.send(status(0, 90, 90)).expect("send");
        assert_eq!(get(addr, "/readyz").await.0, 503, "no leader");
        tx.send(status(1, 9, 9)).expect("send");
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/prestop").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("handed to member 2"), "{body}");
        let (code, body) = get(addr, "/prestop").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("still leading"), "{body}");
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        for needle in [
            "flotilla_raft_term 3",
            "flotilla_raft_is_leader 1",
            "flotilla_raft_commit_index 9",
            "flotilla_raft_proposals_total 1",
            "flotilla_raft_fsync_duration_seconds_count 1",
            "flotilla_resolve_failures_total 0",
            "flotilla_raft_snapshots_installed_total 0",
        ] {
            assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
        }
        fatal_tx.send_replace(Some("raft storage failed: injected".into()));
        let (code, body) = get(addr, "/livez").await;
        assert_eq!(code, 503, "fatal");
        assert!(body.contains("injected"), "{body}");
        assert_eq!(
            get(addr, "/readyz").await.0,
            503,
            "a failed member is not ready"
        );
        fatal_tx.send_replace(None);
        drop(tx);
        assert_eq!(get(addr, "/livez").await.0, 503, "driver gone");
        let _ = stop_tx.send(());
        server.await.expect("join").expect("serve");
    }
}
