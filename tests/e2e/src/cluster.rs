//! A Flotilla cluster in Docker containers, configured by the operator.
//!
//! [`desired`] runs the operator's builders on `examples/raftcluster.yaml`
//! (the example users apply); [`ContainerCluster::start`] translates the
//! StatefulSet's pod into one container per ordinal on a private network
//! ([`crate::pod`]) and waits until every member's readiness endpoint
//! answers 200, as the kubelet would before the client Service sends
//! traffic. The faults are the container-level equivalents of chaos-mesh's:
//! `docker kill -s KILL` (pod-kill), `docker pause` (pod-failure: the
//! process is frozen), `docker network disconnect` (partition), and a pod
//! replaced by a new container with a new address (a rescheduled pod).

use crate::docker::{docker, docker_async, labels, poll};
use crate::pod::{HttpEndpoint, PodRun};
use anyhow::{Context, Result, bail};
use flotilla_operator::crd::RaftCluster;
use flotilla_operator::resources::{BuildInputs, Desired};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{RangeRequest, StatusRequest, StatusResponse};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::Channel;

/// The namespace the pods' DNS names are in.
pub const NAMESPACE: &str = "e2e";
/// The RaftCluster users apply, whose pods this suite runs.
pub const EXAMPLE: &str = include_str!("../../../examples/raftcluster.yaml");
/// The longest a member may take to become ready, or a leader to appear.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// The operator's objects for the example RaftCluster with `replicas`
/// founding members running `image`, as if created with uid `uid`.
pub fn desired(replicas: u32, image: &str, uid: &str) -> Result<Desired> {
    let mut rc: RaftCluster =
        serde_yaml::from_str(EXAMPLE).context("examples/raftcluster.yaml is not a RaftCluster")?;
    rc.metadata.namespace = Some(NAMESPACE.to_string());
    rc.metadata.uid = Some(uid.to_string());
    rc.spec.replicas = i32::try_from(replicas)?;
    rc.spec.image = image.to_string();
    Ok(Desired::build(
        &rc,
        BuildInputs {
            founders: replicas,
            replicas: rc.spec.replicas,
            voters: replicas,
        },
    )?)
}

/// A gRPC channel to `url`, connected lazily with a short timeout.
pub fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("a valid url")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

/// One member's container.
#[derive(Debug)]
pub struct Member {
    /// What runs.
    pub run: PodRun,
    /// The current container's name.
    pub container: String,
    /// Its address on the network.
    pub ip: String,
    /// The Raft member id (from its Status once it answered).
    pub member_id: u64,
    /// How many containers this pod has had.
    pub generation: u32,
}

/// The cluster.
#[derive(Debug)]
pub struct ContainerCluster {
    /// Members by ordinal.
    pub members: Vec<Member>,
    /// The Docker network.
    pub network: String,
    prefix: String,
    subnet: String,
    next_host: u8,
    config_dirs: BTreeMap<String, PathBuf>,
    _config: tempfile::TempDir,
    endpoints: watch::Sender<Vec<String>>,
}

/// A member's view from its Status call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its member id.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// Its store's revision.
    pub revision: i64,
    /// Its applied index.
    pub applied: u64,
}

impl From<StatusResponse> for MemberView {
    fn from(s: StatusResponse) -> Self {
        let header = s.header.unwrap_or_default();
        MemberView {
            member_id: header.member_id,
            leader: s.leader,
            term: s.raft_term,
            revision: header.revision,
            applied: s.raft_applied_index,
        }
    }
}

/// `GET http://ip:port/path`: the status code and body (HTTP/1.1, one
/// request per connection, as a kubelet's probe).
pub async fn http_get(ip: &str, ep: &HttpEndpoint, timeout: Duration) -> Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect((ip, ep.port)).await?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {ip}:{}\r\nUser-Agent: flotilla-e2e\r\nConnection: close\r\n\r\n",
            ep.path, ep.port
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(timeout, io)
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

