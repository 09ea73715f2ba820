//! `flotilla member list|add|remove|promote`: etcdctl's membership commands,
//! member ids in hex.
//!
//! `member add` prints what the new member must be started with, as
//! `FLOTILLA_*` environment variables (each also a `flotilla-node` flag),
//! like etcdctl prints `ETCD_*` ones: the new member starts with
//! `--initial-cluster-state existing` and learns its id and the cluster's
//! from the running members. `--learner` is the safe way (the member
//! catches up, then `member promote` makes it a voter).

use crate::WriteOut;
use crate::connect::{call_any, parse_member_id};
use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    ResponseHeader,
};
use serde_json::{Value, json};

/// `flotilla member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members.
    List,
    /// Add a member; prints the settings to start it with.
    ///
    /// With --learner (recommended) the member receives the log without
    /// voting: start it with the printed settings, then `member promote` it
    /// once it has caught up. Without, it is a voter at once, and the
    /// cluster refuses the add when its quorum would then depend on it.
    Add {
        /// The new member's name (its --name).
        name: String,
        /// The new member's peer URLs, comma-separated; the first is the
        /// one it must advertise.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add the member as a learner (a non-voting member).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// The member id, in hex (as `member list` prints it).
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Make a learner a voting member; it must have caught up with the
    /// leader.
    Promote {
        /// The member id, in hex (as `member list` prints it).
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
}

fn cluster_id(header: Option<&ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.cluster_id)
}

fn member_json(m: &Member) -> Value {
    json!({
        "id": m.id,
        "id_hex": format!("{:x}", m.id),
        "name": m.name,
        "peer_urls": m.peer_ur_ls,
        "client_urls": m.client_ur_ls,
        "is_learner": m.is_learner,
        "started": !m.name.is_empty(),
    })
}

