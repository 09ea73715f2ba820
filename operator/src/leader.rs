//! Leader election among operator replicas through a
//! `coordination.k8s.io/v1` Lease: one replica reconciles, the others wait
//! to take over when its lease runs out. A replica that cannot renew in
//! time stops (the caller exits), so two never reconcile at once for
//! longer than the clock skew between them.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// What to do with the lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// There is none: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    TakeOver,
    /// Someone else holds it.
    Wait {
        /// Who.
        holder: String,
    },
}

/// Decides from the lease's spec (pure, for the tests).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if t + duration > now => LeaseAction::Wait {
            holder: holder.to_string(),
        },
        _ => LeaseAction::TakeOver,
    }
}

/// Competes for, holds and releases one Lease.
#[derive(Clone, Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// Lease `name` in `namespace`, held by `identity` for `duration` per renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// One round: creates, renews or takes over the lease if it may.
    /// `Ok(true)` while this replica holds it. A lost race (conflict) is
    /// `Ok(false)`.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let action = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (action, current) {
            (LeaseAction::Wait { holder }, _) => {
                tracing::debug!(%holder, "another replica leads");
                return Ok(false);
            }
            (LeaseAction::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
            (action, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if action == LeaseAction::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                // The resourceVersion read above makes this a compare-and-swap.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up, if held, so a standby takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    fn lease(holder: Option<&str>, renewed: i64, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_replica_is_waited_on_until_it_expires() {
        let l = lease(Some("b"), 1000, 15);
        assert_eq!(
            decide(Some(&l), "a", at(1010)),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&l), "a", at(1014)),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(decide(Some(&l), "a", at(1015)), LeaseAction::TakeOver);
    }

    fn elector(api: &crate::testing::api_server::ApiServer, identity: &str) -> Elector {
        Elector::new(
            api.client(),
            "ops",
            "flotilla-operator",
            identity,
            Duration::from_secs(15),
        )
    }

    async fn holder(api: &crate::testing::api_server::ApiServer) -> Option<String> {
        let lease =
            api.get("/apis/coordination.k8s.io/v1/namespaces/ops/leases/flotilla-operator")?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// Two replicas against one API server: the first creates and holds
    /// the lease, the second waits, and takes over at once when the first
    /// releases it.
    #[tokio::test]
    async fn one_replica_leads_and_hands_over_on_release() {
        let api = crate::testing::api_server::ApiServer::default();
        let a = elector(&api, "a");
        let b = elector(&api, "b");
        assert!(
            a.try_lead().await.expect("a"),
            "the first creates the lease"
        );
        assert!(
            !b.try_lead().await.expect("b"),
            "the second waits on a live lease"
        );
        assert!(a.try_lead().await.expect("a renews"));
        assert_eq!(holder(&api).await.as_deref(), Some("a"));
        b.release()
            .await
            .expect("b releases nothing it does not hold");
        assert_eq!(holder(&api).await.as_deref(), Some("a"));
        a.release().await.expect("a releases");
        assert_eq!(holder(&api).await, None);
        assert!(
            b.try_lead().await.expect("b"),
            "a released lease is taken at once"
        );
        assert!(!a.try_lead().await.expect("a"));
        let lease = api
            .get("/apis/coordination.k8s.io/v1/namespaces/ops/leases/flotilla-operator")
            .expect("lease");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
    }

    /// A renewal that races another writer loses (409) and reports that
    /// it does not lead, rather than failing or overwriting; an API failure
    /// is an error, not a verdict.
    #[tokio::test]
    async fn a_lost_race_is_not_leading() {
        let api = crate::testing::api_server::ApiServer::default();
        let a = elector(&api, "a");
        assert!(a.try_lead().await.expect("a"));
        api.conflict_next("replace leases/flotilla-operator");
        assert!(!a.try_lead().await.expect("a lost race is an answer"));
        api.fail_next("get leases/flotilla-operator");
        assert!(a.try_lead().await.is_err());
        api.take_calls();
        assert!(a.try_lead().await.expect("renewed"));
        assert_eq!(
            api.take_calls(),
            vec![
                "get leases/flotilla-operator",
                "replace leases/flotilla-operator"
            ]
        );
    }

    #[test]
    fn own_released_and_missing_leases() {
        assert_eq!(decide(None, "a", at(0)), LeaseAction::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 0, 15)), "a", at(5000)),
            LeaseAction::Renew
        );
        assert_eq!(
            decide(Some(&lease(None, 1000, 15)), "a", at(1001)),
            LeaseAction::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 1000, 15)), "a", at(1001)),
            LeaseAction::TakeOver
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            decide(Some(&never_renewed), "a", at(1)),
            LeaseAction::TakeOver
        );
    }
}
