//! `Pipeline`: the whole real stack for one end-to-end test (broker,
//! registry, ClickHouse, ingest, processor instances, aggregator), started
//! and ready, with what a test does with it: post events, read the query
//! API, wait for an answer, print the logs when something is off.
//!
//! ```no_run
//! # async fn t() {
//! use weir_tests::{eventually, Pipeline};
//! let p = Pipeline::start().await;
//! let acked = p.post(&[serde_json::json!({"name": "cart.add", "user_id": "u1"})]).await;
//! let count = eventually("the event is counted", || async {
//!     let m = p.metrics("name=cart.add").await;
//!     (m["total_count"] == 1).then_some(m)
//! })
//! .await;
//! assert_eq!(acked.len(), 1);
//! # }
//! ```

use crate::load::post_batches;
use crate::stack::{Stack, Stage};
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

/// How a pipeline is started.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Processor instances in one group (`WEIR_INSTANCE_ID` `p0`, `p1`, ...).
    pub processors: usize,
    /// `WEIR_COMMIT_MODE` of the processors: `auto`, `exactly_once`, `ordered`.
    pub commit_mode: String,
    /// More `WEIR_*` settings per stage: (stage binary, key, value).
    pub env: Vec<(String, String, String)>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            processors: 1,
            commit_mode: "auto".into(),
            env: vec![],
        }
    }
}

impl PipelineOptions {
    /// Sets `key=value` in `stage`'s environment (`ingest`, `processor`,
    /// `aggregator`, or `*` for all three).
    pub fn env(mut self, stage: &str, key: &str, value: &str) -> Self {
        self.env.push((stage.into(), key.into(), value.into()));
        self
    }
}

pub struct Pipeline {
    pub stack: Stack,
    pub ingest: Stage,
    /// The processor instances, `p0` first.
    pub processors: Vec<Stage>,
    pub aggregator: Stage,
}

impl Pipeline {
    /// One processor, default settings.
    pub async fn start() -> Pipeline {
        Self::start_with(PipelineOptions::default()).await
    }

    /// Starts every part and waits until each stage is ready.
    pub async fn start_with(options: PipelineOptions) -> Pipeline {
        let stack = Stack::start().await;
        let env_of = |bin: &str| -> Vec<(String, String)> {
            options
                .env
                .iter()
                .filter(|(stage, ..)| stage == bin || stage == "*")
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let start = |bin: &str, instance: &str, mut env: Vec<(String, String)>| {
            env.extend(env_of(bin));
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            stack.stage(bin, instance, &env)
        };
        let ingest = start("ingest", "0", vec![]);
        let processors: Vec<Stage> = (0..options.processors)
            .map(|i| {
                let env = vec![
                    ("WEIR_COMMIT_MODE".into(), options.commit_mode.clone()),
                    ("WEIR_INSTANCE_ID".into(), format!("p{i}")),
                    // A dead instance's partitions move after this long.
                    ("WEIR_SESSION_TIMEOUT_MS".into(), "6000".into()),
                ];
                start("processor", &i.to_string(), env)
            })
            .collect();
        let aggregator = start("aggregator", "0", vec![]);
        for s in [&ingest, &aggregator].into_iter().chain(&processors) {
            s.wait_ready().await;
        }
        Pipeline {
            stack,
            ingest,
            processors,
            aggregator,
        }
    }

    /// The first processor instance.
    pub fn processor(&self) -> &Stage {
        &self.processors[0]
    }

    /// Posts `events` to ingest in batches of 100, retrying what fails with
    /// the same ids; returns the ids ingest acknowledged.
    pub async fn post(&self, events: &[Value]) -> BTreeSet<String> {
        post_batches(&self.ingest.url(""), events, 100)
            .await
            .unwrap_or_else(|e| panic!("ingest refused a batch: {e}\n{}", self.logs()))
    }

    /// `GET /v1/metrics?<query>` with the test read key.
    pub async fn metrics(&self, query: &str) -> Value {
        self.aggregator
            .query(&format!("/v1/metrics?{query}"))
            .await
            .1
    }

    /// The last lines of every stage's log.
    pub fn logs(&self) -> String {
        [&self.ingest, &self.aggregator]
            .into_iter()
            .chain(&self.processors)
            .map(|s| format!("--- {} ---\n{}", s.proc.name, s.proc.log_tail(25)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `(group_key, total_count, unique_user_count)` of a metrics answer's
/// `grouped_metrics`, in its order.
pub fn groups(v: &Value) -> Vec<(String, u64, u64)> {
    v["grouped_metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {v}"))
        .iter()
        .map(|g| {
            (
                g["group_key"].as_str().unwrap().to_string(),
                g["total_count"].as_u64().unwrap(),
                g["unique_user_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// How long `eventually` waits: end-to-end answers on a loaded 2-core
/// machine take seconds, rarely a minute.
pub const EVENTUALLY: Duration = Duration::from_secs(180);

/// Polls `probe` until it returns `Some`, and returns that; panics naming
/// `what` after `EVENTUALLY`.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, EVENTUALLY, probe).await
}

/// `eventually`, with its own time limit.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let probe = || {
        let answer = probe();
        async move { answer.await.ok_or_else(|| "not yet".to_string()) }
    };
    eventually_ok_within(what, limit, probe).await
}

/// `eventually`, for a probe that says why its answer is not there yet:
/// the panic shows the last reason.
pub async fn eventually_ok<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_ok_within(what, EVENTUALLY, probe).await
}

/// `eventually_ok`, with its own time limit.
pub async fn eventually_ok_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting until {what}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls `probe` until it returns `Some` or `limit` passes (then `None`,
/// for a caller that reports the miss itself).
pub async fn poll_until<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
