//! Client library benchmark on the real local stack (a bench, not a timed
//! test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-client -- [EVENTS]`
//!
//! Prints, against one ingest and broker: the events/s of `BatchUploader`
//! (defaults: batches of 500, 4 requests in flight, gzip; and again without
//! gzip) and of a raw HTTP batch poster sending the same events as
//! pre-written JSON bodies at the same batch size and concurrency, rounds
//! alternating, with their ratio; then the client's memory while the broker
//! is stopped and the application keeps sending.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_client::{BatchConfig, BatchUploader, ClientConfig, EnqueueError, Event, QueueFull};
use weir_tests::load::WRITE_KEY;
use weir_tests::stack::rss_mib;
use weir_tests::Stack;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 500;
const CONCURRENCY: usize = 4;
const ROUNDS: usize = 5;

fn event(run: &str, i: u64) -> Event {
    Event::from_json(serde_json::json!({
        "event_id": format!("{run}-{i}"), "name": "shop.cart_add", "user_id": format!("user-{}", i % 500),
        "channel": "web",
        "properties": {"sku": "SKU-12345", "price": 19.99, "qty": 2, "page": "/products/blue-t-shirt"},
        "context": {"url": "https://shop.example/products/blue-t-shirt", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    }))
    .expect("an object")
}

/// The raw poster's body for events `[from, from + BATCH)`, written into
/// one string: the cheapest a client can make a request.
fn body(run: &str, from: u64) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(BATCH * 320 + 16);
    body.push_str(r#"{"events":["#);
    for i in from..from + BATCH as u64 {
        if i > from {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"event_id":"{run}-{i}","name":"shop.cart_add","user_id":"user-{}","channel":"web","properties":{{"sku":"SKU-12345","price":19.99,"qty":2,"page":"/products/blue-t-shirt"}},"context":{{"url":"https://shop.example/products/blue-t-shirt","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}}}}"#,
            i % 500
        );
    }
    body.push_str("]}");
    body
}

/// Events/s of `events` posted by `CONCURRENCY` tasks, each its own share
/// of batches, each batch retried until 202.
async fn raw(url: &str, run: &str, events: u64) -> f64 {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CONCURRENCY {
        let (http, next, url, run) = (http.clone(), next.clone(), url.to_string(), run.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(BATCH as u64, Ordering::Relaxed);
                if from >= events {
                    return;
                }
                let body = body(&run, from);
                loop {
                    let r = http
                        .post(format!("{url}/v1/events/batch"))
                        .bearer_auth(WRITE_KEY)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if matches!(r, Ok(r) if r.status().as_u16() == 202) {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    events as f64 / t.elapsed().as_secs_f64()
}

/// Events/s of `events` through a `BatchUploader`, from the first `send`
/// until `close` returns (every event acknowledged).
async fn uploader(url: &str, run: &str, events: u64, gzip: bool) -> f64 {
    let mut client = ClientConfig::new(url, WRITE_KEY);
    client.gzip = gzip;
    let config = BatchConfig {
        max_batch_events: BATCH,
        concurrency: CONCURRENCY,
        ..Default::default()
    };
    let up = BatchUploader::new(client, config, None).unwrap();
    let t = Instant::now();
    for i in 0..events {
        up.send(event(run, i)).await.unwrap();
    }
    up.close(Duration::from_secs(600)).await.unwrap();
    let took = t.elapsed().as_secs_f64();
    let stats = up.stats();
    assert_eq!(stats.acknowledged, events, "{stats:?}");
    events as f64 / took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut stack = Stack::start().await;
    let ingest = stack.stage("ingest", "bench", &[("RUST_LOG", "warn")]);
    ingest.wait_ready().await;
    let url = ingest.url("");

    // Warm-up: registry lookups, connections, topic metadata.
    raw(&url, "warm-raw", 5_000).await;
    uploader(&url, "warm-up", 5_000, true).await;
    let (mut raws, mut gz, mut plain) = (vec![], vec![], vec![]);
    // The order turns each round, so that none of the three always runs
    // on the fullest broker log.
    for round in 0..ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => raws.push(raw(&url, &format!("raw-{round}"), events).await),
                1 => gz.push(uploader(&url, &format!("gz-{round}"), events, true).await),
                _ => plain.push(uploader(&url, &format!("plain-{round}"), events, false).await),
            }
        }
    }
    let (raw_eps, gz_eps, plain_eps) = (
        median(raws.clone()),
        median(gz.clone()),
        median(plain.clone()),
    );

    // The broker stops; the application keeps calling `send` for 10 s. The
    // queue fills to max_queued_events and then refuses (QueueFull::Fail):
    // the client's memory stays bounded by the queue, however long the
    // outage lasts.
    stack.kafka.kill9();
    let before = rss_mib(None).0;
    let config = BatchConfig {
        queue_full: QueueFull::Fail,
        ..Default::default()
    };
    let max_queued = config.max_queued_events;
    let up = BatchUploader::new(ClientConfig::new(&url, WRITE_KEY), config, None).unwrap();
    let (mut refused, mut peak) = (0u64, before);
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_secs(10) {
        for _ in 0..1_000 {
            match up.send(event("outage", i)).await {
                Ok(()) => {}
                Err(EnqueueError::QueueFull) => refused += 1,
                Err(e) => anyhow::bail!("{e}"),
            }
            i += 1;
        }
        peak = peak.max(rss_mib(None).0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = up.stats();

    let ratios = |v: &[f64]| {
        v.iter()
            .zip(&raws)
            .map(|(a, r)| format!("{:.2}", a / r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("weir client benchmark: {events} events a run, batches of {BATCH}, {CONCURRENCY} requests in flight, {ROUNDS} alternating rounds, {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("| sender | events/s (median) | ratio to raw poster (per round) |");
    println!("|---|---|---|");
    println!("| raw HTTP batch poster (pre-written JSON) | {raw_eps:.0} | 1.00 |");
    println!(
        "| BatchUploader, gzip (default) | {gz_eps:.0} | {:.2} ({}) |",
        gz_eps / raw_eps,
        ratios(&gz)
    );
    println!(
        "| BatchUploader, no gzip | {plain_eps:.0} | {:.2} ({}) |",
        plain_eps / raw_eps,
        ratios(&plain)
    );
    println!(
        "broker stopped for 10 s while the application called send {i} times: {} queued (max_queued_events {max_queued}), {refused} refused as QueueFull, client RSS {before:.0} MiB before, peak {peak:.0} MiB",
        stats.in_queue
    );
    up.close(Duration::from_millis(100)).await.ok();
    Ok(())
}

#[test]
fn the_raw_body_holds_the_same_events() {
    let parsed: serde_json::Value = serde_json::from_str(&body("r", 10)).unwrap();
    let first = event("r", 10).to_json();
    assert_eq!(parsed["events"][0], first);
    assert_eq!(parsed["events"].as_array().unwrap().len(), BATCH);
}
