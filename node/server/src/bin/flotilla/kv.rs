//! `flotilla kv get|put|del|txn`: etcdctl's key-value commands, against any
//! etcd v3 endpoint. Writes go through the Rust client, so a retried write
//! applies once on Flotilla.

use crate::WriteOut;
use crate::connect::{client, client_error, parse_lease_id};
use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use flotilla_proto::etcdserverpb::response_op::Response as OpResponse;
use flotilla_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnResponse,
};
use flotilla_proto::mvccpb::KeyValue;
use serde_json::{Value, json};
use std::path::PathBuf;

/// `flotilla kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print keys and values: one key, a range, or every key under a prefix.
    Get(GetArgs),
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach the key to this lease (hex id, as `lease grant` prints).
        #[arg(long, value_parser = parse_lease_id)]
        lease: Option<i64>,
        /// Also print the value the key had before.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Delete a key, a range, or every key under a prefix; prints how many.
    Del {
        #[command(flatten)]
        range: KeyRange,
        /// Also print the deleted keys and values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Run a transaction read from stdin (or --file), as `etcdctl txn`.
    #[command(long_about = crate::txn::HELP)]
    Txn {
        /// Read the transaction from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// A key, or a range of keys, as etcdctl names one.
#[derive(Debug, Args)]
pub struct KeyRange {
    /// The key (the start of the range).
    key: String,
    /// The end of the range, excluded: [key, range_end).
    range_end: Option<String>,
    /// Every key that starts with the key.
    #[arg(long)]
    prefix: bool,
    /// Every key from the key on.
    #[arg(long)]
    from_key: bool,
}

impl KeyRange {
    fn bounds(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        key_range(
            self.key.as_bytes(),
            self.range_end.as_deref().map(str::as_bytes),
            self.prefix,
            self.from_key,
        )
        .map_err(|e| anyhow!(e))
    }
}

/// Options of `flotilla kv get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    range: KeyRange,
    /// Read as of this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Return at most this many keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Print keys only.
    #[arg(long)]
    keys_only: bool,
    /// Print only how many keys there are.
    #[arg(long)]
    count_only: bool,
    /// Print values only.
    #[arg(long, conflicts_with_all = ["keys_only", "count_only"])]
    print_value_only: bool,
}

/// The key and `range_end` of a request for `key`, as etcd's clients build
/// them: the key alone (empty end), `[key, end)` when an end is given, every
/// key starting with `key` with `prefix`, every key from `key` on with
/// `from_key`. An empty key with `prefix` or `from_key` means every key.
pub fn key_range(
    key: &[u8],
    end: Option<&[u8]>,
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    // etcd spells "from the first key" as the key "\0".
    let start = |key: &[u8]| {
        if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        }
    };
    match (end, prefix, from_key) {
        (None, false, false) => Ok((key.to_vec(), Vec::new())),
        (Some(end), false, false) => Ok((key.to_vec(), end.to_vec())),
        (None, true, false) => Ok((start(key), prefix_end(key))),
        (None, false, true) => Ok((start(key), vec![0])),
        _ => Err("a range end, --prefix and --from-key cannot be combined".into()),
    }
}

/// The first key after every key starting with `prefix`: the prefix with its
/// last byte below 0xff incremented; `\0` (no end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Runs a `kv` subcommand.
pub async fn run(cmd: KvCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    let client = client(endpoints)?;
    match cmd {
        KvCommand::Get(args) => {
            let (key, range_end) = args.range.bounds()?;
            let resp = client
                .range(RangeRequest {
                    key,
                    range_end,
                    limit: args.limit,
                    revision: args.rev,
                    keys_only: args.keys_only,
                    count_only: args.count_only,
                    ..RangeRequest::default()
                })
                .await
                .map_err(client_error)?;
            match out {
                WriteOut::Table if args.count_only => println!("{}", resp.count),
                WriteOut::Table => print_kvs(&resp.kvs, args.keys_only, args.print_value_only),
                WriteOut::Json => println!("{}", range_json(&resp)),
            }
        }
        KvCommand::Put {
            key,
            value,
            lease,
            prev_kv,
        } => {
            let resp = client
                .put_request(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    lease: lease.unwrap_or(0),
                    prev_kv,
                    ..PutRequest::default()
                })
                .await
                .map_err(client_error)?;
            match out {
                WriteOut::Table => print_put(&resp),
                WriteOut::Json => println!("{}", put_json(&resp)),
            }
        }
        KvCommand::Del { range, prev_kv } => {
            let (key, range_end) = range.bounds()?;
            let resp = client
                .delete_range(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv,
                })
                .await
                .map_err(client_error)?;
            match out {
                WriteOut::Table => print_del(&resp),
                WriteOut::Json => println!("{}", del_json(&resp)),
            }
        }
        KvCommand::Txn { file } => {
            let text = match file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => tokio::task::spawn_blocking(|| {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
                })
                .await?
                .context("cannot read the transaction from stdin")?,
            };
            let txn = crate::txn::parse_txn(&text)?;
            let resp = client.txn(txn).await.map_err(client_error)?;
            match out {
                WriteOut::Table => print_txn(&resp),
                WriteOut::Json => println!("{}", txn_json(&resp)),
            }
        }
    }
    Ok(())
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// etcdctl's simple output: the key on one line, the value on the next.
fn print_kvs(kvs: &[KeyValue], keys_only: bool, values_only: bool) {
    for kv in kvs {
        if !values_only {
            println!("{}", text(&kv.key));
        }
        if !keys_only {
            println!("{}", text(&kv.value));
        }
    }
}

