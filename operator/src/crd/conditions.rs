//! Kubernetes conditions (`metav1.Condition`) as both kinds' statuses keep
//! them: one per type, `lastTransitionTime` moved only when the status
//! flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`: the operator could not tell.
    Unknown,
}

impl ConditionStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Sets condition `type_` in `conditions`: replaces an existing one of that
/// type (keeping its transition time when the status did not change) or
/// appends it.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.as_str().to_string();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = Timestamp::from_second(1_000).expect("valid");
        let t1 = Timestamp::from_second(2_000).expect("valid");
        let t2 = Timestamp::from_second(3_000).expect("valid");
        let mut c = Vec::new();
        set_condition(
            &mut c,
            "Available",
            ConditionStatus::False,
            "A",
            "m",
            Some(1),
            t0,
        );
        set_condition(
            &mut c,
            "Available",
            ConditionStatus::False,
            "B",
            "n",
            Some(2),
            t1,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert_eq!((c[0].reason.as_str(), c[0].message.as_str()), ("B", "n"));
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(
            &mut c,
            "Available",
            ConditionStatus::True,
            "C",
            "o",
            Some(2),
            t2,
        );
        assert_eq!(c[0].last_transition_time, Time(t2));
        set_condition(
            &mut c,
            "Degraded",
            ConditionStatus::False,
            "D",
            "",
            Some(2),
            t2,
        );
        assert_eq!(c.len(), 2);
    }
}
