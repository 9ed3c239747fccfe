//! `BatchUploader` against an in-process stand-in for ingest's batch route
//! (fast, and able to misbehave on cue); the real-stack runs, with ingest
//! killed and the broker restarted, are in `tests/tests/client_library.rs`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_client::{
    BatchConfig, BatchUploader, ClientConfig, EnqueueError, Event, Outcome, QueueFull,
};

#[derive(Default)]
struct Ingest {
    /// Each request: when, its first event id, its size, and whether it got a 503.
    requests: Vec<(Instant, String, usize, bool)>,
    seen: BTreeMap<String, u32>,
    /// Answer the next n requests 503 with Retry-After: 1.
    unavailable: u32,
    stall: bool,
}

async fn batch(
    State(s): State<Arc<Mutex<Ingest>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    assert_eq!(headers["content-encoding"], "gzip");
    let mut json = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut json)
        .unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let events = v["events"].as_array().unwrap().clone();
    if s.lock().unwrap().stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut st = s.lock().unwrap();
    let first = events[0]["event_id"].as_str().unwrap().to_string();
    let unavailable = events.len() <= 10 && st.unavailable > 0;
    st.requests
        .push((Instant::now(), first, events.len(), unavailable));
    if events.len() > 10 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": {"code": "batch_too_large", "message": "too many"}})),
        )
            .into_response();
    }
    if st.unavailable > 0 {
        st.unavailable -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            Json(json!({"error": {"code": "unavailable", "message": "Kafka is behind"}})),
        )
            .into_response();
    }
    let (mut accepted, mut rejected) = (vec![], vec![]);
    for (i, e) in events.iter().enumerate() {
        assert!(e["sent_at"].is_i64(), "sent_at is stamped");
        let id = e["event_id"].as_str().unwrap().to_string();
        if e["name"] == "bad" {
            rejected.push(json!({"index": i, "message": "name: is bad"}));
        } else {
            *st.seen.entry(id.clone()).or_default() += 1;
            accepted.push(json!({"index": i, "event_id": id}));
        }
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"accepted": accepted, "rejected": rejected})),
    )
        .into_response()
}

async fn serve(state: Arc<Mutex<Ingest>>) -> String {
    let app = axum::Router::new()
        .route("/v1/events/batch", axum::routing::post(batch))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn retries_keep_ids_honour_retry_after_split_on_413_and_report_every_event() {
    let state = Arc::new(Mutex::new(Ingest {
        unavailable: 1,
        ..Default::default()
    }));
    let url = serve(state.clone()).await;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let config = BatchConfig {
        max_batch_events: 25,
        flush_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let up = BatchUploader::new(
        ClientConfig::new(url, "k"),
        config,
        Some(Box::new(move |r| o.lock().unwrap().push(r.clone()))),
    )
    .unwrap();
    let mut ids = vec![];
    for i in 0..60 {
        let e = Event::new(if i % 20 == 7 { "bad" } else { "cart.add" }).user_id("u");
        ids.push(e.id().to_string());
        up.send(e).await.unwrap();
    }
    up.close(Duration::from_secs(30)).await.unwrap();

    let st = state.lock().unwrap();
    // Every good event reached ingest; each was sent again after the 503
    // with the same id, never as a new one.
    assert_eq!(st.seen.len(), 57);
    assert!(st.seen.keys().all(|id| ids.contains(id)));
    // The 503's Retry-After (1 s) was waited out before the next attempt.
    let (at, first, ..) = st.requests.iter().find(|r| r.3).unwrap().clone();
    let again = st
        .requests
        .iter()
        .filter(|r| r.1 == first && r.0 > at)
        .map(|r| r.0)
        .next()
        .unwrap();
    assert!(
        again - at >= Duration::from_millis(950),
        "waited {:?}",
        again - at
    );
    assert!(st.requests.iter().any(|r| r.2 > 10), "a 413 was met");
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), 60, "one outcome per event");
    let rejected: Vec<_> = outcomes
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Rejected { .. }))
        .collect();
    assert_eq!(rejected.len(), 3);
    let stats = up.stats();
    assert_eq!(
        (
            stats.queued,
            stats.acknowledged,
            stats.rejected,
            stats.dropped
        ),
        (60, 57, 3, 0)
    );
    assert!(stats.retried > 0);
    assert_eq!(stats.in_queue, 0);
}

#[tokio::test]
async fn a_full_queue_fails_fast_and_close_drops_what_it_cannot_send() {
    let state = Arc::new(Mutex::new(Ingest {
        stall: true,
        ..Default::default()
    }));
    let url = serve(state.clone()).await;
    let config = BatchConfig {
        max_queued_events: 5,
        queue_full: QueueFull::Fail,
        flush_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let mut client = ClientConfig::new(url, "k");
    client.timeout = Duration::from_secs(3600);
    let dropped = Arc::new(Mutex::new(0));
    let d = dropped.clone();
    let hook = move |r: &weir_client::EventResult| {
        if matches!(r.outcome, Outcome::Dropped { .. }) {
            *d.lock().unwrap() += 1;
        }
    };
    let up = BatchUploader::new(client, config, Some(Box::new(hook))).unwrap();
    for _ in 0..5 {
        up.send(Event::new("a")).await.unwrap();
    }
    assert_eq!(up.send(Event::new("a")).await, Err(EnqueueError::QueueFull));
    assert_eq!(up.stats().in_queue, 5);
    assert!(up.close(Duration::from_millis(300)).await.is_err());
    assert_eq!(up.send(Event::new("a")).await, Err(EnqueueError::Closed));
    // What was in flight when the deadline passed is reported dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*dropped.lock().unwrap(), 5);
    assert_eq!(up.stats().dropped, 5);
}
