//! Which APIs and versions the listener serves, and the routing of one
//! request frame to its handler.
//!
//! The rules for a request the listener does not serve (Kafka's, KIP-511):
//! 1. ApiVersions at a version above ours: an ApiVersions **v0** response
//!    with UNSUPPORTED_VERSION and our full list, so the client can pick.
//! 2. Any other unknown API key or unserved version: the response header
//!    and the error code UNSUPPORTED_VERSION; the connection stays open.
//! 3. A request that does not decode at a version we serve: logged, and
//!    the connection is closed (there is no response a client could read).

use crate::frame::{self, Decoded, FrameError};
use crate::{Context, fetch, group, metadata, offsets, produce, producer_id, topics};
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestKind, ResponseKind};
use std::future::Future;
use std::pin::Pin;

/// The APIs served outside the group module, with the versions handled
/// (inclusive). Versions that name topics by id only (Produce v13, Fetch
/// v13+) are left out: Flotilla topics have names, no ids.
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
];

/// Why a handler did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Not served: answered UNSUPPORTED_VERSION, the connection stays.
    #[error("unsupported")]
    Unsupported,
    /// Not a request that makes sense: the connection is closed.
    #[error("{0}")]
    Invalid(String),
}

/// The versions of `api` served, if any.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    VERSIONS
        .iter()
        .chain(group::VERSIONS)
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

/// Every API served with its versions, for ApiVersions.
pub fn api_versions() -> Vec<ApiVersion> {
    let mut v: Vec<ApiVersion> = VERSIONS
        .iter()
        .chain(group::VERSIONS)
        .map(|&(k, min, max)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    v.sort_by_key(|a| a.api_key);
    v
}

fn api_versions_response(error: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(api_versions())
}

/// The rest of a request's work, run while the connection reads on: it
/// gives what to send.
pub type Later<'a> = Pin<Box<dyn Future<Output = Result<Outcome<'a>, FrameError>> + Send + 'a>>;

/// What to do after a frame.
pub enum Outcome<'a> {
    /// Send what this gives once it is done (a produce waiting for its
    /// acks=all confirmations); answers go out in request order.
    Later(Later<'a>),
    /// Send this response frame.
    Respond(Bytes),
    /// Send nothing (a produce with acks=0).
    Silent,
}

/// Handles one request frame: decodes it, runs its handler, encodes the
/// answer. `Err` closes the connection.
pub async fn handle_frame(ctx: &Context, frame: Bytes) -> Result<Outcome<'_>, FrameError> {
    let prefix = frame::header_prefix(&frame)?;
    let Ok(api) = ApiKey::try_from(prefix.api_key) else {
        tracing::debug!(api_key = prefix.api_key, "unknown Kafka API key");
        return Ok(Outcome::Respond(frame::encode_unsupported(
            prefix.correlation_id,
        )));
    };
    let in_range =
        supported(api).is_some_and(|(min, max)| (min..=max).contains(&prefix.api_version));
    if !in_range {
        tracing::debug!(
            ?api,
            version = prefix.api_version,
            "unsupported Kafka API version"
        );
        if api == ApiKey::ApiVersions {
            let body = ResponseKind::ApiVersions(api_versions_response(
                ResponseError::UnsupportedVersion.code(),
            ));
            return encoded(api, 0, prefix.correlation_id, &body);
        }
        return Ok(Outcome::Respond(frame::encode_unsupported(
            prefix.correlation_id,
        )));
    }
    let Decoded { header, api, body } = frame::decode_request(frame, api)?;
    let version = header.request_api_version;
    let result = match body {
        RequestKind::ApiVersions(_) => {
            Ok(Some(ResponseKind::ApiVersions(api_versions_response(0))))
        }
        RequestKind::Produce(r) => {
            let confirm = produce::append(ctx, r).await;
            let correlation_id = header.correlation_id;
            return Ok(Outcome::Later(Box::pin(async move {
                match confirm.await {
                    Some(body) => {
                        encoded(api, version, correlation_id, &ResponseKind::Produce(body))
                    }
                    None => Ok(Outcome::Silent),
                }
            })));
        }
        RequestKind::Fetch(r) => Ok(Some(ResponseKind::Fetch(fetch::handle(ctx, r).await))),
        RequestKind::ListOffsets(r) => Ok(Some(ResponseKind::ListOffsets(
            offsets::handle(ctx, r, version).await,
        ))),
        RequestKind::Metadata(r) => Ok(Some(ResponseKind::Metadata(
            metadata::handle(ctx, r, version).await,
        ))),
        RequestKind::CreateTopics(r) => Ok(Some(ResponseKind::CreateTopics(
            topics::create(ctx, r).await,
        ))),
        RequestKind::DeleteTopics(r) => Ok(Some(ResponseKind::DeleteTopics(
            topics::delete(ctx, r).await,
        ))),
        RequestKind::InitProducerId(r) => Ok(Some(ResponseKind::InitProducerId(
            producer_id::handle(ctx, r).await,
        ))),
        body @ (RequestKind::FindCoordinator(_)
        | RequestKind::JoinGroup(_)
        | RequestKind::SyncGroup(_)
        | RequestKind::Heartbeat(_)
        | RequestKind::LeaveGroup(_)
        | RequestKind::OffsetCommit(_)
        | RequestKind::OffsetFetch(_)
        | RequestKind::DescribeGroups(_)
        | RequestKind::ListGroups(_)) => group::handle(ctx, &header, body).await.map(Some),
        _ => Err(HandlerError::Unsupported),
    };
    match result {
        Ok(Some(body)) => encoded(api, version, header.correlation_id, &body),
        Ok(None) => Ok(Outcome::Silent),
        Err(HandlerError::Unsupported) => Ok(Outcome::Respond(frame::encode_unsupported(
            header.correlation_id,
        ))),
        Err(HandlerError::Invalid(reason)) => Err(FrameError::Malformed {
            api: api as i16,
            version,
            correlation_id: header.correlation_id,
            reason,
        }),
    }
}

fn encoded<'a>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Outcome<'a>, FrameError> {
    frame::encode_response(api, version, correlation_id, body)
        .map(Outcome::Respond)
        .map_err(|reason| FrameError::Malformed {
            api: api as i16,
            version,
            correlation_id,
            reason,
        })
}

impl std::fmt::Debug for Outcome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Later(_) => f.write_str("Later"),
            Outcome::Respond(b) => write!(f, "Respond({} bytes)", b.len()),
            Outcome::Silent => f.write_str("Silent"),
        }
    }
}
