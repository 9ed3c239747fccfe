//! The whole pipeline under load on the real local stack (a bench, not a
//! timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-pipeline -- [ALONE_EVENTS] [STEP_SECS] [FRESH_SECS]`
//!
//! One stack (nisshi, rivven-schema, ClickHouse on chdb), one ingest, one
//! processor, one aggregator, every setting at its documented default
//! (`commit_interval_ms` 500, `clickhouse.batch_interval_ms` 1000), all on
//! the same cores as the load client. In one run it prints:
//! 1. **each stage alone**: ingest taking `ALONE_EVENTS` (default 300,000)
//!    events with nothing downstream running; then the processor alone over
//!    that backlog; then the aggregator alone over the processor's output;
//!    the slowest of the three is the pipeline's physical limit here;
//! 2. **the ramp**: all three running, batches offered at 0.2, 0.3, ... of
//!    the slowest stage's rate, `STEP_SECS` (default 30) each, until a step's
//!    end-to-end lag is no longer bounded; the highest bounded step is the
//!    maximum sustained rate, and its ratio to the slowest stage alone;
//! 3. **freshness** at half that rate for `FRESH_SECS` (default 60): a probe
//!    event every 100 ms, each with a name of its own, and the p50 / p99 /
//!    max time from its 202 until `/v1/metrics` counts it; and the records,
//!    offsets and bytes each accepted event writes to each topic, and each
//!    process's share of the CPU.
//!
//! With `WEIR_BENCH_PROFILE_SECS=N` it then keeps the freshness run's load
//! going for N more seconds and prints every process's pid to stderr first,
//! for `perf record` or `strace -c` to attach; nothing printed covers that
//! time.
//!
//! It draws `docs/img/pipeline-throughput.svg` and
//! `docs/img/pipeline-freshness.svg` (another directory with
//! `WEIR_BENCH_PLOTS`).

mod offered;
mod plot;
mod traffic;

