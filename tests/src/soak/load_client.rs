//! The soak's paced load client: batches of unique events posted to
//! ingest at a steady rate, retried with the same ids until acknowledged,
//! with the counts and latencies the samples report.

use crate::load::{events_of, now_ms, post_batch_once, BatchAttempt, Lcg, NAMES};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use weir_client::{Outcome, Uploader};

/// Batches in flight at most; past it the client falls behind its schedule
/// (and says so) instead of piling up requests.
pub(super) const MAX_IN_FLIGHT: usize = 32;
const USERS: u64 = 5_000;

/// The load client's counters, shared by its batch tasks.
pub(super) struct Load {
    pub(super) client: Uploader,
    pub(super) batch: usize,
    pub(super) run: i64,
    pub(super) acked: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Latencies (ms) of the acknowledged posts since the sampler last took them.
    pub(super) latencies: Mutex<Vec<f64>>,
    /// Retry a batch until then; after, it counts as failed.
    pub(super) give_up_at: Instant,
}

impl Load {
    /// The JSON of batch `n`, written straight into one string: the client
    /// shares the stages' two cores.
    fn body(&self, n: u64) -> String {
        use std::fmt::Write;
        let mut rng = Lcg::new(n);
        let ts = now_ms();
        let mut body = String::with_capacity(self.batch * 300 + 16);
        body.push_str(r#"{"events":["#);
        for i in 0..self.batch {
            if i > 0 {
                body.push(',');
            }
            let user = rng.below(USERS);
            let _ = write!(
                body,
                r#"{{"event_id":"soak-{run}-{n}-{i}","name":"{name}","timestamp":{ts},"user_id":"user-{user}","channel":"{channel}","properties":{{"sku":"SKU-{sku}","price":19.99,"qty":2}},"context":{{"url":"https://shop.example/products/blue-t-shirt","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}}}}"#,
                run = self.run,
                name = NAMES[rng.below(NAMES.len() as u64) as usize],
                channel = ["web", "mobile"][rng.below(2) as usize],
                sku = rng.below(1_000),
            );
        }
        body.push_str("]}");
        body
    }

    /// Posts batch `n` until ingest acknowledges it, retrying 5xx, 429 and
    /// transport errors with the same body (so the same ids).
    async fn send(&self, n: u64) {
        let body: serde_json::Value =
            serde_json::from_str(&self.body(n)).expect("the body is JSON");
        let events = events_of(body["events"].as_array().expect("events"));
        loop {
            let t = Instant::now();
            let retry = match post_batch_once(&self.client, &events).await {
                Ok(BatchAttempt::Answered(results)) => {
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let accepted = results
                        .iter()
                        .filter(|r| matches!(r.outcome, Outcome::Accepted { .. }))
                        .count();
                    let rejected = results.len() - accepted;
                    if rejected > 0 {
                        eprintln!("batch {n}: {rejected} events rejected: {results:?}");
                    }
                    self.acked.fetch_add(accepted as u64, Ordering::Relaxed);
                    self.failed.fetch_add(rejected as u64, Ordering::Relaxed);
                    self.latencies.lock().unwrap().push(ms);
                    return;
                }
                Ok(BatchAttempt::ServerError(_) | BatchAttempt::Transport(_)) => true,
                Err(e) => {
                    eprintln!("batch {n}: {e}");
                    false
                }
            };
            if !retry || Instant::now() > self.give_up_at {
                self.failed.fetch_add(self.batch as u64, Ordering::Relaxed);
                return;
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sends one batch every `batch / rate` seconds until `until` or `stop`,
/// at most `MAX_IN_FLIGHT` at once, and waits for them. Returns the
/// batches sent.
pub(super) async fn drive(
    load: Arc<Load>,
    rate: f64,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> u64 {
    let interval = Duration::from_secs_f64(load.batch as f64 / rate);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    while next < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let load = load.clone();
        tasks.spawn(async move {
            load.send(n).await;
            drop(permit);
        });
        n += 1;
        next += interval;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_json_with_unique_ids() {
        let load = Load {
            client: crate::load::uploader("http://127.0.0.1:9", Duration::from_secs(1)),
            batch: 5,
            run: 1,
            acked: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latencies: Mutex::new(vec![]),
            give_up_at: Instant::now(),
        };
        let v: serde_json::Value = serde_json::from_str(&load.body(7)).unwrap();
        let ids: std::collections::BTreeSet<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.contains("soak-1-7-4"));
    }
}
