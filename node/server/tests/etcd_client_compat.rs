//! The `etcd-client` crate (0.21), unchanged, against a three-member
//! Flotilla cluster on loopback (the in-process harness in `common`): KV
//! (put, get, delete, txn, compact), Lease, Watch, Cluster and Maintenance,
//! through a client given every member's endpoint (its balanced channel
//! sends each call to any member) and through one given a follower only.
//! Every assertion is on values the server returned: revisions, versions,
//! events, error codes and etcd's error texts. Waits are bounded; nothing
//! asserts on durations.

mod common;

use common::*;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, Event, EventType,
    GetOptions, KeyValue, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions, WatchResponse,
    WatchStream,
};

/// The cluster id the harness gives every member.
const CLUSTER_ID: u64 = 0xf107;

/// A client of `endpoints` whose every call is bounded by [`WAIT`].
async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(WAIT)
        .with_timeout(WAIT);
    Client::connect(endpoints, Some(options))
        .await
        .expect("etcd-client connects")
}

/// The gRPC code and message of a failed call.
fn status(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn value(kv: &KeyValue) -> &str {
    kv.value_str().expect("utf-8 value")
}

fn key(kv: &KeyValue) -> &str {
    kv.key_str().expect("utf-8 key")
}

/// The store revision a response header names.
fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("header").revision()
}

/// The next response on a watch stream, within [`WAIT`].
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a watch response within the wait")
        .expect("the watch stream is healthy")
        .expect("the watch stream is open")
}

/// Reads responses until `n` events for `watch_id` have arrived; every
/// response on the way must be for that watcher.
async fn events_of(stream: &mut WatchStream, watch_id: i64, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        let r = next(stream).await;
        assert_eq!(
            r.watch_id(),
            watch_id,
            "an event for another watcher: {r:?}"
        );
        assert!(!r.canceled(), "watcher canceled: {}", r.cancel_reason());
        events.extend(r.events().iter().cloned());
    }
    assert_eq!(events.len(), n, "more events than written: {events:?}");
    events
}

/// Creates a watcher and returns its id from the `created` response.
async fn create_watch(stream: &mut WatchStream, k: &str, options: WatchOptions) -> i64 {
    stream.watch(k, Some(options)).await.expect("send create");
    let r = next(stream).await;
    assert!(r.created(), "expected a created response, got {r:?}");
    assert!(!r.canceled(), "refused: {}", r.cancel_reason());
    r.watch_id()
}