use offered::{quantile, Offered, Probes, Until};
use std::time::{Duration, Instant};
use weir_tests::{Stack, Stage};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The documented defaults, which the test stacks shorten.
const DEFAULTS: [(&str, &str); 3] = [
    ("WEIR_COMMIT_INTERVAL_MS", "500"),
    ("WEIR_CLICKHOUSE__BATCH_INTERVAL_MS", "1000"),
    ("RUST_LOG", "warn"),
];
/// The ramp's offered rates, as fractions of the slowest stage alone.
const RAMP: [f64; 11] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2];
/// A step is bounded when ingest took at least this share of what was offered...
const MIN_ACCEPTED: f64 = 0.95;
/// ...the median lag of its last quarter exceeds its first quarter's by no
/// more than this (a backlog growing by 5 % of the rate over a 30 s step
/// adds about 1.1 s)...
const MAX_LAG_GROWTH_MS: f64 = 750.0;
/// ...and what it left behind is counted within this after it ends.
const MAX_DRAIN: Duration = Duration::from_secs(5);
const FRESHNESS_GOAL_MS: f64 = 2_000.0;
/// How often the freshness run asks `/v1/metrics` for the probes. Every
/// query takes the local ClickHouse's one lock (chdb behind
/// `deploy/local/clickhouse/server.py`), which the aggregator's inserts
/// wait on too, so polling faster slows what it measures.
const POLL_MS: u64 = 100;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds a process has used (user + system, all threads).
fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".into(), |p| format!("/proc/{p}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name, which may hold spaces: utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Polls `f` every 100 ms until it returns true, or `timeout` passes;
/// returns how long it took, `None` on timeout.
async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Events/s at which `progress` (a counter that only grows) went from its
/// first value above zero to `target`.
async fn rate_until<F, Fut>(what: &str, target: u64, mut progress: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let now = progress().await;
        if now > 0 && first.is_none() {
            first = Some((Instant::now(), now));
        }
        if now >= target {
            let (t0, c0) = first.expect("set above");
            anyhow::ensure!(
                c0 < target,
                "{what} did all {target} events before the first reading"
            );
            return Ok((target - c0) as f64 / t0.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} stalled at {now} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One step of the ramp.
struct Step {
    offered: f64,
    run: Offered,
    /// Events accepted in the step over the time until the last was counted.
    counted_rate: f64,
    drain: Option<Duration>,
    lags: Vec<f64>,
    growth_ms: f64,
    missing_probes: usize,
}

impl Step {
    fn bounded(&self) -> bool {
        self.run.rate() >= MIN_ACCEPTED * self.offered
            && self.growth_ms <= MAX_LAG_GROWTH_MS
            && self.missing_probes == 0
            && self.drain.is_some_and(|d| d <= MAX_DRAIN)
    }
}

/// Median lag of the last quarter of a step's probes less the first quarter's.
fn lag_growth(lags: &[offered::ProbeLag]) -> f64 {
    let q = lags.len() / 4;
    if q == 0 {
        return 0.0;
    }
    let median =
        |s: &[offered::ProbeLag]| quantile(&s.iter().map(|l| l.lag_ms).collect::<Vec<_>>(), 0.5);
    median(&lags[lags.len() - q..]) - median(&lags[..q])
}

/// The processor's commits and the aggregator's batch stores: how many, and
/// the seconds they took, from their histograms.
#[derive(Default)]
struct StageTimes {
    commits: f64,
    commit_secs: f64,
    inserts: f64,
    insert_secs: f64,
}

impl StageTimes {
    async fn read(p: &Pipeline) -> StageTimes {
        StageTimes {
            commits: p
                .processor
                .metric("weir_processor_commit_seconds_count")
                .await,
            commit_secs: p
                .processor
                .metric("weir_processor_commit_seconds_sum")
                .await,
            inserts: p
                .aggregator
                .metric("weir_aggregator_insert_seconds_count")
                .await,
            insert_secs: p
                .aggregator
                .metric("weir_aggregator_insert_seconds_sum")
                .await,
        }
    }
    fn since(&self, before: &StageTimes) -> StageTimes {
        StageTimes {
            commits: self.commits - before.commits,
            commit_secs: self.commit_secs - before.commit_secs,
            inserts: self.inserts - before.inserts,
            insert_secs: self.insert_secs - before.insert_secs,
        }
    }
    fn commit_ms(&self) -> f64 {
        self.commit_secs / self.commits.max(1.0) * 1e3
    }
    fn insert_ms(&self) -> f64 {
        self.insert_secs / self.inserts.max(1.0) * 1e3
    }
}

struct Pipeline {
    stack: Stack,
    ingest: Stage,
    processor: Stage,
    aggregator: Stage,
}

impl Pipeline {
    fn ingest_url(&self) -> String {
        self.ingest.url("")
    }
    fn aggregator_url(&self) -> String {
        self.aggregator.url("")
    }
    async fn counted(&self) -> u64 {
        let (_, m) = self.aggregator.query("/v1/metrics?name=pipe.*").await;
        m["total_count"].as_u64().unwrap_or(0)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let alone_events = arg(1, 300_000);
    let step_secs = arg(2, 30) as f64;
    let fresh_secs = arg(3, 60) as f64;
    let plots = std::env::var_os("WEIR_BENCH_PLOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| weir_tests::repo_root().join("docs/img"));
    std::fs::create_dir_all(&plots)?;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());

    // 1. Each stage alone, each over what the one before it wrote.
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &DEFAULTS);
    ingest.wait_ready().await;
    let alone = offered::post(&ingest.url(""), "alone", None, Until::Events(alone_events)).await;
    anyhow::ensure!(
        alone.failed_batches == 0,
        "ingest alone: {} batches failed",
        alone.failed_batches
    );
    let total_alone = alone.accepted;
    let ingest_rate = alone.rate();
    eprintln!("ingest alone: {ingest_rate:.0} events/s");
    let mut env = DEFAULTS.to_vec();
    env.push(("WEIR_INSTANCE_ID", "p0"));
    let processor = stack.stage("processor", "0", &env);
    processor.wait_ready().await;
    let processor_rate = rate_until("the processor", total_alone, || async {
        processor.metric("weir_processor_events_total").await as u64
    })
    .await?;
    eprintln!("processor alone: {processor_rate:.0} events/s");
    let aggregator = stack.stage("aggregator", "0", &DEFAULTS);
    aggregator.wait_ready().await;
    let p = Pipeline {
        stack,
        ingest,
        processor,
        aggregator,
    };
    // Every event is a row of `events`; the counts come from the far fewer
    // window rows, so `/v1/metrics` is complete long before the events are in.
    let aggregator_rate = rate_until("the aggregator", total_alone, || async {
        p.aggregator
            .metric(r#"weir_aggregator_rows_inserted_total{table="events"}"#)
            .await as u64
    })
    .await?;
    eprintln!("aggregator alone: {aggregator_rate:.0} events/s");
    let stages = [
        ("ingest", ingest_rate),
        ("processor", processor_rate),
        ("aggregator", aggregator_rate),
    ];
    let (slowest_name, slowest) = stages
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three stages");

    // 2. The ramp, all three running.
    let mut accepted_total = total_alone;
    let mut steps: Vec<Step> = vec![];
    for (i, fraction) in RAMP.iter().enumerate() {
        let rate = slowest * fraction;
        let label = format!("r{i}");
        let started = Instant::now();
        let probes = Probes::start(
            &p.ingest_url(),
            &p.aggregator_url(),
            &label,
            Duration::from_millis(250),
            Duration::from_millis(100),
        );
        let run = offered::post(&p.ingest_url(), &label, Some(rate), Until::Secs(step_secs)).await;
        accepted_total += run.accepted;
        let drain = wait_until(Duration::from_secs(180), || async {
            p.counted().await >= accepted_total
        })
        .await;
        let (lags, missing_probes) = probes.finish(started, Duration::from_secs(30)).await;
        let step = Step {
            offered: rate,
            // Until the step's last event is counted: its drain included.
            counted_rate: run.accepted as f64
                / (run.secs + drain.map_or(f64::INFINITY, |d| d.as_secs_f64())),
            drain,
            growth_ms: lag_growth(&lags),
            lags: lags.iter().map(|l| l.lag_ms).collect(),
            missing_probes,
            run,
        };
        eprintln!(
            "step {fraction:.1}: offered {rate:.0}/s, accepted {:.0}/s, counted {:.0}/s, lag p50 {:.0} ms, growth {:.0} ms, drain {:?}, bounded {}",
            step.run.rate(),
            step.counted_rate,
            quantile(&step.lags, 0.5),
            step.growth_ms,
            step.drain,
            step.bounded()
        );
        let bounded = step.bounded();
        steps.push(step);
        if !bounded {
            anyhow::ensure!(
                drain.is_some(),
                "the pipeline did not catch up within 180 s after a step"
            );
            break;
        }
    }
    let max_sustained = steps
        .iter()
        .filter(|s| s.bounded())
        .map(|s| s.run.rate())
        .fold(0.0, f64::max);
    anyhow::ensure!(max_sustained > 0.0, "no step of the ramp was bounded");

    // 3. Freshness at half the maximum, and what each event costs the broker.
    let rate = max_sustained / 2.0;
    let broker_label = format!("broker ({})", p.stack.broker.name());
    let procs: Vec<(&str, Option<u32>)> = vec![
        ("ingest", p.ingest.proc.pid()),
        ("processor", p.processor.proc.pid()),
        ("aggregator", p.aggregator.proc.pid()),
        (broker_label.as_str(), p.stack.kafka.pid()),
        ("ClickHouse (chdb)", p.stack.clickhouse.pid()),
        ("registry", p.stack.registry.pid()),
        ("load client (this bench)", None),
    ];
    let brokers = p.stack.brokers();
    let offsets_before = traffic::offsets(&brokers)?;
    let cpu_before: Vec<f64> = procs.iter().map(|(_, pid)| cpu_secs(*pid)).collect();
    let stages_before = StageTimes::read(&p).await;
    let started = Instant::now();
    let probes = Probes::start(
        &p.ingest_url(),
        &p.aggregator_url(),
        "fresh",
        Duration::from_millis(100),
        Duration::from_millis(POLL_MS),
    );
    let run = offered::post(
        &p.ingest_url(),
        "fresh",
        Some(rate),
        Until::Secs(fresh_secs),
    )
    .await;
    let cpu_secs_run = started.elapsed().as_secs_f64();
    let stage_times = StageTimes::read(&p).await.since(&stages_before);
    let cpu: Vec<f64> = procs
        .iter()
        .zip(&cpu_before)
        .map(|((_, pid), before)| (cpu_secs(*pid) - before) / cpu_secs_run)
        .collect();
    accepted_total += run.accepted;
    let (lags, missing) = probes.finish(started, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(180), || async {
        p.counted().await >= accepted_total
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("the freshness run was not all counted within 180 s"))?;
    let offsets_after = traffic::offsets(&brokers)?;
    if let Some(secs) = std::env::var("WEIR_BENCH_PROFILE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        let pids: Vec<String> = procs
            .iter()
            .map(|(name, pid)| format!("{name}={}", pid.unwrap_or(std::process::id())))
            .collect();
        eprintln!(
            "profile window: {secs} s at {rate:.0} events/s; pids: {}",
            pids.join(", ")
        );
        offered::post(&p.ingest_url(), "profile", Some(rate), Until::Secs(secs)).await;
        eprintln!("profile window over");
    }
    let per_topic = tokio::task::block_in_place(|| {
        traffic::between(&brokers, &offsets_before, &offsets_after)
    })?;
    let accepted_fresh = run.accepted + lags.len() as u64;
    let lag_ms: Vec<f64> = lags.iter().map(|l| l.lag_ms).collect();
    let (p50, p99, max) = (
        quantile(&lag_ms, 0.5),
        quantile(&lag_ms, 0.99),
        lag_ms.iter().copied().fold(0.0, f64::max),
    );

    println!(
        "weir pipeline benchmark: one ingest, one processor, one aggregator at default settings, \
         nisshi, rivven-schema and ClickHouse (chdb), and the load client, on {cores} cores"
    );
    println!(
        "each stage alone ({total_alone} events, batches of {} from {} concurrent requests):",
        offered::BATCH,
        offered::CONCURRENCY
    );
    println!("| stage alone | events/s |");
    println!("|---|---|");
    for (name, r) in stages {
        println!("| {name} | {r:.0} |");
    }
    println!("slowest stage alone: {slowest_name}, {slowest:.0} events/s");
    println!("ramp, {step_secs:.0} s per step, all stages running:");
    println!("| offered events/s | accepted events/s | counted events/s | lag p50 / p99 ms | lag growth ms | drain s | bounded |");
    println!("|---|---|---|---|---|---|---|");
    for s in &steps {
        println!(
            "| {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {:+.0} | {} | {} |",
            s.offered,
            s.run.rate(),
            s.counted_rate,
            quantile(&s.lags, 0.5),
            quantile(&s.lags, 0.99),
            s.growth_ms,
            s.drain
                .map_or("> 180".into(), |d| format!("{:.1}", d.as_secs_f64())),
            if s.bounded() { "yes" } else { "no" }
        );
    }
    println!(
        "maximum sustained rate: {max_sustained:.0} events/s = {:.2} of the slowest stage alone (goal >= 0.8)",
        max_sustained / slowest
    );
    println!(
        "freshness at {rate:.0} events/s offered ({:.0} accepted) for {fresh_secs:.0} s: {} probes, \
         202 -> counted by /v1/metrics p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms \
         (goal p99 <= {FRESHNESS_GOAL_MS:.0} ms; polled every {POLL_MS} ms; {missing} probes not counted)",
        run.rate(),
        lag_ms.len(),
    );
    println!(
        "where it goes, in that run: the processor committed {} times, {:.0} ms each on average; \
         the aggregator stored {} batches, {:.0} ms each on average (insert, late lane, hourly rollup)",
        stage_times.commits,
        stage_times.commit_ms(),
        stage_times.inserts,
        stage_times.insert_ms()
    );
    println!("broker traffic per accepted event ({accepted_fresh} events in that run):");
    println!("| topic | records/event | offsets/event (with transaction markers) | bytes/event |");
    println!("|---|---|---|---|");
    let (mut all_records, mut all_offsets, mut all_bytes) = (0u64, 0i64, 0u64);
    for t in &per_topic {
        let per = |v: f64| v / accepted_fresh as f64;
        println!(
            "| {} | {:.3} | {:.3} | {:.1} |",
            t.topic,
            per(t.records as f64),
            per(t.offsets as f64),
            per(t.bytes as f64)
        );
        all_records += t.records;
        all_offsets += t.offsets;
        all_bytes += t.bytes;
    }
    let per = |v: f64| v / accepted_fresh as f64;
    println!(
        "| all | {:.3} | {:.3} | {:.1} |",
        per(all_records as f64),
        per(all_offsets as f64),
        per(all_bytes as f64)
    );
    println!("CPU in that run, cores busy (of {cores}):");
    println!("| process | cores |");
    println!("|---|---|");
    for ((name, _), c) in procs.iter().zip(&cpu) {
        println!("| {name} | {c:.2} |");
    }
    println!("| all | {:.2} |", cpu.iter().sum::<f64>());

    let points: Vec<plot::RampPoint> = steps
        .iter()
        .map(|s| plot::RampPoint {
            offered: s.offered,
            accepted: s.run.rate(),
            counted: s.counted_rate,
            bounded: s.bounded(),
        })
        .collect();
    let throughput = plots.join("pipeline-throughput.svg");
    plot::throughput(
        &throughput,
        &format!("weir pipeline on {cores} cores: delivered against offered"),
        &points,
        slowest,
        max_sustained,
    )?;
    let freshness = plots.join("pipeline-freshness.svg");
    plot::freshness(
        &freshness,
        &format!(
            "freshness at {:.0} events/s: {} probes",
            run.rate(),
            lag_ms.len()
        ),
        &lag_ms,
        50.0,
        &[("p50", p50), ("p99", p99), ("goal p99", FRESHNESS_GOAL_MS)],
    )?;
    println!(
        "plots: {} and {}",
        throughput.display(),
        freshness.display()
    );
    Ok(())
}
