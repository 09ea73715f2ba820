//! `flotilla kv`, `flotilla member` and `flotilla cluster`: talk to any etcd
//! v3 endpoint (Flotilla or etcd itself).

use crate::WriteOut;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use flotilla_node::client::{Client, ClientConfig};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{MemberListRequest, RangeRequest, StatusRequest};
use std::time::Duration;
use tonic::transport::Endpoint;

/// `flotilla kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the value of a key (or of every key under a prefix).
    Get {
        /// The key.
        key: String,
        /// Treat the key as a prefix.
        #[arg(long)]
        prefix: bool,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
}

/// `flotilla member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members.
    List,
}

/// `flotilla cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Status of every endpoint: member, leader, term, indexes.
    Status,
}

fn client(endpoints: &[String]) -> Result<Client> {
    Client::new(endpoints, ClientConfig::default()).context("bad --endpoints")
}

fn channel(endpoint: &str) -> Result<tonic::transport::Channel> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Runs a `kv` subcommand.
pub async fn kv(cmd: KvCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        KvCommand::Get { key, prefix: false } => {
            let value = client(endpoints)?.get(key.as_bytes()).await?;
            match (value, out) {
                (Some(v), WriteOut::Table) => {
                    println!("{key}\n{}", String::from_utf8_lossy(&v));
                }
                (v, WriteOut::Json) => println!(
                    "{}",
                    serde_json::json!({"key": key, "value": v.map(|v| String::from_utf8_lossy(&v).into_owned())})
                ),
                (None, WriteOut::Table) => {}
            }
        }
        KvCommand::Get { key, prefix: true } => {
            let mut end = key.as_bytes().to_vec();
            // The prefix's range end: the key with its last byte incremented.
            while let Some(last) = end.pop() {
                if last < 0xff {
                    end.push(last + 1);
                    break;
                }
            }
            let resp = KvClient::new(channel(&endpoints[0])?)
                .range(RangeRequest {
                    key: key.into_bytes(),
                    range_end: if end.is_empty() { vec![0] } else { end },
                    ..RangeRequest::default()
                })
                .await?
                .into_inner();
            match out {
                WriteOut::Table => {
                    for kv in resp.kvs {
                        println!(
                            "{}\n{}",
                            String::from_utf8_lossy(&kv.key),
                            String::from_utf8_lossy(&kv.value)
                        );
                    }
                }
                WriteOut::Json => {
                    let kvs: Vec<_> = resp
                        .kvs
                        .iter()
                        .map(|kv| {
                            serde_json::json!({
                                "key": String::from_utf8_lossy(&kv.key),
                                "value": String::from_utf8_lossy(&kv.value),
                                "create_revision": kv.create_revision,
                                "mod_revision": kv.mod_revision,
                                "version": kv.version,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::json!({"kvs": kvs, "count": resp.count}));
                }
            }
        }
        KvCommand::Put { key, value } => {
            let revision = client(endpoints)?
                .put(key.as_bytes(), value.as_bytes())
                .await?;
            match out {
                WriteOut::Table => println!("OK"),
                WriteOut::Json => println!("{}", serde_json::json!({"revision": revision})),
            }
        }
        KvCommand::Del { key } => {
            let deleted = client(endpoints)?.delete(key.as_bytes()).await?;
            match out {
                WriteOut::Table => println!("{}", u8::from(deleted)),
                WriteOut::Json => println!("{}", serde_json::json!({"deleted": deleted})),
            }
        }
    }
    Ok(())
}

/// Runs a `member` subcommand.
pub async fn member(cmd: MemberCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        MemberCommand::List => {
            let resp = first_answer(endpoints, |ch| async move {
                ClusterClient::new(ch)
                    .member_list(MemberListRequest {
                        linearizable: false,
                    })
                    .await
            })
            .await?;
            match out {
                WriteOut::Table => {
                    println!(
                        "{:<18} {:<10} {:<8} {:<28} CLIENT URLS",
                        "ID", "NAME", "LEARNER", "PEER URLS"
                    );
                    for m in &resp.members {
                        println!(
                            "{:<18x} {:<10} {:<8} {:<28} {}",
                            m.id,
                            m.name,
                            m.is_learner,
                            m.peer_ur_ls.join(","),
                            m.client_ur_ls.join(",")
                        );
                    }
                }
                WriteOut::Json => {
                    let members: Vec<_> = resp
                        .members
                        .iter()
                        .map(|m| {
                            serde_json::json!({
                                "id": m.id, "name": m.name, "is_learner": m.is_learner,
                                "peer_urls": m.peer_ur_ls, "client_urls": m.client_ur_ls,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "members": members }));
                }
            }
        }
    }
    Ok(())
}

/// Runs a `cluster` subcommand.
pub async fn cluster(cmd: ClusterCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let mut rows = Vec::new();
            let mut failures = 0;
            for endpoint in endpoints {
                let status = MaintenanceClient::new(channel(endpoint)?)
                    .status(StatusRequest {})
                    .await;
                match status {
                    Ok(s) => rows.push((endpoint.clone(), Ok(s.into_inner()))),
                    Err(e) => {
                        failures += 1;
                        rows.push((endpoint.clone(), Err(e.message().to_string())));
                    }
                }
            }
            match out {
                WriteOut::Table => {
                    println!(
                        "{:<26} {:<18} {:<8} {:<6} {:<10} {:<10} ERRORS",
                        "ENDPOINT", "ID", "LEADER", "TERM", "INDEX", "APPLIED"
                    );
                    for (endpoint, row) in &rows {
                        match row {
                            Ok(s) => {
                                let id = s.header.as_ref().map_or(0, |h| h.member_id);
                                println!(
                                    "{:<26} {:<18x} {:<8} {:<6} {:<10} {:<10} {}",
                                    endpoint,
                                    id,
                                    s.leader == id,
                                    s.raft_term,
                                    s.raft_index,
                                    s.raft_applied_index,
                                    s.errors.join("; ")
                                );
                            }
                            Err(e) => println!("{endpoint:<26} unreachable: {e}"),
                        }
                    }
                }
                WriteOut::Json => {
                    let rows: Vec<_> = rows
                        .iter()
                        .map(|(endpoint, row)| match row {
                            Ok(s) => serde_json::json!({
                                "endpoint": endpoint,
                                "member_id": s.header.as_ref().map_or(0, |h| h.member_id),
                                "leader": s.leader,
                                "raft_term": s.raft_term,
                                "raft_index": s.raft_index,
                                "raft_applied_index": s.raft_applied_index,
                                "version": s.version,
                            }),
                            Err(e) => serde_json::json!({"endpoint": endpoint, "error": e}),
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "endpoints": rows }));
                }
            }
            if failures == endpoints.len() {
                bail!("no endpoint answered");
            }
        }
    }
    Ok(())
}

/// Tries each endpoint in turn until one answers.
async fn first_answer<T, F, Fut>(endpoints: &[String], call: F) -> Result<T>
where
    F: Fn(tonic::transport::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = None;
    for endpoint in endpoints {
        match call(channel(endpoint)?).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) => last = Some(format!("{endpoint}: {}", e.message())),
        }
    }
    bail!("no endpoint answered: {}", last.unwrap_or_default())
}
