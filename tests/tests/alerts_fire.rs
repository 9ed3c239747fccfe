//! weir's alerts on the running stack, end to end: real stages, a real
//! Prometheus evaluating `deploy/prometheus/rules.yml` (its durations divided
//! by 20, so `for: 15m` waits 45 s), a real Alertmanager e-mailing through
//! an SMTP server (PyPI's aiosmtpd). Each fault fires its alert in
//! Prometheus, an e-mail arrives naming the alert, the stage and the
//! runbook, and when the fault is removed the alert resolves and a
//! "resolved" e-mail follows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_archiver::layout::Format;
use weir_tests::archive::{start_archiver, S3Server};
use weir_tests::load::steady_load;
use weir_tests::monitoring::{Mail, Monitoring, Targets};
use weir_tests::pipeline::poll_until;
use weir_tests::{Pipeline, PipelineOptions, Stage};

/// Every duration of the rules divided by this. Not more: the stages retry
/// with backoff up to 10 s, and a rate window (`[5m]` becomes 15 s) must
/// hold a retry, as the real five minutes always do.
const TIME_DIVISOR: u64 = 20;
const RUNBOOKS: &str = "https://github.com/weir-dev/weir/blob/main/docs/runbooks.md";

/// Waits until Prometheus holds `alert` firing with `labels` among its labels.
async fn fires(m: &Monitoring, alert: &str, labels: &[(&str, &str)], within: Duration) {
    let seen = poll_until(within, || async {
        let alerts = m.alerts().await.ok()?;
        alerts
            .iter()
            .any(|(name, state, l)| {
                name == alert
                    && state == "firing"
                    && labels.iter().all(|(k, v)| l[*k].as_str() == Some(*v))
            })
            .then_some(())
    })
    .await;
    let now = m.alerts().await.unwrap_or_default();
    assert!(
        seen.is_some(),
        "{alert} {labels:?} did not fire within {within:?}; alerts now: {now:?}"
    );
}

/// Waits until Prometheus no longer holds `alert` (resolved).
async fn resolves(m: &Monitoring, alert: &str, within: Duration) {
    let gone = poll_until(within, || async {
        let alerts = m.alerts().await.ok()?;
        (!alerts.iter().any(|(name, ..)| name == alert)).then_some(())
    })
    .await;
    let now = m.alerts().await.unwrap_or_default();
    assert!(
        gone.is_some(),
        "{alert} did not resolve within {within:?}; alerts now: {now:?}"
    );
}

/// Waits for the e-mail of `alert` in `status` (`FIRING` or `RESOLVED`)
/// about `stage`, and checks what the maintainer reads in it.
async fn mailed(m: &Monitoring, alert: &str, status: &str, stage: &str) -> Mail {
    let found = poll_until(Duration::from_secs(60), || async {
        m.mails().into_iter().find(|mail| {
            mail.subject.starts_with(&format!("[weir {status}"))
                && mail.subject.contains(alert)
                && mail.subject.contains(&format!("(stage {stage})"))
        })
    })
    .await;
    let subjects: Vec<String> = m.mails().into_iter().map(|m| m.subject).collect();
    let mail = found.unwrap_or_else(|| {
        panic!("no {status} e-mail for {alert} (stage {stage}); received: {subjects:?}")
    });
    assert!(
        mail.text.contains(&format!("{status}: {alert}")),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains(&format!("stage:       {stage}")),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains(&format!("runbook: {RUNBOOKS}#{}", alert.to_lowercase())),
        "{}",
        mail.text
    );
    mail
}

/// A pipeline under load with Prometheus, Alertmanager and the mailbox on
/// it, checked healthy: every target up and no alert firing.
async fn monitored_pipeline() -> (Pipeline, Monitoring, Arc<AtomicBool>) {
    let (p, m, load, _) = monitored(false).await;
    (p, m, load)
}

/// An archive on an S3 server, and the archiver writing it.
type Archive = Option<(S3Server, Stage)>;

