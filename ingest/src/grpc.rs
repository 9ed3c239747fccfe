//! The logeater-compatible gRPC API: `event.Event/Push` and `PushBatch`.
//!
//! An entry is mapped exactly like a logeater JSON payload (`compat`), then
//! goes the way of an HTTP event: write key, validation, rate limit and
//! high-water mark, publish, and `success = true` only once Kafka has it.
//! A rejected event is answered `success = false` with the reason; anything
//! the client should retry is a gRPC status (`UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED`), never a silent drop.

use crate::http::{field_errors, ApiState, Refusal};
use crate::{compat, validate};
use serde_json::{json, Value};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use weir_core::event::now_ms;
use weir_core::trace_context;

pub mod proto {
    tonic::include_proto!("event");
}

use proto::event_server::{Event as EventRpc, EventServer};
use proto::{BatchResponse, EventBatch, EventEntry, EventResponse};

pub struct GrpcApi {
    state: Arc<ApiState>,
}

pub fn service(state: Arc<ApiState>) -> EventServer<GrpcApi> {
    EventServer::new(GrpcApi { state })
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
        match &self.state.write_keys {
            None => Ok(self.state.default_tenant.clone()),
            Some(keys) => keys
                .tenant(&metadata.clone().into_headers())
                .map(str::to_string)
                .map_err(|_| Status::unauthenticated("a valid write key is required in the authorization or x-write-key metadata")),
        }
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

    async fn push_all(
        &self,
        tenant: &str,
        traceparent: Option<String>,
        entries: Vec<EventEntry>,
    ) -> Result<Vec<EventResponse>, Status> {
        if entries.len() > self.state.max_batch_events {
            return Err(Status::invalid_argument(format!(
                "a batch may hold at most {} events, got {}",
                self.state.max_batch_events,
                entries.len()
            )));
        }
        let received_at = now_ms();
        let mut results = Vec::with_capacity(entries.len());
        let mut events = vec![];
        for entry in entries {
            // A logeater entry always has `type` and `service`, so the mapping always applies.
            let mut v = entry_json(entry);
            if v["service"].is_null() {
                v["service"] = json!("");
            }
            match validate::to_event(
                &compat::to_native(v),
                received_at,
                tenant,
                &self.state.limits,
            ) {
                Ok(e) => {
                    results.push(EventResponse {
                        success: true,
                        event_id: e.event_id.clone(),
                        error: String::new(),
                    });
                    events.push(e);
                }
                Err(errors) => results.push(EventResponse {
                    success: false,
                    event_id: String::new(),
                    error: field_errors(&errors),
                }),
            }
        }
        if events.is_empty() {
            return Ok(results);
        }
        self.state
            .admit(tenant, events.len())
            .map_err(|r| match r {
                Refusal::RateLimited { retry_after_secs } => Status::resource_exhausted(format!(
                    "over the rate limit; retry in {retry_after_secs} s"
                )),
                Refusal::OverBurst { events } => {
                    Status::resource_exhausted(format!("{events} events exceed this key's burst"))
                }
                Refusal::KafkaBehind => Status::unavailable("Kafka is behind; retry shortly"),
            })?;
        self.state
            .publisher
            .publish(&events, traceparent.as_deref())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
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