fn assert_event(e: &Event, kind: EventType, k: &str, v: &str, mod_revision: i64) {
    assert_eq!(e.event_type(), kind, "{e:?}");
    let kv = e.kv().expect("event kv");
    assert_eq!(key(kv), k);
    assert_eq!(value(kv), v);
    assert_eq!(kv.mod_revision(), mod_revision, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_through_all_endpoints() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;

    // Put, then put again with prev_kv.
    let first = client
        .put("a", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    let header = first.header().expect("header");
    assert_eq!(header.cluster_id(), CLUSTER_ID);
    assert!(header.raft_term() > 0);
    assert!(first.prev_key().is_none(), "a new key has no previous kv");
    let r1 = header.revision();
    let second = client
        .put("a", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(rev(second.header()), r1 + 1, "one revision per put");
    let prev = second.prev_key().expect("prev_kv");
    assert_eq!(
        (
            value(prev),
            prev.version(),
            prev.create_revision(),
            prev.mod_revision()
        ),
        ("v1", 1, r1, r1)
    );

    // A single key, now and at a past revision.
    let got = client.get("a", None).await.expect("get");
    assert_eq!(got.count(), 1);
    assert!(!got.more());
    assert_eq!(rev(got.header()), r1 + 1);
    let kv = &got.kvs()[0];
    assert_eq!(
        (
            key(kv),
            value(kv),
            kv.version(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.lease()
        ),
        ("a", "v2", 2, r1, r1 + 1, 0)
    );
    let old = client
        .get("a", Some(GetOptions::new().with_revision(r1)))
        .await
        .expect("get at a past revision");
    assert_eq!(value(&old.kvs()[0]), "v1");
    assert_eq!(old.kvs()[0].version(), 1);
    let missing = client.get("nothing", None).await.expect("get");
    assert_eq!((missing.count(), missing.kvs().len()), (0, 0));

    // A prefix: limit, count_only, keys_only, sort.
    for (i, k) in ["p/1", "p/2", "p/3"].iter().enumerate() {
        let r = client.put(*k, format!("x{i}"), None).await.expect("put");
        assert_eq!(rev(r.header()), r1 + 2 + i as i64);
    }
    let all = client
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix");
    let keys: Vec<&str> = all.kvs().iter().map(key).collect();
    assert_eq!(keys, ["p/1", "p/2", "p/3"]);
    assert_eq!(all.count(), 3);
    let limited = client
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .expect("limit");
    assert_eq!(
        (limited.kvs().len(), limited.count(), limited.more()),
        (2, 3, true)
    );
    let counted = client
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count_only");
    assert_eq!((counted.kvs().len(), counted.count()), (0, 3));
    let keys_only = client
        .get("p/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("keys_only");
    assert_eq!(keys_only.kvs().len(), 3);
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    assert_eq!(keys_only.kvs()[2].mod_revision(), r1 + 4);
    let sorted = client
        .get(
            "p/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .expect("sorted");
    let keys: Vec<&str> = sorted.kvs().iter().map(key).collect();
    assert_eq!(keys, ["p/3", "p/2", "p/1"]);
    let past = client
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_revision(r1 + 2)),
        )
        .await
        .expect("prefix at a past revision");
    assert_eq!(past.count(), 1, "only p/1 existed then");

    // Delete a prefix with prev_kv: one revision for all three.
    let deleted = client
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete");
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(rev(deleted.header()), r1 + 5);
    let prev: Vec<(&str, &str)> = deleted
        .prev_kvs()
        .iter()
        .map(|kv| (key(kv), value(kv)))
        .collect();
    assert_eq!(prev, [("p/1", "x0"), ("p/2", "x1"), ("p/3", "x2")]);
    let after = client
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix");
    assert_eq!((after.count(), rev(after.header())), (0, r1 + 5));
    let before = client
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_revision(r1 + 4)),
        )
        .await
        .expect("prefix before the delete");
    assert_eq!(before.count(), 3);
    let nothing = client.delete("p/1", None).await.expect("delete");
    assert_eq!(nothing.deleted(), 0);
    assert_eq!(
        rev(nothing.header()),
        r1 + 5,
        "deleting nothing is no revision"
    );

    // A key put again after its delete starts at version 1.
    let again = client.put("p/1", "new", None).await.expect("put");
    let got = client.get("p/1", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!(
        (kv.version(), kv.create_revision()),
        (1, rev(again.header()))
    );

    // etcd's errors, with etcd's texts.
    let future = client
        .get("a", Some(GetOptions::new().with_revision(r1 + 1000)))
        .await
        .expect_err("a future revision");
    assert_eq!(
        status(future),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_string()
        )
    );
    let empty = client.put("", "v", None).await.expect_err("an empty key");
    assert_eq!(
        status(empty),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided".to_string()
        )
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_branches_and_nesting() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;
    let rt = rev(client.put("t", "1", None).await.expect("put").header());

    // value ==: the success branch, whose read sees the branch's own put.
    let txn = Txn::new()
        .when([Compare::value("t", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("t", "2", None), TxnOp::get("t", None)])
        .or_else([TxnOp::put("t", "wrong", None)]);
    let r = client.txn(txn).await.expect("txn");
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), rt + 1, "one revision for the whole txn");
    match &r.op_responses()[..] {
        [TxnOpResponse::Put(p), TxnOpResponse::Get(g)] => {
            assert_eq!(rev(p.header()), rt + 1);
            let kv = &g.kvs()[0];
            assert_eq!(
                (value(kv), kv.version(), kv.mod_revision()),
                ("2", 2, rt + 1)
            );
        }
        other => panic!("unexpected responses {other:?}"),
    }

    // version ==: false now (it is 2), so the failure branch runs; a
    // read-only branch makes no revision.
    let txn = Txn::new()
        .when([Compare::version("t", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("t", "wrong", None)])
        .or_else([TxnOp::get("t", None)]);
    let r = client.txn(txn).await.expect("txn");
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), rt + 1);
    match &r.op_responses()[..] {
        [TxnOpResponse::Get(g)] => assert_eq!(value(&g.kvs()[0]), "2"),
        other => panic!("unexpected responses {other:?}"),
    }

    // Every compare must hold: create and mod revision, version, value.
    let all_hold = [
        Compare::create_revision("t", CompareOp::Equal, rt),
        Compare::mod_revision("t", CompareOp::Greater, rt),
        Compare::mod_revision("t", CompareOp::Less, rt + 2),
        Compare::version("t", CompareOp::NotEqual, 1),
        Compare::value("t", CompareOp::Greater, "1"),
        Compare::value("t", CompareOp::Less, "3"),
    ];
    let r = client
        .txn(
            Txn::new()
                .when(all_hold.clone())
                .and_then([TxnOp::put("ok", "1", None)]),
        )
        .await
        .expect("txn");
    assert!(r.succeeded());
    let mut one_fails = all_hold.to_vec();
    one_fails.push(Compare::create_revision("t", CompareOp::Greater, rt));
    let r = client
        .txn(
            Txn::new()
                .when(one_fails)
                .and_then([TxnOp::put("ok", "2", None)]),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded());
    let ok = client.get("ok", None).await.expect("get");
    assert_eq!(value(&ok.kvs()[0]), "1", "the failed txn wrote nothing");

    // Put-if-absent: a missing key has create revision 0.
    let absent = || {
        Txn::new()
            .when([Compare::create_revision("lock", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("lock", "me", None)])
            .or_else([TxnOp::get("lock", None)])
    };
    assert!(client.txn(absent()).await.expect("txn").succeeded());
    let second = client.txn(absent()).await.expect("txn");
    assert!(!second.succeeded());

    // Compare over a prefix: every key in it must hold.
    client.put("r/1", "a", None).await.expect("put");
    client.put("r/2", "b", None).await.expect("put");
    let over = |v: &str| {
        Txn::new()
            .when([Compare::value("r/", CompareOp::Greater, v).with_prefix()])
            .and_then([TxnOp::put("r/seen", v, None)])
    };
    assert!(client.txn(over("0")).await.expect("txn").succeeded());
    assert!(
        !client.txn(over("a")).await.expect("txn").succeeded(),
        "r/1 is not > a"
    );

    // A nested txn in the success branch, with a delete beside it.
    let before = rev(client.get("t", None).await.expect("get").header());
    let inner = Txn::new()
        .when([Compare::value("t", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("nested", "inner-then", None)])
        .or_else([TxnOp::put("nested", "inner-else", None)]);
    let outer = Txn::new()
        .when([Compare::version("t", CompareOp::Equal, 2)])
        .and_then([TxnOp::txn(inner), TxnOp::delete("ok", None)]);
    let r = client.txn(outer).await.expect("nested txn");
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), before + 1);
    match &r.op_responses()[..] {
        [TxnOpResponse::Txn(t), TxnOpResponse::Delete(d)] => {
            assert!(t.succeeded());
            assert!(matches!(&t.op_responses()[..], [TxnOpResponse::Put(_)]));
            assert_eq!(d.deleted(), 1);
        }
        other => panic!("unexpected responses {other:?}"),
    }
    let nested = client.get("nested", None).await.expect("get");
    assert_eq!(value(&nested.kvs()[0]), "inner-then");
    assert_eq!(nested.kvs()[0].mod_revision(), before + 1);

    // etcd's rule: no key written twice in one branch.
    let twice = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    assert_eq!(
        status(client.txn(twice).await.expect_err("duplicate key")),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request".to_string()
        )
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_ttl_revoke() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;

    let granted = client.lease_grant(60, None).await.expect("grant");
    assert_eq!(granted.ttl(), 60);
    assert!(granted.id() > 0);
    let id = granted.id();
    let chosen = client
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x7e57)))
        .await
        .expect("grant with an id");
    assert_eq!((chosen.id(), chosen.ttl()), (0x7e57, 30));
    let taken = client
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x7e57)))
        .await
        .expect_err("the id is taken");
    assert_eq!(
        status(taken),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".to_string()
        )
    );

    // Keys attached to the lease.
    client
        .put("l/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with lease");
    let put_b = client
        .put("l/b", "2", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with lease");
    let got = client.get("l/a", None).await.expect("get");
    assert_eq!(got.kvs()[0].lease(), id);
    let unknown = client
        .put("l/c", "3", Some(PutOptions::new().with_lease(0x0bad)))
        .await
        .expect_err("no such lease");
    assert_eq!(
        status(unknown),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".to_string()
        )
    );
    let txn = Txn::new()
        .when([Compare::lease("l/a", CompareOp::Equal, id)])
        .and_then([TxnOp::get("l/", Some(GetOptions::new().with_prefix()))]);
    assert!(client.txn(txn).await.expect("txn").succeeded());

    // TimeToLive with keys, asked of each member through a client of that
    // member alone. The leader counts the TTL down; once it has, no member
    // may report more than the leader did (a follower that answered from
    // its own table would report the full TTL).
    let leader = connect(&[c.url(c.leader())]).await;
    let remaining = eventually("the leader to count the TTL down", || {
        let mut leader = leader.clone();
        async move {
            let ttl = leader
                .lease_time_to_live(id, None)
                .await
                .expect("time to live");
            (ttl.ttl() < 60).then_some(ttl.ttl())
        }
    })
    .await;
    assert!(
        remaining > 0,
        "the lease expired while nobody waited for it"
    );
    for i in 0..c.nodes.len() {
        let mut one = connect(&[c.url(i)]).await;
        let ttl = one
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time to live");
        assert_eq!((ttl.id(), ttl.granted_ttl()), (id, 60), "member {i}");
        assert!(
            ttl.ttl() > 0 && ttl.ttl() <= remaining,
            "member {i}: remaining {} after the leader said {remaining}",
            ttl.ttl()
        );
        let mut keys = ttl.keys().to_vec();
        keys.sort();
        assert_eq!(keys, [b"l/a".to_vec(), b"l/b".to_vec()], "member {i}");
    }

    // KeepAlive through each member: the client checks the first answer
    // itself; later ones come on the stream, each with the full TTL.
    for i in 0..c.nodes.len() {
        let mut one = connect(&[c.url(i)]).await;
        let (mut keeper, mut responses) = one
            .lease_keep_alive(id)
            .await
            .unwrap_or_else(|e| panic!("keep alive through member {i}: {e}"));
        assert_eq!(keeper.id(), id);
        for _ in 0..2 {
            keeper.keep_alive().await.expect("send keepalive");
            let r = tokio::time::timeout(WAIT, responses.message())
                .await
                .expect("a keepalive answer within the wait")
                .expect("stream healthy")
                .expect("stream open");
            assert_eq!((r.id(), r.ttl()), (id, 60), "member {i}");
            assert!(rev(r.header()) >= rev(put_b.header()));
        }
    }
    let leases = client.leases().await.expect("leases");
    let mut ids: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
    ids.sort();
    let mut expected = vec![id, 0x7e57];
    expected.sort();
    assert_eq!(ids, expected);

    // Revoke: its keys go in one revision.
    let revoked = client.lease_revoke(id).await.expect("revoke");
    assert_eq!(rev(revoked.header()), rev(put_b.header()) + 1);
    let left = client
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(left.count(), 0, "revoking the lease deleted its keys");
    let gone = client
        .lease_time_to_live(id, None)
        .await
        .expect("time to live of a revoked lease");
    assert_eq!(gone.ttl(), -1, "etcd answers -1 for a lease that is gone");
    let ids: Vec<i64> = client
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, [0x7e57]);
    assert_eq!(
        status(client.lease_revoke(id).await.expect_err("revoked twice")),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".to_string()
        )
    );
    // The client refuses to keep a missing lease alive (the server answers
    // TTL 0).
    match client.lease_keep_alive(id).await {
        Err(etcd_client::Error::LeaseKeepAliveError(_)) => {}
        other => panic!("expected a keep-alive error, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys_and_tells_watchers() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;
    let lease = client.lease_grant(1, None).await.expect("grant");
    let put = client
        .put(
            "short",
            "lived",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put");
    let from = rev(put.header()) + 1;
    let mut stream = client
        .watch("short", Some(WatchOptions::new().with_start_revision(from)))
        .await
        .expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created());
    // Nobody keeps it alive: the leader expires it through Raft.
    let events = events_of(&mut stream, created.watch_id(), 1).await;
    assert_event(&events[0], EventType::Delete, "short", "", from);
    let got = client.get("short", None).await.expect("get");
    assert_eq!(got.count(), 0);
    let ttl = client
        .lease_time_to_live(lease.id(), None)
        .await
        .expect("ttl");
    assert_eq!(ttl.ttl(), -1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keys_prefixes_history_and_cancel() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;
    let r1 = rev(client.put("w/a", "1", None).await.expect("put").header());
    client.put("w/b", "1", None).await.expect("put");
    client.put("w/a", "2", None).await.expect("put");
    client.delete("w/a", None).await.expect("delete");

    // One key, from a past revision, with prev_kv: its history in order.
    let mut stream = client
        .watch(
            "w/a",
            Some(WatchOptions::new().with_start_revision(r1).with_prev_key()),
        )
        .await
        .expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created());
    let key_watch = created.watch_id();
    let events = events_of(&mut stream, key_watch, 3).await;
    assert_event(&events[0], EventType::Put, "w/a", "1", r1);
    assert!(events[0].prev_kv().is_none(), "a new key has no prev_kv");
    assert_eq!(events[0].kv().expect("kv").version(), 1);
    assert_event(&events[1], EventType::Put, "w/a", "2", r1 + 2);
    assert_eq!(value(events[1].prev_kv().expect("prev_kv")), "1");
    let kv = events[1].kv().expect("kv");
    assert_eq!((kv.version(), kv.create_revision()), (2, r1));
    assert_event(&events[2], EventType::Delete, "w/a", "", r1 + 3);
    assert_eq!(value(events[2].prev_kv().expect("prev_kv")), "2");

    // A prefix on the same stream, from now on; and one that filters puts.
    let now = r1 + 4;
    let prefix_watch = create_watch(
        &mut stream,
        "w/",
        WatchOptions::new().with_prefix().with_start_revision(now),
    )
    .await;
    assert_ne!(prefix_watch, key_watch);
    let deletes_watch = create_watch(
        &mut stream,
        "w/",
        WatchOptions::new()
            .with_prefix()
            .with_start_revision(now)
            .with_filters([WatchFilterType::NoPut]),
    )
    .await;
    client.put("w/c", "1", None).await.expect("put");
    let events = events_of(&mut stream, prefix_watch, 1).await;
    assert_event(&events[0], EventType::Put, "w/c", "1", now);
    // w/a again: both the key and the prefix watchers see it.
    client.put("w/a", "3", None).await.expect("put");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = next(&mut stream).await;
        // Only a response carrying the put counts as its watcher seeing it.
        assert_eq!(r.events().len(), 1, "one event per watcher: {r:?}");
        assert_event(&r.events()[0], EventType::Put, "w/a", "3", now + 1);
        seen.push(r.watch_id());
    }
    seen.sort();
    let mut expected = vec![key_watch, prefix_watch];
    expected.sort();
    assert_eq!(seen, expected);

    // A delete of the whole prefix: one revision, one response per watcher
    // carrying every deleted key in key order.
    let deleted = client
        .delete("w/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    let del_rev = rev(deleted.header());
    let mut by_watcher = std::collections::BTreeMap::new();
    while by_watcher.len() < 3 {
        let r = next(&mut stream).await;
        let keys: Vec<String> = r
            .events()
            .iter()
            .map(|e| {
                assert_eq!(e.event_type(), EventType::Delete);
                assert_eq!(e.kv().expect("kv").mod_revision(), del_rev);
                key(e.kv().expect("kv")).to_string()
            })
            .collect();
        assert!(!keys.is_empty(), "a response without events: {r:?}");
        let again = by_watcher.insert(r.watch_id(), keys);
        assert!(
            again.is_none(),
            "two responses for watcher {}",
            r.watch_id()
        );
    }
    assert_eq!(by_watcher[&key_watch], ["w/a"]);
    assert_eq!(by_watcher[&prefix_watch], ["w/a", "w/b", "w/c"]);
    assert_eq!(by_watcher[&deletes_watch], ["w/a", "w/b", "w/c"]);

    // Cancel the key watcher: confirmed, then silent.
    stream.cancel(key_watch).await.expect("send cancel");
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled());
    assert_eq!(canceled.watch_id(), key_watch);
    let last = rev(client.put("w/a", "4", None).await.expect("put").header());
    // A progress request answers once everything up to its revision was
    // sent, so whatever the canceled watcher would have had came before.
    let mut responses = Vec::new();
    loop {
        let r = next(&mut stream).await;
        if r.watch_id() == -1 && r.events().is_empty() && rev(r.header()) >= last {
            break;
        }
        if r.watch_id() == prefix_watch && !r.events().is_empty() {
            stream.request_progress().await.expect("progress request");
        }
        responses.push(r);
    }
    assert!(
        responses.iter().all(|r| r.watch_id() != key_watch),
        "a canceled watcher got events: {responses:?}"
    );
    assert!(
        responses.iter().any(|r| r.watch_id() == prefix_watch),
        "the prefix watcher saw the put"
    );
    assert!(
        responses.iter().all(|r| r.watch_id() != deletes_watch),
        "the NoPut filter let a put through"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_reads_below_it() {
    let c = Cluster::start().await;
    let mut client = connect(&c.endpoints()).await;
    let r1 = rev(client.put("c", "1", None).await.expect("put").header());
    client.put("c", "2", None).await.expect("put");
    client.put("c", "3", None).await.expect("put");

    let compacted = client
        .compact(r1 + 1, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_eq!(rev(compacted.header()), r1 + 2, "compaction is no revision");
    let below = client
        .get("c", Some(GetOptions::new().with_revision(r1)))
        .await
        .expect_err("below the compaction point");
    assert_eq!(
        status(below),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string()
        )
    );
    let at = client
        .get("c", Some(GetOptions::new().with_revision(r1 + 1)))
        .await
        .expect("at the compaction point");
    assert_eq!(value(&at.kvs()[0]), "2");
    let now = client.get("c", None).await.expect("get");
    assert_eq!((value(&now.kvs()[0]), now.kvs()[0].version()), ("3", 3));
    let again = client
        .compact(r1, None)
        .await
        .expect_err("compacted already");
    assert_eq!(
        status(again),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string()
        )
    );
    let future = client.compact(r1 + 100, None).await.expect_err("future");
    assert_eq!(
        status(future),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_string()
        )
    );

    // A watch from below the compaction point is canceled, naming it.
    let mut stream = client
        .watch("c", Some(WatchOptions::new().with_start_revision(r1)))
        .await
        .expect("watch");
    let mut r = next(&mut stream).await;
    if r.created() && !r.canceled() {
        r = next(&mut stream).await;
    }
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.compact_revision(), r1 + 1);
    assert!(r.events().is_empty());
    // From the compaction point on, history is still there.
    let mut stream = client
        .watch("c", Some(WatchOptions::new().with_start_revision(r1 + 1)))
        .await
        .expect("watch");
    let created = next(&mut stream).await;
    let events = events_of(&mut stream, created.watch_id(), 2).await;
    assert_event(&events[0], EventType::Put, "c", "2", r1 + 1);
    assert_event(&events[1], EventType::Put, "c", "3", r1 + 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_and_status() {
    let c = Cluster::start().await;
    let leader_id = c.nodes[c.leader()].member_id();
    let mut client = connect(&c.endpoints()).await;
    let list = client.member_list().await.expect("member list");
    assert_eq!(list.header().expect("header").cluster_id(), CLUSTER_ID);
    let mut members: Vec<_> = list.members().to_vec();
    members.sort_by_key(|m| m.name().to_string());
    assert_eq!(members.len(), 3);
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.name(), format!("n{}", i + 1));
        assert_eq!(m.id(), c.nodes[i].member_id());
        assert_eq!(m.client_urls(), [c.url(i)]);
        assert_eq!(m.peer_urls().len(), 1);
        assert!(!m.is_learner());
    }
    // Status from each member, through a client of that member alone.
    for i in 0..c.nodes.len() {
        let mut one = connect(&[c.url(i)]).await;
        let s = one.status().await.expect("status");
        let header = s.header().expect("header");
        assert_eq!(header.member_id(), c.nodes[i].member_id());
        assert_eq!(header.cluster_id(), CLUSTER_ID);
        assert_eq!(s.leader(), leader_id, "member {i}");
        assert!(s.raft_term() > 0);
        assert!(s.raft_index() > 0);
        assert!(s.raft_applied_index() > 0);
        assert!(!s.is_learner());
        assert!(s.version().starts_with("3.5."), "{}", s.version());
    }
    c.shutdown().await;
}