impl ContainerCluster {
    /// Starts `replicas` members of `image` on a new network; `tag` names
    /// this cluster's objects. Returns once every member is ready.
    pub async fn start(replicas: u32, image: &str, tag: &str) -> Result<ContainerCluster> {
        let prefix = format!("flotilla-e2e-{}-{tag}", std::process::id());
        let d = desired(replicas, image, &format!("{prefix}-uid"))?;
        let help = docker_async(vec![
            "run".into(),
            "--rm".into(),
            image.into(),
            "--help".into(),
        ])
        .await?;
        let unknown = unknown_keys(&d.config_map, &help)?;
        anyhow::ensure!(
            unknown.is_empty(),
            "the operator writes config keys the node image does not know: {unknown:?}; \
             a pod would exit with `unknown field`"
        );
        let runs = (0..replicas)
            .map(|o| {
                PodRun::from_statefulset(&d.statefulset, std::slice::from_ref(&d.config_map), o)
            })
            .collect::<Result<Vec<_>>>()?;
        let config = tempfile::Builder::new().prefix("flotilla-e2e-").tempdir()?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let config_dirs = runs[0].write_config_maps(config.path())?;
        let network = format!("{prefix}-net");
        let subnet = create_network(&network)?;
        let (endpoints, _) = watch::channel(Vec::new());
        let mut cluster = ContainerCluster {
            members: Vec::new(),
            network,
            prefix,
            subnet,
            next_host: 10,
            config_dirs,
            _config: config,
            endpoints,
        };
        for run in runs {
            for m in &run.mounts {
                if let crate::pod::Mount::Volume { volume, .. } = m {
                    let mut args = vec!["volume".to_string(), "create".to_string()];
                    for (k, v) in labels() {
                        args.extend(["--label".to_string(), format!("{k}={v}")]);
                    }
                    args.push(format!("{}-{volume}", cluster.prefix));
                    docker_async(args).await?;
                }
            }
            cluster.members.push(Member {
                container: String::new(),
                ip: String::new(),
                member_id: 0,
                generation: 0,
                run,
            });
        }
        for o in 0..cluster.members.len() {
            cluster.run_container(o).await?;
        }
        cluster.wait_ready_all().await?;
        for o in 0..cluster.members.len() {
            let view = cluster
                .status(o)
                .await
                .with_context(|| format!("member {o}'s status"))?;
            cluster.members[o].member_id = view.member_id;
        }
        Ok(cluster)
    }

    /// Pod names, by ordinal.
    pub fn pod(&self, o: usize) -> &str {
        &self.members[o].run.pod
    }

    fn fresh_ip(&mut self) -> Result<String> {
        if self.next_host >= 250 {
            bail!("out of addresses in {}", self.subnet);
        }
        self.next_host += 1;
        Ok(format!("{}.{}", self.subnet, self.next_host))
    }

    /// Runs a new container for pod `o` with a new address (a new or
    /// rescheduled pod: same name, same data volume, new IP).
    pub async fn run_container(&mut self, o: usize) -> Result<()> {
        let ip = self.fresh_ip()?;
        let m = &mut self.members[o];
        m.generation += 1;
        let container = format!("{}-{}-g{}", self.prefix, m.run.pod, m.generation);
        let args = m.run.docker_args(
            &container,
            &self.network,
            &ip,
            &labels(),
            &self.config_dirs,
            &format!("{}-", self.prefix),
        )?;
        let mut full = vec!["run".to_string()];
        full.extend(args);
        docker_async(full).await?;
        m.container = container;
        m.ip = ip;
        self.publish_endpoints();
        Ok(())
    }

