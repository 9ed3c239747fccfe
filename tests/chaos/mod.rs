//! The chaos run: weir's one promise, that every accepted event is counted
//! exactly once, checked on the whole real stack while faults are dealt.
//!
//! A load client ([`load_client`]) sends events at a steady rate through
//! ingest and keeps a ledger of every acknowledged id. Two processor
//! instances and the aggregator run as in production; the aggregator reaches
//! ClickHouse through a relay ([`blackhole`]) that can be cut. Faults from a
//! seeded schedule ([`faults`]) kill every stage, the broker and ClickHouse,
//! and cut the link, one after another. At the end ClickHouse must hold
//! exactly the acknowledged events, late ones included (and count each
//! once), unique users must be exact, and `events.late` / `events.invalid`
//! must hold exactly what belongs there.
//! [`report`] prints the summary table.
//!
//! Run the full profile (1,000,000 events) with
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin chaos -- --profile full`;
//! `.ci/run` runs the CI profile (50,000 events) as `tests/tests/chaos.rs`.

pub mod blackhole;
pub mod faults;
pub mod load_client;
pub mod locate;
pub mod report;

use crate::load::{topic_keys, Lcg, RetryingProducer, READ_KEY, TENANT};
use crate::Stack;
use blackhole::Blackhole;
use faults::{Cluster, Dealt};
use load_client::{Fate, Ledger, LoadPlan, SharedLedger, NAMES};
use report::Summary;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How big a run is.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub seed: u64,
    pub events: usize,
    /// Events a second the client sends while ingest answers.
    pub rate: f64,
    pub batch: usize,
    pub users: u64,
    /// Poison records written straight to `events.raw`.
    pub poison: usize,
}

impl Profile {
    pub fn ci(seed: u64) -> Profile {
        Profile {
            name: "ci".into(),
            seed,
            events: 50_000,
            // Slow enough that the load outlasts the faults (about 100 s of
            // outages and recoveries, one after another).
            rate: 300.0,
            batch: 40,
            users: 2_000,
            poison: 12,
        }
    }

    pub fn full(seed: u64) -> Profile {
        Profile {
            name: "full".into(),
            seed,
            events: 1_000_000,
            rate: 2_500.0,
            batch: 100,
            users: 50_000,
            poison: 60,
        }
    }
}

/// Runs `profile` and returns what it saw; [`Summary::violations`] says
/// whether the promise held.
pub async fn run(profile: &Profile) -> anyhow::Result<Summary> {
    let mut cluster = start(profile).await?;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::default()));
    let plan = LoadPlan {
        seed: profile.seed,
        events: profile.events,
        rate: profile.rate,
        batch: profile.batch,
        users: profile.users,
    };
    let started = Instant::now();
    let load = tokio::spawn(load_client::run(
        cluster.ingest.url(""),
        plan.clone(),
        ledger.clone(),
    ));
    let poison = tokio::spawn(poison(
        cluster.stack.brokers(),
        profile.seed,
        profile.poison,
        plan.duration(),
    ));

    let mut rng = Lcg::new(profile.seed ^ 0xdea1);
    let mut dealt: Vec<Dealt> = vec![];
    for (k, (at, fault)) in faults::schedule(profile.seed, plan.duration())
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep_until((started + at).into()).await;
        let at = started.elapsed();
        eprintln!("[chaos] {:>6.1} s  {fault}", at.as_secs_f64());
        let outage = cluster.deal(fault, &mut rng).await;
        let recovered_after = cluster
            .recovery(&format!("probe-{k}"), &ledger, Duration::from_secs(240))
            .await;
        dealt.push(Dealt {
            fault,
            at,
            outage,
            recovered_after,
        });
    }
    load.await??;
    let poisoned = poison.await??;
    let load_secs = started.elapsed().as_secs_f64();
    let ledger = Arc::try_unwrap(ledger)
        .map_err(|_| anyhow::anyhow!("the ledger is still shared"))?
        .into_inner()
        .unwrap();
    let mut summary = settle(&cluster, profile, ledger, poisoned, dealt).await?;
    summary.load_secs = load_secs;
    Ok(summary)
}

async fn start(profile: &Profile) -> anyhow::Result<Cluster> {
    let stack = Stack::start().await;
    stack.codec().register().await?;
    let blackhole = Blackhole::start(stack.clickhouse_port).await?;
    let clickhouse = format!("http://127.0.0.1:{}", blackhole.port);
    let quiet = "warn,weir_processor=info,weir_aggregator=info,weir_ingest=info";
    let ingest = stack.stage("ingest", "0", &[("RUST_LOG", quiet)]);
    let processors: Vec<_> = (0..2)
        .map(|i| {
            let id = format!("chaos-{}-{i}", profile.name);
            stack.stage(
                "processor",
                &i.to_string(),
                &[
                    ("WEIR_INSTANCE_ID", id.as_str()),
                    ("WEIR_SESSION_TIMEOUT_MS", "6000"),
                    ("RUST_LOG", quiet),
                ],
            )
        })
        .collect();
    let aggregator = stack.stage(
        "aggregator",
        "0",
        &[
            ("WEIR_CLICKHOUSE__URL", clickhouse.as_str()),
            ("RUST_LOG", quiet),
        ],
    );
    let cluster = Cluster {
        stack,
        ingest,
        processors,
        aggregator,
        blackhole,
    };
    for stage in cluster.stages() {
        stage.wait_ready().await;
    }
    Ok(cluster)
}

/// Writes `n` undecodable records straight to `events.raw`, spread over
/// `span`, as a misbehaving producer would; returns their keys.
async fn poison(
    brokers: String,
    seed: u64,
    n: usize,
    span: Duration,
) -> anyhow::Result<BTreeSet<String>> {
    let mut producer = RetryingProducer::new(&brokers)?;
    let mut keys = BTreeSet::new();
    for k in 0..n {
        tokio::time::sleep(span.div_f64(n as f64 + 1.0)).await;
        let key = format!("poison-{seed}-{k}");
        let payload: Vec<u8> = match k % 3 {
            0 => b"{\"not\": \"avro\"}".to_vec(),
            // The Confluent frame of a schema id the registry never issued.
            1 => vec![0, 0, 0, 0x27, 0x0f, 2, 4, 6],
            _ => vec![],
        };
        producer
            .send(
                "events.raw",
                &[(key.clone(), payload)],
                Duration::from_secs(240),
            )
            .await?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Waits for the pipeline to drain, then compares everything with the ledger.
async fn settle(
    cluster: &Cluster,
    profile: &Profile,
    ledger: Ledger,
    poisoned: BTreeSet<String>,
    dealt: Vec<Dealt>,
) -> anyhow::Result<Summary> {
    // Every acknowledged distinct event must be counted, the late ones too.
    let counted: HashSet<&str> = ledger.acked.keys().map(String::as_str).collect();
    let too_late: BTreeSet<String> = ledger
        .acked
        .iter()
        .filter(|(_, e)| e.fate == Fate::TooLate)
        .map(|(id, _)| id.clone())
        .collect();
    let stack = &cluster.stack;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let want = counted.len().to_string();
    let mut api_total = 0;
    while Instant::now() < deadline {
        let stored = stack
            .clickhouse_query("SELECT count() FROM events FINAL")
            .await
            .unwrap_or_default();
        let (_, all) = metrics(cluster, "shop.*").await;
        api_total = all["total_count"].as_u64().unwrap_or(0);
        if stored == want && api_total == counted.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drained_secs = started.elapsed().as_secs_f64();

    let stored: Vec<String> = stack
        .clickhouse_query(&format!(
            "SELECT event_id FROM events FINAL WHERE tenant = '{TENANT}'"
        ))
        .await?
        .lines()
        .map(str::to_string)
        .collect();
    let stored_rows = stored.len();
    let stored: HashSet<String> = stored.into_iter().collect();
    let uncounted: HashSet<String> = counted
        .iter()
        .filter(|id| !stored.contains(**id))
        .map(|id| id.to_string())
        .collect();
    let lost_ids = uncounted.len();
    let whereabouts = if uncounted.is_empty() {
        vec![]
    } else {
        let brokers = stack.brokers();
        tokio::task::spawn_blocking(move || locate::locate(&brokers, &uncounted))
            .await?
            .unwrap_or_else(|e| vec![format!("could not locate them: {e:#}")])
    };
    let stray_ids = stored
        .iter()
        .filter(|id| !counted.contains(id.as_str()))
        .count();
    // The late lane: how many it counted, and how long after ingest's
    // acknowledgement ClickHouse had each.
    let late_lag_ms: Vec<f64> = stack
        .clickhouse_query(&format!(
            "SELECT toUnixTimestamp64Milli(inserted_at) - toUnixTimestamp64Milli(received_at) \
             FROM events FINAL WHERE tenant = '{TENANT}' AND late = 1 ORDER BY 1"
        ))
        .await?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();

    // Per name and overall: counts and unique users, as the API serves them.
    let mut want_names: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for e in ledger.acked.values() {
        let w = want_names.entry(e.name).or_default();
        w.0 += 1;
        w.1.insert(e.user.as_str());
    }
    let mut names = vec![];
    for name in NAMES {
        let (_, got) = metrics(cluster, name).await;
        let (count, users) = want_names
            .get(name)
            .map_or((0, 0), |w| (w.0, w.1.len() as u64));
        names.push(report::NameCheck {
            name,
            want_count: count,
            got_count: got["total_count"].as_u64().unwrap_or(0),
            want_users: users,
            got_users: got["unique_users"].as_u64().unwrap_or(0),
        });
    }
    let (_, all) = metrics(cluster, "shop.*").await;
    let users: BTreeSet<&str> = want_names
        .values()
        .flat_map(|w| w.1.iter().copied())
        .collect();

    let brokers = stack.brokers();
    let (late, invalid) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((
            topic_keys(&brokers, "events.late")?,
            topic_keys(&brokers, "events.invalid")?,
        ))
    })
    .await??;

    Ok(Summary {
        profile: profile.clone(),
        load_secs: 0.0,
        drained_secs,
        sent: ledger.sent,
        requests: ledger.requests,
        retries_5xx: ledger.retries_5xx,
        retries_transport: ledger.retries_transport,
        duplicates: ledger.duplicates,
        acknowledged: ledger.acked.len(),
        rejected: ledger.rejected,
        must_count: counted.len(),
        late_lag_ms,
        api_total: all["total_count"].as_u64().unwrap_or(api_total),
        stored_rows,
        lost_ids,
        whereabouts,
        stray_ids,
        want_users: users.len() as u64,
        got_users: all["unique_users"].as_u64().unwrap_or(0),
        names,
        too_late,
        late,
        poisoned,
        invalid,
        dealt,
        batch_ms: ledger.batch_ms,
    })
}

async fn metrics(cluster: &Cluster, name: &str) -> (u16, serde_json::Value) {
    let url = cluster.aggregator.url(&format!(
        "/v1/metrics?name={}",
        crate::load::urlencode(name)
    ));
    let answer = reqwest::Client::new()
        .get(url)
        .header("x-read-key", READ_KEY)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match answer {
        Ok(r) => (
            r.status().as_u16(),
            r.json().await.unwrap_or(serde_json::Value::Null),
        ),
        Err(_) => (0, serde_json::Value::Null),
    }
}
