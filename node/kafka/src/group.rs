//! The Kafka group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups.
//!
//! The dispatcher ([`crate::dispatch`]) routes every request of an API
//! listed in [`VERSIONS`], at a version inside its range, to [`handle`], and
//! advertises those ranges in ApiVersions. A request of a group API or
//! version not listed there never reaches this module: the dispatcher
//! answers it UNSUPPORTED_VERSION itself.
//!
//! This placeholder lists no versions, so the group APIs are not
//! advertised yet.

use crate::Context;
use crate::dispatch::HandlerError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

/// The group APIs this module serves, with the versions it handles
/// (`(api, min, max)`, inclusive).
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[];

/// Handles one group request.
///
/// - `ctx`: the listener's shared state (the broker core, its gRPC
///   services, the Kafka node-id mapping, the settings).
/// - `header`: the request header (api version, correlation id, client id).
/// - `request`: one of the group variants of [`RequestKind`], decoded at
///   `header.request_api_version`, which is inside this module's
///   [`VERSIONS`] range for its API.
///
/// Returns the matching [`ResponseKind`] variant, which the dispatcher
/// encodes at the same version; or [`HandlerError::Unsupported`] (answered
/// UNSUPPORTED_VERSION, connection kept), or [`HandlerError::Invalid`]
/// (logged, connection closed, as Kafka does with a request it cannot
/// make sense of). Partition- or group-level failures belong in the
/// response's error codes, not in `Err`.
pub async fn handle(
    ctx: &Context,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<ResponseKind, HandlerError> {
    let _ = (ctx, header, request);
    Err(HandlerError::Unsupported)
}
