//! End to end on the real stack: events posted to ingest must come out of the
//! query API exactly: duplicates dropped, late events counted through the
//! late lane, unique users exact, through processor crashes in each commit
//! mode and a broker restart.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_tests::load::{plan, post_batches, topic_keys};
use weir_tests::pipeline::{eventually, poll_until, EVENTUALLY};
use weir_tests::{Pipeline, PipelineOptions, Stack};

const TOTAL: usize = 5_000;
const USERS: usize = 300;

async fn metrics(p: &Pipeline, name: &str) -> Value {
    p.metrics(&format!("name={name}")).await
}

/// Polls the query API until it reports `count`, or three minutes pass, then
/// reads once more after a pause: a count that keeps growing past the answer
/// is a double count. Returns what it read last, for the assertions to show.
async fn settled_metrics(p: &Pipeline, name: &str, count: u64) -> Value {
    poll_until(EVENTUALLY, || async {
        (metrics(p, name).await["total_count"] == json!(count)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    metrics(p, name).await
}

/// Posts the standard mix while applying `faults` one after another, each
/// once the pipeline has committed work and while traffic still flows. Then
/// checks every number.
/// What to break mid-stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL the processor, then start it again.
    KillProcessor,
    /// SIGKILL the broker, then start it again on the same data.
    RestartBroker,
    /// SIGKILL the second processor instance for good: the first takes over.
    KillOtherInstance,
}

async fn run_exactly_once(
    commit_mode: &str,
    expected_mode: &str,
    faults: &[Fault],
    seed: u64,
) -> (Pipeline, weir_tests::load::Plan) {
    let instances = if faults.contains(&Fault::KillOtherInstance) {
        2
    } else {
        1
    };
    let mut p = Pipeline::start_with(PipelineOptions {
        processors: instances,
        commit_mode: commit_mode.into(),
        ..Default::default()
    })
    .await;
    let chosen = p.processor().proc.log_tail(200);
    assert!(
        chosen.contains(&format!("mode=\"{expected_mode}\""))
            || chosen.contains(&format!("mode={expected_mode}")),
        "processor did not run in {expected_mode}:\n{chosen}"
    );
    let plan = plan(seed, TOTAL, 20, 2, USERS);
    // Traffic flows steadily in the background while the processor dies.
    // With n faults, the first life gets the first 2/(n+2) of the traffic
    // and each life after a crash the next 1/(n+2), so every crash
    // is mid-stream and every restarted life has input to commit before the
    // next crash: a fast broker lets a life catch up with all that was sent,
    // and a share held back until then is what the next life reads.
    let ingest_url = p.ingest.url("");
    let events = plan.events.clone();
    let (faults_done, mut faults_seen) = tokio::sync::watch::channel(0usize);
    let n_faults = faults.len();
    let sender = tokio::spawn(async move {
        let mut acked = std::collections::BTreeSet::new();
        let chunks: Vec<_> = events.chunks(250).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            // Chunk i waits for as many faults as release points at or before it.
            let needed = (0..n_faults)
                .filter(|k| i >= chunks.len() * (k + 2) / (n_faults + 2))
                .count();
            let _ = faults_seen.wait_for(|done| *done >= needed).await;
            acked.extend(post_batches(&ingest_url, chunk, 100).await?);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(acked)
    });
    for fault in faults {
        // Break things only once this life has committed work, so the next one must restore it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut ready = true;
            for s in &p.processors {
                let commits = s.metric("weir_processor_commits_total").await;
                let events = s.metric("weir_processor_events_total").await;
                ready &= commits >= 1.0 && events >= 100.0;
            }
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the processor committed nothing\n{}",
                p.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match fault {
            Fault::KillProcessor => {
                p.processors[0].proc.kill9();
                tokio::time::sleep(Duration::from_millis(300)).await;
                p.processors[0].proc.restart();
                p.processors[0].wait_ready().await;
            }
            Fault::RestartBroker => {
                p.stack.kafka.kill9();
                tokio::time::sleep(Duration::from_secs(1)).await;
                p.stack.kafka.restart();
            }
            Fault::KillOtherInstance => p.processors[1].proc.kill9(),
        }
        faults_done.send_modify(|done| *done += 1);
    }
    let acked = sender
        .await
        .expect("sender task")
        .expect("ingest accepts every batch");
    let expected_ids: std::collections::BTreeSet<String> =
        plan.on_time_ids.union(&plan.late_ids).cloned().collect();
    assert_eq!(
        acked, expected_ids,
        "ingest acknowledged exactly the distinct ids"
    );

    // Every acknowledged distinct event counts, the late ones included.
    let all = expected_ids.len() as u64;
    let m = settled_metrics(&p, "shop.*", all).await;
    assert_eq!(
        m["total_count"],
        json!(all),
        "query API count (0 lost, 0 doubled)\n{m}\n{}",
        p.logs()
    );
    assert_eq!(m["unique_users"], json!(USERS as u64), "unique users\n{m}");

    let per_name: u64 = {
        let mut sum = 0;
        for name in weir_tests::load::NAMES {
            sum += metrics(&p, name).await["total_count"].as_u64().unwrap_or(0);
        }
        sum
    };
    assert_eq!(per_name, all, "per-name counts add up");

    let rows = p
        .stack
        .clickhouse_query(
            "SELECT count(), uniqExact(coalesce(user_id, anonymous_id)), countIf(late = 1) \
             FROM events FINAL",
        )
        .await
        .expect("events table");
    assert_eq!(
        rows,
        format!("{all}\t{USERS}\t{}", plan.late_ids.len()),
        "events table holds each event once, the late ones marked"
    );

    if faults.contains(&Fault::KillOtherInstance) {
        // Both instances had partitions; the survivor took over the dead
        // one's with their committed state.
        let log = p.processor().proc.log_tail(10_000);
        let assigned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("partitions assigned"))
            .collect();
        assert!(
            assigned.len() >= 2,
            "the survivor was assigned the dead instance's partitions in a second rebalance:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("partition state restored") && l.contains("committed=Some")),
            "the survivor restored a taken-over partition from committed state:\n{log}"
        );
        // The dead instance may have died inside a transaction that nisshi
        // never times out; the survivor ends it, or the aggregator, reading
        // read_committed, would stall behind it for good.
        assert!(
            log.contains("ended the previous owner's open transaction"),
            "the survivor ended the dead instance's transaction:\n{log}"
        );
    }

    if faults.contains(&Fault::KillProcessor) {
        // The restarted processor must have picked up committed state, not started over.
        let log = p.processor().proc.log_tail(10_000);
        let restored = log
            .lines()
            .filter(|l| l.contains("partition state restored") && l.contains("committed=Some"))
            .count();
        assert!(
            restored > 0,
            "no partition was restored from committed state:\n{log}"
        );
        eprintln!(
            "[{commit_mode}] partitions restored from committed state after crashes: {restored}"
        );
    }

    let late = topic_keys(&p.stack.brokers(), "events.late").expect("read events.late");
    assert_eq!(
        late, plan.late_ids,
        "events.late logs exactly the late events"
    );
    eprintln!(
        "[{commit_mode}, faults {faults:?}] posted {}, acked {}, counted {all}, of which late {}, users {}",
        plan.events.len(),
        acked.len(),
        late.len(),
        m["unique_users"]
    );
    assert!(
        p.processors[0].proc.terminate(),
        "processor shuts down cleanly on SIGTERM"
    );
    (p, plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_counts_are_exact_and_replay_late_over_counted_events_changes_nothing() {
    let (p, plan) = run_exactly_once("auto", "exactly_once", &[], 1).await;
    // The late lane counted the late events already; the repair tool, run
    // twice over all of them, must not count any again.
    let all = (plan.on_time_ids.len() + plan.late_ids.len()) as u64;
    let late = plan.late_ids.len();
    let already_before = p
        .aggregator
        .metric("weir_aggregator_late_events_total{outcome=\"already_counted\"}")
        .await;
    for run in 1..=2 {
        let out = std::process::Command::new(weir_tests::stack::bin_dir().join("processor"))
            .args(["replay-late", "--from", "0", "--to", "4000000000000"])
            .envs(p.stack.env())
            .output()
            .expect("processor replay-late runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "replay-late failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "read {late} late events, {late} in range re-injected"
            )),
            "run {run}: {stdout}"
        );
        // The aggregator has seen every replayed copy once it found them all counted.
        let want = already_before + (run * late) as f64;
        eventually("the aggregator saw every replayed copy", || async {
            let n = p
                .aggregator
                .metric("weir_aggregator_late_events_total{outcome=\"already_counted\"}")
                .await;
            (n >= want).then_some(())
        })
        .await;
        let m = settled_metrics(&p, "shop.*", all).await;
        assert_eq!(m["total_count"], json!(all), "run {run}: {m}\n{}", p.logs());
        assert_eq!(m["unique_users"], json!(USERS), "run {run}: {m}");
        let rows = p
            .stack
            .clickhouse_query("SELECT count() FROM events FINAL")
            .await
            .unwrap();
        assert_eq!(
            rows,
            all.to_string(),
            "run {run}: the full history has them once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_sigkill_twice_exactly_once_mode() {
    run_exactly_once(
        "exactly_once",
        "exactly_once",
        &[Fault::KillProcessor; 2],
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_sigkill_twice_ordered_mode() {
    run_exactly_once("ordered", "ordered", &[Fault::KillProcessor; 2], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_for_good_the_other_takes_over() {
    run_exactly_once(
        "exactly_once",
        "exactly_once",
        &[Fault::KillOtherInstance],
        5,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_and_restart_mid_stream() {
    run_exactly_once("auto", "exactly_once", &[Fault::RestartBroker], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_good_events_still_land() {
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: &str| {
        client
            .post(ingest.url(path))
            .bearer_auth(weir_tests::load::WRITE_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    let r = post("/v1/events", "{\"name\": \"a\",\n \"user_id\": }")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "malformed_json");
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["column"].as_u64()),
        (Some(2), Some(13)),
        "{v}"
    );

    let r = post("/v1/events", r#"{"user_id": "u"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["fields"][0]["field"], "name", "{v}");
    assert_eq!(v["error"]["fields"][0]["message"], "is required", "{v}");

    let r = post("/v1/events", r#"{"name": "a.b", "user_id": 42}"#)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["fields"][0]["field"], "user_id", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be a string"),
        "{v}"
    );

    // A partly bad batch: the good events are accepted, the bad ones named by index.
    let batch = json!({"events": [
        {"event_id": "good-1", "name": "shop.view", "user_id": "u1"},
        {"event_id": "bad-1", "user_id": "u1"},
        {"event_id": "bad-2", "name": "shop.view", "properties": {"price": [1]}},
        {"event_id": "good-2", "name": "shop.view", "user_id": "u2"},
    ]});
    let r = post("/v1/events/batch", &batch.to_string()).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    let accepted: Vec<&str> = v["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(accepted, ["good-1", "good-2"]);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(v["rejected"][0]["fields"][0]["field"], "name");
    assert_eq!(v["rejected"][1]["index"], 2);
    assert_eq!(v["rejected"][1]["fields"][0]["field"], "properties.price");

    let r = post("/v1/events/batch", r#"{"events": [{"name": "a"}"#)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );

    let keys = topic_keys(&stack.brokers(), "events.raw").unwrap();
    assert_eq!(
        keys,
        ["good-1", "good-2"].iter().map(|s| s.to_string()).collect(),
        "only the good events reach Kafka"
    );
}
