//! The node's HTTP port: `/livez` (the process and its Raft driver run),
//! `/readyz` (this member knows the leader and has applied up to the commit
//! index it knows: safe to send it traffic), and `/metrics` (Prometheus).
//! Kubernetes probes use the first two.

use crate::driver::NodeStatus;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The driver's status.
    pub status: watch::Receiver<NodeStatus>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

/// Whether a member with this status should receive traffic.
pub fn is_ready(status: &NodeStatus) -> bool {
    status.leader.is_some() && status.applied >= status.commit
}

async fn livez(State(state): State<HttpState>) -> impl IntoResponse {
    // The status sender lives as long as the driver task.
    if state.status.has_changed().is_ok() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "raft driver stopped\n")
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let s = *state.status.borrow();
    if state.status.has_changed().is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "raft driver stopped\n".to_string(),
        );
    }
    if is_ready(&s) {
        (StatusCode::OK, "ok\n".to_string())
    } else if !s.leader.is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader known\n".to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("applying: applied {} of commit {}\n", s.applied, s.commit),
        )
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
        let metrics = Arc::new(Metrics::new());
        metrics.proposals.inc();
        metrics.observe_fsync(std::time::Duration::from_micros(300));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            HttpState {
                status: rx,
                metrics,
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
        tx.send(status(1, 9, 9)).expect("send");
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        for needle in [
            "flotilla_raft_term 3",
            "flotilla_raft_is_leader 1",
            "flotilla_raft_commit_index 9",
            "flotilla_raft_proposals_total 1",
            "flotilla_raft_fsync_duration_seconds_count 1",
        ] {
            assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
        }
        drop(tx);
        assert_eq!(get(addr, "/livez").await.0, 503, "driver gone");
        let _ = stop_tx.send(());
        server.await.expect("join").expect("serve");
    }
}
