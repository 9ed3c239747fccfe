//! The soak profile: the whole pipeline on the real local stack under a
//! steady load for minutes, watched for growth in memory and file
//! descriptors, then checked end to end. `src/bin/soak.rs` is its command
//! line; [`load_client`] sends the load, [`sampler`] reads `/proc` and the
//! stages' metrics, [`trend`] fits the slopes and holds the growth rule, and
//! [`report`] prints the tables.
//!
//! Starts the whole pipeline as production runs it: the stack (nisshi broker,
//! registry, ClickHouse), ingest, two processor instances in one group and
//! the aggregator. A paced client posts batches of unique events (timestamps
//! of now, 5,000 users, three names) to `POST /v1/events/batch` at a steady
//! rate for `--minutes`, retrying a batch on 5xx or a transport error with
//! the same ids, and counts the events ingest acknowledged.
//!
//! RSS (`VmRSS`) is read from `/proc` once a second; every `--sample-secs`
//! a sample keeps the mean, the highest and the least of those readings,
//! with the open file descriptors (entries of `/proc/<pid>/fd`), threads
//! and CPU time, and the pipeline's consumer lags, dedup keys and open
//! windows from the stages' `/metrics`. After the load it waits for the
//! pipeline to drain and checks that ClickHouse (`events FINAL`) and the
//! query API (`/v1/metrics`) both hold exactly the acknowledged events.
//!
//! It prints the samples, then per process over the steady window (after
//! `--warmup-secs`, default 2 minutes or a fifth of a shorter run): RSS at
//! its start and end, max and mean, least-squares slopes in MiB/h and in %
//! per 10 minutes, and the same for fds. The trend is judged on the RSS
//! floor (each sample's least reading): a leak raises the floor, while the
//! buffers of in-flight work (batches; requests waiting longer when the
//! machine is busy and the client's concurrency rises) raise the peaks and
//! the mean, then fall back. fds are judged without the established
//! connections accepted on the stage's HTTP port, whose number follows the
//! client's concurrency (the server closes one idle for 10 s); a leaked
//! connection is not established any more, so it still counts.
//!
//! A stage has a growth trend if, over the steady window, its RSS floor's
//! slope exceeds 5 % of the floor's mean and 1 MiB per 10 minutes (below
//! that is allocator noise; 5 % per 10 minutes is a leak adding 30 % an
//! hour), or its fd slope exceeds 2 fds per 10 minutes with the count
//! moving by 3 or more; and in either case the slope is more than two
//! standard errors. The exit status is non-zero if a stage shows a trend
//! or dies, or if a count does not match. The broker and ClickHouse are
//! shown for information only: they store the data, so they grow.
//!
//! The processors' dedup set keeps every event id for its horizon by
//! design (24 h by default, bounded by `dedup_max_memory_keys`, then
//! spilled to disk), which under steady load is growth for a day, not a
//! leak. The soak sets the horizon to `--dedup-horizon-secs` (default
//! 125 s, the least the default window and lateness allow) so that the set
//! reaches its steady size during the warm-up and any growth left in the
//! steady window is a leak; pass `--dedup-horizon-secs 86400` to soak the
//! production default, and read the dedup keys column alongside the
//! processors' RSS.

pub mod load_client;
pub mod report;
pub mod sampler;
pub mod trend;

use crate::load::now_ms;
use crate::{Stack, Stage};
use load_client::{drive, Load, MAX_IN_FLIGHT};
use report::{print_rule, print_samples, print_steady_window, row};
use sampler::{metric, read_proc, take_sample, ProcSample, Sample, Watched};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trend::quantile;

/// How long the pipeline may take to drain after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The soak's settings, from its command line.
pub struct Args {
    pub minutes: f64,
    pub rate: f64,
    pub sample_secs: f64,
    pub warmup_secs: Option<f64>,
    pub batch: usize,
    pub dedup_horizon_secs: u64,
}

