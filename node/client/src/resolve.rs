//! Name resolution for a member's outgoing connections: to its peers, to
//! the leader when forwarding, and for the keepalive relay.
//!
//! Members' URLs may carry DNS names — under Kubernetes a headless
//! Service's `<pod>.<service>.<namespace>.svc` — and a pod that restarts
//! comes back on a new IP. So a name is resolved afresh on every connection
//! attempt, never cached here (the system resolver applies its own TTLs),
//! and a name that does not resolve fails that one attempt: the caller backs
//! off and tries again. That also holds at start: a member of a StatefulSet
//! whose pods come up in parallel starts while its peers' names do not
//! resolve yet. Failures are counted (`flotilla_resolve_failures_total`) and
//! logged once per host and failing streak (a warning; the retries in
//! between at debug level), and a host that resolves again is logged too.
//!
//! What looks a name up is a [`Resolve`]: [`SystemResolve`] in production
//! (the operating system's resolver through tokio), [`StaticResolve`] — a
//! table a test changes while the member runs — in tests, and
//! [`HostsFileResolve`], a hosts-format file read on every lookup, for
//! process-level tests only. [`Resolver`] wraps one with the accounting; a
//! [`Connector`](crate::coalesce::Connector) holds a `Resolver`.

use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A lookup in progress.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Looks a host name up. Called with names only: IP literals never reach
/// it. May return an error or no address when the name does not resolve.
pub trait Resolve: std::fmt::Debug + Send + Sync + 'static {
    /// The addresses of `host`, each with `port`.
    fn lookup(&self, host: &str, port: u16) -> Lookup;
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread,
/// through `tokio::net::lookup_host`): `/etc/hosts`, DNS, search domains.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolve;

impl Resolve for SystemResolve {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// A resolution table for tests: names resolve to what was last
/// [`set`](StaticResolve::set), others not at all. Clones share the table.
#[derive(Clone, Debug, Default)]
pub struct StaticResolve {
    table: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
}

impl StaticResolve {
    /// An empty table: no name resolves.
    pub fn new() -> StaticResolve {
        StaticResolve::default()
    }

    /// From now on `host` resolves to `ips`.
    pub fn set(&self, host: &str, ips: &[IpAddr]) {
        self.lock().insert(host.to_string(), ips.to_vec());
    }

    /// From now on `host` does not resolve.
    pub fn remove(&self, host: &str) {
        self.lock().remove(host);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<IpAddr>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Resolve for StaticResolve {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let found = self.lock().get(host).cloned();
        let host = host.to_string();
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} is not in the test's table"),
                )),
            }
        })
    }
}

/// **Test only.** Resolves names from a file in `/etc/hosts` format (`IP
/// name [name...]` per line, `#` comments), read again on every lookup, and
/// nothing else: a name the file does not list does not resolve. Process
/// tests point a member at such a file with the hidden
/// `FLOTILLA_TEST_ONLY_HOSTS_FILE` variable and rewrite it to move a member
/// to a new address, without touching the machine's own `/etc/hosts`.
#[derive(Clone, Debug)]
pub struct HostsFileResolve {
    path: PathBuf,
}

impl HostsFileResolve {
    /// Resolves from the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> HostsFileResolve {
        HostsFileResolve { path: path.into() }
    }

    /// The addresses `text` (hosts-file format) lists for `host`.
    fn parse(text: &str, host: &str) -> Vec<IpAddr> {
        text.lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let ip: IpAddr = fields.next()?.parse().ok()?;
                fields
                    .any(|name| name.eq_ignore_ascii_case(host))
                    .then_some(ip)
            })
            .collect()
    }
}

impl Resolve for HostsFileResolve {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let (path, host) = (self.path.clone(), host.to_string());
        Box::pin(async move {
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            };
            let text = read.await.map_err(io::Error::other)?.map_err(|e| {
                io::Error::new(e.kind(), format!("test hosts file {}: {e}", path.display()))
            })?;
            let ips = HostsFileResolve::parse(&text, &host);
            if ips.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} is not in the test hosts file {}", path.display()),
                ));
            }
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        })
    }
}

/// Hosts remembered as failing, for logging once per streak; past this the
/// set starts over (members are few; this only bounds the memory).
const FAILING_HOSTS_MAX: usize = 256;

