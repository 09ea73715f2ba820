//! The Kafka group coordinator's IO (`flotilla_broker::kcoord`) over a
//! real KV: two brokers in this process on an in-process 3-member cluster.
//! One coordinator per group, chosen through the KV; NOT_COORDINATOR at
//! the other broker; the rendezvous of two members; commits checked and
//! written to the gRPC service's keys; and, when the coordinator stops, the
//! other broker takes the group over from a higher generation and the old
//! members are fenced. Every wait is bounded; nothing asserts on durations.

mod common;

use common::{Cluster, eventually};
use flotilla_broker::kcoord::{self, OffsetToCommit};
use flotilla_broker::kgroup::{GroupError, JoinRequest, JoinResponse};
use flotilla_broker::metadata::{self, CommittedRecord};
use flotilla_broker::{Broker, BrokerConfig, BrokerCore, BrokerMetrics};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn join_req(member: &str) -> JoinRequest {
    JoinRequest {
        member_id: member.into(),
        client_id: "test-client".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), b"meta".to_vec())],
        require_known_member_id: true,
        ..Default::default()
    }
}

/// A new member: MEMBER_ID_REQUIRED, then the join with that id.
async fn join_new(core: &Arc<BrokerCore>, group: &str) -> JoinResponse {
    let first = kcoord::join(core, group, join_req("")).await;
    assert_eq!(first.error, Some(GroupError::MemberIdRequired), "{first:?}");
    assert!(first.member_id.starts_with("test-client-"), "{first:?}");
    kcoord::join(core, group, join_req(&first.member_id)).await
}

