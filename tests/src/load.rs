//! Test traffic with known answers: a seeded mix of unique, duplicate and
//! late events, posted in batches, and readers for what comes out.

use rdkafka::message::{Headers, Message};

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_client::{
    BatchConfig, BatchUploader, ClientConfig, Event, EventResult, Outcome, SendError, Uploader,
};

/// The write key the test stacks configure, and its tenant.
pub const WRITE_KEY: &str = "test-write-key-1";
pub const TENANT: &str = "test";
/// The query API's key, for the same tenant.
pub const READ_KEY: &str = "test-read-key-1";

pub const NAMES: &[&str] = &["shop.page_view", "shop.cart_add", "shop.checkout"];

/// A reproducible event mix and the answers a correct pipeline must give.
pub struct Plan {
    pub events: Vec<Value>,
    pub on_time_ids: BTreeSet<String>,
    pub late_ids: BTreeSet<String>,
    pub users: BTreeSet<String>,
}

/// A tiny seeded generator, so a failing run can be replayed exactly.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Days since the epoch → `YYYY-MM-DD` (proleptic Gregorian), as ClickHouse
/// names a day.
pub fn utc_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `total` events: `dup_pct` % re-send an earlier event id, `late_pct` % are an
/// hour old (later than any allowed lateness; one in ten of them is sent
/// twice), over `users` distinct users.
pub fn plan(seed: u64, total: usize, dup_pct: usize, late_pct: usize, users: usize) -> Plan {
    let mut rng = Lcg::new(seed);
    let now = now_ms();
    let n_late = total * late_pct / 100;
    let n_dup = total * dup_pct / 100;
    let n_unique = total - n_late - n_dup;
    assert!(n_unique >= users, "every user needs an on-time event");
    let event = |id: String, i: usize, ts: i64| {
        let user = format!("user-{}", i % users);
        let mut e = json!({
            "event_id": id, "name": NAMES[i % NAMES.len()], "timestamp": ts, "channel": "web",
            "properties": {"i": i as i64, "plan": "test"},
        });
        // Some events identify the user only by the anonymous id; coalesce() makes them the same user.
        let key = if i.is_multiple_of(10) {
            "anonymous_id"
        } else {
            "user_id"
        };
        e[key] = json!(user);
        e
    };
    let mut events = Vec::with_capacity(total);
    let mut on_time_ids = BTreeSet::new();
    let mut dups_left = n_dup;
    for i in 0..n_unique {
        let id = format!("ev-{seed}-{i}");
        on_time_ids.insert(id.clone());
        events.push(event(id, i, now - rng.below(10_000) as i64));
        if dups_left > 0 && (rng.below(n_unique as u64) as usize) < n_dup {
            let copy = events[rng.below(events.len() as u64) as usize].clone();
            events.push(copy);
            dups_left -= 1;
        }
    }
    for _ in 0..dups_left {
        let copy = events[rng.below(events.len() as u64) as usize].clone();
        events.push(copy);
    }
    // Late events go into the last fifth, once every partition's watermark is near now.
    let mut late_ids = BTreeSet::new();
    for j in 0..n_late {
        let id = format!("late-{seed}-{j}");
        late_ids.insert(id.clone());
        let tail = events.len() - events.len() / 5;
        let at = tail + rng.below((events.len() - tail) as u64 + 1) as usize;
        let late = event(id, j, now - 3_600_000 - j as i64 * 1_000);
        if j % 10 == 0 {
            events.push(late.clone());
        }
        events.insert(at, late);
    }
    let users = (0..users).map(|u| format!("user-{u}")).collect();
    Plan {
        events,
        on_time_ids,
        late_ids,
        users,
    }
}

/// What one POST of a batch to ingest got.
pub enum BatchAttempt {
    /// ingest answered for each event, in the batch's order.
    Answered(Vec<EventResult>),
    /// A 5xx, 429 or 408: retry with the same ids.
    ServerError(u16),
    /// No answer (refused, cut or timed out): retry with the same ids.
    Transport(String),
}

/// The client library's `Uploader` for ingest at `ingest` with the test
/// write key: the one load client every test, bench, soak and chaos run
/// posts through.
pub fn uploader(ingest: &str, timeout: Duration) -> Uploader {
    let mut config = ClientConfig::new(ingest, WRITE_KEY);
    config.timeout = timeout;
    Uploader::new(config).expect("an HTTP client")
}

/// Events as the client library takes them (each keeps its `event_id`).
pub fn events_of(values: &[Value]) -> Vec<Event> {
    values
        .iter()
        .map(|v| Event::from_json(v.clone()).expect("events are JSON objects"))
        .collect()
}

/// POSTs one batch through `uploader`. A refusal of the whole request
/// (other than 5xx, 429, 408) is an error: retrying cannot help.
pub async fn post_batch_once(
    uploader: &Uploader,
    events: &[Event],
) -> anyhow::Result<BatchAttempt> {
    Ok(match uploader.send(events).await {
        Ok(results) => BatchAttempt::Answered(results),
        Err(SendError::Retryable {
            status: Some(s), ..
        }) => BatchAttempt::ServerError(s),
        Err(SendError::Retryable { reason, .. }) => BatchAttempt::Transport(reason),
        Err(e) => anyhow::bail!("ingest refused a batch: {e}"),
    })
}

