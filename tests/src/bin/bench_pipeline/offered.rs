//! The load `bench-pipeline` offers: batches of events POSTed to ingest at a
//! set rate (or as fast as ingest answers), and probe events whose time from
//! ingest's 202 until `/v1/metrics` counts them is the pipeline's freshness.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_tests::load::{READ_KEY, WRITE_KEY};

/// Events per POST.
pub const BATCH: usize = 100;
/// Requests in flight at most; enough that ingest, not the client, sets the
/// pace (bench-ingest's setting).
pub const CONCURRENCY: usize = 64;
/// The names the load's events carry; `/v1/metrics?name=pipe.*` counts them.
const NAMES: [&str; 3] = ["pipe.view", "pipe.cart_add", "pipe.checkout"];
/// A poster gives up after this many failed batches: something is wrong
/// that more load will not fix.
const MAX_FAILED_BATCHES: u64 = 1_000;
/// Distinct users in the load.
const USERS: usize = 10_000;

/// What one run of the poster got.
pub struct Offered {
    /// Events ingest acknowledged (202).
    pub accepted: u64,
    /// Batches that got anything else, or no answer.
    pub failed_batches: u64,
    pub secs: f64,
}

impl Offered {
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.secs
    }
}

/// How long a poster runs.
#[derive(Clone, Copy)]
pub enum Until {
    /// Until this many events were acknowledged (rounded up to whole batches).
    Events(u64),
    Secs(f64),
}