fn offset(topic: &str, partition: i32, offset: i64) -> OffsetToCommit {
    OffsetToCommit {
        topic: topic.into(),
        partition,
        offset,
        metadata: "m".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_coordinator_per_group_with_generations_and_commits_in_the_kv() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |id: u64| {
        let mut config = BrokerConfig::new(
            id,
            format!("127.0.0.1:{id}"),
            dir.path().join(id.to_string()),
            cluster.endpoints(),
        );
        config.partition_lease_ttl = Duration::from_millis(1000);
        Broker::start(config, BrokerMetrics::default()).expect("broker")
    };
    let mut brokers = vec![start(101), start(102)];
    let cores: Vec<Arc<BrokerCore>> = brokers.iter().map(|b| b.core().clone()).collect();
    eventually("both brokers registered with a valid lease", || async {
        let (kvs, _) = cores[0]
            .kv
            .range_prefix(metadata::BROKER_PREFIX.as_bytes())
            .await
            .ok()?;
        let live = cores
            .iter()
            .all(|c| c.lease.valid_id(Instant::now()).is_some());
        (kvs.len() == 2 && live).then_some(())
    })
    .await;

    // Both brokers name the same coordinator; the other refuses the group.
    let group = "orders-readers";
    let holder = kcoord::find(&cores[1], group).await.expect("find");
    assert_eq!(kcoord::find(&cores[0], group).await, Ok(holder));
    let (c, other) = if holder == 101 { (0, 1) } else { (1, 0) };
    let (coord, other_core) = (cores[c].clone(), cores[other].clone());
    let refused = kcoord::join(&other_core, group, join_req("")).await;
    assert_eq!(refused.error, Some(GroupError::NotCoordinator));
    assert_eq!(
        kcoord::heartbeat(&other_core, group, "x", 1).await,
        Err(GroupError::NotCoordinator)
    );
    assert!(matches!(
        kcoord::find(&coord, "bad/name").await,
        Err(GroupError::InvalidGroupId)
    ));

    // One member: generation 1, it leads; SyncGroup hands it its assignment.
    let a = join_new(&coord, group).await;
    assert_eq!(a.error, None);
    assert_eq!(a.generation, 1);
    assert_eq!(a.leader, a.member_id);
    let s = kcoord::sync(
        &coord,
        group,
        &a.member_id,
        1,
        vec![(a.member_id.clone(), b"A1".to_vec())],
    )
    .await;
    assert_eq!((s.error, s.assignment.as_slice()), (None, &b"A1"[..]));

    // A second member's JoinGroup waits for the first to rejoin.
    let coord2 = coord.clone();
    let b_join = tokio::spawn(async move { join_new(&coord2, group).await });
    let hb = eventually("the first member told of the rebalance", || async {
        let r = kcoord::heartbeat(&coord, group, &a.member_id, 1).await;
        (r != Ok(())).then_some(r)
    })
    .await;
    assert_eq!(hb, Err(GroupError::RebalanceInProgress));
    let a2 = kcoord::join(&coord, group, join_req(&a.member_id)).await;
    let b = tokio::time::timeout(Duration::from_secs(20), b_join)
        .await
        .expect("the second join answered")
        .expect("join task");
    assert_eq!((a2.error, b.error), (None, None));
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!(a2.members.len(), 2, "the leader sees both members");
    assert!(b.members.is_empty());

    // The follower's SyncGroup waits for the leader's.
    let coord2 = coord.clone();
    let b_id = b.member_id.clone();
    let b_sync = tokio::spawn(async move { kcoord::sync(&coord2, group, &b_id, 2, vec![]).await });
    let s = kcoord::sync(
        &coord,
        group,
        &a.member_id,
        2,
        vec![
            (a.member_id.clone(), b"A2".to_vec()),
            (b.member_id.clone(), b"B2".to_vec()),
        ],
    )
    .await;
    assert_eq!(s.assignment, b"A2");
    let sb = tokio::time::timeout(Duration::from_secs(20), b_sync)
        .await
        .expect("the follower's sync answered")
        .expect("sync task");
    assert_eq!((sb.error, sb.assignment.as_slice()), (None, &b"B2"[..]));

    // Commits: checked against generation and member, stored in the gRPC
    // service's keys and format.
    let wrote = kcoord::commit(
        &coord,
        group,
        &b.member_id,
        2,
        &[offset("t", 0, 42), offset("t", 1, -5)],
    )
    .await
    .expect("commit");
    assert_eq!(
        wrote,
        vec![Ok(()), Err(GroupError::InvalidCommitOffsetSize)]
    );
    let raw = coord
        .kv
        .get(metadata::committed_key(group, "t", 0).as_bytes())
        .await
        .expect("kv")
        .expect("committed key");
    let rec: CommittedRecord = serde_json::from_slice(&raw).expect("json");
    assert_eq!((rec.offset, rec.generation), (42, 2));
    assert_eq!(
        kcoord::commit(&coord, group, &b.member_id, 1, &[offset("t", 0, 1)]).await,
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        kcoord::commit(&coord, group, "", -1, &[offset("t", 0, 1)]).await,
        Err(GroupError::IllegalGeneration),
        "no simple commits while the group has members"
    );
    let fetched = kcoord::fetch_offsets(&coord, group, Some(&[("t".into(), 0), ("t".into(), 9)]))
        .await
        .expect("fetch");
    assert_eq!(
        fetched.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![42, -1]
    );
    let d = kcoord::describe(&coord, group).await.expect("describe");
    assert_eq!((d.state, d.members.len()), ("Stable", 2));

    // The coordinator stops (its lease revoked): the other broker takes
    // the group over, above the stored generation; the old members are
    // unknown there and their commits refused.
    let stopped = brokers.remove(c);
    stopped.shutdown().await;
    let new_holder = eventually("the other broker coordinating", || async {
        kcoord::find(&other_core, group)
            .await
            .ok()
            .filter(|h| *h != holder)
    })
    .await;
    assert_eq!(new_holder, other_core.id());
    assert_eq!(
        kcoord::heartbeat(&other_core, group, &b.member_id, 2).await,
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        kcoord::commit(&other_core, group, &b.member_id, 2, &[offset("t", 0, 7)]).await,
        Err(GroupError::UnknownMemberId)
    );
    let c1 = join_new(&other_core, group).await;
    assert_eq!(c1.error, None);
    assert_eq!(c1.generation, 3, "continues above the stored generation 2");
    let fetched = kcoord::fetch_offsets(&other_core, group, None)
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].offset, 42, "the commit of generation 2 stands");

    // Leaving empties the group; a simple commit is then allowed.
    let left = kcoord::leave(&other_core, group, std::slice::from_ref(&c1.member_id))
        .await
        .expect("leave");
    assert_eq!(left, vec![Ok(())]);
    assert_eq!(
        kcoord::commit(&other_core, group, "", -1, &[offset("t", 0, 50)]).await,
        Ok(vec![Ok(())])
    );
    let listed = kcoord::list(&other_core).await;
    assert!(
        listed
            .iter()
            .all(|g| g.group != group || g.state == "Empty")
    );

    for b in brokers {
        b.shutdown().await;
    }
    cluster.shutdown().await;
}