    /// Every member's client URL, by ordinal.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}:{}", m.ip, m.run.ports["client"]))
            .collect()
    }

    fn publish_endpoints(&self) {
        self.endpoints.send_replace(self.client_urls());
    }

    /// Client URLs as they change (a restarted pod has a new address).
    pub fn endpoints(&self) -> watch::Receiver<Vec<String>> {
        self.endpoints.subscribe()
    }

    /// Member `o`'s Status.
    pub async fn status(&self, o: usize) -> Result<MemberView> {
        let url = &self.client_urls()[o];
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(1));
        let mut c = MaintenanceClient::new(channel(url));
        let r = tokio::time::timeout(Duration::from_millis(1500), c.status(req))
            .await
            .context("status timed out")??;
        Ok(r.into_inner().into())
    }

    /// Whether `o`'s readiness endpoint answers 200.
    pub async fn ready(&self, o: usize) -> bool {
        let m = &self.members[o];
        matches!(
            http_get(&m.ip, &m.run.readiness, Duration::from_secs(1)).await,
            Ok((200, _))
        )
    }

    /// Waits until member `o` is ready; fails at once if its container
    /// stopped.
    pub async fn wait_ready(&self, o: usize) -> Result<()> {
        let container = self.members[o].container.clone();
        let ready = poll(READY_WAIT, Duration::from_millis(100), || async {
            if self.ready(o).await {
                return Some(true);
            }
            let state = docker_async(vec![
                "inspect".into(),
                "--format".into(),
                "{{.State.Status}}".into(),
                container.clone(),
            ])
            .await;
            matches!(state.as_deref(), Ok("exited" | "dead")).then_some(false)
        })
        .await;
        match ready {
            Some(true) => Ok(()),
            Some(false) => bail!("{} exited; its log:\n{}", self.pod(o), self.logs(o)),
            None => bail!(
                "{} was not ready within {READY_WAIT:?}; its log:\n{}",
                self.pod(o),
                self.logs(o)
            ),
        }
    }

    /// Waits until every member is ready.
    pub async fn wait_ready_all(&self) -> Result<()> {
        for o in 0..self.members.len() {
            self.wait_ready(o).await?;
        }
        Ok(())
    }

    /// The last lines of `o`'s log.
    pub fn logs(&self, o: usize) -> String {
        let c = &self.members[o].container;
        match std::process::Command::new("docker")
            .args(["logs", "--tail", "30", c])
            .output()
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }

    /// The ordinal of member id `id`.
    pub fn ordinal_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.member_id == id)
    }

    /// The leader as the members answering among `among` see it: the
    /// member that says it leads, at the highest term any of them reports.
    pub async fn leader_among(&self, among: &[usize]) -> Option<usize> {
        let mut views = Vec::new();
        for &o in among {
            if let Ok(v) = self.status(o).await {
                views.push((o, v));
            }
        }
        let term = views.iter().map(|(_, v)| v.term).max()?;
        views
            .iter()
            .find(|(_, v)| v.term == term && v.leader == v.member_id && v.leader != 0)
            .map(|(o, _)| *o)
    }

    /// Waits for a leader among `among`.
    pub async fn wait_leader(&self, among: &[usize]) -> Result<usize> {
        poll(READY_WAIT, Duration::from_millis(100), || {
            self.leader_among(among)
        })
        .await
        .with_context(|| format!("no leader among {among:?} within {READY_WAIT:?}"))
    }

    /// All ordinals.
    pub fn all(&self) -> Vec<usize> {
        (0..self.members.len()).collect()
    }

    /// `docker kill -s KILL`: the process dies at once (pod-kill).
    pub async fn kill(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec!["kill".into(), "--signal".into(), "KILL".into(), c]).await?;
        Ok(())
    }

    /// Starts pod `o`'s stopped container again (the kubelet's restart:
    /// same pod, same address).
    pub async fn restart_in_place(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec!["start".into(), c]).await?;
        Ok(())
    }

    /// `docker pause`: every process of the container is frozen.
    pub async fn pause(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec!["pause".into(), c]).await?;
        Ok(())
    }

    /// `docker unpause`.
    pub async fn unpause(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec!["unpause".into(), c]).await?;
        Ok(())
    }

    /// Cuts `o` off the network: no peer, client or DNS traffic.
    pub async fn disconnect(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec![
            "network".into(),
            "disconnect".into(),
            self.network.clone(),
            c,
        ])
        .await?;
        Ok(())
    }

    /// Connects `o` again, with its address and DNS names.
    pub async fn reconnect(&self, o: usize) -> Result<()> {
        let m = &self.members[o];
        let mut args = vec![
            "network".to_string(),
            "connect".to_string(),
            "--ip".to_string(),
            m.ip.clone(),
        ];
        for name in &m.run.dns_names {
            args.extend(["--alias".to_string(), name.clone()]);
        }
        args.extend([self.network.clone(), m.container.clone()]);
        docker_async(args).await?;
        Ok(())
    }

    /// The pod's deletion, as the kubelet runs it: the preStop hook (its
    /// answer is returned), then SIGTERM with the grace period, then the
    /// container is removed. The data volume stays.
    pub async fn delete_pod(&self, o: usize) -> Result<(u16, String)> {
        let m = &self.members[o];
        // The hook's own bound is well below the grace period.
        let hook = http_get(
            &m.ip,
            &m.run.pre_stop,
            Duration::from_secs(u64::from(m.run.grace_seconds)),
        )
        .await
        .unwrap_or((0, "preStop hook unreachable".to_string()));
        docker_async(vec![
            "stop".into(),
            "--time".into(),
            m.run.grace_seconds.to_string(),
            m.container.clone(),
        ])
        .await?;
        docker_async(vec!["rm".into(), m.container.clone()]).await?;
        Ok(hook)
    }

    /// Removes pod `o`'s container at once, whatever its state.
    pub async fn force_remove(&self, o: usize) -> Result<()> {
        let c = self.members[o].container.clone();
        docker_async(vec!["rm".into(), "--force".into(), c]).await?;
        Ok(())
    }

    /// Waits until every member reports the same revision and applied
    /// index, then reads the whole key space at that revision from each
    /// member's own store (a serializable Range) and hashes it. Returns
    /// (revision, hash) or what differs.
    pub async fn converged(&self) -> Result<(i64, u64)> {
        let deadline = Instant::now() + READY_WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut views = Vec::new();
            for o in self.all() {
                match self.status(o).await {
                    Ok(v) => views.push(v),
                    Err(e) => last = format!("{}: {e}", self.pod(o)),
                }
            }
            if views.len() == self.members.len()
                && views.iter().all(|v| v.revision == views[0].revision)
                && views.iter().all(|v| v.applied == views[0].applied)
            {
                let revision = views[0].revision;
                let mut hashes = Vec::new();
                for o in self.all() {
                    hashes.push(self.kv_hash(o, revision).await?);
                }
                if hashes.iter().all(|h| *h == hashes[0]) {
                    return Ok((revision, hashes[0]));
                }
                bail!("the members' stores differ at revision {revision}: hashes {hashes:x?}");
            }
            if !views.is_empty() {
                last = format!("{views:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the members did not reach one revision within {READY_WAIT:?}: {last}")
    }

    /// FNV-1a over every key, value, create and mod revision and version
    /// at `revision`, read from member `o`'s own store.
    pub async fn kv_hash(&self, o: usize, revision: i64) -> Result<u64> {
        let mut req = tonic::Request::new(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            serializable: true,
            ..RangeRequest::default()
        });
        req.set_timeout(Duration::from_secs(5));
        let mut kv = KvClient::new(channel(&self.client_urls()[o]));
        let r = kv.range(req).await?.into_inner();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes.iter().chain(&[0xff]) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for kv in &r.kvs {
            eat(&kv.key);
            eat(&kv.value);
            eat(&kv.create_revision.to_le_bytes());
            eat(&kv.mod_revision.to_le_bytes());
            eat(&kv.version.to_le_bytes());
        }
        Ok(h)
    }
}

