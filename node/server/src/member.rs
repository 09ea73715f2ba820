//! Running one member as a process: bind the configured addresses, start,
//! and stop on Ctrl-C or SIGTERM — a leader first hands leadership to the
//! most caught-up voter, then everything stops within
//! `--shutdown-timeout-ms` — or end at once, with a non-zero exit code,
//! when a part of the member fails for good (a storage error above all).
//!
//! Two hidden environment variables exist for process-level tests only and
//! must never be set in production: `FLOTILLA_TEST_ONLY_HOSTS_FILE` (member
//! names resolve from that hosts-format file alone, re-read on every
//! lookup; see [`flotilla_client::resolve::HostsFileResolve`]) and
//! `FLOTILLA_TEST_ONLY_FAIL_FSYNC_AFTER=N` (the storage's `N`th fsync from
//! start and every later one fail, through
//! [`flotilla_storage::FaultyFs`]).

use crate::config::{NodeArgs, NodeConfig};
use crate::server::{NodeIo, NodeListeners, RunningNode, start_with};
use anyhow::{Context, Result, anyhow};
use flotilla_client::resolve::HostsFileResolve;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Test only: resolve member names from this hosts-format file.
const TEST_HOSTS_FILE_ENV: &str = "FLOTILLA_TEST_ONLY_HOSTS_FILE";
/// Test only: fail the storage's Nth fsync and every later one.
const TEST_FAIL_FSYNC_ENV: &str = "FLOTILLA_TEST_ONLY_FAIL_FSYNC_AFTER";

/// How long a member that failed for good spends stopping its servers (so
/// that requests in flight get an answer) before the process ends.
const FATAL_STOP: Duration = Duration::from_millis(500);
/// How long the runtime waits for its blocking threads at exit.
const RUNTIME_EXIT: Duration = Duration::from_millis(200);

/// tokio's own setting of its worker thread count, honoured as it is.
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// The runtime's worker threads on `cores` cores, or `None` to leave the
/// count to tokio when `TOKIO_WORKER_THREADS` sets it: one fewer than the
/// cores, at least one. The Raft driver runs on a thread of its own that
/// is busy whenever writes are, so as many workers as cores would
/// oversubscribe the cores under writes: the workers and the driver then
/// take turns, and each turn is a context switch.
fn worker_threads(cores: usize, overridden: bool) -> Option<usize> {
    (!overridden).then(|| cores.saturating_sub(1).max(1))
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Resolves when the process is asked to stop.
async fn stop_requested() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The test-only IO hooks the environment asks for (see the module docs).
fn test_io() -> Result<NodeIo> {
    let mut io = NodeIo::default();
    if let Some(path) = std::env::var_os(TEST_HOSTS_FILE_ENV) {
        tracing::warn!(file = ?path, "TEST ONLY: member names resolve from a test hosts file");
        io.resolve = Arc::new(HostsFileResolve::new(path));
    }
    if let Ok(n) = std::env::var(TEST_FAIL_FSYNC_ENV) {
        let n: u64 = n
            .trim()
            .parse()
            .with_context(|| format!("{TEST_FAIL_FSYNC_ENV} must be a count"))?;
        tracing::warn!(after = n, "TEST ONLY: storage fsyncs will fail");
        let fs = flotilla_storage::FaultyFs::new();
        fs.fail_fsync_after(n.max(1));
        io.fs = Some(Arc::new(fs));
    }
    Ok(io)
}

/// How the member ended.
enum Ended {
    /// Asked to stop, and stopped within its time.
    Stopped,
    /// A part failed for good.
    Failed(String),
}

async fn run(config: NodeConfig) -> Result<Ended> {
    let io = test_io()?;
    let listeners = NodeListeners {
        client: bind("clients", &config.client_listen).await?,
        peer: bind("peers", &config.peer_listen).await?,
        http: bind("HTTP", &config.metrics_listen).await?,
    };
    let shutdown_timeout = config.shutdown_timeout;
    let node = start_with(config, listeners, io)
        .await
        .context("cannot start the member")?;
    tokio::select! {
        _ = stop_requested() => {}
        reason = node.failed() => {
            // Stop what can be stopped quickly, then end the process.
            let _ = tokio::time::timeout(FATAL_STOP, node.shutdown()).await;
            return Ok(Ended::Failed(reason));
        }
    }
    // A second Ctrl-C or SIGTERM ends the stop at once.
    tokio::select! {
        stopped = stop(node, shutdown_timeout) => stopped.map(|()| Ended::Stopped),
        _ = stop_requested() => Err(anyhow!("asked again to stop: stopping at once")),
    }
}

/// The orderly stop: a leader hands leadership to the most caught-up voter
/// (at most half of `timeout`), then every part stops, all within
/// `timeout`. Writes already acknowledged are committed on a majority, so
/// nothing acknowledged is lost however this ends.
async fn stop(node: RunningNode, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    tracing::info!(timeout_ms = timeout.as_millis() as u64, "stopping");
    match node.hand_off().run().await {
        Ok(done) => tracing::info!(
            outcome = %done,
            took_ms = started.elapsed().as_millis() as u64,
            "leadership hand-off done"
        ),
        Err(e) => tracing::warn!(error = %e, "leadership hand-off failed; stopping anyway"),
    }
    node.shutdown_until(deadline)
        .await
        .context("the member stopped with an error")?;
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}

/// Runs one member until Ctrl-C or SIGTERM: what `flotilla-node` and the
/// hidden `flotilla node` do. Sets up logging to stderr (`RUST_LOG`,
/// default `info`). Exit codes: 0 after a clean stop, 1 when the member
/// cannot start (a corrupt data directory, a port taken), fails while
/// running (a storage error: logged as one `fatal:` line, exit within a
/// second), or could not stop within its time; 2 on bad configuration.
pub fn run_member(args: NodeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match NodeConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-node: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let overridden = std::env::var_os(WORKER_THREADS_ENV).is_some();
    if let Some(workers) = worker_threads(cores, overridden) {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ended = runtime.block_on(run(config));
    // Threads blocked in IO (a hung fsync) must not hold the exit up.
    runtime.shutdown_timeout(RUNTIME_EXIT);
    match ended {
        Ok(Ended::Stopped) => ExitCode::SUCCESS,
        Ok(Ended::Failed(reason)) => {
            tracing::error!(%reason, "fatal: the member cannot go on; exiting");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("flotilla-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn one_core_is_left_to_the_raft_driver() {
        assert_eq!(worker_threads(1, false), Some(1));
        assert_eq!(worker_threads(2, false), Some(1));
        assert_eq!(worker_threads(8, false), Some(7));
    }

    #[test]
    fn tokio_worker_threads_keeps_precedence() {
        assert_eq!(worker_threads(8, true), None);
    }
}