/// A client that knows only a follower: writes are forwarded, reads are
/// linearizable there, leases and watches work as through the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_follower_only() {
    let c = Cluster::start().await;
    let follower = c.follower();
    let follower_id = c.nodes[follower].member_id();
    let mut client = connect(&[c.url(follower)]).await;

    let put = client
        .put("f", "1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("forwarded put");
    let r1 = rev(put.header());
    let got = client.get("f", None).await.expect("linearizable get");
    assert_eq!(value(&got.kvs()[0]), "1");
    assert_eq!(got.header().expect("header").member_id(), follower_id);
    assert!(rev(got.header()) >= r1, "the follower's read saw the write");

    let txn = Txn::new()
        .when([Compare::mod_revision("f", CompareOp::Equal, r1)])
        .and_then([TxnOp::put(
            "f",
            "2",
            Some(PutOptions::new().with_prev_key()),
        )]);
    let r = client.txn(txn).await.expect("forwarded txn");
    assert!(r.succeeded());
    match &r.op_responses()[..] {
        [TxnOpResponse::Put(p)] => assert_eq!(value(p.prev_key().expect("prev_kv")), "1"),
        other => panic!("unexpected responses {other:?}"),
    }

    // A watch served by the follower sees writes made through it.
    let mut stream = client
        .watch(
            "f",
            Some(WatchOptions::new().with_start_revision(r1).with_prev_key()),
        )
        .await
        .expect("watch");
    let created = next(&mut stream).await;
    let events = events_of(&mut stream, created.watch_id(), 2).await;
    assert_event(&events[0], EventType::Put, "f", "1", r1);
    assert_event(&events[1], EventType::Put, "f", "2", r1 + 1);

    // Leases: grant, attach, keep alive, time to live, revoke.
    let lease = client.lease_grant(60, None).await.expect("grant");
    let attached = client
        .put(
            "f/leased",
            "x",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put with lease");
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease.id())
        .await
        .expect("keep alive through a follower");
    keeper.keep_alive().await.expect("send keepalive");
    let r = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("a keepalive answer within the wait")
        .expect("stream healthy")
        .expect("stream open");
    assert_eq!((r.id(), r.ttl()), (lease.id(), 60));
    let ttl = client
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 60);
    assert_eq!(ttl.keys(), [b"f/leased".to_vec()]);
    let leases = client.leases().await.expect("leases");
    assert_eq!(leases.leases().len(), 1);
    assert_eq!(leases.leases()[0].id(), lease.id());
    let revoked = client.lease_revoke(lease.id()).await.expect("revoke");
    assert_eq!(rev(revoked.header()), rev(attached.header()) + 1);
    let left = client.get("f/leased", None).await.expect("get");
    assert_eq!(left.count(), 0);

    let deleted = client
        .delete("f", Some(DeleteOptions::new().with_prev_key()))
        .await
        .expect("forwarded delete");
    assert_eq!(deleted.deleted(), 1);
    assert_eq!(value(&deleted.prev_kvs()[0]), "2");
    let events = events_of(&mut stream, created.watch_id(), 1).await;
    assert_event(
        &events[0],
        EventType::Delete,
        "f",
        "",
        rev(deleted.header()),
    );
    assert_eq!(value(events[0].prev_kv().expect("prev_kv")), "2");

    let list = client.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 3);
    let s = client.status().await.expect("status");
    assert_eq!(s.header().expect("header").member_id(), follower_id);
    assert_eq!(s.leader(), c.nodes[c.leader()].member_id());
    drop(keeper);
    c.shutdown().await;
}

