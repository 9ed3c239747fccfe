//! The Segment Tracking API with Segment's own SDKs, installed from PyPI
//! and npm by deploy/local/install.sh and pointed at ingest by their host
//! option (tests/segment/): every call type counted exactly in ClickHouse,
//! traits queryable, Segment's limits refused by name, and the SDKs' own
//! retries counted once when ingest is killed mid-send.

use base64::Engine;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use weir_tests::load::{topic_records, WRITE_KEY};
use weir_tests::pipeline::groups;
use weir_tests::{eventually, repo_root, Pipeline, Stage};

/// Starts an SDK sender (`python` or `node`); see tests/segment/run.sh.
fn spawn_sdk(
    sdk: &str,
    ingest: &Stage,
    prefix: &str,
    tracks: usize,
    pause_ms: u64,
) -> tokio::process::Child {
    tokio::process::Command::new(repo_root().join("tests/segment/run.sh"))
        .args([
            sdk,
            &ingest.url(""),
            WRITE_KEY,
            prefix,
            &tracks.to_string(),
            &pause_ms.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {sdk} SDK sender: {e}"))
}

/// Waits for a sender; its summary line, after checking it gave up on nothing.
async fn finish(sdk: &str, child: tokio::process::Child) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {sdk} SDK did not finish"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{sdk} SDK: {}\n{stdout}\n{stderr}",
        out.status
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{sdk} SDK printed no summary:\n{stdout}\n{stderr}"));
    assert_eq!(
        summary["errors"],
        json!([]),
        "the {sdk} SDK gave up on batches"
    );
    summary
}

async fn metrics(p: &Pipeline, query: &str) -> Value {
    p.metrics(query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sdks_send_every_call_type_and_it_counts_exactly() {
    let p = Pipeline::start().await;
    const TRACKS: usize = 200;
    let py = spawn_sdk("python", &p.ingest, "py", TRACKS, 0);
    let node = spawn_sdk("node", &p.ingest, "nd", TRACKS, 0);
    finish("python", py).await;
    finish("node", node).await;

    // Each SDK: 7 identify, 3 group, 1 alias, 5 page, 4 screen, TRACKS track.
    let want = [
        ("py_track", TRACKS as u64, 7),
        ("nd_track", TRACKS as u64, 7),
        ("page_view", 10, 2),
        ("screen_view", 8, 2),
        ("_identify", 14, 14),
        ("_group", 6, 6),
        ("_alias", 2, 2),
    ];
    for (name, count, users) in want {
        let v = eventually(&format!("{name} is counted"), || async {
            let v = metrics(&p, &format!("name={name}")).await;
            (v["total_count"].as_u64() >= Some(count)).then_some(v)
        })
        .await;
        assert_eq!(
            (v["total_count"].as_u64(), v["unique_users"].as_u64()),
            (Some(count), Some(users)),
            "{name}: {v}"
        );
    }

    // identify's traits, the user's latest, group events.
    let of = |f: &dyn Fn(usize) -> bool| (0..TRACKS).filter(|i| f(i % 7)).count() as u64;
    let v = metrics(&p, "name=py_track&group_by=trait:plan").await;
    assert_eq!(
        groups(&v),
        [
            ("free".to_string(), of(&|u| u % 2 == 1), 3),
            ("pro".to_string(), of(&|u| u % 2 == 0), 4)
        ]
    );
    let v = metrics(&p, "name=nd_track&group_by=trait:group_id").await;
    assert_eq!(
        groups(&v),
        [
            (String::new(), of(&|u| u >= 3), 4),
            ("nd-acme".to_string(), of(&|u| u < 3), 3)
        ]
    );
    // The ClickHouse tables Grafana and SQL read.
    let ch = |sql: &'static str| p.stack.clickhouse_query(sql);
    assert_eq!(
        ch(
            "SELECT traits['plan'], traits['address.city'], traits['group_id'] FROM users \
            WHERE user_id = 'py-u0' FORMAT TSV"
        )
        .await
        .unwrap(),
        "pro\tOslo\tpy-acme"
    );
    assert_eq!(
        ch("SELECT value FROM group_traits FINAL WHERE group_id = 'nd-acme' AND key = 'name' FORMAT TSV")
            .await
            .unwrap(),
        "Acme"
    );
    assert_eq!(
        ch("SELECT user_id FROM user_aliases FINAL WHERE previous_id = 'py-anon' FORMAT TSV")
            .await
            .unwrap(),
        "py-u0"
    );
    // The SDKs' context is kept: the library as a property.
    let v = metrics(&p, "name=nd_track&group_by=property:context.library.name").await;
    assert_eq!(groups(&v)[0].0, "@segment/analytics-node", "{v}");

    // Segment traffic is counted by its shape, a documented metric: each
    // SDK sent 20 calls and its tracks.
    let text = p.ingest.metrics_text().await;
    let segment: f64 = text
        .lines()
        .find(|l| l.starts_with(r#"weir_ingest_legacy_events_total{shape="Segment"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Segment shape in /metrics:\n{text}"));
    assert_eq!(segment, (2 * (20 + TRACKS)) as f64);
    assert!(weir_tests::docs::metric_names().contains("weir_ingest_legacy_events_total"));

    refusals_are_specific(&p.ingest).await;
}

/// What the SDKs never send, sent by hand: each refusal names its limit or
/// field, in weir's shape with Segment's `code` and `message` on top.
async fn refusals_are_specific(ingest: &Stage) {
    let http = reqwest::Client::new();
    let basic = |key: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        )
    };
    let post = |path: &str, key: &str, body: Vec<u8>| {
        http.post(ingest.url(path))
            .header("authorization", basic(key))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let msg = |extra: Value| {
        let mut m = json!({"userId": "u", "event": "Hand Sent", "messageId": "hand-1"});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        m
    };

    let (s, v) = answer(
        post("/v1/track", WRITE_KEY, msg(json!({})).to_string().into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"success": true})));
    let big = "x".repeat(33 * 1024);
    let (s, v) = answer(
        post(
            "/v1/track",
            WRITE_KEY,
            msg(json!({"properties": {"p": big}})).to_string().into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("message_too_large")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("32 KB"), "{v}");
    let batch: Vec<Value> = (0..20)
        .map(|i| msg(json!({"type": "track", "messageId": format!("big-{i}"), "properties": {"p": "y".repeat(30_000)}})))
        .collect();
    let (s, v) = answer(
        post(
            "/v1/batch",
            WRITE_KEY,
            json!({ "batch": batch }).to_string().into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("batch_too_large")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("500 KB"), "{v}");
    let (s, v) = answer(
        post(
            "/v1/track",
            WRITE_KEY,
            json!({"userId": "u"}).to_string().into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["message"].as_str()),
        (400, Some("event: is required for track")),
        "{v}"
    );
    let (s, v) = answer(
        post("/v1/page", "not-a-key", msg(json!({})).to_string().into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    // In a batch, a bad message is named and the others are taken.
    let (s, v) = answer(
        post(
            "/v1/batch",
            WRITE_KEY,
            json!({"batch": [
                {"type": "track", "userId": "u", "event": "Hand Sent", "messageId": "hand-2"},
                {"type": "track", "userId": "u", "event": "Hand Sent", "timestamp": "when"},
            ]})
            .to_string()
            .into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rejected"][0]["index"], 1, "{v}");
    assert_eq!(v["rejected"][0]["fields"][0]["field"], "timestamp", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_count_once_when_ingest_is_killed_mid_send() {
    let mut p = Pipeline::start().await;
    const TRACKS: usize = 3_000;
    // 50 tracks, then 100 ms: about 6 s of sending each, through the kills.
    let py = spawn_sdk("python", &p.ingest, "py", TRACKS, 100);
    let node = spawn_sdk("node", &p.ingest, "nd", TRACKS, 100);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        p.ingest.proc.kill9();
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.ingest.proc.restart();
        p.ingest.wait_ready().await;
    }
    finish("python", py).await;
    finish("node", node).await;

    for name in ["py_track", "nd_track"] {
        eventually(&format!("every {name} is counted"), || async {
            let v = metrics(&p, &format!("name={name}")).await;
            (v["total_count"].as_u64() >= Some(TRACKS as u64)).then_some(())
        })
        .await;
    }
    // Long enough for a duplicate that got past dedup to be counted too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in ["py_track", "nd_track"] {
        let v = metrics(&p, &format!("name={name}")).await;
        assert_eq!(v["total_count"], TRACKS as u64, "{name}: {v}");
    }
    let raw = topic_records(&p.stack.brokers(), "events.raw").unwrap();
    let distinct: std::collections::BTreeSet<&str> = raw.iter().map(|r| r.key.as_str()).collect();
    println!(
        "events.raw holds {} records of {} distinct events: the SDKs' retries, dropped by the processor",
        raw.len(),
        distinct.len()
    );
    assert!(raw.len() >= distinct.len());
}
