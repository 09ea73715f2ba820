//! The operator library's errors.

use crate::admin::AdminError;

/// Why a reconcile failed. The controller retries each with backoff; the
/// metrics count them by [`Error::reason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A node's admin API failed a membership call.
    #[error("node admin API: {0}")]
    Admin(#[from] AdminError),
    /// The object lacks a field the API server always sets.
    #[error("the object has no {0}")]
    MissingField(&'static str),
    /// The StatefulSet exists, but neither the status nor its annotation
    /// says how many members founded the cluster.
    #[error(
        "cannot tell the founding members: status.foundingMembers and the StatefulSet's annotation are both missing"
    )]
    FoundersUnknown,
    /// A YAML document could not be written.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A JSON document could not be written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::Admin(e) => e.reason(),
            Error::MissingField(_) => "missing_field",
            Error::FoundersUnknown => "founders_unknown",
            Error::Yaml(_) | Error::Json(_) => "serialize",
        }
    }
}