/// Waits until member `i` leads, its lessor counts TTLs, and every other
/// member names it as leader.
async fn wait_leader_with_leases(c: &Cluster, i: usize) {
    eventually("the new leader to take over the leases", || async {
        let id = c.id(i);
        let leads = c.nodes[i].raft().status().role == flotilla_raft::Role::Leader;
        let primary = c.nodes[i]
            .lessor()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_primary();
        let known = c.nodes.iter().all(|n| n.raft().status().leader == id);
        (leads && primary && known).then_some(())
    })
    .await;
}

/// One keepalive stream, opened on a follower, while leadership moves to
/// the other follower and then to the member the stream is on: every
/// keepalive is answered with the full TTL, relayed to whoever leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_stream_on_a_follower_follows_the_leader() {
    let c = Cluster::start().await;
    let (leader, follower) = (c.leader(), c.follower());
    let other = (0..c.nodes.len())
        .find(|i| *i != leader && *i != follower)
        .expect("three members");
    let mut client = connect(&[c.url(follower)]).await;
    let lease = client.lease_grant(60, None).await.expect("grant");
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease.id())
        .await
        .expect("keep alive through a follower");
    let mut keep_alive = async |who: &str| {
        keeper.keep_alive().await.expect("send keepalive");
        let r = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("a keepalive answer within the wait")
            .unwrap_or_else(|e| panic!("keepalive with {who} leading: {e}"))
            .expect("stream open");
        assert_eq!((r.id(), r.ttl()), (lease.id(), 60), "{who} leading");
        assert_eq!(
            r.header().expect("header").member_id(),
            c.nodes[follower].member_id(),
            "answered by the member the stream is on"
        );
    };
    keep_alive("the first leader").await;

    let mut at_leader = connect(&[c.url(leader)]).await;
    at_leader
        .move_leader(c.nodes[other].member_id())
        .await
        .expect("move leader");
    wait_leader_with_leases(&c, other).await;
    keep_alive("the other follower").await;

    let mut at_other = connect(&[c.url(other)]).await;
    at_other
        .move_leader(c.nodes[follower].member_id())
        .await
        .expect("move leader");
    wait_leader_with_leases(&c, follower).await;
    keep_alive("the stream's own member").await;

    let ttl = client
        .lease_time_to_live(lease.id(), None)
        .await
        .expect("time to live");
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 60);
    drop(keeper);
    c.shutdown().await;
}
