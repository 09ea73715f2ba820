//! `flotilla group list|describe`: consumer groups.

use crate::WriteOut;
use anyhow::Result;
use clap::Subcommand;
use flotilla_client::broker::BrokerClient;
use serde_json::json;

/// `flotilla group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups (with members or committed offsets).
    List,
    /// Show a group's generation, members, assignment and committed
    /// offsets.
    Describe {
        /// Group name.
        group: String,
    },
}

/// Runs a `group` subcommand.
pub async fn run(cmd: GroupCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    let client = BrokerClient::new(endpoints)?;
    match cmd {
        GroupCommand::List => {
            let groups = client.list_groups().await?;
            match out {
                WriteOut::Json => println!("{}", json!({ "groups": groups })),
                WriteOut::Table => groups.iter().for_each(|g| println!("{g}")),
            }
        }
        GroupCommand::Describe { group } => {
            let d = client.describe_group(&group).await?;
            match out {
                WriteOut::Json => println!(
                    "{}",
                    json!({
                        "group": d.group,
                        "generation": d.generation,
                        "topics": d.topics,
                        "members": d.members.iter().map(|m| json!({
                            "member_id": m.member_id,
                            "client_id": m.client_id,
                            "assignment": m.assignment.iter().map(|tp| json!({"topic": tp.topic, "partition": tp.partition})).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "offsets": d.offsets.iter().map(|o| json!({"topic": o.topic, "partition": o.partition, "offset": o.offset})).collect::<Vec<_>>(),
                    })
                ),
                WriteOut::Table => {
                    println!(
                        "group {}  generation {}  topics {}",
                        d.group,
                        d.generation,
                        d.topics.join(",")
                    );
                    println!("{:<40}  {:<20}  ASSIGNMENT", "MEMBER", "CLIENT");
                    for m in &d.members {
                        let a: Vec<String> = m
                            .assignment
                            .iter()
                            .map(|tp| format!("{}-{}", tp.topic, tp.partition))
                            .collect();
                        println!("{:<40}  {:<20}  {}", m.member_id, m.client_id, a.join(","));
                    }
                    println!("{:<40}  {:>9}  {:>12}", "TOPIC", "PARTITION", "COMMITTED");
                    for o in &d.offsets {
                        println!("{:<40}  {:>9}  {:>12}", o.topic, o.partition, o.offset);
                    }
                }
            }
        }
    }
    Ok(())
}
