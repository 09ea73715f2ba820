//! The operator's pod, as `docker run` arguments.
//!
//! [`PodRun::from_statefulset`] reads the StatefulSet and ConfigMap that the
//! operator's builders produce ([`flotilla_operator::resources::Desired`])
//! and gives what the kubelet would run for one ordinal: the container's
//! command and arguments, its environment with `fieldRef`s and `$(VAR)`
//! references resolved as Kubernetes resolves them, its volume mounts (the
//! data claim as a named volume, the ConfigMap as a read-only folder of its
//! files, an `emptyDir` as a tmpfs), its user, security settings and memory
//! limit, the probes' and the preStop hook's HTTP endpoints, and the DNS
//! names the headless Service gives the pod. Anything in the spec this
//! translation does not know is an error, never silently dropped, so a
//! change of the builder shows up here.

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, HTTPGetAction, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One mount of the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// A named Docker volume: the pod's persistent volume claim.
    Volume {
        /// The Docker volume's name.
        volume: String,
        /// Where it is mounted.
        target: String,
    },
    /// A host folder holding a ConfigMap's files.
    ConfigMap {
        /// The ConfigMap's name.
        config_map: String,
        /// Where it is mounted.
        target: String,
        /// Read-only, as the mount says.
        read_only: bool,
    },
    /// An `emptyDir`: a tmpfs, writable by everyone (sticky).
    Tmpfs {
        /// Where it is mounted.
        target: String,
    },
}

/// An HTTP endpoint of the container (probes, preStop hook).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// The container port.
    pub port: u16,
    /// The request path.
    pub path: String,
}

/// What `docker run` needs to run pod `ordinal` of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRun {
    /// The pod's name (`<cluster>-<ordinal>`), also its hostname.
    pub pod: String,
    /// DNS names the pod has through the headless Service: its own
    /// (`<pod>.<service>.<namespace>.svc`) and the Service's, which
    /// resolves to every pod (`publishNotReadyAddresses`).
    pub dns_names: Vec<String>,
    /// The image.
    pub image: String,
    /// `command[0]`: the entrypoint.
    pub entrypoint: String,
    /// The rest of `command`, then `args`.
    pub args: Vec<String>,
    /// The environment, resolved.
    pub env: Vec<(String, String)>,
    /// `uid:gid`.
    pub user: String,
    /// Supplementary group (`fsGroup`).
    pub fs_group: Option<i64>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// Capabilities dropped (`ALL` or names).
    pub cap_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// The memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// Mounts, in the container's order.
    pub mounts: Vec<Mount>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
    /// The liveness probe's endpoint.
    pub liveness: HttpEndpoint,
    /// The readiness probe's endpoint.
    pub readiness: HttpEndpoint,
    /// The preStop hook's endpoint.
    pub pre_stop: HttpEndpoint,
    /// `terminationGracePeriodSeconds`.
    pub grace_seconds: u32,
    /// ConfigMap files: (ConfigMap name, file name) → contents.
    pub config_files: BTreeMap<(String, String), String>,
}

