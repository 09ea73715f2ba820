//! Reaching the cluster: channels to endpoints, a call that moves on to the
//! next endpoint when one is unreachable, leader discovery, and ids written
//! in hex as etcdctl writes them.

use anyhow::{Context, Result, anyhow, bail};
use flotilla_client::{Client, ClientConfig, ClientError};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{MemberListRequest, StatusRequest};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Time to open a connection to one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one unary request to one endpoint.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The client of the KV calls: retries, leader discovery, exactly-once ids.
pub fn client(endpoints: &[String]) -> Result<Client> {
    Client::new(endpoints, ClientConfig::default()).map_err(client_error)
}

/// A client error as one line: the server's message, not its code's prose.
pub fn client_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Status(s) => anyhow!("{}", describe(&s)),
        other => anyhow!(other),
    }
}

/// A status as one line: its message, then the causes behind a transport
/// failure ("tcp connect error: Connection refused (os error 111)").
pub fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

pub(crate) fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// A lazily connected channel whose unary calls time out.
pub fn channel(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url(endpoint))
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect_lazy())
}

/// A lazily connected channel for long-lived streams: only connecting times
/// out; the caller bounds each wait on the stream.
pub fn stream_channel(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url(endpoint))
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

/// Whether another member might answer where this one failed: it could not
/// be reached, or it knows no leader right now.
fn try_next(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            // What a channel's own timeout gives.
            | tonic::Code::Cancelled
    )
}

/// Runs `call` on each endpoint in turn until one answers. Moves on only
/// when an endpoint is unreachable or has no leader; any other error is the
/// cluster's answer and is returned as is.
pub async fn call_any<T, F, Fut>(endpoints: &[String], call: F) -> Result<T>
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = None;
    for endpoint in endpoints {
        match call(channel(endpoint)?).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if try_next(&e) => last = Some(format!("{endpoint}: {}", describe(&e))),
            Err(e) => bail!("{}", describe(&e)),
        }
    }
    match last {
        Some(last) => bail!("no endpoint answered (last: {last})"),
        None => bail!("no endpoints given"),
    }
}

/// The client URL of the current leader, asked of each endpoint in turn:
/// its Status names the leader, its member list the leader's URL.
pub async fn leader_endpoint(endpoints: &[String]) -> Result<String> {
    let mut last = None;
    for endpoint in endpoints {
        match leader_via(endpoint).await {
            Ok(url) => return Ok(url),
            Err(e) => last = Some(format!("{endpoint}: {e:#}")),
        }
    }
    bail!(
        "no endpoint knows the leader (last: {})",
        last.unwrap_or_else(|| "no endpoints given".into())
    )
}

async fn leader_via(endpoint: &str) -> Result<String> {
    let ch = channel(endpoint)?;
    let status = MaintenanceClient::new(ch.clone())
        .status(StatusRequest {})
        .await
        .map_err(|e| anyhow!("{}", describe(&e)))?
        .into_inner();
    if status.leader == 0 {
        bail!("no leader");
    }
    if status.header.as_ref().map(|h| h.member_id) == Some(status.leader) {
        return Ok(endpoint.to_string());
    }
    let members = ClusterClient::new(ch)
        .member_list(MemberListRequest {
            linearizable: false,
        })
        .await
        .map_err(|e| anyhow!("{}", describe(&e)))?
        .into_inner()
        .members;
    members
        .into_iter()
        .find(|m| m.id == status.leader)
        .and_then(|m| m.client_ur_ls.into_iter().next())
        .ok_or_else(|| anyhow!("the leader {:x} has no client URL yet", status.leader))
}

/// Parses a member id written in hex (`8e9e05c52164694d`), as etcdctl
/// prints and takes them.
pub fn parse_member_id(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match u64::from_str_radix(digits, 16) {
        Ok(0) => Err("member id 0 is not valid".into()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!(
            "{text:?} is not a member id in hex (like 8e9e05c52164694d)"
        )),
    }
}

/// Parses a lease id written in hex (`694d5765fc71500b`), as etcdctl
/// prints and takes them.
pub fn parse_lease_id(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match i64::from_str_radix(digits, 16) {
        Ok(id) if id > 0 => Ok(id),
        Ok(_) => Err(format!("lease id {text:?} must be positive")),
        Err(_) => Err(format!(
            "{text:?} is not a lease id in hex (like 694d5765fc71500b)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_hex() {
        assert_eq!(
            parse_member_id("8e9e05c52164694d"),
            Ok(0x8e9e_05c5_2164_694d)
        );
        assert_eq!(parse_member_id("0x1f"), Ok(0x1f));
        assert!(parse_member_id("0").is_err());
        assert!(parse_member_id("node-1").unwrap_err().contains("in hex"));
        assert_eq!(
            parse_lease_id("694d5765fc71500b"),
            Ok(0x694d_5765_fc71_500b)
        );
        assert!(parse_lease_id("-5").is_err());
        assert!(
            parse_lease_id("8000000000000000").is_err(),
            "above i64::MAX"
        );
        assert!(parse_lease_id("").is_err());
    }
}
