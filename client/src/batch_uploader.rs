//! `BatchUploader`: a bounded queue in front of an `Uploader`. Events are
//! batched by count, bytes or interval, sent gzipped by a few requests at
//! a time, and retried with backoff (honouring `Retry-After`) under the
//! same ids until ingest answers for each of them.
//!
//! Memory is bounded by `max_queued_events`: an event holds its place from
//! `send` until its outcome is known. When the queue is full, `send` waits
//! (`QueueFull::Wait`, the default) or fails at once (`QueueFull::Fail`);
//! it never grows.

use crate::backoff::{jitter, Backoff};
use crate::event::{Encoded, Event};
use crate::uploader::{ClientConfig, EventResult, Outcome, SendError, Uploader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What `send` does when the queue holds `max_queued_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    /// Wait for room: back-pressure onto the caller.
    Wait,
    /// Fail at once with `EnqueueError::QueueFull`.
    Fail,
}

/// The queue, batching and retry settings, with their defaults.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Events a request holds at most. Default 500 (ingest takes 1,000).
    pub max_batch_events: usize,
    /// JSON bytes a request holds at most, before gzip. Default 1 MiB
    /// (ingest takes 5 MiB).
    pub max_batch_bytes: usize,
    /// A partial batch is sent after this long. Default 1 s.
    pub flush_interval: Duration,
    /// Events queued or in flight at most. Default 100,000.
    pub max_queued_events: usize,
    pub queue_full: QueueFull,
    /// Requests in flight at once. Default 4.
    pub concurrency: usize,
    pub backoff: Backoff,
    /// How long an event is retried before it is dropped (and reported
    /// so). Default 1 hour: an outage of ingest or Kafka shorter than that
    /// loses nothing.
    pub max_retry_elapsed: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_events: 500,
            max_batch_bytes: 1 << 20,
            flush_interval: Duration::from_secs(1),
            max_queued_events: 100_000,
            queue_full: QueueFull::Wait,
            concurrency: 4,
            backoff: Backoff::default(),
            max_retry_elapsed: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnqueueError {
    #[error("the queue holds max_queued_events events")]
    QueueFull,
    #[error("the uploader is closed")]
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlushError {
    #[error("the deadline passed with events still unanswered")]
    Timeout,
    #[error("the uploader is closed")]
    Closed,
}

/// The uploader's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events taken by `send`.
    pub queued: u64,
    /// Event sends, retries included.
    pub sent: u64,
    /// Events Kafka has.
    pub acknowledged: u64,
    /// Events ingest refused.
    pub rejected: u64,
    /// Event re-sends after a retryable failure.
    pub retried: u64,
    /// Events given up on.
    pub dropped: u64,
    /// Events queued or in flight now.
    pub in_queue: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

type ResultHook = Box<dyn Fn(&EventResult) + Send + Sync>;

struct Shared {
    uploader: Uploader,
    config: BatchConfig,
    counters: Counters,
    on_result: Option<ResultHook>,
    /// Set when `close` runs out of time: what is still unsent is dropped.
    abandon: CancellationToken,
}

impl Shared {
    fn report(&self, r: EventResult) {
        let c = match &r.outcome {
            Outcome::Accepted { .. } => &self.counters.acknowledged,
            Outcome::Rejected { .. } => &self.counters.rejected,
            Outcome::Dropped { .. } => &self.counters.dropped,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.on_result {
            hook(&r);
        }
    }
}

/// An event and its place in the queue, freed when it is answered.
struct Queued {
    event: Encoded,
    _place: OwnedSemaphorePermit,
}

enum Command {
    Event(Queued),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// A queued, batching, retrying sender. Cheap to clone; all clones feed
/// one queue.
#[derive(Clone)]
pub struct BatchUploader {
    tx: mpsc::UnboundedSender<Command>,
    places: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl BatchUploader {
    /// Starts the uploader's task on the current Tokio runtime.
    /// `on_result` hears the outcome of every event: accepted, rejected
    /// with ingest's reason, or dropped.
    pub fn new(
        client: ClientConfig,
        config: BatchConfig,
        on_result: Option<ResultHook>,
    ) -> Result<BatchUploader, reqwest::Error> {
        let places = Arc::new(Semaphore::new(config.max_queued_events.max(1)));
        let shared = Arc::new(Shared {
            uploader: Uploader::new(client)?,
            config,
            counters: Counters::default(),
            on_result,
            abandon: CancellationToken::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, shared.clone()));
        Ok(BatchUploader { tx, places, shared })
    }

    /// Queues one event (see `QueueFull` for a full queue).
    pub async fn send(&self, event: Event) -> Result<(), EnqueueError> {
        let place = match self.shared.config.queue_full {
            QueueFull::Wait => self
                .places
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| EnqueueError::Closed)?,
            QueueFull::Fail => self
                .places
                .clone()
                .try_acquire_owned()
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::NoPermits => EnqueueError::QueueFull,
                    tokio::sync::TryAcquireError::Closed => EnqueueError::Closed,
                })?,
        };
        self.tx
            .send(Command::Event(Queued {
                event: event.encode(),
                _place: place,
            }))
            .map_err(|_| EnqueueError::Closed)?;
        self.shared.counters.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends what is queued and waits until ingest answered for all of it,
    /// or the deadline passes (the events stay queued and keep retrying).
    pub async fn flush(&self, deadline: Duration) -> Result<(), FlushError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Flush(done))
            .map_err(|_| FlushError::Closed)?;
        match tokio::time::timeout(deadline, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(FlushError::Closed),
            Err(_) => Err(FlushError::Timeout),
        }
    }

    /// Flushes, then stops. If the deadline passes first, what is still
    /// unanswered is dropped (each reported `Dropped`) and `Timeout` is
    /// returned.
    pub async fn close(&self, deadline: Duration) -> Result<(), FlushError> {
        self.places.close();
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Close(done))
            .map_err(|_| FlushError::Closed)?;
        match tokio::time::timeout(deadline, wait).await {
            Ok(_) => Ok(()),
            Err(_) => {
                self.shared.abandon.cancel();
                Err(FlushError::Timeout)
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            queued: get(&c.queued),
            sent: get(&c.sent),
            acknowledged: get(&c.acknowledged),
            rejected: get(&c.rejected),
            retried: get(&c.retried),
            dropped: get(&c.dropped),
            in_queue: (self.shared.config.max_queued_events.max(1)
                - self.places.available_permits()) as u64,
        }
    }
}

/// The uploader's task: batches the queue and keeps `concurrency` requests
/// in flight.
async fn run(mut rx: mpsc::UnboundedReceiver<Command>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut b = Batcher {
        batch: vec![],
        bytes: 0,
        in_flight: JoinSet::new(),
        shared,
    };
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Event(q)) => b.add(q).await,
                Some(Command::Flush(done)) => {
                    b.drain().await;
                    let _ = done.send(());
                }
                Some(Command::Close(done)) => {
                    // Events sent before `close` are still in the channel.
                    while let Ok(cmd) = rx.try_recv() {
                        if let Command::Event(q) = cmd {
                            b.add(q).await;
                        }
                    }
                    b.drain().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    b.drain().await;
                    return;
                }
            },
            _ = tick.tick() => b.dispatch().await,
            Some(_) = b.in_flight.join_next(), if !b.in_flight.is_empty() => {}
        }
    }
}

/// The batch being filled and the requests in flight.
struct Batcher {
    batch: Vec<Queued>,
    /// The batch's JSON bytes.
    bytes: usize,
    in_flight: JoinSet<()>,
    shared: Arc<Shared>,
}

impl Batcher {
    /// Adds an event, sending the batch first if the event would take it
    /// past `max_batch_bytes`, and after if it is `max_batch_events` long.
    async fn add(&mut self, q: Queued) {
        let len = q.event.len();
        if !self.batch.is_empty() && self.bytes + len > self.shared.config.max_batch_bytes {
            self.dispatch().await;
        }
        self.bytes += len;
        self.batch.push(q);
        if self.batch.len() >= self.shared.config.max_batch_events {
            self.dispatch().await;
        }
    }

    /// Starts sending the batch, once a request slot is free.
    async fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        while self.in_flight.len() >= self.shared.config.concurrency.max(1) {
            self.in_flight.join_next().await;
        }
        let events = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.in_flight.spawn(deliver(events, self.shared.clone()));
    }

    /// Sends the batch and waits until ingest answered for everything sent.
    async fn drain(&mut self) {
        self.dispatch().await;
        while self.in_flight.join_next().await.is_some() {}
    }
}

/// Sends one batch until ingest has answered for every event in it: a
/// retryable failure waits and resends the same events, a 413 splits the
/// batch in halves.
async fn deliver(events: Vec<Queued>, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut pending = vec![events];
    let mut attempt = 0u32;
    while let Some(part) = pending.pop() {
        let events: Vec<&Encoded> = part.iter().map(|q| &q.event).collect();
        let n = events.len() as u64;
        if shared.abandon.is_cancelled() {
            drop_all(&shared, &events, "closed before ingest answered");
            continue;
        }
        shared.counters.sent.fetch_add(n, Ordering::Relaxed);
        let answer = tokio::select! {
            a = shared.uploader.send_encoded(&events) => a,
            _ = shared.abandon.cancelled() => {
                drop_all(&shared, &events, "closed before ingest answered");
                continue;
            }
        };
        match answer {
            Ok(results) => {
                attempt = 0;
                for r in results {
                    shared.report(r);
                }
            }
            Err(SendError::TooLarge(_)) if part.len() > 1 => {
                let mut part = part;
                let back = part.split_off(part.len() / 2);
                pending.push(back);
                pending.push(part);
            }
            Err(SendError::TooLarge(m) | SendError::Refused(m)) => {
                for e in &events {
                    shared.report(EventResult {
                        event_id: e.id.clone(),
                        outcome: Outcome::Rejected { message: m.clone() },
                    });
                }
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
                ..
            }) => {
                if started.elapsed() >= shared.config.max_retry_elapsed {
                    drop_all(&shared, &events, &format!("retries exhausted: {reason}"));
                    continue;
                }
                attempt += 1;
                shared.counters.retried.fetch_add(n, Ordering::Relaxed);
                let wait = shared.config.backoff.delay(attempt, jitter(), retry_after);
                tracing::debug!(%reason, ?wait, events = n, "retrying a batch");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.abandon.cancelled() => {}
                }
                pending.push(part);
            }
        }
    }
}

fn drop_all(shared: &Shared, events: &[&Encoded], reason: &str) {
    for e in events {
        shared.report(EventResult {
            event_id: e.id.clone(),
            outcome: Outcome::Dropped {
                reason: reason.to_string(),
            },
        });
    }
}
