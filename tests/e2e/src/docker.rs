//! The Docker CLI, and the cleanup of everything a run creates.
//!
//! Every container, network and volume a run creates carries the label
//! [`LABEL`] and `flotilla-e2e.pid=<pid>`. [`Cleanup`] removes the run's
//! objects when dropped (end of run, error, panic) and is also called from
//! the Ctrl-C handler; [`remove_leftovers`] removes those of earlier runs
//! whose process is gone (killed before it could clean up).

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Label on every object of every run.
pub const LABEL: &str = "flotilla-e2e";
/// Label naming the process that created the object.
pub const PID_LABEL: &str = "flotilla-e2e.pid";

/// Runs `docker ARGS`, returns its trimmed stdout; fails with its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`docker`] with owned arguments.
pub fn docker_owned(args: &[String]) -> Result<String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)
}

/// [`docker`] on a blocking thread, for async callers.
pub async fn docker_async(args: Vec<String>) -> Result<String> {
    tokio::task::spawn_blocking(move || docker_owned(&args))
        .await
        .context("docker task")?
}

/// Whether an engine answers, and its version; `Err` says why not.
pub fn engine() -> Result<String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .context("no docker CLI on PATH")?;
    if !out.status.success() {
        bail!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The labels of this process's objects.
pub fn labels() -> Vec<(String, String)> {
    vec![
        (LABEL.to_string(), "1".to_string()),
        (PID_LABEL.to_string(), std::process::id().to_string()),
    ]
}

fn ids(kind: &str, filter: &str) -> Vec<(String, Option<u32>)> {
    let listed = match kind {
        "container" => docker(&[
            "ps",
            "-a",
            "--filter",
            filter,
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
        ]),
        "network" => docker(&[
            "network",
            "ls",
            "--filter",
            filter,
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
        ]),
        _ => docker(&[
            "volume",
            "ls",
            "--filter",
            filter,
            "--format",
            &format!("{{{{.Name}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
        ]),
    };
    listed
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next()?.to_string();
            Some((id, parts.next().and_then(|p| p.parse().ok())))
        })
        .collect()
}

/// Removes containers, then networks, then volumes matching `filter` and
/// `keep` (by creator pid). Returns how many objects were removed.
fn remove(filter: &str, keep: impl Fn(Option<u32>) -> bool) -> usize {
    let mut removed = 0;
    let containers: Vec<String> = ids("container", filter)
        .into_iter()
        .filter(|(_, pid)| keep(*pid))
        .map(|(id, _)| id)
        .collect();
    if !containers.is_empty() {
        // A paused container is killed as well by `rm -f`.
        let mut args = vec!["rm".to_string(), "-f".to_string(), "-v".to_string()];
        args.extend(containers.iter().cloned());
        if docker_owned(&args).is_ok() {
            removed += containers.len();
        }
    }
    for kind in ["network", "volume"] {
        for (id, pid) in ids(kind, filter) {
            if keep(pid) && docker(&[kind, "rm", &id]).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes the objects of earlier runs whose process is no longer alive.
pub fn remove_leftovers() -> usize {
    let me = std::process::id();
    remove(&format!("label={LABEL}"), |pid| match pid {
        Some(p) if p == me => false,
        Some(p) => !std::path::Path::new(&format!("/proc/{p}")).exists(),
        None => true,
    })
}

/// Removes every object of this process.
pub fn remove_mine() -> usize {
    remove(&format!("label={PID_LABEL}={}", std::process::id()), |_| {
        true
    })
}

/// Removes this process's objects when dropped.
#[derive(Debug, Default)]
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let n = remove_mine();
        eprintln!("cleanup: removed {n} containers, networks and volumes");
    }
}

/// Polls `f` every `every` until it gives `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
