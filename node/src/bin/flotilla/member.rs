//! `flotilla member list|add|remove|promote`: etcdctl's membership commands,
//! member ids in hex.
//!
//! Flotilla adds members as learners only (`--learner`): a new member
//! starts, catches up, and is then promoted. `member add` prints what the
//! new member must be started with, as `FLOTILLA_*` environment variables
//! (each also a `flotilla-node` flag), like etcdctl prints `ETCD_*` ones.

use crate::WriteOut;
use crate::connect::{call_any, parse_member_id};
use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_node::config::{
    DEFAULT_CLUSTER_TOKEN, InitialMember, cluster_id_for, founding_member_id,
};
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
    /// Flotilla adds members as learners: pass --learner, start the member
    /// with the printed settings, then `member promote` it once it has
    /// caught up.
    Add {
        /// The new member's name (its --name).
        name: String,
        /// The new member's peer URLs, comma-separated; its id derives from
        /// the first, which is also the URL it must advertise.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add the member as a learner (a non-voting member).
        #[arg(long)]
        learner: bool,
        /// The --initial-cluster-token the cluster was started with.
        #[arg(long, default_value = DEFAULT_CLUSTER_TOKEN)]
        initial_cluster_token: String,
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

/// What a member joining the cluster must be started with.
#[derive(Debug, PartialEq, Eq)]
struct JoinSettings {
    /// Its `--initial-cluster`: the members that bootstrapped the cluster.
    initial_cluster: Vec<InitialMember>,
    /// Whether those members and the token give the cluster's id; if not,
    /// the cluster changed since it was bootstrapped (or the token is
    /// another) and the operator must supply the original list.
    reproduces_cluster_id: bool,
}

/// The `--initial-cluster` of a member joining a cluster of `members` (the
/// new one, `new_id`, included) with id `cluster_id`. A joining member
/// computes the cluster id from its --initial-cluster and token as the
/// founders did, so that list must be the founders': the members whose id
/// derives from their name. When they do not give `cluster_id`, the best
/// guess is every started member but the new one.
fn join_settings(members: &[Member], new_id: u64, token: &str, cluster_id: u64) -> JoinSettings {
    let entry = |m: &Member| {
        Some(InitialMember {
            name: m.name.clone(),
            id: founding_member_id(token, &m.name),
            peer_url: m.peer_ur_ls.first()?.clone(),
        })
    };
    let started = || {
        members
            .iter()
            .filter(|m| m.id != new_id && !m.name.is_empty())
    };
    let mut founders: Vec<InitialMember> = started()
        .filter(|m| m.id == founding_member_id(token, &m.name))
        .filter_map(entry)
        .collect();
    founders.sort_by(|a, b| a.name.cmp(&b.name));
    if !founders.is_empty() && cluster_id_for(token, &founders) == cluster_id {
        return JoinSettings {
            initial_cluster: founders,
            reproduces_cluster_id: true,
        };
    }
    let mut guess: Vec<InitialMember> = started().filter_map(entry).collect();
    guess.sort_by(|a, b| a.name.cmp(&b.name));
    JoinSettings {
        initial_cluster: guess,
        reproduces_cluster_id: false,
    }
}

/// The `FLOTILLA_*` settings of the new member, in order.
fn join_env(name: &str, peer_url: &str, token: &str, join: &JoinSettings) -> Vec<(String, String)> {
    let cluster: Vec<String> = join
        .initial_cluster
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    let mut env = vec![
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
    ];
    if token != DEFAULT_CLUSTER_TOKEN {
        env.push((
            "FLOTILLA_INITIAL_CLUSTER_TOKEN".to_string(),
            token.to_string(),
        ));
    }
    env
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
            initial_cluster_token: token,
        } => add(endpoints, out, name, peer_urls, learner, token).await?,
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
    token: String,
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
    let join = join_settings(&resp.members, member.id, &token, cluster);
    let env = join_env(&name, &first, &token, &join);
    if !join.reproduces_cluster_id {
        eprintln!(
            "warning: the members listed do not give this cluster's id ({cluster:x}) with \
             token {token:?}: the membership changed since the cluster was bootstrapped, or it \
             used another --initial-cluster-token. Start the new member with the \
             --initial-cluster and --initial-cluster-token the cluster was first started with \
             (without the new member)."
        );
    }
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
            v["initial_cluster_reproduces_cluster_id"] = json!(join.reproduces_cluster_id);
            println!("{v}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_node::config::{NodeArgs, NodeConfig};

    /// The founders' configuration as `flotilla-node` resolves it.
    fn founder(name: &str, cluster: &str, token: Option<&str>) -> NodeConfig {
        NodeConfig::resolve(NodeArgs {
            name: Some(name.into()),
            initial_cluster: Some(cluster.into()),
            initial_cluster_token: token.map(str::to_string),
            ..NodeArgs::default()
        })
        .expect("valid founder config")
    }

    fn member(config: &NodeConfig) -> Member {
        Member {
            id: config.member_id,
            name: config.name.clone(),
            peer_ur_ls: vec![config.peer_advertise.clone()],
            client_ur_ls: vec![format!("http://{}", config.client_listen)],
            is_learner: false,
        }
    }

    const CLUSTER: &str = "a=http://127.0.0.1:2480,b=http://127.0.0.1:2481,c=http://127.0.0.1:2482";

    #[test]
    fn founders_give_the_cluster_id_a_joiner_needs() {
        for token in [None, Some("prod")] {
            let configs: Vec<NodeConfig> = ["a", "b", "c"]
                .iter()
                .map(|n| founder(n, CLUSTER, token))
                .collect();
            let cluster_id = configs[0].cluster_id;
            let mut members: Vec<Member> = configs.iter().map(member).collect();
            // Listed in another order, with the new learner and one added
            // (and named) earlier.
            members.reverse();
            let new = Member {
                id: flotilla_node::api::member_id_for_peer_url("http://127.0.0.1:2390"),
                peer_ur_ls: vec!["http://127.0.0.1:2390".into()],
                is_learner: true,
                ..Member::default()
            };
            let earlier = Member {
                id: flotilla_node::api::member_id_for_peer_url("http://127.0.0.1:2389"),
                name: "d".into(),
                peer_ur_ls: vec!["http://127.0.0.1:2389".into()],
                ..Member::default()
            };
            members.push(new.clone());
            members.push(earlier);
            let token = token.unwrap_or(DEFAULT_CLUSTER_TOKEN);
            let join = join_settings(&members, new.id, token, cluster_id);
            assert!(join.reproduces_cluster_id, "token {token}");
            let env = join_env("e", "http://127.0.0.1:2390", token, &join);
            assert_eq!(env[1].1, CLUSTER);
            // What the joiner resolves from exactly these settings.
            let joiner = NodeConfig::resolve(NodeArgs {
                name: Some(env[0].1.clone()),
                initial_cluster: Some(env[1].1.clone()),
                initial_advertise_peer_urls: Some(env[2].1.clone()),
                initial_cluster_state: Some(flotilla_node::config::ClusterState::Existing),
                initial_cluster_token: env.get(4).map(|(_, v)| v.clone()),
                listen_client_urls: Some("http://127.0.0.1:2399".into()),
                listen_metrics_urls: Some("http://127.0.0.1:2398".into()),
                ..NodeArgs::default()
            })
            .expect("the printed settings are valid");
            assert_eq!(joiner.cluster_id, cluster_id);
            assert_eq!(joiner.member_id, new.id);
        }
    }

    #[test]
    fn a_changed_cluster_is_reported() {
        let configs: Vec<NodeConfig> = ["a", "b", "c"]
            .iter()
            .map(|n| founder(n, CLUSTER, None))
            .collect();
        let cluster_id = configs[0].cluster_id;
        // Founder c was removed since.
        let members: Vec<Member> = configs[..2].iter().map(member).collect();
        let join = join_settings(&members, 99, DEFAULT_CLUSTER_TOKEN, cluster_id);
        assert!(!join.reproduces_cluster_id);
        assert_eq!(join.initial_cluster.len(), 2);
        // Another token than the cluster's.
        let members: Vec<Member> = configs.iter().map(member).collect();
        let join = join_settings(&members, 99, "other", cluster_id);
        assert!(!join.reproduces_cluster_id);
        assert_eq!(
            join.initial_cluster.len(),
            3,
            "the best guess still lists them"
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
