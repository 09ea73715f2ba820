//! The reads of a reconcile: StatefulSet, pods and volumes from the API
//! server; membership and statuses from the nodes (bounded by the admin
//! client's timeouts, statuses asked concurrently).

use crate::admin::NodeAdmin;
use crate::error::Error;
use crate::observed::{MemberFacts, Observed, PodFacts, PvcFacts, StatefulSetFacts};
use crate::reconcile::Context;
use crate::resources::Owned;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};

/// Reads everything the plan needs.
pub async fn observe<A: NodeAdmin>(ctx: &Context<A>, owned: &Owned) -> Result<Observed, Error> {
    let names = &owned.names;
    let ns = names.namespace();
    let sts = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .get_opt(names.name())
        .await?;
    let selector = ListParams::default().labels(&names.label_selector());
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await?;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await?;
    let pods: Vec<PodFacts> = pods
        .items
        .iter()
        .filter_map(|p| PodFacts::of(names, p))
        .collect();
    let pvcs = pvcs
        .items
        .iter()
        .filter_map(|p| PvcFacts::of(names, p))
        .collect();
    let membership = match &sts {
        Some(_) => membership(ctx, owned, &pods).await,
        None => Err("the cluster has no pods yet".to_string()),
    };
    Ok(Observed {
        statefulset: sts.as_ref().map(StatefulSetFacts::of),
        pods,
        pvcs,
        membership,
    })
}

async fn membership<A: NodeAdmin>(
    ctx: &Context<A>,
    owned: &Owned,
    pods: &[PodFacts],
) -> Result<Vec<MemberFacts>, String> {
    let names = &owned.names;
    let mut up: Vec<u32> = pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|p| p.ordinal)
        .collect();
    up.sort_unstable();
    if up.is_empty() {
        return Err("no member pod is running".to_string());
    }
    let endpoints: Vec<String> = up.iter().map(|&o| names.client_url(o)).collect();
    let members = ctx
        .admin
        .member_list(&endpoints)
        .await
        .map_err(|e| e.to_string())?;
    let up = &up;
    let statuses = futures::future::join_all(members.iter().map(|m| {
        let ordinal = m
            .peer_urls
            .iter()
            .find_map(|u| names.ordinal_of_peer_url(u));
        async move {
            match ordinal {
                Some(o) if up.contains(&o) => ctx.admin.status(&names.client_url(o)).await.ok(),
                _ => None,
            }
        }
    }))
    .await;
    Ok(members
        .iter()
        .zip(statuses)
        .map(|(m, s)| MemberFacts::of(names, m, s))
        .collect())
}
