//! `flotilla cluster status`: every member's view (leader, term, indexes,
//! version), asked of each member directly, as etcdctl's `endpoint status
//! --cluster`. A member that does not answer is listed with its error; the
//! command fails only when none answers.

use crate::WriteOut;
use crate::connect::{REQUEST_TIMEOUT, call_any, channel, describe};
use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{MemberListRequest, StatusRequest, StatusResponse};
use serde_json::{Value, json};

/// `flotilla cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Status of every member: endpoint, id, leader, term, raft index and
    /// applied index, version; unreachable members with their error.
    Status {
        /// Ask only the --endpoints given instead of every member in the
        /// member list.
        #[arg(long)]
        endpoints_only: bool,
    },
}

/// A member to ask, as the member list knows it.
#[derive(Clone, Debug, Default)]
struct Target {
    endpoint: Option<String>,
    id: Option<u64>,
    name: String,
}

/// One row of the status.
#[derive(Debug)]
struct Row {
    target: Target,
    answer: Result<StatusResponse, String>,
}

impl Row {
    fn id(&self) -> Option<u64> {
        match &self.answer {
            Ok(s) => s.header.as_ref().map(|h| h.member_id).or(self.target.id),
            Err(_) => self.target.id,
        }
    }
}

/// The members to ask: the member list's, or the given endpoints when that
/// list cannot be had (or is not wanted).
async fn targets(endpoints: &[String], endpoints_only: bool) -> Vec<Target> {
    let given = || {
        endpoints
            .iter()
            .map(|e| Target {
                endpoint: Some(e.clone()),
                ..Target::default()
            })
            .collect()
    };
    if endpoints_only {
        return given();
    }
    let list = call_any(endpoints, |ch| async move {
        ClusterClient::new(ch)
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
    })
    .await;
    match list {
        Ok(list) if !list.members.is_empty() => list
            .members
            .into_iter()
            .map(|m| Target {
                endpoint: m.client_ur_ls.into_iter().next(),
                id: Some(m.id),
                name: m.name,
            })
            .collect(),
        Ok(_) => given(),
        Err(e) => {
            eprintln!("warning: no member list ({e:#}); asking the given endpoints only");
            given()
        }
    }
}

/// Asks every target at once, each bounded by the request timeout.
async fn statuses(targets: Vec<Target>) -> Vec<Row> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let Some(endpoint) = target.endpoint.clone() else {
            continue;
        };
        asks.spawn(async move {
            let answer = match channel(&endpoint) {
                Ok(ch) => {
                    let mut client = MaintenanceClient::new(ch);
                    let call = client.status(StatusRequest {});
                    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                        Ok(Ok(s)) => Ok(s.into_inner()),
                        Ok(Err(e)) => Err(describe(&e)),
                        Err(_) => Err("no answer in time".to_string()),
                    }
                }
                Err(e) => Err(format!("{e:#}")),
            };
            (i, answer)
        });
    }
    let mut answers: Vec<Option<Result<StatusResponse, String>>> =
        targets.iter().map(|_| None).collect();
    while let Some(joined) = asks.join_next().await {
        if let Ok((i, answer)) = joined {
            answers[i] = Some(answer);
        }
    }
    targets
        .into_iter()
        .zip(answers)
        .map(|(target, answer)| {
            let answer = answer.unwrap_or_else(|| {
                Err(if target.endpoint.is_none() {
                    "not started: no client URL published yet".to_string()
                } else {
                    "the status request failed".to_string()
                })
            });
            Row { target, answer }
        })
        .collect()
}

fn row_json(row: &Row) -> Value {
    let mut v = json!({
        "endpoint": row.target.endpoint,
        "id": row.id(),
        "id_hex": row.id().map(|id| format!("{id:x}")),
        "name": row.target.name,
    });
    match &row.answer {
        Ok(s) => {
            v["reachable"] = json!(true);
            v["is_leader"] = json!(row.id() == Some(s.leader));
            v["is_learner"] = json!(s.is_learner);
            v["leader"] = json!(s.leader);
            v["raft_term"] = json!(s.raft_term);
            v["raft_index"] = json!(s.raft_index);
            v["raft_applied_index"] = json!(s.raft_applied_index);
            v["version"] = json!(s.version);
            v["db_size"] = json!(s.db_size);
            v["errors"] = json!(s.errors);
        }
        Err(e) => {
            v["reachable"] = json!(false);
            v["errors"] = json!([e]);
        }
    }
    v
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<26} {:<17} {:<8} {:<7} {:<7} {:<6} {:<9} {:<9} {:<24} ERRORS",
        "ENDPOINT", "ID", "NAME", "LEADER", "LEARNER", "TERM", "INDEX", "APPLIED", "VERSION"
    );
    for row in rows {
        let endpoint = row.target.endpoint.as_deref().unwrap_or("-");
        let id = row.id().map_or("-".to_string(), |id| format!("{id:x}"));
        let name = if row.target.name.is_empty() {
            "-"
        } else {
            &row.target.name
        };
        match &row.answer {
            Ok(s) => println!(
                "{endpoint:<26} {id:<17} {name:<8} {:<7} {:<7} {:<6} {:<9} {:<9} {:<24} {}",
                row.id() == Some(s.leader),
                s.is_learner,
                s.raft_term,
                s.raft_index,
                s.raft_applied_index,
                s.version,
                s.errors.join("; ")
            ),
            Err(e) => println!(
                "{endpoint:<26} {id:<17} {name:<8} {:<7} {:<7} {:<6} {:<9} {:<9} {:<24} {e}",
                "-", "-", "-", "-", "-", "-"
            ),
        }
    }
}

/// Runs a `cluster` subcommand.
pub async fn run(cmd: ClusterCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        ClusterCommand::Status { endpoints_only } => {
            let rows = statuses(targets(endpoints, endpoints_only).await).await;
            let answered = rows.iter().filter(|r| r.answer.is_ok()).count();
            match out {
                WriteOut::Table => print_table(&rows),
                WriteOut::Json => {
                    let answers = || rows.iter().filter_map(|r| r.answer.as_ref().ok());
                    // The leader as the member of the newest term knows it.
                    let leader = answers()
                        .filter(|s| s.leader != 0)
                        .max_by_key(|s| s.raft_term)
                        .map(|s| s.leader);
                    let cluster_id =
                        answers().find_map(|s| s.header.as_ref().map(|h| h.cluster_id));
                    println!(
                        "{}",
                        json!({
                            "cluster_id": cluster_id,
                            "leader": leader,
                            "members": rows.iter().map(row_json).collect::<Vec<_>>(),
                        })
                    );
                }
            }
            if answered == 0 {
                bail!("no member answered");
            }
        }
    }
    Ok(())
}
