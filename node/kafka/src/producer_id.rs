//! InitProducerId: a producer id unique in the cluster and across
//! restarts — the KV revision of a write to [`PRODUCER_ID_KEY`]. Every
//! write has its own revision, revisions only grow, and they start at 1,
//! so the id is never 0 (the broker's "not idempotent").

use crate::Context;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

/// The KV key written to allocate a producer id.
pub const PRODUCER_ID_KEY: &str = "kafka:producer-id";

/// Handles an InitProducerId.
pub async fn handle(ctx: &Context, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return resp.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    match ctx
        .core
        .kv
        .put(
            PRODUCER_ID_KEY.as_bytes(),
            ctx.core.id().to_string().as_bytes(),
        )
        .await
    {
        Ok(revision) if revision > 0 => resp
            .with_producer_id(ProducerId(revision))
            .with_producer_epoch(0),
        Ok(_) => resp.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            resp.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
