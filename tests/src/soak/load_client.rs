//! The soak's paced load client: batches of unique events posted to
//! ingest at a steady rate, retried with the same ids until acknowledged,
//! with the counts and latencies the samples report.

use crate::load::{now_ms, post_batch_once, BatchAttempt, Lcg, NAMES};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use weir_client::{Event, Outcome, Uploader};

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
    /// The events of batch `n`, each with its id (the same on every retry).
    fn events(&self, n: u64) -> Vec<Event> {
        let mut rng = Lcg::new(n);
        let ts = now_ms();
        (0..self.batch)
            .map(|i| {
                let user = rng.below(USERS);
                let name = NAMES[rng.below(NAMES.len() as u64) as usize];
                let channel = ["web", "mobile"][rng.below(2) as usize];
                let sku = rng.below(1_000);
                Event::from_json(json!({
                    "event_id": format!("soak-{}-{n}-{i}", self.run), "name": name, "timestamp": ts,
                    "user_id": format!("user-{user}"), "channel": channel,
                    "properties": {"sku": format!("SKU-{sku}"), "price": 19.99, "qty": 2},
                    "context": {"url": "https://shop.example/products/blue-t-shirt",
                                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}
                }))
                .expect("an object")
            })
            .collect()
    }

    /// Posts batch `n` until ingest acknowledges it, retrying 5xx, 429 and
    /// transport errors with the same body (so the same ids).
    async fn send(&self, n: u64) {
        let events = self.events(n);
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
    fn a_batch_has_unique_ids() {
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
        let events = load.events(7);
        let ids: std::collections::BTreeSet<&str> = events.iter().map(Event::id).collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.contains("soak-1-7-4"));
    }
}
