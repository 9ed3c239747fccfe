//! The fault schedule and how each fault is dealt and healed. The schedule
//! is random but a function of the seed, so a failing run can be replayed;
//! faults run one after another, and after each the run measures how long
//! the pipeline takes to be whole again: every stage ready and a fresh probe
//! event acknowledged by ingest and stored in ClickHouse.

use super::blackhole::Blackhole;
use super::load_client::{probe, SharedLedger};
use crate::load::Lcg;
use crate::{Stack, Stage};
use std::fmt;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillIngest,
    KillProcessor(usize),
    KillAggregator,
    RestartBroker,
    RestartClickHouse,
    /// The aggregator's link to ClickHouse closed for this long.
    Blackhole(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillIngest => write!(f, "kill -9 ingest"),
            Fault::KillProcessor(i) => write!(f, "kill -9 processor-{i}"),
            Fault::KillAggregator => write!(f, "kill -9 aggregator"),
            Fault::RestartBroker => write!(f, "kill -9 + restart broker"),
            Fault::RestartClickHouse => write!(f, "kill -9 + restart ClickHouse"),
            Fault::Blackhole(d) => write!(f, "blackhole aggregator→ClickHouse {}s", d.as_secs()),
        }
    }
}

/// The fault mix, shuffled by `seed`, at moments spread over
/// `span`: each kill three times per stage, the broker and ClickHouse twice,
/// one 30-second blackhole.
pub fn schedule(seed: u64, span: Duration) -> Vec<(Duration, Fault)> {
    let mut faults = vec![];
    for _ in 0..3 {
        faults.extend([
            Fault::KillIngest,
            Fault::KillProcessor(0),
            Fault::KillProcessor(1),
            Fault::KillAggregator,
        ]);
    }
    faults.extend([Fault::RestartBroker, Fault::RestartBroker]);
    faults.extend([Fault::RestartClickHouse, Fault::RestartClickHouse]);
    faults.push(Fault::Blackhole(Duration::from_secs(30)));
    let mut rng = Lcg::new(seed ^ 0xfa17);
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Moments between 5 % and 90 % of the span, in order.
    let mut at: Vec<Duration> = (0..faults.len())
        .map(|_| span.mul_f64(0.05 + 0.85 * rng.below(10_000) as f64 / 10_000.0))
        .collect();
    at.sort();
    at.into_iter().zip(faults).collect()
}

/// The running pipeline the faults are dealt to.
pub struct Cluster {
    pub stack: Stack,
    pub ingest: Stage,
    pub processors: Vec<Stage>,
    pub aggregator: Stage,
    pub blackhole: Blackhole,
}

/// One dealt fault.
#[derive(Clone, Debug)]
pub struct Dealt {
    pub fault: Fault,
    /// Since the start of the load.
    pub at: Duration,
    /// How long the component was gone (or the link cut).
    pub outage: Duration,
    /// From the end of the outage until the pipeline was whole again.
    pub recovered_after: Option<Duration>,
}

impl Cluster {
    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        std::iter::once(&self.ingest)
            .chain(&self.processors)
            .chain(std::iter::once(&self.aggregator))
    }

    /// Deals `fault`, heals it, and returns how long the outage was.
    pub async fn deal(&mut self, fault: Fault, rng: &mut Lcg) -> Duration {
        let started = Instant::now();
        let pause =
            |rng: &mut Lcg, lo: u64, hi: u64| Duration::from_millis(lo + rng.below(hi - lo));
        match fault {
            Fault::KillIngest => {
                self.ingest.proc.kill9();
                tokio::time::sleep(pause(rng, 200, 2_000)).await;
                self.ingest.proc.restart();
            }
            Fault::KillProcessor(i) => {
                self.processors[i].proc.kill9();
                tokio::time::sleep(pause(rng, 200, 2_000)).await;
                self.processors[i].proc.restart();
            }
            Fault::KillAggregator => {
                self.aggregator.proc.kill9();
                tokio::time::sleep(pause(rng, 200, 2_000)).await;
                self.aggregator.proc.restart();
            }
            Fault::RestartBroker => {
                self.stack.kafka.kill9();
                tokio::time::sleep(pause(rng, 1_000, 3_000)).await;
                self.stack.kafka.restart();
            }
            Fault::RestartClickHouse => {
                self.stack.clickhouse.kill9();
                tokio::time::sleep(pause(rng, 1_000, 3_000)).await;
                self.stack.clickhouse.restart();
            }
            Fault::Blackhole(d) => {
                self.blackhole.cut().await;
                tokio::time::sleep(d).await;
                self.blackhole.restore().await;
            }
        }
        started.elapsed()
    }

    /// Waits until every stage is ready and a probe event sent now is in
    /// ClickHouse; `None` if that takes longer than `limit`.
    pub async fn recovery(
        &self,
        probe_id: &str,
        ledger: &SharedLedger,
        limit: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        let deadline = started + limit;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        for stage in self.stages() {
            loop {
                let ready = client.get(stage.url("/readyz")).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let sent = tokio::time::timeout_at(
            deadline.into(),
            probe(&self.ingest.url(""), probe_id, ledger),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return None;
        }
        let sql = format!("SELECT count() FROM events WHERE event_id = '{probe_id}'");
        while Instant::now() < deadline {
            if self
                .stack
                .clickhouse_query(&sql)
                .await
                .is_ok_and(|n| n != "0")
            {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}
