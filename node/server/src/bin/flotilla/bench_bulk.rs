//! `bench stall`'s bulk phases: one request whose apply touches a whole
//! filled prefix at once, sent while the writers run.
//!
//! `etcdctl check perf --load l` ends with one DeleteRange of about 250,000
//! keys; each member applies it in one go, and while a member's Raft thread
//! applies it that member neither ticks nor answers its peers, so a leader
//! busy for longer than an election timeout steps down (check-quorum) and
//! clients see "no leader" and "leader changed". The **delete** phase does
//! the same beneath the write load: `--delete-keys` keys under their own
//! prefix, then one DeleteRange over it. The **compact** phase sends one
//! Compact at the store's revision when it starts, so that every revision
//! of the fill (and the delete's tombstones) is compacted away at once.
//!
//! For each it records the request's own latency, how long until every
//! member had applied it (a follower applies it after the leader, and on a
//! 2-core machine the three applies queue for the cores), each member's
//! Raft term and which member led, before the request and at the phase's
//! end, and how many keys were left under the prefix.

use crate::bench_stall::Cluster;
use anyhow::Result;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, RangeRequest, StatusResponse,
};
use std::time::{Duration, Instant};

/// The prefix the bulk phases fill, apart from the writers' keys.
const PREFIX: &str = "stall-bulk/";

/// How long one bulk request may take before it counts as failed: far
/// longer than any apply it could cause, so its latency is measured rather
/// than cut off.
const BULK_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait for every member to apply a bulk request.
const APPLY_WAIT: Duration = Duration::from_secs(120);

/// Key `i` of the bulk prefix.
pub(crate) fn key(i: u64) -> Vec<u8> {
    format!("{PREFIX}{i:010}").into_bytes()
}

/// The end of the bulk prefix's range (the prefix with its last byte
/// raised by one).
fn prefix_end() -> Vec<u8> {
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Which bulk request a phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// One DeleteRange over the whole bulk prefix.
    DeleteRange,
    /// One Compact at the store's revision when the phase starts.
    Compact,
}

/// Each member's view at one moment: its Raft term and whether it leads
/// (`None` where it did not answer Status in time).
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Views {
    pub terms: Vec<Option<u64>>,
    /// The name of the member that reported itself leader, if any did.
    pub leader: Option<String>,
}

impl Views {
    async fn now(c: &Cluster) -> Views {
        let mut views = Views::default();
        for (i, m) in c.members.iter().enumerate() {
            let s = c.status(i).await;
            if s.as_ref().is_some_and(leads) {
                views.leader = Some(m.name.clone());
            }
            views.terms.push(s.map(|s| s.raft_term));
        }
        views
    }

    /// "5/5/5 n1": the terms, `?` for a member that did not answer, and
    /// the leader, `-` for none.
    pub fn text(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|t| t.map_or_else(|| "?".to_string(), |t| t.to_string()))
            .collect();
        format!(
            "{} {}",
            terms.join("/"),
            self.leader.as_deref().unwrap_or("-")
        )
    }
}

fn leads(s: &StatusResponse) -> bool {
    s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader)
}

/// What one bulk request did.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Bulk {
    /// "delete-range" or "compact".
    pub request: &'static str,
    /// Keys under the bulk prefix when the request was sent.
    pub keys: i64,
    /// The store's revision when the request was sent (a Compact's target).
    pub revision: i64,
    /// The request's latency as its client saw it.
    pub took_ms: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Keys the DeleteRange reports deleted.
    pub deleted: i64,
    /// From sending the request until every member had applied the
    /// leader's commit index as of the reply (`None`: not within two
    /// minutes).
    pub all_applied_ms: Option<f64>,
    /// Keys under the bulk prefix at the phase's end.
    pub keys_left: i64,
    pub before: Views,
    pub after: Views,
}

/// The keys under the bulk prefix and the store's revision, as `leader`
/// answers a count of the prefix.
async fn count(c: &Cluster, leader: usize) -> Result<(i64, i64)> {
    let mut kv = KvClient::new(c.channel(leader)?);
    let mut req = tonic::Request::new(RangeRequest {
        key: PREFIX.as_bytes().to_vec(),
        range_end: prefix_end(),
        count_only: true,
        ..Default::default()
    });
    req.set_timeout(BULK_TIMEOUT);
    let r = kv.range(req).await?.into_inner();
    Ok((r.count, r.header.map_or(0, |h| h.revision)))
}

/// The highest commit index any member reports.
async fn committed(c: &Cluster) -> u64 {
    let mut index = 0;
    for i in 0..c.members.len() {
        if let Some(s) = c.status(i).await {
            index = index.max(s.raft_index);
        }
    }
    index
}

/// Waits until every member has applied `index`; the time from `sent`.
async fn all_applied(c: &Cluster, index: u64, sent: Instant) -> Option<f64> {
    let deadline = Instant::now() + APPLY_WAIT;
    let mut waiting: Vec<usize> = (0..c.members.len()).collect();
    while !waiting.is_empty() {
        if Instant::now() >= deadline {
            return None;
        }
        let mut still = Vec::new();
        for i in waiting {
            let applied = c.status(i).await.map_or(0, |s| s.raft_applied_index);
            if applied < index {
                still.push(i);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Some(sent.elapsed().as_secs_f64() * 1e3)
}

/// Runs a bulk phase's middle while its writers run from `started` for
/// `seconds`: a third of it of writes alone, then `request` to `leader`,
/// the wait until every member applied it, and writes until the phase's
/// time is up, at least another third of it (so an election the request
/// set off falls inside the phase).
pub(crate) async fn run(
    c: &Cluster,
    request: Request,
    leader: usize,
    started: Instant,
    seconds: u64,
) -> Result<Bulk> {
    let third = Duration::from_secs_f64(seconds as f64 / 3.0);
    tokio::time::sleep(third).await;
    let (keys, revision) = count(c, leader).await?;
    let before = Views::now(c).await;
    let mut kv = KvClient::new(c.channel(leader)?);
    let sent = Instant::now();
    let (reply, deleted) = match request {
        Request::DeleteRange => {
            let mut req = tonic::Request::new(DeleteRangeRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: prefix_end(),
                ..Default::default()
            });
            req.set_timeout(BULK_TIMEOUT);
            match kv.delete_range(req).await {
                Ok(r) => (Ok(()), r.into_inner().deleted),
                Err(e) => (Err(e), 0),
            }
        }
        Request::Compact => {
            // `physical`: the reply waits until the compaction is done,
            // so its latency is the whole compaction.
            let mut req = tonic::Request::new(CompactionRequest {
                revision,
                physical: true,
            });
            req.set_timeout(BULK_TIMEOUT);
            (kv.compact(req).await.map(|_| ()), 0)
        }
    };
    let took_ms = sent.elapsed().as_secs_f64() * 1e3;
    let all_applied_ms = all_applied(c, committed(c).await, sent).await;
    let end = started + Duration::from_secs(seconds);
    tokio::time::sleep(end.saturating_duration_since(Instant::now()).max(third)).await;
    let after = Views::now(c).await;
    let keys_left = match c.leader().await {
        Ok(now) => count(c, now).await.map_or(-1, |(n, _)| n),
        Err(_) => -1,
    };
    Ok(Bulk {
        request: match request {
            Request::DeleteRange => "delete-range",
            Request::Compact => "compact",
        },
        keys,
        revision,
        took_ms,
        error: reply
            .err()
            .map(|e| format!("{:?}: {}", e.code(), e.message())),
        deleted,
        all_applied_ms,
        keys_left,
        before,
        after,
    })
}
