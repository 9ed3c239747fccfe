//! Ingest benchmark on the real local stack (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-ingest -- [SECONDS]`
//!
//! Prints, in one run against the same broker: ingest events/s and latency
//! for batches of 100 events of about 300 bytes at concurrency 64; the same
//! at half that rate; raw rdkafka produce of the same Avro payloads with the
//! same producer settings; their ratio; and the gateway's memory.

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_core::codec::Codec;
use weir_tests::load::WRITE_KEY;
use weir_tests::Stack;

const CONCURRENCY: usize = 64;
const BATCH: usize = 100;

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

/// Posts batches from `CONCURRENCY` clients for `secs`; at most `target` events/s when given.
async fn load(url: &str, secs: u64, target: Option<f64>) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let per_task_interval =
        target.map(|t| Duration::from_secs_f64(BATCH as f64 * CONCURRENCY as f64 / t));
    let mut tasks = vec![];
    for task in 0..CONCURRENCY {
        let (client, url, errors) = (
            client.clone(),
            format!("{url}/v1/events/batch"),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let mut n = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = per_task_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let body =
                    json!({"events": (0..BATCH).map(|i| event(task, n, i)).collect::<Vec<_>>()})
                        .to_string();
                n += 1;
                let t = Instant::now();
                let ok = matches!(client.post(&url).bearer_auth(WRITE_KEY).body(body).send().await,
                                  Ok(r) if r.status().as_u16() == 202);
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
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

/// Raw rdkafka produce of the same Avro payloads, same producer settings as ingest.
async fn raw_produce(stack: &Stack, payloads: &[Vec<u8>], secs: u64) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut acked = 0u64;
    while Instant::now() < deadline {
        while in_flight.len() < CONCURRENCY * BATCH {
            let p = &payloads[sent as usize % payloads.len()];
            let key = format!("raw-{sent}");
            let fut = producer.send_result(FutureRecord::to("bench.raw").key(&key).payload(p));
            match fut {
                Ok(f) => in_flight.push(f),
                Err(_) => break,
            }
            sent += 1;
        }
        if let Some(Ok(Ok(_))) = in_flight.next().await {
            acked += 1;
        }
    }
    while let Some(r) = in_flight.next().await {
        if matches!(r, Ok(Ok(_))) {
            acked += 1;
        }
    }
    acked as f64 / started.elapsed().as_secs_f64()
}

fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "bench", &[("RUST_LOG", "warn")]);
    ingest.wait_ready().await;
    let url = ingest.url("");
    let pid = ingest.proc.pid().expect("ingest runs");
    let idle = rss_mib(pid).0;

    load(&url, 3, None).await; // warm-up: registry lookups, connections, topic metadata
    let max = load(&url, secs, None).await;
    let (rss_max, hwm) = rss_mib(pid);
    let half = load(&url, secs, Some(max.events_per_sec / 2.0)).await;

    let codec = Codec::new(
        &format!("http://127.0.0.1:{}", stack.registry_port),
        "events.raw",
        "aggregates.1m",
    )?;
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
    let raw = raw_produce(&stack, &payloads, secs).await;

    println!("weir ingest benchmark: {secs} s per phase, batches of {BATCH} events (~{json_bytes} B JSON, {avro} B Avro), concurrency {CONCURRENCY}, {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("| phase | events/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|");
    println!(
        "| ingest, max rate | {:.0} | {:.1} | {:.1} | {} |",
        max.events_per_sec, max.p50_ms, max.p99_ms, max.errors
    );
    println!(
        "| ingest, half rate | {:.0} | {:.1} | {:.1} | {} |",
        half.events_per_sec, half.p50_ms, half.p99_ms, half.errors
    );
    println!("| raw rdkafka produce, same payloads | {raw:.0} | | | |");
    println!(
        "ratio ingest / raw produce: {:.2}",
        max.events_per_sec / raw
    );
    println!("ingest RSS: idle {idle:.0} MiB, under max load {rss_max:.0} MiB, peak {hwm:.0} MiB");
    Ok(())
}
