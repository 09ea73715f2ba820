//! Running one member as a process: bind the configured addresses, start,
//! stop cleanly on Ctrl-C or SIGTERM.

use crate::config::{NodeArgs, NodeConfig};
use crate::server::{NodeListeners, start};
use anyhow::{Context, Result};
use std::process::ExitCode;
use tokio::net::TcpListener;

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

async fn run(config: NodeConfig) -> Result<()> {
    let listeners = NodeListeners {
        client: bind("clients", &config.client_listen).await?,
        peer: bind("peers", &config.peer_listen).await?,
        http: bind("HTTP", &config.metrics_listen).await?,
    };
    let node = start(config, listeners)
        .await
        .context("cannot start the member")?;
    let failed = tokio::select! {
        () = stop_requested() => None,
        reason = node.failed() => Some(reason),
    };
    tracing::info!("stopping");
    node.shutdown()
        .await
        .context("the member stopped with an error")?;
    if let Some(reason) = failed {
        anyhow::bail!(reason);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs one member until Ctrl-C or SIGTERM: what `flotilla-node` and the
/// hidden `flotilla node` do. Sets up logging to stderr (`RUST_LOG`,
/// default `info`). Exit codes: 0 after a clean stop, 1 when the member
/// cannot start or fails, 2 on bad configuration.
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