fn print_put(resp: &PutResponse) {
    println!("OK");
    if let Some(prev) = &resp.prev_kv {
        print_kvs(std::slice::from_ref(prev), false, false);
    }
}

fn print_del(resp: &DeleteRangeResponse) {
    println!("{}", resp.deleted);
    print_kvs(&resp.prev_kvs, false, false);
}

/// etcdctl's: SUCCESS or FAILURE, then each response after a blank line.
fn print_txn(resp: &TxnResponse) {
    println!("{}", if resp.succeeded { "SUCCESS" } else { "FAILURE" });
    for r in &resp.responses {
        println!();
        match &r.response {
            Some(OpResponse::ResponsePut(p)) => print_put(p),
            Some(OpResponse::ResponseRange(g)) => print_kvs(&g.kvs, false, false),
            Some(OpResponse::ResponseDeleteRange(d)) => print_del(d),
            Some(OpResponse::ResponseTxn(t)) => print_txn(t),
            None => println!("(empty response)"),
        }
    }
}

fn header_json(header: Option<&ResponseHeader>) -> Value {
    match header {
        Some(h) => json!({
            "cluster_id": h.cluster_id,
            "member_id": h.member_id,
            "revision": h.revision,
            "raft_term": h.raft_term,
        }),
        None => Value::Null,
    }
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

fn range_json(resp: &RangeResponse) -> Value {
    json!({
        "header": header_json(resp.header.as_ref()),
        "kvs": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        "count": resp.count,
        "more": resp.more,
    })
}

fn put_json(resp: &PutResponse) -> Value {
    json!({
        "header": header_json(resp.header.as_ref()),
        "prev_kv": resp.prev_kv.as_ref().map(kv_json),
    })
}

fn del_json(resp: &DeleteRangeResponse) -> Value {
    json!({
        "header": header_json(resp.header.as_ref()),
        "deleted": resp.deleted,
        "prev_kvs": resp.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
    })
}

fn txn_json(resp: &TxnResponse) -> Value {
    let responses: Vec<Value> = resp
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(OpResponse::ResponsePut(p)) => json!({ "put": put_json(p) }),
            Some(OpResponse::ResponseRange(g)) => json!({ "range": range_json(g) }),
            Some(OpResponse::ResponseDeleteRange(d)) => json!({ "delete_range": del_json(d) }),
            Some(OpResponse::ResponseTxn(t)) => json!({ "txn": txn_json(t) }),
            None => Value::Null,
        })
        .map(|mut v| {
            // Only the transaction's own header is filled in.
            if let Some(inner) = v.as_object_mut().and_then(|o| o.values_mut().next()) {
                inner.as_object_mut().map(|o| o.remove("header"));
            }
            v
        })
        .collect();
    json!({
        "header": header_json(resp.header.as_ref()),
        "succeeded": resp.succeeded,
        "responses": responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_etcdctl_builds_them() {
        let range = |key: &[u8], end: Option<&[u8]>, prefix, from_key| {
            key_range(key, end, prefix, from_key).expect("valid range")
        };
        assert_eq!(range(b"k", None, false, false), (b"k".to_vec(), vec![]));
        assert_eq!(
            range(b"a", Some(b"c"), false, false),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(
            range(b"ab", None, true, false),
            (b"ab".to_vec(), b"ac".to_vec())
        );
        assert_eq!(range(b"a\xff", None, true, false).1, b"b".to_vec());
        assert_eq!(range(b"\xff\xff", None, true, false).1, vec![0]);
        assert_eq!(
            range(b"", None, true, false),
            (vec![0], vec![0]),
            "every key"
        );
        assert_eq!(range(b"k", None, false, true), (b"k".to_vec(), vec![0]));
        assert_eq!(range(b"", None, false, true), (vec![0], vec![0]));
        assert!(key_range(b"k", Some(b"z"), true, false).is_err());
        assert!(key_range(b"k", None, true, true).is_err());
    }
}
