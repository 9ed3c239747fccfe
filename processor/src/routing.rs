//! Where each input record goes, and with which headers: the routing half of
//! the pure core. `runtime` decodes a record, hands it here with its
//! partition's state, and sends the original bytes where the answer says.
//!
//! | outcome | goes to | key | headers |
//! |---|---|---|---|
//! | accepted | `events.clean` | `event_id` | `weir-window-start` |
//! | duplicate | nowhere | | |
//! | late | `events.clean` | `event_id` | `weir-window-start`, `weir-late` (the watermark) |
//! | | and `events.late` | `event_id` | `weir-reason`, `weir-watermark`, `weir-source` |
//! | undecodable | `events.invalid` | the input record's key | `weir-error`, `weir-source` |
//!
//! A late event goes to `events.clean` like any other, marked: the
//! aggregator counts it in the late lane, after checking in ClickHouse that
//! it was never counted (the processor's dedup horizon is a day; ingest
//! accepts events up to `max_event_age_ms` old). Keeping it in the same
//! partition of the same topic as its on-time copies means the aggregator
//! always stores an on-time copy before it checks a late one. Its copy in
//! `events.late` is the record of lateness (the dashboard's late rate) and
//! what `replay-late` repairs from.
//!
//! Every copy also carries the record's trace context (`traceparent`).

use crate::partition::{PartitionState, Verdict};
use weir_core::headers::{Header, RecordHeaders};
use weir_core::Event;

/// The output topics a record can be copied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Clean,
    Late,
    Invalid,
}

/// Where one input record is copied, if anywhere.
#[derive(Debug, Clone)]
pub struct Route {
    pub to: Output,
    /// The copy's key; `None` keeps the input record's key.
    pub key: Option<Vec<u8>>,
    pub headers: RecordHeaders,
}

/// What became of one input record: its verdict's label (the metric's and
/// the span's) and its copies.
#[derive(Debug, Clone)]
pub struct Routed {
    pub verdict: &'static str,
    pub routes: Vec<Route>,
}

/// Where a record came from and the trace context its copies carry.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `<topic>/<partition>/<offset>`.
    pub source: &'a str,
    pub traceparent: Option<&'a str>,
}

/// Runs a decoded event (or the reason it could not be decoded) at `offset`
/// through the partition's state, and says where it goes.
pub fn route(
    state: &mut PartitionState,
    offset: i64,
    decoded: Result<&Event, &str>,
    origin: Origin<'_>,
) -> Routed {
    let base = RecordHeaders::new().with_some(Header::TraceParent, origin.traceparent);
    let event = match decoded {
        Ok(event) => event,
        Err(reason) => {
            return Routed {
                verdict: "invalid",
                routes: vec![Route {
                    to: Output::Invalid,
                    key: None,
                    headers: base
                        .with(Header::Error, reason)
                        .with(Header::Source, origin.source),
                }],
            }
        }
    };
    let key = || Some(event.event_id.clone().into_bytes());
    match state.process(offset, event) {
        Verdict::Accepted { window_start } => Routed {
            verdict: "accepted",
            routes: vec![Route {
                to: Output::Clean,
                key: key(),
                headers: base.with(Header::WindowStart, window_start),
            }],
        },
        Verdict::Duplicate => Routed {
            verdict: "duplicate",
            routes: vec![],
        },
        Verdict::Late {
            watermark,
            window_start,
        } => Routed {
            verdict: "late",
            routes: vec![
                Route {
                    to: Output::Clean,
                    key: key(),
                    headers: base
                        .clone()
                        .with(Header::WindowStart, window_start)
                        .with(Header::Late, watermark),
                },
                Route {
                    to: Output::Late,
                    key: key(),
                    headers: base
                        .with(
                            Header::Reason,
                            "after its windows closed: counted in the late lane",
                        )
                        .with(Header::Watermark, watermark)
                        .with(Header::Source, origin.source),
                },
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::TimeRules;
    use crate::window::WindowAssigner;

    fn event(id: &str, ts: i64) -> Event {
        Event {
            user_id: Some("u".into()),
            ..Event::new("t", id, "page_view", ts)
        }
    }

    #[test]
    fn each_outcome_goes_to_its_topic_with_its_headers() {
        let rules = TimeRules {
            assigner: WindowAssigner::tumbling(60_000),
            extra: vec![],
            out_of_orderness_ms: 0,
            allowed_lateness_ms: 0,
            dedup_horizon_ms: 86_400_000,
        };
        let mut state = PartitionState::new(0, rules);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let origin = Origin {
            source: "events.raw/0/7",
            traceparent: Some(tp),
        };
        let first = route(&mut state, 0, Ok(&event("a", 125_000)), origin);
        assert_eq!(first.verdict, "accepted");
        let [r] = &first.routes[..] else {
            panic!("one copy: {first:?}")
        };
        assert_eq!((r.to, r.key.as_deref()), (Output::Clean, Some(&b"a"[..])));
        assert_eq!(r.headers.get(Header::WindowStart), Some("120000"));
        assert_eq!(r.headers.get(Header::TraceParent), Some(tp));

        let again = route(&mut state, 1, Ok(&event("a", 125_000)), origin);
        assert_eq!((again.verdict, again.routes.len()), ("duplicate", 0));

        // Late: counted through the clean topic, marked, and logged in the late topic.
        let late = route(&mut state, 2, Ok(&event("b", 1_000)), origin);
        let [counted, logged] = &late.routes[..] else {
            panic!("two copies: {late:?}")
        };
        assert_eq!((late.verdict, counted.to), ("late", Output::Clean));
        assert_eq!(counted.key.as_deref(), Some(&b"b"[..]));
        assert_eq!(counted.headers.get(Header::Late), Some("125000"));
        assert_eq!(counted.headers.get(Header::WindowStart), Some("0"));
        assert_eq!(counted.headers.get(Header::TraceParent), Some(tp));
        assert_eq!(logged.to, Output::Late);
        assert_eq!(logged.headers.get(Header::Watermark), Some("125000"));
        assert_eq!(logged.headers.get(Header::Source), Some("events.raw/0/7"));
        assert_eq!(logged.headers.get(Header::Late), None);

        let bad = route(&mut state, 3, Err("unknown schema id 9"), origin);
        let [r] = &bad.routes[..] else {
            panic!("one copy: {bad:?}")
        };
        assert_eq!(
            (bad.verdict, r.to, r.key.clone()),
            ("invalid", Output::Invalid, None)
        );
        assert_eq!(r.headers.get(Header::Error), Some("unknown schema id 9"));
    }
}
