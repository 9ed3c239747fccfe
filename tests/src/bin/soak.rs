//! Soak profile on the real local stack (a load run, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin soak -- \
//!   [--minutes 10] [--rate 2000] [--sample-secs 10] [--warmup-secs 120] [--batch 100] \
//!   [--dedup-horizon-secs 125]`
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

use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use weir_tests::load::{now_ms, Lcg, NAMES, WRITE_KEY};
use weir_tests::{Stack, Stage};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Batches in flight at most; past it the client falls behind its schedule
/// (and says so) instead of piling up requests.
const MAX_IN_FLIGHT: usize = 32;
const USERS: u64 = 5_000;
/// `/proc/<pid>/stat` counts CPU time in clock ticks; 100 a second on Linux.
const CLK_TCK: f64 = 100.0;
/// How long the pipeline may take to drain after the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// RSS growth rule: slope per 10 minutes above this share of the mean...
const RSS_LIMIT_SHARE: f64 = 0.05;
/// ...and above this many MiB per 10 minutes.
const RSS_LIMIT_FLOOR_MIB: f64 = 1.0;
/// fd growth rule: slope above this many fds per 10 minutes...
const FD_LIMIT_SLOPE: f64 = 2.0;
/// ...and the count moving by at least this much over the steady window.
const FD_LIMIT_RANGE: u32 = 3;
/// Either slope must also exceed this many standard errors: a line through
/// noise has a slope too.
const SIGNIFICANT: f64 = 2.0;

struct Args {
    minutes: f64,
    rate: f64,
    sample_secs: f64,
    warmup_secs: Option<f64>,
    batch: usize,
    dedup_horizon_secs: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 10.0,
        rate: 2_000.0,
        sample_secs: 10.0,
        warmup_secs: None,
        batch: 100,
        dedup_horizon_secs: 125,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => a.minutes = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--sample-secs" => a.sample_secs = value.parse()?,
            "--warmup-secs" => a.warmup_secs = Some(value.parse()?),
            "--batch" => a.batch = value.parse()?,
            "--dedup-horizon-secs" => a.dedup_horizon_secs = value.parse()?,
            _ => anyhow::bail!(
                "unknown flag {flag}; flags: --minutes --rate --sample-secs --warmup-secs --batch --dedup-horizon-secs"
            ),
        }
    }
    anyhow::ensure!(
        a.minutes > 0.0 && a.rate > 0.0 && a.sample_secs > 0.0 && a.batch > 0,
        "--minutes, --rate, --sample-secs and --batch must be positive"
    );
    Ok(a)
}

/// The load client's counters, shared by its batch tasks.
struct Load {
    client: reqwest::Client,
    url: String,
    batch: usize,
    run: i64,
    acked: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    /// Latencies (ms) of the acknowledged posts since the sampler last took them.
    latencies: Mutex<Vec<f64>>,
    /// Retry a batch until then; after, it counts as failed.
    give_up_at: Instant,
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
        let body = self.body(n);
        loop {
            let t = Instant::now();
            let answer = self
                .client
                .post(&self.url)
                .bearer_auth(WRITE_KEY)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let retry = match answer {
                Ok(r) if r.status().as_u16() == 202 => {
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let accepted = v["accepted"].as_array().map_or(0, Vec::len);
                    let rejected = v["rejected"].as_array().map_or(0, Vec::len);
                    if rejected > 0 {
                        eprintln!("batch {n}: {rejected} events rejected: {}", v["rejected"]);
                    }
                    self.acked.fetch_add(accepted as u64, Ordering::Relaxed);
                    self.failed.fetch_add(rejected as u64, Ordering::Relaxed);
                    self.latencies.lock().unwrap().push(ms);
                    return;
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => true,
                Ok(r) => {
                    eprintln!(
                        "batch {n}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    false
                }
                Err(_) => true,
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
async fn drive(load: Arc<Load>, rate: f64, until: Instant, stop: Arc<AtomicBool>) -> u64 {
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

/// One process watched by the sampler.
struct Watched {
    label: &'static str,
    pid: u32,
    /// Its HTTP port, whose client connections are counted apart.
    port: Option<u16>,
    /// A weir stage, judged; the others are shown for information.
    stage: bool,
}

#[derive(Clone, Copy)]
struct ProcSample {
    /// In a sample: the mean of the readings since the previous sample.
    rss_mib: f64,
    /// In a sample: the highest reading since the previous sample.
    rss_max_mib: f64,
    /// In a sample: the lowest reading since the previous sample, the floor
    /// under the buffers of in-flight work.
    rss_min_mib: f64,
    fds: u32,
    /// Established connections accepted on its HTTP port (among `fds`).
    clients: u32,
    threads: u32,
    cpu_secs: f64,
}

impl ProcSample {
    /// The fds judged: all but the HTTP clients' live connections, whose
    /// number follows the load client's concurrency (the server closes a
    /// connection idle for 10 s). A leaked connection is not established
    /// any more, so it still counts.
    fn own_fds(&self) -> u32 {
        self.fds.saturating_sub(self.clients)
    }
}

/// Established TCP connections whose local port is `port`, from
/// `/proc/net/tcp` and `tcp6`: the server side of connections to `port`.
fn established_on(port: u16) -> u32 {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let mut f = l.split_whitespace().skip(1);
                    let local = f.next().unwrap_or_default();
                    let state = f.nth(1).unwrap_or_default();
                    local.ends_with(&port) && state == "01"
                })
                .count() as u32
        })
        .sum()
}

/// RSS, open fds, threads and CPU time of `pid`; `None` if it is gone.
fn read_proc(pid: u32, port: Option<u16>) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    };
    // A zombie has no VmRSS line: it is gone.
    let rss_kib = field("VmRSS:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field
    // 3 of stat(5), utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    Some(ProcSample {
        rss_mib: rss_kib / 1024.0,
        rss_max_mib: rss_kib / 1024.0,
        rss_min_mib: rss_kib / 1024.0,
        fds,
        clients: port.map_or(0, established_on),
        threads: field("Threads:").unwrap_or(0.0) as u32,
        cpu_secs: ticks / CLK_TCK,
    })
}