impl PodRun {
    /// Pod `ordinal` of `sts`, whose ConfigMap volumes come from `config_maps`.
    pub fn from_statefulset(
        sts: &StatefulSet,
        config_maps: &[ConfigMap],
        ordinal: u32,
    ) -> Result<PodRun> {
        let name = sts.metadata.name.as_deref().context("StatefulSet name")?;
        let namespace = sts
            .metadata
            .namespace
            .as_deref()
            .context("StatefulSet namespace")?;
        let spec = sts.spec.as_ref().context("StatefulSet spec")?;
        let service = spec
            .service_name
            .as_deref()
            .context("StatefulSet serviceName")?;
        let pod_spec: &PodSpec = spec.template.spec.as_ref().context("pod template spec")?;
        let [container] = pod_spec.containers.as_slice() else {
            bail!(
                "the pod has {} containers; this translation runs one",
                pod_spec.containers.len()
            );
        };
        if pod_spec
            .init_containers
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        {
            bail!("init containers are not translated");
        }
        let pod = format!("{name}-{ordinal}");
        let domain = format!("{service}.{namespace}.svc");
        let dns_names = vec![format!("{pod}.{domain}"), domain];

        let ports: BTreeMap<String, u16> = container
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let name = p.name.clone().context("unnamed container port")?;
                let port = u16::try_from(p.container_port).context("container port")?;
                Ok((name, port))
            })
            .collect::<Result<_>>()?;

        let command = container.command.clone().unwrap_or_default();
        let (entrypoint, rest) = command
            .split_first()
            .context("the container has no command (the image's entrypoint is not used)")?;
        let env = resolve_env(container, &pod, namespace)?;
        let mut args: Vec<String> = rest.to_vec();
        args.extend(container.args.iter().flatten().cloned());
        let lookup: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = args.iter().map(|a| expand(a, &lookup)).collect();

        let pod_security = pod_spec.security_context.clone().unwrap_or_default();
        let security = container.security_context.clone().unwrap_or_default();
        let uid = security
            .run_as_user
            .or(pod_security.run_as_user)
            .context("runAsUser: the pod must not run as the image's user")?;
        let gid = security
            .run_as_group
            .or(pod_security.run_as_group)
            .unwrap_or(uid);
        if security.privileged == Some(true) {
            bail!("privileged containers are not translated");
        }
        if let Some(add) = security.capabilities.as_ref().and_then(|c| c.add.as_ref())
            && !add.is_empty()
        {
            bail!("added capabilities are not translated: {add:?}");
        }
        let cap_drop = security
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();

        let memory_limit = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| quantity_bytes(&q.0))
            .transpose()?;

        let claims: Vec<String> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let mut mounts = Vec::new();
        let mut config_files = BTreeMap::new();
        for m in container.volume_mounts.iter().flatten() {
            if m.sub_path.is_some() || m.sub_path_expr.is_some() {
                bail!("subPath mounts are not translated ({})", m.name);
            }
            let read_only = m.read_only == Some(true);
            if claims.contains(&m.name) {
                mounts.push(Mount::Volume {
                    // The claim's name, as the StatefulSet names it.
                    volume: format!("{}-{pod}", m.name),
                    target: m.mount_path.clone(),
                });
                continue;
            }
            let volume = pod_spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .with_context(|| format!("volume {} is mounted but not defined", m.name))?;
            if let Some(cm) = &volume.config_map {
                let found = config_maps
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(cm.name.as_str()))
                    .with_context(|| format!("ConfigMap {} is not given", cm.name))?;
                if cm.items.as_ref().is_some_and(|i| !i.is_empty()) {
                    bail!("ConfigMap items are not translated ({})", cm.name);
                }
                for (file, text) in found.data.iter().flatten() {
                    config_files.insert((cm.name.clone(), file.clone()), text.clone());
                }
                mounts.push(Mount::ConfigMap {
                    config_map: cm.name.clone(),
                    target: m.mount_path.clone(),
                    read_only,
                });
            } else if volume.empty_dir.is_some() {
                mounts.push(Mount::Tmpfs {
                    target: m.mount_path.clone(),
                });
            } else {
                bail!("volume {} is of a kind not translated", m.name);
            }
        }

        let http = |action: Option<&HTTPGetAction>, what: &str| -> Result<HttpEndpoint> {
            let action = action.with_context(|| format!("{what}: no httpGet"))?;
            let port = match &action.port {
                IntOrString::Int(p) => u16::try_from(*p).context("port")?,
                IntOrString::String(name) => *ports
                    .get(name)
                    .with_context(|| format!("{what}: no container port named {name}"))?,
            };
            Ok(HttpEndpoint {
                port,
                path: action.path.clone().unwrap_or_else(|| "/".to_string()),
            })
        };
        let liveness = http(
            container
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref()),
            "liveness probe",
        )?;
        let readiness = http(
            container
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref()),
            "readiness probe",
        )?;
        let pre_stop = http(
            container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.http_get.as_ref()),
            "preStop hook",
        )?;
        let grace_seconds = u32::try_from(pod_spec.termination_grace_period_seconds.unwrap_or(30))
            .context("terminationGracePeriodSeconds")?;

        Ok(PodRun {
            pod,
            dns_names,
            image: container.image.clone().context("container image")?,
            entrypoint: entrypoint.clone(),
            args,
            env,
            user: format!("{uid}:{gid}"),
            fs_group: pod_security.fs_group,
            read_only_root: security.read_only_root_filesystem == Some(true),
            cap_drop,
            no_new_privileges: security.allow_privilege_escalation == Some(false),
            memory_limit,
            mounts,
            ports,
            liveness,
            readiness,
            pre_stop,
            grace_seconds,
            config_files,
        })
    }

    /// The files of each ConfigMap mount, written under `dir/<ConfigMap>/`
    /// (readable by the container's user); returns the folders by ConfigMap.
    pub fn write_config_maps(&self, dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
        use std::os::unix::fs::PermissionsExt;
        let mut folders = BTreeMap::new();
        for ((cm, file), text) in &self.config_files {
            let folder = dir.join(cm);
            std::fs::create_dir_all(&folder)?;
            std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755))?;
            let path = folder.join(file);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            folders.insert(cm.clone(), folder);
        }
        Ok(folders)
    }

    /// `docker run` arguments (after `docker run`) for this pod on
    /// `network` with address `ip`, under container name `container`,
    /// with labels, the ConfigMap folders from [`PodRun::write_config_maps`]
    /// and the Docker volume names prefixed by `volume_prefix`.
    pub fn docker_args(
        &self,
        container: &str,
        network: &str,
        ip: &str,
        labels: &[(String, String)],
        config_dirs: &BTreeMap<String, PathBuf>,
        volume_prefix: &str,
    ) -> Result<Vec<String>> {
        let mut a: Vec<String> = vec!["--detach".into(), "--name".into(), container.into()];
        for (k, v) in labels {
            a.push("--label".into());
            a.push(format!("{k}={v}"));
        }
        a.extend(["--hostname".into(), self.pod.clone()]);
        a.extend(["--network".into(), network.into(), "--ip".into(), ip.into()]);
        for name in &self.dns_names {
            a.extend(["--network-alias".into(), name.clone()]);
        }
        a.extend(["--user".into(), self.user.clone()]);
        if let Some(g) = self.fs_group {
            a.extend(["--group-add".into(), g.to_string()]);
        }
        if self.read_only_root {
            a.push("--read-only".into());
        }
        for cap in &self.cap_drop {
            a.extend(["--cap-drop".into(), cap.clone()]);
        }
        if self.no_new_privileges {
            a.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if let Some(bytes) = self.memory_limit {
            a.extend(["--memory".into(), bytes.to_string()]);
        }
        for m in &self.mounts {
            let spec = match m {
                Mount::Volume { volume, target } => {
                    format!("type=volume,source={volume_prefix}{volume},target={target}")
                }
                Mount::ConfigMap {
                    config_map,
                    target,
                    read_only,
                } => {
                    let dir = config_dirs
                        .get(config_map)
                        .ok_or_else(|| anyhow!("ConfigMap {config_map} was not written"))?;
                    let ro = if *read_only { ",readonly" } else { "" };
                    format!("type=bind,source={},target={target}{ro}", dir.display())
                }
                Mount::Tmpfs { target } => format!("type=tmpfs,target={target},tmpfs-mode=1777"),
            };
            a.extend(["--mount".into(), spec]);
        }
        for (k, v) in &self.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        a.extend(["--entrypoint".into(), self.entrypoint.clone()]);
        a.push(self.image.clone());
        a.extend(self.args.iter().cloned());
        Ok(a)
    }
}