/// The JSON of one batch, written straight into a string: the client shares
/// the pipeline's two cores, so it should cost little.
fn batch_body(label: &str, task: usize, n: u64) -> String {
    let mut body = String::with_capacity(BATCH * 260 + 16);
    body.push_str(r#"{"events":["#);
    for i in 0..BATCH {
        if i > 0 {
            body.push(',');
        }
        let seq = n as usize * BATCH + i;
        let _ = write!(
            body,
            r#"{{"event_id":"{label}-{task}-{n}-{i}","name":"{}","user_id":"user-{}","channel":"web","properties":{{"sku":"SKU-12345","price":19.99,"qty":2}},"context":{{"url":"https://shop.example/products/blue-t-shirt","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}}}}"#,
            NAMES[seq % NAMES.len()],
            (seq * 7919 + task) % USERS,
        );
    }
    body.push_str("]}");
    body
}

/// Posts batches of `BATCH` events to ingest (`ingest` is its base URL) from
/// `CONCURRENCY` tasks, spread evenly over each interval so that a paced run
/// is steady, not bursty. `rate` in events/s; `None` sends as fast as
/// ingest answers.
pub async fn post(ingest: &str, label: &str, rate: Option<f64>, until: Until) -> Offered {
    let client = reqwest::Client::new();
    let url: Arc<str> = format!("{ingest}/v1/events/batch").into();
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let label: Arc<str> = label.into();
    let started = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64((BATCH * CONCURRENCY) as f64 / r));
    let mut tasks = vec![];
    for task in 0..CONCURRENCY {
        let (client, url, accepted, failed, label) = (
            client.clone(),
            url.clone(),
            accepted.clone(),
            failed.clone(),
            label.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut next = started
                + interval.map_or(Duration::ZERO, |iv| iv * task as u32 / CONCURRENCY as u32);
            let mut n = 0u64;
            loop {
                let done = match until {
                    Until::Events(total) => accepted.load(Ordering::Relaxed) >= total,
                    Until::Secs(s) => started.elapsed().as_secs_f64() >= s,
                } || failed.load(Ordering::Relaxed) > MAX_FAILED_BATCHES;
                if done {
                    break;
                }
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let answer = client
                    .post(&*url)
                    .bearer_auth(WRITE_KEY)
                    .header("content-type", "application/json")
                    .body(batch_body(&label, task, n))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted.fetch_add(BATCH as u64, Ordering::Relaxed);
                    }
                    answer => {
                        // The first failure says what is wrong; the rest would only repeat it.
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            let why = match answer {
                                Ok(r) => {
                                    format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                                }
                                Err(e) => e.to_string(),
                            };
                            eprintln!("a batch failed: {why}");
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Offered {
        accepted: accepted.load(Ordering::Relaxed),
        failed_batches: failed.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
    }
}

/// One probe: a single event with a name of its own, posted alone.
#[derive(Clone)]
struct Probe {
    sent: Instant,
    acked: Option<Instant>,
    counted: Option<Instant>,
}

/// Probe events sent every `every` while running, and a poller that reads
/// their counts from `/v1/metrics?name=probe.*&group_by=name` every
/// `poll_every`: a probe's freshness is from its 202 until the first answer
/// that counts it, so it is over-stated by up to one poll interval plus one
/// query.
pub struct Probes {
    probes: Arc<Mutex<BTreeMap<String, Probe>>>,
    stop_sending: Arc<AtomicBool>,
    stop_polling: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
}

/// A finished probe: when it was sent (seconds from the start of its run)
/// and its freshness in ms.
pub struct ProbeLag {
    pub sent_at_secs: f64,
    pub lag_ms: f64,
}

impl Probes {
    pub fn start(
        ingest: &str,
        aggregator: &str,
        label: &str,
        every: Duration,
        poll_every: Duration,
    ) -> Probes {
        let probes: Arc<Mutex<BTreeMap<String, Probe>>> = Arc::default();
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_polling = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::new();
        // Windows start on the minute; the first probe's is at most a minute before now.
        let from = weir_tests::load::now_ms() / 60_000 * 60_000 - 60_000;
        let sender = {
            let (probes, stop, client) = (probes.clone(), stop_sending.clone(), client.clone());
            let url = format!("{ingest}/v1/events/batch");
            let label = label.to_string();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let name = format!("probe.{label}_{i}");
                    i += 1;
                    let body = format!(
                        r#"{{"events":[{{"event_id":"{name}","name":"{name}","user_id":"probe"}}]}}"#
                    );
                    let sent = Instant::now();
                    probes.lock().unwrap().insert(
                        name.clone(),
                        Probe {
                            sent,
                            acked: None,
                            counted: None,
                        },
                    );
                    let (probes, client, url) = (probes.clone(), client.clone(), url.clone());
                    // Its own task, so a slow answer does not delay the next probe.
                    tokio::spawn(async move {
                        let ok = client
                            .post(&url)
                            .bearer_auth(WRITE_KEY)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().as_u16() == 202);
                        let mut p = probes.lock().unwrap();
                        if ok {
                            if let Some(p) = p.get_mut(&name) {
                                p.acked = Some(Instant::now());
                            }
                        } else {
                            p.remove(&name);
                        }
                    });
                }
            })
        };
        let poller = {
            let (probes, stop, client) = (probes.clone(), stop_polling.clone(), client);
            let url = format!("{aggregator}/v1/metrics?name=probe.*&group_by=name&from={from}");
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(poll_every).await;
                    let Ok(r) = client
                        .get(&url)
                        .header("x-read-key", READ_KEY)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        continue;
                    };
                    let now = Instant::now();
                    let mut p = probes.lock().unwrap();
                    for g in v["grouped_metrics"].as_array().into_iter().flatten() {
                        let (Some(name), Some(count)) =
                            (g["group_key"].as_str(), g["total_count"].as_u64())
                        else {
                            continue;
                        };
                        if let Some(probe) = p.get_mut(name) {
                            if count > 0 && probe.acked.is_some() && probe.counted.is_none() {
                                probe.counted = Some(now);
                            }
                        }
                    }
                }
            })
        };
        Probes {
            probes,
            stop_sending,
            stop_polling,
            sender,
            poller,
        }
    }

    /// Stops sending, waits up to `wait` for the probes sent to be counted,
    /// and returns each counted probe's lag and how many never were.
    pub async fn finish(self, started: Instant, wait: Duration) -> (Vec<ProbeLag>, usize) {
        self.stop_sending.store(true, Ordering::Relaxed);
        let _ = self.sender.await;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let pending = self
                .probes
                .lock()
                .unwrap()
                .values()
                .filter(|p| p.counted.is_none())
                .count();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_polling.store(true, Ordering::Relaxed);
        let _ = self.poller.await;
        let probes = self.probes.lock().unwrap().clone();
        let mut lags: Vec<ProbeLag> = probes
            .values()
            .filter_map(|p| {
                Some(ProbeLag {
                    sent_at_secs: p.sent.duration_since(started).as_secs_f64(),
                    lag_ms: p.counted?.duration_since(p.acked?).as_secs_f64() * 1e3,
                })
            })
            .collect();
        lags.sort_by(|a, b| a.sent_at_secs.total_cmp(&b.sent_at_secs));
        let missing = probes.len() - lags.len();
        (lags, missing)
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank; 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}