struct Sample {
    t: f64,
    procs: Vec<Option<ProcSample>>,
    acked: u64,
    /// Acknowledged events/s since the previous sample.
    rate: f64,
    /// p99 of the posts acknowledged since the previous sample, ms.
    p99_ms: f64,
    processor_lag: f64,
    aggregator_lag: f64,
    dedup_keys: f64,
    open_windows: f64,
}

/// A metric of a stage, or NaN if it does not answer within 2 s.
async fn metric(stage: &Stage, name: &str) -> f64 {
    tokio::time::timeout(Duration::from_secs(2), stage.metric(name))
        .await
        .unwrap_or(f64::NAN)
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Least-squares line through `(t, y)`: slope per second and its standard error.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 3 {
        return (f64::NAN, f64::NAN);
    }
    let (mt, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let stt: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let sty: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let slope = sty / stt;
    let residuals: f64 = points
        .iter()
        .map(|p| (p.1 - my - slope * (p.0 - mt)).powi(2))
        .sum();
    (slope, (residuals / (n - 2.0) / stt).sqrt())
}

/// The steady-window figures of one process.
struct Trend {
    rss_start: f64,
    rss_end: f64,
    rss_max: f64,
    rss_mean: f64,
    /// The floor's slope in MiB per hour, and its standard error.
    rss_slope_h: f64,
    rss_se_h: f64,
    /// The floor's slope per 10 minutes as a share of its mean.
    rss_share_10m: f64,
    /// The mean's slope in MiB per hour, and its standard error.
    mean_slope_h: f64,
    mean_se_h: f64,
    /// fds but the HTTP clients' connections.
    fd_start: u32,
    fd_end: u32,
    clients_max: u32,
    fd_min: u32,
    fd_max: u32,
    /// fds per 10 minutes, and its standard error.
    fd_slope_10m: f64,
    fd_se_10m: f64,
    threads_min: u32,
    threads_max: u32,
    cpu_pct: f64,
    rss_growth: bool,
    fd_growth: bool,
}

fn trend(points: &[(f64, ProcSample)]) -> Option<Trend> {
    if points.len() < 3 {
        return None;
    }
    let rss: Vec<(f64, f64)> = points.iter().map(|(t, s)| (*t, s.rss_mib)).collect();
    let floor: Vec<(f64, f64)> = points.iter().map(|(t, s)| (*t, s.rss_min_mib)).collect();
    let fds: Vec<(f64, f64)> = points
        .iter()
        .map(|(t, s)| (*t, s.own_fds() as f64))
        .collect();
    let (mean_slope, mean_se) = fit(&rss);
    let (slope, se) = fit(&floor);
    let (fd_slope, fd_se) = fit(&fds);
    let mean = rss.iter().map(|p| p.1).sum::<f64>() / rss.len() as f64;
    let floor_mean = floor.iter().map(|p| p.1).sum::<f64>() / floor.len() as f64;
    let (first, last) = (points[0], points[points.len() - 1]);
    let fd_min = points.iter().map(|p| p.1.own_fds()).min().unwrap_or(0);
    let fd_max = points.iter().map(|p| p.1.own_fds()).max().unwrap_or(0);
    let rss_10m = slope * 600.0;
    let fd_10m = fd_slope * 600.0;
    Some(Trend {
        rss_start: first.1.rss_mib,
        rss_end: last.1.rss_mib,
        rss_max: points.iter().map(|p| p.1.rss_max_mib).fold(0.0, f64::max),
        rss_mean: mean,
        rss_slope_h: slope * 3600.0,
        rss_se_h: se * 3600.0,
        rss_share_10m: rss_10m / floor_mean,
        mean_slope_h: mean_slope * 3600.0,
        mean_se_h: mean_se * 3600.0,
        fd_start: first.1.own_fds(),
        fd_end: last.1.own_fds(),
        clients_max: points.iter().map(|p| p.1.clients).max().unwrap_or(0),
        fd_min,
        fd_max,
        fd_slope_10m: fd_10m,
        fd_se_10m: fd_se * 600.0,
        threads_min: points.iter().map(|p| p.1.threads).min().unwrap_or(0),
        threads_max: points.iter().map(|p| p.1.threads).max().unwrap_or(0),
        cpu_pct: (last.1.cpu_secs - first.1.cpu_secs) / (last.0 - first.0) * 100.0,
        rss_growth: rss_10m > (RSS_LIMIT_SHARE * floor_mean).max(RSS_LIMIT_FLOOR_MIB)
            && slope > SIGNIFICANT * se,
        fd_growth: fd_10m > FD_LIMIT_SLOPE
            && fd_max - fd_min >= FD_LIMIT_RANGE
            && fd_slope > SIGNIFICANT * fd_se,
    })
}

/// Polls until ClickHouse and the query API both hold `expected` events, or
/// `DRAIN_TIMEOUT` passes. Returns (events FINAL, /v1/metrics total_count, seconds).
async fn drain(stack: &Stack, aggregator: &Stage, expected: u64) -> (u64, u64, f64) {
    let started = Instant::now();
    let mut last = (0, 0);
    while started.elapsed() < DRAIN_TIMEOUT {
        let stored = stack
            .clickhouse_query("SELECT count() FROM events FINAL")
            .await
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let queried = aggregator.query("/v1/metrics?name=shop.*").await.1["total_count"]
            .as_u64()
            .unwrap_or(0);
        last = (stored, queried);
        if stored >= expected && queried >= expected {
            // One more read after a pause: a count still growing is a double count.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stored = stack
                .clickhouse_query("SELECT count() FROM events FINAL")
                .await
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let queried = aggregator.query("/v1/metrics?name=shop.*").await.1["total_count"]
                .as_u64()
                .unwrap_or(0);
            return (stored, queried, started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (last.0, last.1, started.elapsed().as_secs_f64())
}

/// Runs the soak; true if every check passed.
async fn run(a: Args) -> anyhow::Result<bool> {
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
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .timeout(Duration::from_secs(40))
            .build()?,
        url: ingest.url("/v1/events/batch"),
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
        let procs: Vec<Option<ProcSample>> = readings
            .iter_mut()
            .zip(&mut gone)
            .map(|(r, gone)| {
                let last = *r.last()?;
                let n = r.len() as f64;
                let p = ProcSample {
                    rss_mib: r.iter().map(|p| p.rss_mib).sum::<f64>() / n,
                    rss_max_mib: r.iter().map(|p| p.rss_mib).fold(0.0, f64::max),
                    rss_min_mib: r.iter().map(|p| p.rss_mib).fold(f64::INFINITY, f64::min),
                    ..last
                };
                r.clear();
                (!std::mem::take(gone)).then_some(p)
            })
            .collect();
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
    println!(
        "samples (per process: RSS MiB, the mean of 1-s readings since the previous sample / open fds; ev/s and p99 of the batch posts \
         since the previous sample; consumer lags in records; dedup keys and open windows held by both processors; \
         a stage's fds as own+N, N its HTTP clients' established connections):"
    );
    println!("{}", header(&watched));
    println!("|{}", "---|".repeat(8 + watched.len()));
    for s in &samples {
        println!("{}", row(s));
    }
    println!();
    println!(
        "steady window: samples from {warmup:.0} s to the end; RSS start, end and mean are the samples' means, max the \
         highest reading; a slope is a least-squares line (± standard error), the judged one that of the samples' \
         floors (their least 1-s reading); fds without the HTTP clients' established connections; CPU % of one core:"
    );
    println!("| process | RSS start MiB | end | max | mean | RSS floor slope MiB/h | floor slope % per 10 min | RSS mean slope MiB/h | fds start | end | min | max | fd slope per 10 min | HTTP client conns max | threads min–max | CPU % | verdict |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = vec![];
    for (i, w) in watched.iter().enumerate() {
        let points: Vec<(f64, ProcSample)> = samples
            .iter()
            .filter(|s| s.t >= warmup)
            .filter_map(|s| s.procs[i].map(|p| (s.t, p)))
            .collect();
        let died = samples.iter().any(|s| s.procs[i].is_none());
        let Some(tr) = trend(&points) else {
            println!("| {} | too few samples in the steady window |", w.label);
            if w.stage {
                failures.push(format!("{}: too few samples", w.label));
            }
            continue;
        };
        let verdict = match (w.stage, died, tr.rss_growth, tr.fd_growth) {
            (_, true, _, _) => "DIED",
            (false, ..) => "info (stores data)",
            (true, _, false, false) => "no growth",
            (true, _, true, false) => "RSS GROWS",
            (true, _, false, true) => "FDS GROW",
            (true, _, true, true) => "RSS AND FDS GROW",
        };
        if w.stage && verdict != "no growth" {
            failures.push(format!("{}: {verdict}", w.label));
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} ± {:.1} | {:+.2} % | {:+.1} ± {:.1} | {} | {} | {} | {} | {:+.1} ± {:.1} | {} | {}–{} | {:.0} | {verdict} |",
            w.label,
            tr.rss_start,
            tr.rss_end,
            tr.rss_max,
            tr.rss_mean,
            tr.rss_slope_h,
            tr.rss_se_h,
            tr.rss_share_10m * 100.0,
            tr.mean_slope_h,
            tr.mean_se_h,
            tr.fd_start,
            tr.fd_end,
            tr.fd_min,
            tr.fd_max,
            tr.fd_slope_10m,
            tr.fd_se_10m,
            tr.clients_max,
            tr.threads_min,
            tr.threads_max,
            tr.cpu_pct,
        );
    }
    println!();
    println!(
        "rule: a stage grows if over the steady window its RSS floor's slope exceeds {:.0} % of the floor's mean per 10 min \
         and {RSS_LIMIT_FLOOR_MIB:.0} MiB per 10 min (a leak that would add 30 % an hour; below 1 MiB is allocator \
         noise), or its fd slope exceeds {FD_LIMIT_SLOPE:.0} fds per 10 min with the count moving by {FD_LIMIT_RANGE} \
         or more; and in either case the slope exceeds {SIGNIFICANT:.0} standard errors (a line through noise has a \
         slope too). A slower leak needs a longer run (--minutes).",
        RSS_LIMIT_SHARE * 100.0
    );
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

fn header(watched: &[Watched]) -> String {
    let mut h =
        "| t s | acked | ev/s | p99 ms | lag proc | lag agg | dedup keys | windows |".to_string();
    for w in watched {
        h.push_str(&format!(" {} |", w.label));
    }
    h
}

fn row(s: &Sample) -> String {
    let mut r = format!(
        "| {:.0} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
        s.t,
        s.acked,
        s.rate,
        s.p99_ms,
        s.processor_lag,
        s.aggregator_lag,
        s.dedup_keys,
        s.open_windows
    );
    for p in &s.procs {
        match p {
            Some(p) if p.clients > 0 => r.push_str(&format!(
                " {:.1} / {}+{} |",
                p.rss_mib,
                p.own_fds(),
                p.clients
            )),
            Some(p) => r.push_str(&format!(" {:.1} / {} |", p.rss_mib, p.fds)),
            None => r.push_str(" gone |"),
        }
    }
    r
}

#[test]
fn fit_finds_the_slope_of_a_line() {
    let points: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 3.0 + 0.5 * t as f64)).collect();
    let (slope, se) = fit(&points);
    assert!((slope - 0.5).abs() < 1e-12 && se < 1e-9);
}

#[test]
fn a_batch_is_json_with_unique_ids() {
    let load = Load {
        client: reqwest::Client::new(),
        url: String::new(),
        batch: 5,
        run: 1,
        acked: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(vec![]),
        give_up_at: Instant::now(),
    };
    let v: Value = serde_json::from_str(&load.body(7)).unwrap();
    let ids: std::collections::BTreeSet<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.contains("soak-1-7-4"));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    // The stack and its processes are dropped (killed) before the exit.
    let ok = run(a).await?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
