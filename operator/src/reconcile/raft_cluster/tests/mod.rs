//! Reconcile scenarios against the fake API server and fake nodes
//! ([`crate::testing`]): the exact requests and membership calls of each
//! reconcile, with a fresh operator for every one.

mod create;
mod faults;
mod rolling;
mod scale;

use crate::testing::harness::Harness;

/// Reconciles and settles until the cluster is Running, at most `rounds`
/// times; returns every reconcile's writes.
async fn converge(h: &Harness, rounds: usize) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for _ in 0..rounds {
        let writes = h.step().await;
        h.settle();
        let done = h.status().phase == Some(crate::crd::Phase::Running);
        all.push(writes);
        if done {
            return all;
        }
    }
    panic!(
        "not converged after {rounds} rounds: {:#?}\nstatus: {:#?}",
        all,
        h.status()
    );
}

/// A 3-member cluster, created and Running, calls forgotten.
async fn running(replicas: i32) -> Harness {
    let h = Harness::new(replicas);
    converge(&h, 10).await;
    h.api.take_calls();
    h.nodes.clear_calls();
    h
}