/// The same, with an archiver on an S3 server when `archive`.
async fn monitored(archive: bool) -> (Pipeline, Monitoring, Arc<AtomicBool>, Archive) {
    let p = Pipeline::start_with(
        PipelineOptions::default()
            // The writers ask the broker for their readers' lag every second.
            .env("*", "WEIR_LAG_WATCH__INTERVAL_MS", "1000")
            // A broker that does not answer is a 503 within 3 s, not 30.
            .env("ingest", "WEIR_DELIVERY_TIMEOUT_MS", "3000"),
    )
    .await;
    let archiver = if archive {
        let s3 = S3Server::start(&p.stack).await;
        let stage = start_archiver(
            &p.stack,
            "alerts",
            &s3.store("alerts", Format::Parquet),
            &[
                ("WEIR_ROLL__MAX_INTERVAL_MS", "1000"),
                ("WEIR_COMPACTION__INTERVAL_MS", "2000"),
                ("WEIR_COMPACTION__MIN_HOUR_AGE_MS", "-3600000"),
            ],
        )
        .await;
        Some((s3, stage))
    } else {
        None
    };
    let targets = Targets {
        ingest: vec![p.ingest.port],
        processor: p.processors.iter().map(|s| s.port).collect(),
        aggregator: vec![p.aggregator.port],
        archiver: archiver.iter().map(|(_, a)| a.port).collect(),
    };
    let m = Monitoring::start(p.stack.dir.path(), &targets, TIME_DIVISOR).await;
    let loaded = m.alert_rules().await.unwrap();
    let source = weir_tests::monitoring::rules_source();
    let expected = source.matches("- alert: ").count();
    assert_eq!(loaded.len(), expected, "Prometheus loaded {loaded:?}");
    let load = steady_load(p.ingest.url(""));
    let up = poll_until(Duration::from_secs(30), || async {
        let r = m.query(r#"sum(up{namespace="local"})"#).await.ok()?;
        let want = if archiver.is_some() { "4" } else { "3" };
        (r.first()?["value"][1].as_str()? == want).then_some(())
    })
    .await;
    assert!(up.is_some(), "Prometheus does not scrape every stage");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let firing: Vec<_> = m
        .alerts()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, state, _)| state == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts fire on a healthy stack: {firing:?}"
    );
    (p, m, load, archiver)
}

/// The aggregator killed: it is down, and its backlog grows (the processor
/// reads the group's committed offsets from the broker).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_aggregator_is_mailed_as_down_and_lagging_then_resolved() {
    let (mut p, m, load) = monitored_pipeline().await;
    p.aggregator.proc.kill9();
    fires(
        &m,
        "WeirStageDown",
        &[("job", "aggregator")],
        Duration::from_secs(90),
    )
    .await;
    fires(
        &m,
        "WeirAggregatorConsumerLag",
        &[],
        Duration::from_secs(180),
    )
    .await;
    mailed(&m, "WeirStageDown", "FIRING", "aggregator").await;
    mailed(&m, "WeirAggregatorConsumerLag", "FIRING", "aggregator").await;
    p.aggregator.proc.restart();
    p.aggregator.wait_ready().await;
    resolves(&m, "WeirStageDown", Duration::from_secs(90)).await;
    resolves(&m, "WeirAggregatorConsumerLag", Duration::from_secs(180)).await;
    mailed(&m, "WeirStageDown", "RESOLVED", "aggregator").await;
    mailed(&m, "WeirAggregatorConsumerLag", "RESOLVED", "aggregator").await;
    load.store(true, Ordering::Relaxed);
}

/// ClickHouse stopped: the aggregator's inserts fail until it is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_clickhouse_is_mailed_as_failing_inserts_then_resolved() {
    let (mut p, m, load) = monitored_pipeline().await;
    p.stack.clickhouse.kill9();
    fires(
        &m,
        "WeirClickHouseInsertFailures",
        &[],
        Duration::from_secs(180),
    )
    .await;
    mailed(&m, "WeirClickHouseInsertFailures", "FIRING", "aggregator").await;
    p.stack.clickhouse.restart();
    resolves(&m, "WeirClickHouseInsertFailures", Duration::from_secs(180)).await;
    mailed(&m, "WeirClickHouseInsertFailures", "RESOLVED", "aggregator").await;
    load.store(true, Ordering::Relaxed);
}

/// A second processor with the first one's identity (two pods with one
/// `instance_id`): the broker fences the first, which stops with an error
/// that says why instead of staying up and reading nothing; it is mailed as
/// down, and resolves when the impostor is gone and it is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_processor_fenced_by_an_impostor_stops_and_is_mailed_as_down() {
    let (mut p, m, load) = monitored_pipeline().await;
    let impostor = p.stack.stage(
        "processor",
        "impostor",
        &[
            ("WEIR_INSTANCE_ID", "p0"),
            ("WEIR_SESSION_TIMEOUT_MS", "6000"),
            ("WEIR_LAG_WATCH__INTERVAL_MS", "0"),
        ],
    );
    fires(
        &m,
        "WeirStageDown",
        &[("job", "processor")],
        Duration::from_secs(120),
    )
    .await;
    let log = p.processors[0].proc.log_tail(20);
    assert!(
        log.contains("failed fatally") && log.contains("instance_id"),
        "the fenced processor does not say why it stopped:\n{log}"
    );
    mailed(&m, "WeirStageDown", "FIRING", "processor").await;
    drop(impostor);
    p.processors[0].proc.restart();
    p.processors[0].wait_ready().await;
    resolves(&m, "WeirStageDown", Duration::from_secs(90)).await;
    mailed(&m, "WeirStageDown", "RESOLVED", "processor").await;
    load.store(true, Ordering::Relaxed);
}