fn members_json(header: Option<&ResponseHeader>, members: &[Member]) -> Value {
    json!({
        "cluster_id": cluster_id(header),
        "cluster_id_hex": format!("{:x}", cluster_id(header)),
        "members": members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

fn print_table(members: &[Member]) {
    println!(
        "{:<18} {:<10} {:<10} {:<8} {:<28} CLIENT URLS",
        "ID", "STATUS", "NAME", "LEARNER", "PEER URLS"
    );
    for m in members {
        // A member that never started has not published its name yet.
        let status = if m.name.is_empty() {
            "unstarted"
        } else {
            "started"
        };
        println!(
            "{:<18x} {:<10} {:<10} {:<8} {:<28} {}",
            m.id,
            status,
            m.name,
            m.is_learner,
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(",")
        );
    }
}

/// The `FLOTILLA_*` settings of the new member `name` (id `new_id`,
/// advertising `peer_url`), as etcdctl prints its `ETCD_*` ones: its
/// `--initial-cluster` names every member that has started, and itself.
fn join_env(name: &str, peer_url: &str, new_id: u64, members: &[Member]) -> Vec<(String, String)> {
    let mut cluster = Vec::new();
    for m in members {
        let member_name = if m.id == new_id { name } else { &m.name };
        if member_name.is_empty() {
            continue;
        }
        for url in &m.peer_ur_ls {
            cluster.push(format!("{member_name}={url}"));
        }
    }
    vec![
        ("FLOTILLA_NAME".to_string(), name.to_string()),
        ("FLOTILLA_INITIAL_CLUSTER".to_string(), cluster.join(",")),
        (
            "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS".to_string(),
            peer_url.to_string(),
        ),
        (
            "FLOTILLA_INITIAL_CLUSTER_STATE".to_string(),
            "existing".to_string(),
        ),
    ]
}

/// `FLOTILLA_INITIAL_CLUSTER` → `--initial-cluster`.
fn flag_of(env: &str) -> String {
    format!(
        "--{}",
        env.trim_start_matches("FLOTILLA_")
            .to_lowercase()
            .replace('_', "-")
    )
}

/// Runs a `member` subcommand.
pub async fn run(cmd: MemberCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        MemberCommand::List => {
            let resp = call_any(endpoints, |ch| async move {
                ClusterClient::new(ch)
                    // Serializable: the list still shows during an outage.
                    .member_list(MemberListRequest {
                        linearizable: false,
                    })
                    .await
            })
            .await?;
            match out {
                WriteOut::Table => print_table(&resp.members),
                WriteOut::Json => {
                    println!("{}", members_json(resp.header.as_ref(), &resp.members));
                }
            }
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => add(endpoints, out, name, peer_urls, learner).await?,
        MemberCommand::Remove { id } => {
            let resp = call_any(endpoints, |ch| async move {
                ClusterClient::new(ch)
                    .member_remove(MemberRemoveRequest { id })
                    .await
            })
            .await?;
            let cluster = cluster_id(resp.header.as_ref());
            match out {
                WriteOut::Table => println!("Member {id:x} removed from cluster {cluster:x}"),
                WriteOut::Json => {
                    let mut v = members_json(resp.header.as_ref(), &resp.members);
                    v["removed"] = json!(id);
                    println!("{v}");
                }
            }
        }
        MemberCommand::Promote { id } => {
            let resp = call_any(endpoints, |ch| async move {
                ClusterClient::new(ch)
                    .member_promote(MemberPromoteRequest { id })
                    .await
            })
            .await?;
            let cluster = cluster_id(resp.header.as_ref());
            match out {
                WriteOut::Table => println!("Member {id:x} promoted in cluster {cluster:x}"),
                WriteOut::Json => {
                    let mut v = members_json(resp.header.as_ref(), &resp.members);
                    v["promoted"] = json!(id);
                    println!("{v}");
                }
            }
        }
    }
    Ok(())
}

async fn add(
    endpoints: &[String],
    out: WriteOut,
    name: String,
    peer_urls: Vec<String>,
    learner: bool,
) -> Result<()> {
    if name.is_empty() || name.contains(['=', ',']) {
        bail!("member name {name:?} must be non-empty and contain neither '=' nor ','");
    }
    let peer_urls: Vec<String> = peer_urls
        .into_iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    for url in &peer_urls {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("peer URL {url:?} must start with http:// or https://");
        }
    }
    let Some(first) = peer_urls.first().cloned() else {
        bail!("--peer-urls needs at least one URL");
    };
    let request = MemberAddRequest {
        peer_ur_ls: peer_urls,
        is_learner: learner,
    };
    let resp = call_any(endpoints, |ch| {
        let request = request.clone();
        async move { ClusterClient::new(ch).member_add(request).await }
    })
    .await?;
    let Some(member) = resp.member else {
        bail!("the cluster added a member but did not say which");
    };
    let cluster = cluster_id(resp.header.as_ref());
    let env = join_env(&name, &first, member.id, &resp.members);
    match out {
        WriteOut::Table => {
            println!("Member {:x} added to cluster {cluster:x}", member.id);
            println!();
            for (key, value) in &env {
                println!("{key}=\"{value}\"");
            }
            let flags: Vec<String> = env
                .iter()
                .map(|(key, value)| format!("{} {value}", flag_of(key)))
                .collect();
            println!();
            println!(
                "Start it as: flotilla-node {} (plus its own --data-dir and listen URLs)",
                flags.join(" ")
            );
            if member.is_learner {
                println!(
                    "then, once it has caught up: flotilla member promote {:x}",
                    member.id
                );
            }
        }
        WriteOut::Json => {
            let mut v = members_json(resp.header.as_ref(), &resp.members);
            v["member"] = member_json(&member);
            v["env"] = env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            println!("{v}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, url: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_ur_ls: vec![url.into()],
            client_ur_ls: Vec::new(),
            is_learner: false,
        }
    }

    #[test]
    fn the_new_member_is_started_with_the_started_members_and_itself() {
        let members = [
            member(1, "a", "http://a:2380"),
            member(2, "", "http://unstarted:2380"),
            member(3, "", "http://new:2380"),
        ];
        let env = join_env("n", "http://new:2380", 3, &members);
        assert_eq!(
            env,
            [
                ("FLOTILLA_NAME".into(), "n".into()),
                (
                    "FLOTILLA_INITIAL_CLUSTER".into(),
                    "a=http://a:2380,n=http://new:2380".into()
                ),
                (
                    "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS".into(),
                    "http://new:2380".into()
                ),
                ("FLOTILLA_INITIAL_CLUSTER_STATE".into(), "existing".into()),
            ]
        );
    }

    #[test]
    fn flags_mirror_the_environment() {
        assert_eq!(flag_of("FLOTILLA_INITIAL_CLUSTER"), "--initial-cluster");
        assert_eq!(
            flag_of("FLOTILLA_INITIAL_ADVERTISE_PEER_URLS"),
            "--initial-advertise-peer-urls"
        );
    }
}
