//! The logeater-compatible gRPC API: `event.Event/Push` and `PushBatch`.
//!
//! An entry is mapped exactly like a logeater JSON payload (`compat`), then
//! goes through `admission` like an HTTP event: write key, validation, rate
//! limit and high-water mark, publish, and `success = true` only once Kafka
//! has it.
//! A rejected event is answered `success = false` with the reason; anything
//! the client should retry is a gRPC status (`UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED`), never a silent drop.

use crate::admission::{Admission, Refusal};
use crate::compat::Shape;
use serde_json::{json, Value};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use weir_core::trace_context;

pub mod proto {
    tonic::include_proto!("event");
}

use proto::event_server::{Event as EventRpc, EventServer};
use proto::{BatchResponse, EventBatch, EventEntry, EventResponse};

pub struct GrpcApi {
    admission: Arc<Admission>,
}

pub fn service(admission: Arc<Admission>) -> EventServer<GrpcApi> {
    EventServer::new(GrpcApi { admission })
}

/// Proto3 cannot tell an unset field from its default, so 0 and "" mean absent.
fn entry_json(e: EventEntry) -> Value {
    let mut v = json!({ "type": e.r#type });
    if e.timestamp != 0 {
        v["timestamp"] = json!(e.timestamp);
    }
    let fields = [
        ("service", Some(e.service)),
        ("user_id", e.user_id),
        ("details", e.details),
        ("event_id", e.event_id),
    ];
    for (k, f) in fields {
        if let Some(s) = f.filter(|s| !s.is_empty()) {
            v[k] = json!(s);
        }
    }
    v
}

impl GrpcApi {
    fn tenant(&self, metadata: &tonic::metadata::MetadataMap) -> Result<String, Status> {
        Ok(self
            .admission
            .tenant(&metadata.clone().into_headers(), None)?)
    }

    /// The call's span, a child of the caller's trace context: the parent
    /// must be set before the span starts.
    fn call_span(rpc: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
        let span = tracing::info_span!("grpc_request", rpc);
        trace_context::join(&span, Self::incoming(metadata));
        span
    }

    fn incoming(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
        metadata
            .get(trace_context::HEADER)
            .and_then(|v| v.to_str().ok())
    }

    /// The trace context the Kafka records carry on.
    fn traceparent(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
        trace_context::outgoing(&tracing::Span::current(), Self::incoming(metadata))
    }

    /// Each entry's answer, in order: `success = true` once Kafka has it, or
    /// the reason it was rejected.
    async fn push_all(
        &self,
        tenant: &str,
        traceparent: Option<String>,
        entries: Vec<EventEntry>,
    ) -> Result<Vec<EventResponse>, Status> {
        let n = entries.len();
        let items = entries
            .into_iter()
            .map(|entry| (None, Ok(entry_json(entry))))
            .collect();
        let outcome = self
            .admission
            .batch(tenant, traceparent.as_deref(), Some(Shape::Logeater), items)
            .await;
        let mut results = vec![EventResponse::default(); n];
        let (accepted, rejected) = match outcome {
            Ok(o) => (o.accepted, o.rejected),
            // Per-event answers, not a failed call: nothing was valid, or nothing was sent.
            Err(Refusal::NoValidEvent(rejected)) => (vec![], rejected),
            Err(Refusal::EmptyBatch) => return Ok(vec![]),
            Err(other) => return Err(other.into()),
        };
        for a in accepted {
            results[a.index] = EventResponse {
                success: true,
                event_id: a.event.event_id,
                error: String::new(),
            };
        }
        for r in rejected {
            results[r.index] = EventResponse {
                success: false,
                event_id: String::new(),
                error: r.message,
            };
        }
        Ok(results)
    }
}

#[tonic::async_trait]
impl EventRpc for GrpcApi {
    async fn push(&self, request: Request<EventEntry>) -> Result<Response<EventResponse>, Status> {
        let span = Self::call_span("Push", request.metadata());
        async move {
            let tenant = self.tenant(request.metadata())?;
            let tp = Self::traceparent(request.metadata());
            let mut results = self
                .push_all(&tenant, tp, vec![request.into_inner()])
                .await?;
            Ok(Response::new(results.remove(0)))
        }
        .instrument(span)
        .await
    }

    async fn push_batch(
        &self,
        request: Request<EventBatch>,
    ) -> Result<Response<BatchResponse>, Status> {
        let span = Self::call_span("PushBatch", request.metadata());
        async move {
            let tenant = self.tenant(request.metadata())?;
            let tp = Self::traceparent(request.metadata());
            let results = self
                .push_all(&tenant, tp, request.into_inner().events)
                .await?;
            Ok(Response::new(BatchResponse { results }))
        }
        .instrument(span)
        .await
    }
}