/// The container's environment as the kubelet builds it: `fieldRef`s of
/// the pod's name and namespace, and `$(VAR)` references to variables
/// defined earlier in the list.
fn resolve_env(container: &Container, pod: &str, namespace: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => {
                let lookup: BTreeMap<&str, &str> =
                    out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(v, &lookup)
            }
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .with_context(|| format!("env {}: only fieldRef is translated", var.name))?;
                match field.field_path.as_str() {
                    "metadata.name" => pod.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    other => bail!("env {}: fieldRef {other} is not translated", var.name),
                }
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => bail!("env {}: both value and valueFrom", var.name),
        };
        out.push((var.name.clone(), value));
    }
    Ok(out)
}

/// Kubernetes' expansion: `$(NAME)` of a known variable is replaced,
/// `$$` is a literal `$`, anything else stays as written.
fn expand(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = vars.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1G`, `1000`).
pub fn quantity_bytes(q: &str) -> Result<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => bail!("memory quantity {q}: suffix {other} is not translated"),
    };
    let n: f64 = number
        .parse()
        .with_context(|| format!("memory quantity {q}"))?;
    Ok((n * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NAMESPACE, desired};

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = BTreeMap::from([("POD_NAME", "demo-1")]);
        assert_eq!(
            expand("http://$(POD_NAME).demo-peers:2380", &vars),
            "http://demo-1.demo-peers:2380"
        );
        assert_eq!(expand("$$(POD_NAME)", &vars), "$(POD_NAME)");
        assert_eq!(expand("$(UNKNOWN) $", &vars), "$(UNKNOWN) $");
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("512Mi").expect("ok"), 512 << 20);
        assert_eq!(quantity_bytes("1G").expect("ok"), 1_000_000_000);
        assert_eq!(quantity_bytes("1.5Gi").expect("ok"), 3 << 29);
        assert!(quantity_bytes("5X").is_err());
    }

    #[test]
    fn the_builders_pod_becomes_a_docker_run() {
        let d = desired(3, "flotilla/flotilla-node:e2e", "0123").expect("builders");
        let run = PodRun::from_statefulset(&d.statefulset, std::slice::from_ref(&d.config_map), 2)
            .expect("translation");
        assert_eq!(run.pod, "demo-2");
        assert_eq!(
            run.dns_names,
            [
                format!("demo-2.demo-peers.{NAMESPACE}.svc"),
                format!("demo-peers.{NAMESPACE}.svc")
            ]
        );
        assert_eq!(run.entrypoint, "flotilla-node");
        assert_eq!(run.args, ["--config-file", "/etc/flotilla/flotilla.yaml"]);
        let env: BTreeMap<_, _> = run.env.iter().cloned().collect();
        assert_eq!(env["FLOTILLA_NAME"], "demo-2");
        assert_eq!(
            env["FLOTILLA_INITIAL_ADVERTISE_PEER_URLS"],
            format!("http://demo-2.demo-peers.{NAMESPACE}.svc:2380")
        );
        assert_eq!(env["POD_NAMESPACE"], NAMESPACE);
        assert_eq!(run.user, "65532:65532");
        assert!(run.read_only_root && run.no_new_privileges);
        assert_eq!(run.cap_drop, ["ALL"]);
        assert_eq!(run.memory_limit, Some(512 << 20));
        assert_eq!(
            run.mounts[0],
            Mount::Volume {
                volume: "data-demo-2".into(),
                target: "/var/lib/flotilla".into()
            }
        );
        assert!(run.mounts.contains(&Mount::Tmpfs {
            target: "/tmp".into()
        }));
        assert_eq!(run.readiness.port, 2381);
        assert_eq!(run.readiness.path, "/readyz");
        assert_eq!(run.liveness.path, "/livez");
        assert_eq!(run.pre_stop.path, "/prestop");
        assert_eq!(run.grace_seconds, 60);
        let file = &run.config_files[&("demo-config".to_string(), "flotilla.yaml".to_string())];
        assert!(file.contains("demo-peers"), "{file}");

        let dirs = BTreeMap::from([("demo-config".to_string(), PathBuf::from("/cfg"))]);
        let args = run
            .docker_args("c", "net", "10.1.2.3", &[], &dirs, "p-")
            .expect("args");
        let joined = args.join(" ");
        assert!(
            joined.contains("--mount type=volume,source=p-data-demo-2,target=/var/lib/flotilla"),
            "{joined}"
        );
        assert!(
            joined.contains("--mount type=bind,source=/cfg,target=/etc/flotilla,readonly"),
            "{joined}"
        );
        assert!(
            joined.ends_with(
                "--entrypoint flotilla-node flotilla/flotilla-node:e2e --config-file /etc/flotilla/flotilla.yaml"
            ),
            "{joined}"
        );
    }
}
