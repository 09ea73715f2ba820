//! `flotilla-operator`: runs RaftClusters on Kubernetes. Competes for the
//! leader Lease, then reconciles until SIGTERM/SIGINT, serving `/metrics`,
//! `/healthz` and `/readyz` throughout.

use anyhow::Context as _;
use clap::Parser;
use flotilla_operator::admin::GrpcAdmin;
use flotilla_operator::http::{HttpState, serve};
use flotilla_operator::leader::Elector;
use flotilla_operator::metrics::Metrics;
use flotilla_operator::plan::PlanLimits;
use flotilla_operator::reconcile::Context;
use flotilla_operator::reconcile::topic::TopicContext;
use kube::runtime::events::Reporter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Runs Flotilla clusters (RaftCluster resources) on Kubernetes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "FLOTILLA_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Namespaces to watch (comma-separated or repeated); every namespace when empty.
    #[arg(
        long = "namespace",
        env = "FLOTILLA_OPERATOR_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `flotilla_operator=debug`.
    #[arg(long, env = "FLOTILLA_OPERATOR_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// `json` (one object per line) or `text`.
    #[arg(long, env = "FLOTILLA_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
    /// Compete for a Lease before reconciling (off only for a single replica).
    #[arg(long, env = "FLOTILLA_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(
        long,
        env = "FLOTILLA_OPERATOR_LEASE_NAME",
        default_value = "flotilla-operator"
    )]
    lease_name: String,
    /// The Lease's namespace (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "flotilla-operator")]
    identity: String,
    /// Seconds a Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between renewals (well below --lease-seconds).
    #[arg(long, default_value_t = 5)]
    renew_seconds: u64,
    /// A member more entries behind the leader than this is not healthy:
    /// not promoted, and rolling updates wait for it.
    #[arg(
        long,
        env = "FLOTILLA_OPERATOR_MAX_LAG_ENTRIES",
        default_value_t = 1000
    )]
    max_lag_entries: u64,
    /// Milliseconds to connect to a member.
    #[arg(long, default_value_t = 2000)]
    node_connect_timeout_ms: u64,
    /// Milliseconds a member call may take.
    #[arg(long, default_value_t = 5000)]
    node_request_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_logs(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args)?;
    anyhow::ensure!(
        args.renew_seconds > 0 && args.renew_seconds * 2 <= args.lease_seconds,
        "--renew-seconds must be positive and at most half of --lease-seconds"
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(addr = %args.metrics_addr, namespaces = ?args.namespaces, "flotilla-operator starting");

    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("shutting down");
        let _ = signal_tx.send(true);
    });

    let elector = args.leader_election.then(|| {
        Elector::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &args.identity,
            Duration::from_secs(args.lease_seconds),
        )
    });
    let mut lost = false;
    if let Some(elector) = &elector {
        if !acquire(
            elector,
            &ready,
            Duration::from_secs(args.renew_seconds),
            stop_rx.clone(),
        )
        .await
        {
            let _ = stop_tx.send(true);
            http.await??;
            return Ok(());
        }
        metrics.set_leader(true);
        tracing::info!(identity = %args.identity, "leading");
        let renewer = renew(
            elector.clone(),
            ready.clone(),
            Duration::from_secs(args.renew_seconds),
            Duration::from_secs(args.lease_seconds),
            stop_tx.clone(),
            stop_rx.clone(),
        );
        let controller = run_controller(&args, client.clone(), metrics.clone(), stop_rx.clone());
        let (renewed, ()) = tokio::join!(renewer, controller);
        lost = !renewed;
    } else {
        ready.store(true, Ordering::Relaxed);
        metrics.set_leader(true);
        run_controller(&args, client.clone(), metrics.clone(), stop_rx.clone()).await;
    }
    metrics.set_leader(false);
    if let Some(elector) = elector.as_ref().filter(|_| !lost)
        && let Err(e) = elector.release().await
    {
        tracing::warn!(error = %e, "releasing the lease failed; a standby takes over when it expires");
    }
    let _ = stop_tx.send(true);
    http.await??;
    anyhow::ensure!(
        !lost,
        "lost the leader lease; exiting so that a new leader takes over cleanly"
    );
    Ok(())
}

async fn run_controller(
    args: &Args,
    client: kube::Client,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let admin = GrpcAdmin::new(
        Duration::from_millis(args.node_connect_timeout_ms),
        Duration::from_millis(args.node_request_timeout_ms),
    );
    let reporter = Reporter {
        controller: "flotilla-operator".to_string(),
        instance: Some(args.identity.clone()),
    };
    let topics = TopicContext::new(
        client.clone(),
        admin.clone(),
        reporter.clone(),
        metrics.clone(),
    );
    let mut ctx = Context::new(client.clone(), admin, reporter, metrics);
    ctx.limits = PlanLimits {
        max_lag_entries: args.max_lag_entries,
    };
    tokio::join!(
        flotilla_operator::controller::run(
            client.clone(),
            Arc::new(ctx),
            args.namespaces.clone(),
            stop.clone()
        ),
        flotilla_operator::controller::run_topics(
            client,
            Arc::new(topics),
            args.namespaces.clone(),
            stop
        ),
    );
}

/// Waits until this replica holds the lease (true) or shutdown (false).
async fn acquire(
    elector: &Elector,
    ready: &AtomicBool,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> bool {
    loop {
        match elector.try_lead().await {
            Ok(leading) => {
                ready.store(true, Ordering::Relaxed);
                if leading {
                    return true;
                }
            }
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "lease round failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Renews every `every` until shutdown (true) or until the lease could not
/// be renewed within `lease` (false; stops the controller).
async fn renew(
    elector: Elector,
    ready: Arc<AtomicBool>,
    every: Duration,
    lease: Duration,
    stop_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return true,
        }
        match elector.try_lead().await {
            Ok(true) => {
                last = tokio::time::Instant::now();
                ready.store(true, Ordering::Relaxed);
            }
            Ok(false) => {
                tracing::error!("another replica took the lease");
                let _ = stop_tx.send(true);
                return false;
            }
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "renewing the lease failed");
                // Stop before the lease can have expired for the others.
                if last.elapsed() + every >= lease {
                    tracing::error!("could not renew the lease in time");
                    let _ = stop_tx.send(true);
                    return false;
                }
            }
        }
    }
}