/// The keys of the config file that the node's `--help` does not list as
/// flags (`--<key>`): each would stop a pod with `unknown field`.
pub fn unknown_keys(cm: &k8s_openapi::api::core::v1::ConfigMap, help: &str) -> Result<Vec<String>> {
    let mut unknown = Vec::new();
    for text in cm.data.iter().flat_map(|d| d.values()) {
        let map: serde_yaml::Mapping = serde_yaml::from_str(text)?;
        for k in map.keys() {
            let key = k.as_str().unwrap_or_default();
            let known = help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == format!("--{key}"));
            if !known {
                unknown.push(key.to_string());
            }
        }
    }
    Ok(unknown)
}

/// Creates a bridge network with a /24 subnet of its own (so containers
/// get chosen addresses); returns the subnet's first three octets.
fn create_network(name: &str) -> Result<String> {
    let pid = std::process::id();
    let mut last = None;
    for attempt in 0..40u32 {
        let b = (pid + attempt * 7) % 250;
        let a = 200 + (pid / 250 + attempt) % 50;
        let subnet = format!("10.{a}.{b}");
        let mut args = vec![
            "network".to_string(),
            "create".to_string(),
            "--driver".to_string(),
            "bridge".to_string(),
            "--subnet".to_string(),
            format!("{subnet}.0/24"),
        ];
        for (k, v) in labels() {
            args.extend(["--label".to_string(), format!("{k}={v}")]);
        }
        args.push(name.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match docker(&refs) {
            Ok(_) => return Ok(subnet),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt")).context("creating the network")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_builds_and_keys_the_node_does_not_list_are_found() {
        let d = desired(3, "img", "uid").expect("builders");
        let help =
            "Options:\n  --data-dir <DATA_DIR>\n  --initial-cluster=<X>\n      --fsync <FSYNC>, -x";
        let unknown = unknown_keys(&d.config_map, help).expect("yaml");
        assert!(
            unknown.contains(&"default-replication-factor".to_string()),
            "{unknown:?}"
        );
        assert!(!unknown.contains(&"data-dir".to_string()), "{unknown:?}");
        assert!(!unknown.contains(&"fsync".to_string()), "{unknown:?}");
        assert!(
            !unknown.contains(&"initial-cluster".to_string()),
            "{unknown:?}"
        );
    }
}
