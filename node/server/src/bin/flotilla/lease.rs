//! `flotilla lease grant|revoke|keepalive|timetolive|list`: etcdctl's lease
//! commands, with lease ids in hex as etcdctl prints them.

use crate::WriteOut;
use crate::connect::{
    REQUEST_TIMEOUT, call_any, describe, leader_endpoint, parse_lease_id, stream_channel,
};
use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, ResponseHeader,
};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// `flotilla lease ...`
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Create a lease of TTL seconds; prints its id in hex.
    Grant {
        /// Time to live, in seconds.
        ttl: i64,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke {
        /// The lease id, in hex.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Keep a lease alive until Ctrl-C (or renew it once, with --once).
    ///
    /// Renews every third of the TTL on the leader, following leadership
    /// as it moves. Fails when the lease has expired or was revoked.
    #[command(alias = "keep-alive")]
    Keepalive {
        /// The lease id, in hex.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Print a lease's granted and remaining TTL.
    Timetolive {
        /// The lease id, in hex.
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also print the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List the live leases.
    List,
}

fn header_json(header: Option<&ResponseHeader>) -> Value {
    header.map_or(Value::Null, |h| {
        json!({
            "cluster_id": h.cluster_id,
            "member_id": h.member_id,
            "revision": h.revision,
            "raft_term": h.raft_term,
        })
    })
}

/// Runs a `lease` subcommand.
pub async fn run(cmd: LeaseCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        LeaseCommand::Grant { ttl } => {
            if ttl <= 0 {
                bail!("the TTL must be at least 1 second, not {ttl}");
            }
            let resp = call_any(endpoints, |ch| async move {
                LeaseClient::new(ch)
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
            })
            .await?;
            if !resp.error.is_empty() {
                bail!("{}", resp.error);
            }
            match out {
                WriteOut::Table => {
                    println!("lease {:016x} granted with TTL({}s)", resp.id, resp.ttl);
                }
                WriteOut::Json => println!(
                    "{}",
                    json!({
                        "header": header_json(resp.header.as_ref()),
                        "id": resp.id,
                        "id_hex": format!("{:016x}", resp.id),
                        "ttl": resp.ttl,
                    })
                ),
            }
        }
        LeaseCommand::Revoke { id } => {
            let resp = call_any(endpoints, |ch| async move {
                LeaseClient::new(ch)
                    .lease_revoke(LeaseRevokeRequest { id })
                    .await
            })
            .await?;
            match out {
                WriteOut::Table => println!("lease {id:016x} revoked"),
                WriteOut::Json => println!(
                    "{}",
                    json!({"header": header_json(resp.header.as_ref()), "id": id, "id_hex": format!("{id:016x}")})
                ),
            }
        }
        LeaseCommand::Keepalive { id, once } => {
            tokio::select! {
                result = keep_alive(endpoints, id, once, out) => result?,
                signal = tokio::signal::ctrl_c() => signal?,
            }
        }
        LeaseCommand::Timetolive { id, keys } => {
            let resp = call_any(endpoints, |ch| async move {
                LeaseClient::new(ch)
                    .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                    .await
            })
            .await?;
            let names: Vec<String> = resp
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            match out {
                WriteOut::Table if resp.granted_ttl == 0 && resp.ttl == -1 => {
                    println!("lease {id:016x} already expired");
                }
                WriteOut::Table => {
                    let mut line = format!(
                        "lease {id:016x} granted with TTL({}s), remaining({}s)",
                        resp.granted_ttl, resp.ttl
                    );
                    if keys {
                        line.push_str(&format!(", attached keys([{}])", names.join(" ")));
                    }
                    println!("{line}");
                }
                WriteOut::Json => println!(
                    "{}",
                    json!({
                        "header": header_json(resp.header.as_ref()),
                        "id": id,
                        "id_hex": format!("{id:016x}"),
                        "ttl": resp.ttl,
                        "granted_ttl": resp.granted_ttl,
                        "keys": names,
                    })
                ),
            }
        }
        LeaseCommand::List => {
            let resp = call_any(endpoints, |ch| async move {
                LeaseClient::new(ch)
                    .lease_leases(LeaseLeasesRequest {})
                    .await
            })
            .await?;
            match out {
                WriteOut::Table => {
                    println!("found {} leases", resp.leases.len());
                    for lease in &resp.leases {
                        println!("{:016x}", lease.id);
                    }
                }
                WriteOut::Json => {
                    let leases: Vec<Value> = resp
                        .leases
                        .iter()
                        .map(|l| json!({"id": l.id, "id_hex": format!("{:016x}", l.id)}))
                        .collect();
                    println!(
                        "{}",
                        json!({"header": header_json(resp.header.as_ref()), "leases": leases})
                    );
                }
            }
        }
    }
    Ok(())
}

/// How one keepalive stream ended.
enum StreamEnd {
    /// `--once` got its answer.
    Done,
    /// The lease no longer exists.
    Gone,
    /// The stream broke (member down, leadership moved): open another.
    Broken(anyhow::Error),
}

/// Renews lease `id` on the leader (keepalives are the leader's business),
/// reopening the stream on the new leader when the old one breaks, for as
/// long as the lease could still be alive.
async fn keep_alive(endpoints: &[String], id: i64, once: bool, out: WriteOut) -> Result<()> {
    // Until the first renewal, give up after one request timeout; after
    // one, when the lease would have expired anyway.
    let mut give_up_at = Instant::now() + REQUEST_TIMEOUT * 2;
    loop {
        let end = match leader_endpoint(endpoints).await {
            Ok(leader) => stream(&leader, id, once, out, &mut give_up_at).await,
            Err(e) => StreamEnd::Broken(e),
        };
        match end {
            StreamEnd::Done => return Ok(()),
            StreamEnd::Gone => bail!("lease {id:016x} expired or revoked"),
            StreamEnd::Broken(e) if Instant::now() >= give_up_at => {
                return Err(e.context(format!("cannot keep lease {id:016x} alive")));
            }
            StreamEnd::Broken(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One keepalive stream to `endpoint`.
async fn stream(
    endpoint: &str,
    id: i64,
    once: bool,
    out: WriteOut,
    give_up_at: &mut Instant,
) -> StreamEnd {
    let channel = match stream_channel(endpoint) {
        Ok(c) => c,
        Err(e) => return StreamEnd::Broken(e),
    };
    // One request in flight at a time: the queue never holds more than one.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
        return StreamEnd::Broken(anyhow!("the request stream closed"));
    }
    let opened = tokio::time::timeout(
        REQUEST_TIMEOUT,
        LeaseClient::new(channel).lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return StreamEnd::Broken(anyhow!("{endpoint}: {}", describe(&status))),
        Err(_) => return StreamEnd::Broken(anyhow!("{endpoint}: no answer")),
    };
    loop {
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => return StreamEnd::Broken(anyhow!("{endpoint}: the stream ended")),
            Ok(Err(status)) => {
                return StreamEnd::Broken(anyhow!("{endpoint}: {}", describe(&status)));
            }
            Err(_) => return StreamEnd::Broken(anyhow!("{endpoint}: no answer")),
        };
        if resp.ttl <= 0 {
            return StreamEnd::Gone;
        }
        print_keepalive(&resp, out);
        let ttl = Duration::from_secs(resp.ttl.unsigned_abs());
        *give_up_at = Instant::now() + ttl.max(REQUEST_TIMEOUT);
        if once {
            return StreamEnd::Done;
        }
        tokio::time::sleep((ttl / 3).max(Duration::from_millis(500))).await;
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return StreamEnd::Broken(anyhow!("{endpoint}: the request stream closed"));
        }
    }
}

fn print_keepalive(resp: &LeaseKeepAliveResponse, out: WriteOut) {
    match out {
        WriteOut::Table => println!("lease {:016x} keepalived with TTL({})", resp.id, resp.ttl),
        WriteOut::Json => println!(
            "{}",
            json!({
                "header": header_json(resp.header.as_ref()),
                "id": resp.id,
                "id_hex": format!("{:016x}", resp.id),
                "ttl": resp.ttl,
            })
        ),
    }
}
