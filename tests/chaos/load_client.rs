//! The chaos run's load client: events at a steady rate, in batches, as a
//! careful producer sends them. Every 5xx, timeout and broken connection is
//! retried with the same event ids; every id ingest acknowledged goes into the
//! [`Ledger`], the record the end of the run is judged against.

use crate::load::{events_of, post_batch_once, uploader, BatchAttempt, Lcg};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_client::{Outcome, Uploader};

pub const NAMES: [&str; 3] = ["shop.view", "shop.cart_add", "shop.checkout"];

/// What the pipeline must make of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Counted once.
    OnTime,
    /// Minutes to days old: every window it falls in is closed, so the
    /// late lane counts it (and `events.late` logs it).
    TooLate,
}

/// One acknowledged event id.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: &'static str,
    pub user: String,
    pub fate: Fate,
}

/// Invalid events the client mixes in, and the field ingest must name.
pub const INVALID: [(&str, &str); 4] = [
    ("no_name", "name"),
    ("timestamp_is_text", "timestamp"),
    ("properties_not_object", "properties"),
    ("unknown_field", "colour"),
];

#[derive(Default)]
pub struct Ledger {
    pub acked: HashMap<String, Entry>,
    /// Distinct events the client made, invalid ones included.
    pub sent: usize,
    /// Send attempts, re-sends of a duplicate id and retries included.
    pub requests: usize,
    pub retries_5xx: usize,
    pub retries_transport: usize,
    /// Deliberate re-sends of an id already acknowledged.
    pub duplicates: usize,
    /// (kind, field ingest named) → count, and one of ingest's messages.
    pub rejected: BTreeMap<(String, String), (usize, String)>,
    /// When the last batch was acknowledged.
    pub last_ack: Option<Instant>,
    /// Acknowledgement latency of each batch (with its retries), in ms.
    pub batch_ms: Vec<f64>,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

/// How the client sends.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub seed: u64,
    pub events: usize,
    pub rate: f64,
    pub batch: usize,
    pub users: u64,
}

impl LoadPlan {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / self.rate)
    }
}

/// Sends `plan.events` events and returns when all are acknowledged.
pub async fn run(ingest: String, plan: LoadPlan, ledger: SharedLedger) -> anyhow::Result<()> {
    let client = uploader(&ingest, Duration::from_secs(15));
    let mut rng = Lcg::new(plan.seed);
    let interval = Duration::from_secs_f64(plan.batch as f64 / plan.rate);
    let mut recent: Vec<Value> = Vec::new();
    let mut next = Instant::now();
    let mut made = 0;
    while made < plan.events {
        tokio::time::sleep_until(next.into()).await;
        // Steady rate: after an outage the client goes on at the same pace
        // rather than bursting to catch up.
        next = next.max(Instant::now()) + interval;
        let mut batch = Vec::with_capacity(plan.batch);
        let mut kinds = Vec::with_capacity(plan.batch);
        while batch.len() < plan.batch && made < plan.events {
            let roll = rng.below(100);
            if roll < 5 && !recent.is_empty() {
                // A re-send of a recent id, as a producer's own retry makes.
                batch.push(recent[rng.below(recent.len() as u64) as usize].clone());
                kinds.push(None);
                ledger.lock().unwrap().duplicates += 1;
                continue;
            }
            if roll == 5 {
                let k = rng.below(INVALID.len() as u64) as usize;
                batch.push(invalid(INVALID[k].0, made));
                kinds.push(Some(k));
                made += 1;
                ledger.lock().unwrap().sent += 1;
                continue;
            }
            let fate = if roll < 8 && made > 1_000 {
                Fate::TooLate
            } else {
                Fate::OnTime
            };
            let e = event(&mut rng, &plan, made, fate);
            if recent.len() < 1_000 {
                recent.push(e.clone());
            } else {
                recent[rng.below(1_000) as usize] = e.clone();
            }
            batch.push(e);
            kinds.push(None);
            made += 1;
            ledger.lock().unwrap().sent += 1;
        }
        send(&client, batch, kinds, &ledger).await?;
    }
    Ok(())
}