/// A [`Resolve`] with failure accounting: what connections use. Cheap to
/// clone; clones share the counter.
#[derive(Clone, Debug)]
pub struct Resolver {
    resolve: Arc<dyn Resolve>,
    failures: Counter,
    /// Hosts whose last lookup failed.
    failing: Arc<Mutex<HashSet<String>>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl Resolver {
    /// Lookups through `resolve`, failures counted in `failures` (a
    /// registered metric, or a fresh counter).
    pub fn new(resolve: Arc<dyn Resolve>, failures: Counter) -> Resolver {
        Resolver {
            resolve,
            failures,
            failing: Arc::default(),
        }
    }

    /// The operating system's resolver, with a counter of its own.
    pub fn system() -> Resolver {
        Resolver::new(Arc::new(SystemResolve), Counter::default())
    }

    /// Lookups that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// The addresses to try for `host:port`, resolved now. An IP literal
    /// (IPv6 with or without brackets) is its own address. A name that does
    /// not resolve, or resolves to nothing, is an error that names it.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let result = match self.resolve.lookup(host, port).await {
            Ok(addrs) if addrs.is_empty() => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no address",
            )),
            other => other,
        };
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(addrs) => {
                if failing.remove(host) {
                    tracing::info!(%host, ?addrs, "the name resolves again");
                }
                Ok(addrs)
            }
            Err(e) => {
                self.failures.inc();
                if failing.len() >= FAILING_HOSTS_MAX {
                    failing.clear();
                }
                if failing.insert(host.to_string()) {
                    tracing::warn!(%host, error = %e, "cannot resolve a member's name; retrying with backoff");
                } else {
                    tracing::debug!(%host, error = %e, "still cannot resolve");
                }
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot resolve {host}: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[tokio::test]
    async fn literals_pass_names_follow_the_table_failures_are_counted() {
        let table = StaticResolve::new();
        let r = Resolver::new(Arc::new(table.clone()), Counter::default());
        assert_eq!(
            r.resolve("127.0.0.9", 5).await.expect("literal"),
            [SocketAddr::new(ip("127.0.0.9"), 5)]
        );
        assert_eq!(
            r.resolve("[::1]", 6).await.expect("literal"),
            [SocketAddr::new(ip("::1"), 6)]
        );
        let e = r.resolve("n1.test", 7).await.expect_err("not in the table");
        assert!(e.to_string().contains("cannot resolve n1.test"), "{e}");
        assert_eq!(r.failures(), 1);
        table.set("n1.test", &[ip("127.0.0.2")]);
        assert_eq!(
            r.resolve("n1.test", 7).await.expect("set"),
            [SocketAddr::new(ip("127.0.0.2"), 7)]
        );
        // Moved: the next lookup sees the new address at once.
        table.set("n1.test", &[ip("127.0.0.3")]);
        assert_eq!(
            r.resolve("n1.test", 7).await.expect("moved"),
            [SocketAddr::new(ip("127.0.0.3"), 7)]
        );
        table.set("n1.test", &[]);
        assert!(r.resolve("n1.test", 7).await.is_err(), "no address");
        assert_eq!(r.failures(), 2);
    }

    #[tokio::test]
    async fn the_hosts_file_is_read_on_every_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        let r = Resolver::new(Arc::new(HostsFileResolve::new(&path)), Counter::default());
        assert!(r.resolve("n1.test", 1).await.is_err(), "no file yet");
        std::fs::write(
            &path,
            "# members\n127.0.0.2 n1.test n1  # first\n\n::1 n2.test\nbogus n3.test\n",
        )
        .expect("write");
        assert_eq!(
            r.resolve("N1.test", 1).await.expect("listed"),
            [SocketAddr::new(ip("127.0.0.2"), 1)]
        );
        assert_eq!(
            r.resolve("n2.test", 2).await.expect("listed"),
            [SocketAddr::new(ip("::1"), 2)]
        );
        assert!(r.resolve("n3.test", 3).await.is_err(), "bad address line");
        std::fs::write(&path, "127.0.0.3 n1.test\n").expect("rewrite");
        assert_eq!(
            r.resolve("n1.test", 1).await.expect("moved"),
            [SocketAddr::new(ip("127.0.0.3"), 1)]
        );
        assert_eq!(r.failures(), 2);
    }

    #[tokio::test]
    async fn the_system_resolver_resolves_localhost() {
        let addrs = Resolver::system()
            .resolve("localhost", 80)
            .await
            .expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