/// Records nothing can decode, on `events.raw` (another producer writing to
/// it) and on `events.clean` (which only the processor should write), and a
/// client whose events arrive five minutes late: three alerts at once, each
/// mailed, each resolved when its traffic stops.
#[tokio::test(flavor = "multi_thread")]
async fn poison_records_and_late_clients_are_mailed_then_resolved() {
    let (p, m, load) = monitored_pipeline().await;
    let faults = Arc::new(AtomicBool::new(false));
    let stop = faults.clone();
    let brokers = p.stack.brokers();
    let ingest = p.ingest.url("");
    let poison = tokio::spawn(async move {
        let mut producer = weir_tests::load::RetryingProducer::new(&brokers).unwrap();
        let up = weir_tests::load::uploader(&ingest, Duration::from_secs(5));
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let garbage: Vec<(String, Vec<u8>)> = (0..10)
                .map(|i| (format!("poison-{n}-{i}"), b"\x00not avro at all".to_vec()))
                .collect();
            producer
                .send("events.raw", &garbage, Duration::from_secs(30))
                .await
                .unwrap();
            producer
                .send("events.clean", &garbage[..1], Duration::from_secs(30))
                .await
                .unwrap();
            let late: Vec<serde_json::Value> = (0..100)
                .map(|i| {
                    serde_json::json!({"event_id": format!("late-{n}-{i}"), "name": "load.tick",
                        "user_id": "u1", "timestamp": weir_tests::load::now_ms() - 300_000})
                })
                .collect();
            let _ =
                weir_tests::load::post_batch_once(&up, &weir_tests::load::events_of(&late)).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    for (alert, stage) in [
        ("WeirAggregatorUndecodable", "aggregator"),
        ("WeirInvalidEventsHigh", "processor"),
        ("WeirLateEventsHigh", "processor"),
    ] {
        fires(&m, alert, &[], Duration::from_secs(180)).await;
        mailed(&m, alert, "FIRING", stage).await;
    }
    faults.store(true, Ordering::Relaxed);
    poison.await.unwrap();
    for (alert, stage) in [
        ("WeirAggregatorUndecodable", "aggregator"),
        ("WeirInvalidEventsHigh", "processor"),
        ("WeirLateEventsHigh", "processor"),
    ] {
        resolves(&m, alert, Duration::from_secs(180)).await;
        mailed(&m, alert, "RESOLVED", stage).await;
    }
    load.store(true, Ordering::Relaxed);
}

/// The processor killed: ingest still reads its group's committed offsets
/// from the broker, so the backlog of `events.raw` is seen growing.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_processor_is_mailed_as_lagging_then_resolved() {
    let (mut p, m, load) = monitored_pipeline().await;
    p.processors[0].proc.kill9();
    fires(
        &m,
        "WeirProcessorConsumerLag",
        &[],
        Duration::from_secs(180),
    )
    .await;
    mailed(&m, "WeirProcessorConsumerLag", "FIRING", "processor").await;
    p.processors[0].proc.restart();
    p.processors[0].wait_ready().await;
    resolves(&m, "WeirProcessorConsumerLag", Duration::from_secs(180)).await;
    mailed(&m, "WeirProcessorConsumerLag", "RESOLVED", "processor").await;
    load.store(true, Ordering::Relaxed);
}

/// The broker stopped: ingest cannot get acknowledgements and answers 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_broker_is_mailed_as_ingest_503s_then_resolved() {
    let (mut p, m, load) = monitored_pipeline().await;
    p.stack.kafka.kill9();
    fires(&m, "WeirIngest503High", &[], Duration::from_secs(180)).await;
    mailed(&m, "WeirIngest503High", "FIRING", "ingest").await;
    p.stack.kafka.restart();
    resolves(&m, "WeirIngest503High", Duration::from_secs(180)).await;
    mailed(&m, "WeirIngest503High", "RESOLVED", "ingest").await;
    load.store(true, Ordering::Relaxed);
}

/// The archiver's S3 server stopped: writes and the hourly compaction fail
/// (compaction every 2 s here); and a record on `events.clean` nothing can
/// decode is skipped by the archiver too.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_archive_store_and_poison_are_mailed() {
    let (p, m, load, archive) = monitored(true).await;
    let (mut s3, _archiver) = archive.expect("an archive");
    let mut producer = weir_tests::load::RetryingProducer::new(&p.stack.brokers()).unwrap();
    producer
        .send(
            "events.clean",
            &[("poison".to_string(), b"\x00not avro".to_vec())],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    fires(&m, "WeirArchiverUndecodable", &[], Duration::from_secs(120)).await;
    mailed(&m, "WeirArchiverUndecodable", "FIRING", "archiver").await;
    s3.proc.kill9();
    fires(
        &m,
        "WeirArchiverWriteFailures",
        &[],
        Duration::from_secs(180),
    )
    .await;
    mailed(&m, "WeirArchiverWriteFailures", "FIRING", "archiver").await;
    fires(
        &m,
        "WeirArchiverCompactionFailing",
        &[],
        Duration::from_secs(180),
    )
    .await;
    mailed(&m, "WeirArchiverCompactionFailing", "FIRING", "archiver").await;
    s3.kill9_and_restart().await;
    resolves(&m, "WeirArchiverWriteFailures", Duration::from_secs(180)).await;
    mailed(&m, "WeirArchiverWriteFailures", "RESOLVED", "archiver").await;
    load.store(true, Ordering::Relaxed);
}