fn event(rng: &mut Lcg, plan: &LoadPlan, i: usize, fate: Fate) -> Value {
    let now = crate::load::now_ms();
    let ts = match fate {
        // A little disorder, well inside the 5 s out-of-orderness bound.
        Fate::OnTime => now - rng.below(2_000) as i64,
        // Past every window's lateness: ten minutes, three hours or two days old.
        Fate::TooLate => now - [600_000, 3 * 3_600_000, 2 * 86_400_000][rng.below(3) as usize],
    };
    json!({
        "event_id": format!("c{}-{i}", plan.seed),
        "name": NAMES[rng.below(3) as usize],
        "user_id": format!("user-{}", rng.below(plan.users)),
        "timestamp": ts,
        "channel": "web",
        "properties": {"i": i as i64, "fate": format!("{fate:?}")},
    })
}

fn invalid(kind: &str, i: usize) -> Value {
    let mut e = json!({
        "event_id": format!("bad-{i}"), "name": "shop.view", "user_id": "user-0",
        "timestamp": crate::load::now_ms(), "channel": "web",
    });
    match kind {
        "no_name" => {
            e.as_object_mut().unwrap().remove("name");
        }
        "timestamp_is_text" => e["timestamp"] = json!("yesterday"),
        "properties_not_object" => e["properties"] = json!([1, 2]),
        _ => e["colour"] = json!("red"),
    }
    e
}

/// Posts one batch until ingest answers 202 and records the answer.
async fn send(
    client: &Uploader,
    batch: Vec<Value>,
    kinds: Vec<Option<usize>>,
    ledger: &SharedLedger,
) -> anyhow::Result<()> {
    let events = events_of(&batch);
    let started = Instant::now();
    let results = loop {
        ledger.lock().unwrap().requests += 1;
        match post_batch_once(client, &events).await? {
            BatchAttempt::Answered(results) => break results,
            BatchAttempt::ServerError(_) => ledger.lock().unwrap().retries_5xx += 1,
            BatchAttempt::Transport(_) => ledger.lock().unwrap().retries_transport += 1,
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "ingest has not acknowledged a batch for 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut l = ledger.lock().unwrap();
    l.batch_ms.push(started.elapsed().as_secs_f64() * 1e3);
    l.last_ack = Some(Instant::now());
    for (index, r) in results.into_iter().enumerate() {
        let e = &batch[index];
        match r.outcome {
            Outcome::Accepted { .. } => {
                anyhow::ensure!(
                    kinds[index].is_none(),
                    "ingest accepted an invalid event: {e}"
                );
                let id = r.event_id;
                if l.acked.contains_key(&id) {
                    continue;
                }
                let fate = if e["properties"]["fate"] == "TooLate" {
                    Fate::TooLate
                } else {
                    Fate::OnTime
                };
                let name = NAMES
                    .into_iter()
                    .find(|n| e["name"] == *n)
                    .unwrap_or(NAMES[0]);
                let user = e["user_id"].as_str().unwrap_or_default().to_string();
                l.acked.insert(id, Entry { name, user, fate });
            }
            Outcome::Rejected { message } => {
                let Some(k) = kinds[index] else {
                    anyhow::bail!("ingest rejected a valid event: {e}: {message}");
                };
                // "field: reason"; the reason is what the report shows.
                let field = message.split(':').next().unwrap_or_default().to_string();
                let entry = l
                    .rejected
                    .entry((INVALID[k].0.to_string(), field))
                    .or_insert((0, message.clone()));
                entry.0 += 1;
            }
            Outcome::Dropped { reason } => anyhow::bail!("{}: dropped: {reason}", r.event_id),
        }
    }
    Ok(())
}

/// Posts one event (a recovery probe) until acknowledged, into the ledger.
pub async fn probe(ingest: &str, id: &str, ledger: &SharedLedger) -> anyhow::Result<()> {
    let client = uploader(ingest, Duration::from_secs(15));
    let e = json!({
        "event_id": id, "name": NAMES[0], "user_id": "user-probe",
        "timestamp": crate::load::now_ms(), "channel": "web",
        "properties": {"fate": "OnTime"},
    });
    ledger.lock().unwrap().sent += 1;
    send(&client, vec![e], vec![None], ledger).await
}