/// Polls until ClickHouse and the query API both hold `expected` events, or
/// `DRAIN_TIMEOUT` passes. Returns (events FINAL, /v1/metrics total_count, seconds).
async fn drain(stack: &Stack, aggregator: &Stage, expected: u64) -> (u64, u64, f64) {
    // (events FINAL, the API's total): what ClickHouse and the API hold now.
    let counts = || async {
        let stored = stack
            .clickhouse_query("SELECT count() FROM events FINAL")
            .await
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let queried = aggregator.query("/v1/metrics?name=shop.*").await.1["total_count"]
            .as_u64()
            .unwrap_or(0);
        (stored, queried)
    };
    let started = Instant::now();
    let mut last = (0, 0);
    while started.elapsed() < DRAIN_TIMEOUT {
        let (stored, queried) = counts().await;
        last = (stored, queried);
        if stored >= expected && queried >= expected {
            // One more read after a pause: a count still growing is a double count.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (stored, queried) = counts().await;
            return (stored, queried, started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (last.0, last.1, started.elapsed().as_secs_f64())
}

/// Runs the soak; true if every check passed.
pub async fn run(a: Args) -> anyhow::Result<bool> {
    let duration = Duration::from_secs_f64(a.minutes * 60.0);
    let warmup = a
        .warmup_secs
        .unwrap_or_else(|| (duration.as_secs_f64() / 5.0).min(120.0));
    let horizon_ms = (a.dedup_horizon_secs * 1000).to_string();
    // Production intervals, not the test stack's shorter ones.
    let commit_ms = weir_processor::config::ProcessorConfig::default()
        .commit_interval_ms
        .to_string();
    let insert_ms = weir_aggregator::config::AggregatorConfig::default()
        .clickhouse
        .batch_interval_ms
        .to_string();

    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "soak", &[]);
    let processors: Vec<Stage> = (0..2)
        .map(|i| {
            stack.stage(
                "processor",
                &i.to_string(),
                &[
                    ("WEIR_INSTANCE_ID", &format!("soak-{i}")),
                    ("WEIR_DEDUP_HORIZON_MS", &horizon_ms),
                    ("WEIR_COMMIT_INTERVAL_MS", &commit_ms),
                ],
            )
        })
        .collect();
    let aggregator = stack.stage(
        "aggregator",
        "soak",
        &[("WEIR_CLICKHOUSE__BATCH_INTERVAL_MS", &insert_ms)],
    );
    for s in [&ingest, &aggregator].into_iter().chain(&processors) {
        s.wait_ready().await;
    }
    let pid = |s: &Stage| s.proc.pid().expect("the stage runs");
    let watched = [
        Watched {
            label: "ingest",
            pid: pid(&ingest),
            port: Some(ingest.port),
            stage: true,
        },
        Watched {
            label: "processor-0",
            pid: pid(&processors[0]),
            port: Some(processors[0].port),
            stage: true,
        },
        Watched {
            label: "processor-1",
            pid: pid(&processors[1]),
            port: Some(processors[1].port),
            stage: true,
        },
        Watched {
            label: "aggregator",
            pid: pid(&aggregator),
            port: Some(aggregator.port),
            stage: true,
        },
        Watched {
            label: "broker",
            pid: stack.kafka.pid().expect("the broker runs"),
            port: None,
            stage: false,
        },
        Watched {
            label: "clickhouse",
            pid: stack.clickhouse.pid().expect("ClickHouse runs"),
            port: None,
            stage: false,
        },
    ];

    let started = Instant::now();
    let end = started + duration;
    let load = Arc::new(Load {
        client: crate::load::uploader(&ingest.url(""), Duration::from_secs(40)),
        batch: a.batch,
        run: now_ms(),
        acked: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(vec![]),
        give_up_at: end + Duration::from_secs(120),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(drive(load.clone(), a.rate, end, stop.clone()));

    // /proc is read every second or so; a sample's RSS is the mean of the
    // readings since the previous sample, which smooths the sawtooth of
    // batch buffers, and its fds and threads are the last reading.
    let ticks_per_sample = a.sample_secs.ceil().max(1.0) as u32;
    let tick = Duration::from_secs_f64(a.sample_secs / ticks_per_sample as f64);
    let mut samples: Vec<Sample> = vec![];
    let mut readings: Vec<Vec<ProcSample>> = vec![vec![]; watched.len()];
    let mut gone = vec![false; watched.len()];
    let mut all_latencies: Vec<f64> = vec![];
    let mut interrupted = false;
    for k in 0u32.. {
        let at = started + tick * k;
        if at > end + Duration::from_millis(500) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: stopping the load and summing up");
                interrupted = true;
                break;
            }
        }
        for (i, w) in watched.iter().enumerate() {
            match read_proc(w.pid, w.port) {
                Some(p) => readings[i].push(p),
                None => gone[i] = true,
            }
        }
        if !k.is_multiple_of(ticks_per_sample) {
            continue;
        }
        let t = started.elapsed().as_secs_f64();
        let procs = take_sample(&mut readings, &mut gone);
        let acked = load.acked.load(Ordering::Relaxed);
        let mut lat = std::mem::take(&mut *load.latencies.lock().unwrap());
        lat.sort_by(f64::total_cmp);
        let p99_ms = quantile(&lat, 0.99);
        all_latencies.extend(lat);
        let rate = samples.last().map_or(0.0, |p: &Sample| {
            (acked - p.acked) as f64 / (t - p.t).max(1e-9)
        });
        let mut processor_lag = 0.0;
        let mut dedup_keys = 0.0;
        let mut open_windows = 0.0;
        for p in &processors {
            processor_lag += metric(p, "weir_processor_consumer_lag").await;
            dedup_keys += metric(p, "weir_processor_dedup_keys").await;
            open_windows += metric(p, "weir_processor_open_windows").await;
        }
        // + 0.0: an empty gauge reads -0.
        let aggregator_lag = metric(&aggregator, "weir_aggregator_consumer_lag").await + 0.0;
        let s = Sample {
            t,
            procs,
            acked,
            rate,
            p99_ms,
            processor_lag,
            aggregator_lag,
            dedup_keys,
            open_windows,
        };
        eprintln!("{}", row(&s));
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    let batches = driver.await?;
    let load_secs = started.elapsed().as_secs_f64();
    all_latencies.extend(std::mem::take(&mut *load.latencies.lock().unwrap()));
    all_latencies.sort_by(f64::total_cmp);
    let acked = load.acked.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    let (stored, queried, drain_secs) = drain(&stack, &aggregator, acked).await;

    // The summary.
    println!(
        "weir soak: {:.1} min at {:.0} events/s offered in batches of {} (at most {MAX_IN_FLIGHT} in flight), \
         ingest + 2 processors + aggregator on the real stack, {} cores; samples every {:.0} s; \
         warm-up {warmup:.0} s excluded from the trends; processors' dedup horizon {} s{}",
        a.minutes,
        a.rate,
        a.batch,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.sample_secs,
        a.dedup_horizon_secs,
        if interrupted { "; INTERRUPTED" } else { "" }
    );
    println!(
        "load: {} events sent in {batches} batches, {acked} acknowledged, {failed} failed, {} retried posts; \
         {:.0} events/s achieved over {load_secs:.0} s (target {:.0}); \
         batch post latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        batches * a.batch as u64,
        load.retries.load(Ordering::Relaxed),
        acked as f64 / load_secs,
        a.rate,
        quantile(&all_latencies, 0.5),
        quantile(&all_latencies, 0.99),
        all_latencies.last().copied().unwrap_or(f64::NAN),
    );
    let counts_ok = stored == acked && queried == acked && failed == 0;
    println!(
        "end to end: ClickHouse `events FINAL` {stored}, query API `/v1/metrics?name=shop.*` total_count {queried}, \
         acknowledged {acked}: {} ({drain_secs:.0} s to drain after the load stopped)",
        if counts_ok { "equal" } else { "MISMATCH" }
    );
    println!();
    print_samples(&watched, &samples);
    println!();
    let mut failures = print_steady_window(&watched, &samples, warmup);
    println!();
    print_rule();
    if !counts_ok {
        failures.push(format!(
            "counts: stored {stored}, queried {queried}, acknowledged {acked}, failed {failed}"
        ));
    }
    if failures.is_empty() {
        println!(
            "verdict: no growth trend in any stage; every acknowledged event arrived exactly once"
        );
    } else {
        println!("verdict: FAILED: {}", failures.join("; "));
        for s in [&ingest, &aggregator].into_iter().chain(&processors) {
            eprintln!("--- {} log tail ---\n{}", s.proc.name, s.proc.log_tail(15));
        }
    }
    Ok(failures.is_empty())
}
