//! Ingest benchmark on the real local stack (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-ingest -- [SECONDS]`
//!
//! Prints, in one run against the same broker: ingest events/s and latency
//! for batches of 100 events of about 300 bytes at concurrency 64; the same
//! at half that rate; raw rdkafka produce of the same Avro payloads through
//! ingest's own producer and settings at the same concurrency, at both
//! rates; their ratio; and the gateway's memory.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_ingest::acked_producer::AckedProducer;
use weir_ingest::config::IngestConfig;
use weir_tests::load::WRITE_KEY;
use weir_tests::stack::rss_mib;
use weir_tests::Stack;

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: usize = 64;
const BATCH: usize = 100;
const ROUNDS: usize = 3;

fn event(task: usize, n: u64, i: usize) -> Value {
    json!({
        "event_id": format!("bench-{task}-{n}-{i}"), "name": "shop.cart_add", "user_id": format!("user-{}", i % 500),
        "channel": "web",
        "properties": {"sku": "SKU-12345", "price": 19.99, "qty": 2, "page": "/products/blue-t-shirt"},
        "context": {"url": "https://shop.example/products/blue-t-shirt", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    })
}

struct Run {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Sends one batch of `BATCH` events (task, batch number) and says whether all were acknowledged.
trait BatchSender: Clone + Send + Sync + 'static {
    fn send(&self, task: usize, n: u64) -> impl std::future::Future<Output = bool> + Send;
}

/// Runs `CONCURRENCY` tasks sending batches for `secs`; at most `target` events/s when given.
async fn load(sender: impl BatchSender, secs: u64, target: Option<f64>) -> Run {
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let per_task_interval =
        target.map(|t| Duration::from_secs_f64(BATCH as f64 * CONCURRENCY as f64 / t));
    let mut tasks = vec![];
    for task in 0..CONCURRENCY {
        let (sender, errors) = (sender.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut n = 0u64;
            // Spread the tasks over one interval so a paced run is steady, not bursty.
            let mut next = Instant::now()
                + per_task_interval
                    .map_or(Duration::ZERO, |iv| iv * task as u32 / CONCURRENCY as u32);
            while Instant::now() < deadline {
                if let Some(iv) = per_task_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let t = Instant::now();
                if sender.send(task, n).await {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Run {
        events_per_sec: (lat.len() * BATCH) as f64 / elapsed,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Batches posted to the gateway as JSON.
#[derive(Clone)]
struct Gateway {
    client: reqwest::Client,
    url: Arc<str>,
}

impl BatchSender for Gateway {
    async fn send(&self, task: usize, n: u64) -> bool {
        let answer = self
            .client
            .post(&*self.url)
            .bearer_auth(WRITE_KEY)
            .body(batch_body(task, n))
            .send()
            .await;
        matches!(answer, Ok(r) if r.status().as_u16() == 202)
    }
}

/// The JSON of a batch, written straight into one string: the load client
/// shares the gateway's two cores, so it should cost as little as the raw
/// producer's pre-encoded payloads do.
fn batch_body(task: usize, n: u64) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(BATCH * 300 + 16);
    body.push_str(r#"{"events":["#);
    for i in 0..BATCH {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"event_id":"bench-{task}-{n}-{i}","name":"shop.cart_add","user_id":"user-{}","channel":"web","properties":{{"sku":"SKU-12345","price":19.99,"qty":2,"page":"/products/blue-t-shirt"}},"context":{{"url":"https://shop.example/products/blue-t-shirt","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}}}}"#,
            i % 500
        );
    }
    body.push_str("]}");
    body
}

/// The same Avro payloads produced straight to the broker through ingest's
/// own producer and settings: what is left of a request without HTTP, JSON,
/// validation and encoding.
#[derive(Clone)]
struct RawProducer {
    producer: Arc<AckedProducer>,
    payloads: Arc<Vec<Vec<u8>>>,
}

impl BatchSender for RawProducer {
    async fn send(&self, task: usize, n: u64) -> bool {
        let keys: Vec<String> = (0..BATCH).map(|i| format!("raw-{task}-{n}-{i}")).collect();
        let records = keys.iter().enumerate().map(|(i, key)| {
            let payload = &self.payloads[i % self.payloads.len()];
            (key.as_bytes(), payload.as_slice())
        });
        self.producer
            .send_all("bench.raw", records, None, Duration::from_secs(30))
            .await
            .is_ok()
    }
}

#[test]
fn batch_body_is_the_json_of_the_events() {
    let parsed: Value = serde_json::from_str(&batch_body(3, 7)).unwrap();
    let events: Vec<Value> = (0..BATCH).map(|i| event(3, 7, i)).collect();
    assert_eq!(parsed, json!({ "events": events }));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut stack = Stack::start().await;
    let ingest = stack.stage("ingest", "bench", &[("RUST_LOG", "warn")]);
    ingest.wait_ready().await;
    let url = ingest.url("");
    let pid = ingest.proc.pid().expect("ingest runs");
    let idle = rss_mib(Some(pid)).0;

    let gateway = Gateway {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?,
        url: format!("{url}/v1/events/batch").into(),
    };
    let codec = stack.codec();
    let limits = Default::default();
    let mut payloads = vec![];
    for i in 0..1000 {
        let e =
            weir_ingest::validate::to_event(&event(0, 0, i), 1_795_000_000_000, "bench", &limits)
                .expect("valid");
        payloads.push(codec.encode_event(&e).await?);
    }
    let avro = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    let json_bytes = event(0, 0, 0).to_string().len();
    let mut ingest_cfg = IngestConfig::default();
    ingest_cfg.kafka.brokers = stack.brokers();
    let raw = RawProducer {
        producer: Arc::new(AckedProducer::new(&weir_ingest::producer_config(
            &ingest_cfg,
        ))?),
        payloads: Arc::new(payloads),
    };

    // Warm-up: registry lookups, connections, topic metadata.
    load(gateway.clone(), 3, None).await;
    load(raw.clone(), 3, None).await;
    // Alternate the two at full rate so a noisy neighbour hits both alike;
    // the ratio is the median of the rounds.
    let mut rounds = vec![];
    for _ in 0..ROUNDS {
        let r = load(raw.clone(), secs, None).await;
        let i = load(gateway.clone(), secs, None).await;
        rounds.push((r, i));
    }
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|(r, i)| i.events_per_sec / r.events_per_sec)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (raw_max, max) = rounds
        .iter()
        .find(|(r, i)| i.events_per_sec / r.events_per_sec == ratio)
        .expect("the median is a round");
    let (rss_max, hwm) = rss_mib(Some(pid));
    let half_rate = max.events_per_sec / 2.0;
    let half = load(gateway.clone(), secs, Some(half_rate)).await;
    let raw_half = load(raw, secs, Some(half_rate)).await;

    // Overload: the broker stops while the clients keep sending. Requests
    // wait at most the delivery timeout, then get 503; memory must stay
    // bounded by the in-flight limits, not grow with the offered load.
    stack.kafka.kill9();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                let rss = rss_mib(Some(pid)).0 as u64;
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let overload = load(gateway, secs, None).await;
    sampler.abort();
    let overload_peak = peak.load(Ordering::Relaxed);

    println!("weir ingest benchmark: {secs} s per phase, batches of {BATCH} events (~{json_bytes} B JSON, {avro} B Avro), concurrency {CONCURRENCY}, {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("| phase | events/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|");
    for (phase, r) in [
        ("raw rdkafka produce, max rate", raw_max),
        ("ingest, max rate", max),
        ("ingest, half of its max rate", &half),
        ("raw rdkafka produce, same half rate", &raw_half),
    ] {
        println!(
            "| {phase} | {:.0} | {:.1} | {:.1} | {} |",
            r.events_per_sec, r.p50_ms, r.p99_ms, r.errors
        );
    }
    let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio ingest / raw produce: {ratio:.2} (median of {ROUNDS} alternating rounds: {}); the table shows that round",
        all.join(", ")
    );
    println!(
        "p99 at half rate: ingest {:.1} ms, raw produce {:.1} ms",
        half.p99_ms, raw_half.p99_ms
    );
    println!("ingest RSS: idle {idle:.0} MiB, under max load {rss_max:.0} MiB, peak {hwm:.0} MiB");
    println!(
        "overload, broker stopped for {secs} s: {} requests refused (503), {:.0} events/s accepted, ingest RSS peak {overload_peak} MiB",
        overload.errors, overload.events_per_sec
    );
    Ok(())
}
