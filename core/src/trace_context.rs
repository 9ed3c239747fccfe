//! W3C trace context (`traceparent`) across HTTP and Kafka.
//!
//! When traces are exported, a request's span joins the caller's trace and
//! the Kafka record carries the span's own context, so the next stage's spans
//! join it too. When they are not, the caller's `traceparent` is passed on
//! unchanged, so a tracing system downstream still sees one trace.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The name of the trace context header, in HTTP, gRPC metadata and Kafka.
pub const HEADER: &str = crate::headers::Header::TraceParent.name();

/// Whether `v` looks like a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn is_valid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// Makes `span` a child of the caller's context.
pub fn join(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|t| is_valid(t)) else {
        return;
    };
    let carrier = HashMap::from([(HEADER.to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The `traceparent` to put on records produced under `span`.
pub fn outgoing(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        return carrier.remove(HEADER);
    }
    incoming.filter(|t| is_valid(t)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_passes_through_without_an_exporter() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid(tp));
        assert!(!is_valid("00-xyz-00f067aa0ba902b7-01"));
        assert_eq!(
            outgoing(&tracing::Span::none(), Some(tp)).as_deref(),
            Some(tp)
        );
        assert_eq!(outgoing(&tracing::Span::none(), Some("garbage")), None);
    }
}