/// Posts `events` to ingest through the client library's `BatchUploader`
/// (batches of `batch`, retried with the same ids until answered). Returns
/// the accepted ids; any rejected or dropped event is an error.
pub async fn post_batches(
    ingest: &str,
    events: &[Value],
    batch: usize,
) -> anyhow::Result<BTreeSet<String>> {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let config = BatchConfig {
        max_batch_events: batch,
        flush_interval: Duration::from_millis(100),
        max_retry_elapsed: Duration::from_secs(300),
        ..Default::default()
    };
    let up = BatchUploader::new(
        ClientConfig::new(ingest, WRITE_KEY),
        config,
        Some(Box::new(move |r| o.lock().unwrap().push(r.clone()))),
    )?;
    for e in events_of(events) {
        up.send(e).await?;
    }
    up.close(Duration::from_secs(600)).await?;
    let mut acked = BTreeSet::new();
    for r in outcomes.lock().unwrap().drain(..) {
        match r.outcome {
            Outcome::Accepted { .. } => {
                acked.insert(r.event_id);
            }
            other => anyhow::bail!("{}: {other:?}", r.event_id),
        }
    }
    Ok(acked)
}

/// The distinct keys in `topic` (read_committed), read to the end.
pub fn topic_keys(brokers: &str, topic: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(topic_records(brokers, topic)?
        .into_iter()
        .map(|r| r.key)
        .collect())
}

/// One record read back from a topic.
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Every record in `topic` (read_committed), read to the end.
pub fn topic_records(brokers: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let kafka = weir_core::kafka::KafkaConfig {
        brokers: brokers.to_string(),
        ..Default::default()
    };
    let mut records = Vec::new();
    weir_core::topic_reader::read_to_end(
        &kafka,
        "weir-test-reader",
        topic,
        None,
        weir_core::topic_reader::Isolation::ReadCommitted,
        |m| {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_string(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
            Ok(())
        },
    )?;
    Ok(records)
}

/// A producer with ingest's settings that writes records until the broker
/// acknowledges them, through broker restarts: after a failure it waits and
/// starts a fresh producer. A retried record may land twice.
pub struct RetryingProducer {
    config: rdkafka::ClientConfig,
    producer: weir_ingest::acked_producer::AckedProducer,
}

impl RetryingProducer {
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let mut cfg = weir_ingest::config::IngestConfig::default();
        cfg.kafka.brokers = brokers.to_string();
        cfg.delivery_timeout_ms = 10_000;
        let config = weir_ingest::producer_config(&cfg);
        let producer = weir_ingest::acked_producer::AckedProducer::new(&config)?;
        Ok(Self { config, producer })
    }

    /// Writes `records` (key, payload) to `topic`, retrying for up to `patience`.
    pub async fn send(
        &mut self,
        topic: &str,
        records: &[(String, Vec<u8>)],
        patience: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let sent = self
                .producer
                .send_all(
                    topic,
                    records.iter().map(|(k, p)| (k.as_bytes(), p.as_slice())),
                    None,
                    Duration::from_secs(10),
                )
                .await;
            match sent {
                Ok(()) => return Ok(()),
                Err(e) => {
                    anyhow::ensure!(Instant::now() < deadline, "cannot produce to {topic}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.producer = weir_ingest::acked_producer::AckedProducer::new(&self.config)?;
                }
            }
        }
    }
}

/// Produces ingest-shaped JSON events straight to `events.raw`, encoded as
/// ingest would, in chunks of 2,000, retrying through broker restarts with a
/// fresh producer; a retried record may land twice, which is a duplicate id.
pub async fn produce_raw(stack: &crate::Stack, codec: &weir_core::codec::Codec, events: &[Value]) {
    let mut producer = RetryingProducer::new(&stack.brokers()).unwrap();
    let limits = Default::default();
    for chunk in events.chunks(2_000) {
        let mut records = vec![];
        for v in chunk {
            let ts = v["timestamp"].as_i64().expect("a timestamp");
            let event = weir_ingest::validate::to_event(v, ts + 1_000, TENANT, &limits)
                .expect("a valid event");
            records.push((
                event.event_id.clone(),
                codec.encode_event(&event).await.unwrap(),
            ));
        }
        if let Err(e) = producer
            .send("events.raw", &records, Duration::from_secs(120))
            .await
        {
            panic!("{e}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts ~2,000 events a second (batches of 100, named `load.tick`, stamped
/// now) to ingest until the returned flag is set. Refusals and 503s are
/// ignored: the tests that use it provoke them.
pub fn steady_load(ingest: String) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    tokio::spawn(async move {
        let up = uploader(&ingest, Duration::from_secs(5));
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            let batch: Vec<Value> = (0..100)
                .map(|i| {
                    n += 1;
                    json!({"event_id": format!("load-{n}"), "name": "load.tick",
                           "user_id": format!("u{}", i % 10), "timestamp": now_ms()})
                })
                .collect();
            let _ = post_batch_once(&up, &events_of(&batch)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stop
}
