//! The aggregator's metrics routes and what surrounds them, on the real
//! pipeline: rolling windows and daily, weekly and monthly active users equal
//! to a reference computed here; read keys (none, a write key, another
//! tenant); the OpenAPI spec against the routes and docs/api.md; dead-lettered
//! records in `dead_letters`; and an extended `ns_cart` table whose config
//! gains columns between two starts.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir_ingest::acked_producer::AckedProducer;
use weir_ingest::config::IngestConfig;
use weir_tests::load::{now_ms, urlencode, utc_date, READ_KEY, WRITE_KEY};
use weir_tests::pipeline::eventually_ok;
use weir_tests::{repo_root, Stack, Stage};

const NAMES: [&str; 3] = ["cart.add", "cart.checkout", "page_view"];
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

struct Sent {
    name: &'static str,
    user: String,
    ts: i64,
    i: i64,
}

/// 160 events over the last 45 days, then 60 in the last 90 minutes, in
/// event-time order (so none is late), from 23 users.
fn plan(now: i64) -> Vec<Sent> {
    let old = (0..160).map(|i| now - 45 * DAY + i * (45 * DAY / 160));
    let recent = (0..60).map(|j| now - 90 * MINUTE + j * 90_000);
    old.chain(recent)
        .enumerate()
        .map(|(i, ts)| {
            let i = i as i64;
            Sent {
                name: NAMES[(i % 3) as usize],
                user: format!("u{}", (i * 7) % 23),
                ts,
                i,
            }
        })
        .collect()
}

fn body(e: &Sent) -> Value {
    let mut props = json!({"sku": format!("sku-{}", e.i % 5), "price": e.i as f64 * 1.25, "qty": e.i % 4, "vip": e.i % 2 == 0});
    if e.i % 3 == 0 {
        props["coupon"] = json!(format!("C{}", e.i));
    }
    json!({"event_id": format!("m-{}", e.i), "name": e.name, "user_id": e.user,
           "timestamp": e.ts, "channel": "web", "properties": props})
}

/// The first day of the period holding `ts`, as ClickHouse names it.
fn period(ts: i64, granularity: &str) -> String {
    let days = ts.div_euclid(DAY);
    match granularity {
        "day" => utc_date(days),
        // 1970-01-01 was a Thursday; weeks start on Monday.
        "week" => utc_date(days - (days + 3).rem_euclid(7)),
        "month" => format!("{}-01", &utc_date(days)[..7]),
        _ => unreachable!(),
    }
}

fn matches(name: &str, filter: &str) -> bool {
    match filter.strip_suffix(".*") {
        Some(prefix) => name.starts_with(&format!("{prefix}.")),
        None => name == filter,
    }
}

async fn ch(stack: &Stack, sql: &str) -> String {
    stack
        .clickhouse_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const NS_CONFIG: &str = "[[namespaces]]\nname = \"cart\"\ncolumns = [{ property = \"sku\", type = \"String\" }, { property = \"price\", type = \"Float64\" }, { property = \"qty\", type = \"Int64\" }]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_active_users_read_keys_dead_letters_and_namespace_tables() {
    let stack = Stack::start().await;
    let config = stack.dir.path().join("aggregator.toml");
    std::fs::write(&config, NS_CONFIG).unwrap();
    let config_env = config.display().to_string();
    // 45 days of history: an import past the default 7-day max_event_age_ms.
    let ingest = stack.stage("ingest", "0", &[("WEIR_MAX_EVENT_AGE_MS", "5184000000")]);
    let processor = stack.stage("processor", "0", &[("WEIR_INSTANCE_ID", "m0")]);
    let mut aggregator = stack.stage("aggregator", "0", &[("WEIR_CONFIG", &config_env)]);
    for s in [&ingest, &processor, &aggregator] {
        s.wait_ready().await;
    }
    let now = now_ms();
    let mut sent = plan(now);
    let http = reqwest::Client::new();
    let r = http
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({ "events": sent.iter().map(body).collect::<Vec<_>>() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // Once those are in, two events whose windows closed days ago (late:
    // logged in events.late and counted through the late lane), and two
    // records that are not events at all (invalid).
    eventually_ok("every event stored", || async {
        let (_, v) = aggregator.query("/v1/events?page_size=1").await;
        (v["metadata"]["total_records"] == sent.len())
            .then_some(())
            .ok_or(v.to_string())
    })
    .await;
    let late: Vec<Value> = (0..2)
        .map(|k| json!({"event_id": format!("late-{k}"), "name": "page_view", "user_id": "u1", "timestamp": now - 10 * DAY}))
        .collect();
    let r = http
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({ "events": late }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Late, and counted all the same (the late lane): part of the reference.
    sent.extend((0..2).map(|k| Sent {
        name: "page_view",
        user: "u1".into(),
        ts: now - 10 * DAY,
        i: 1_000 + k,
    }));
    let mut cfg = IngestConfig::default();
    cfg.kafka.brokers = stack.brokers();
    let producer = AckedProducer::new(&weir_ingest::producer_config(&cfg)).unwrap();
    producer
        .send_all(
            "events.raw",
            [
                (&b"bad-1"[..], &b"not avro"[..]),
                (b"bad-2", b"\0\0\0\0\x63garbage"),
            ]
            .into_iter(),
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Dead letters land in their table, with the processor's reasons.
    eventually_ok("dead letters stored", || async {
        let got = stack
            .clickhouse_query(
                "SELECT kind, event_id, name, reason != '' FROM dead_letters FINAL ORDER BY kind, event_id FORMAT CSV",
            )
            .await
            .map_err(|e| e.to_string())?;
        let want = "\"invalid\",\"bad-1\",\"\",1\n\"invalid\",\"bad-2\",\"\",1\n\"late\",\"late-0\",\"page_view\",1\n\"late\",\"late-1\",\"page_view\",1";
        (got == want).then_some(()).ok_or(got)
    })
    .await;

    // Read keys: none, a write key, an unknown key are 401; another tenant is 403.
    for path in [
        "/v1/events",
        "/v1/metrics?name=cart.add",
        "/v1/metrics/rolling?name=cart.add",
        "/v1/metrics/active-users",
    ] {
        let r = http.get(aggregator.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a key");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["auth"].is_string(), "{v}");
        for key in [WRITE_KEY, "no-such-read-key"] {
            let r = http
                .get(aggregator.url(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{path} with {key}");
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let (s, v) = aggregator.query(&format!("{path}{sep}tenant=other")).await;
        assert_eq!(s, 403, "{path} for another tenant: {v}");
        let (s, v) = aggregator.query(&format!("{path}{sep}tenant=test")).await;
        assert_eq!(s, 200, "{path} for its own tenant: {v}");
    }
    let r = http
        .post(ingest.url("/v1/events"))
        .bearer_auth(READ_KEY)
        .json(&json!({"event_id": "x", "name": "page_view"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a read key does not write");

    // Every minute's counts are in before the reference checks.
    let cart_total = sent.iter().filter(|e| e.name.starts_with("cart.")).count();
    let views = sent.iter().filter(|e| e.name == "page_view").count();
    for (name, total) in [("cart.*", cart_total), ("page_view", views)] {
        eventually_ok("per-minute counts stored", || async {
            let (_, v) = aggregator.query(&format!("/v1/metrics?name={name}")).await;
            (v["total_count"] == total)
                .then_some(())
                .ok_or(v.to_string())
        })
        .await;
    }

    // Rolling windows ending now: whole minutes, the current one included.
    let at = now_ms();
    let to = at.div_euclid(MINUTE) * MINUTE + MINUTE;
    for name in ["cart.*", "page_view", "cart.checkout"] {
        let (s, v) = aggregator
            .query(&format!(
                "/v1/metrics/rolling?name={name}&windows=5m,1h,24h,7d,90d&at={at}"
            ))
            .await;
        assert_eq!(s, 200, "{v}");
        let windows = v["windows"].as_array().unwrap();
        for (w, length) in windows
            .iter()
            .zip([5 * MINUTE, 60 * MINUTE, DAY, 7 * DAY, 90 * DAY])
        {
            let inside: Vec<&Sent> = sent
                .iter()
                .filter(|e| matches(e.name, name) && e.ts >= to - length && e.ts < to)
                .collect();
            let users: BTreeSet<&str> = inside.iter().map(|e| e.user.as_str()).collect();
            assert_eq!(
                (w["total_count"].as_u64(), w["unique_users"].as_u64()),
                (Some(inside.len() as u64), Some(users.len() as u64)),
                "{name} over {}: {w}",
                w["window"]
            );
        }
    }
    let (s, v) = aggregator.query("/v1/metrics/rolling?name=cart.add").await;
    assert_eq!(s, 200);
    let labels: Vec<&str> = v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["5m", "1h", "24h"], "the default windows");
    for (query, param) in [
        ("windows=5s", "windows"),
        ("windows=0m", "windows"),
        ("windows=91d", "windows"),
        ("windows=5m,", "windows"),
        ("at=noon", "at"),
        ("", "name"),
    ] {
        let sep = if query.is_empty() { "" } else { "&" };
        let name = if param == "name" { "" } else { "name=cart.add" };
        let (s, v) = aggregator
            .query(&format!("/v1/metrics/rolling?{name}{sep}{query}"))
            .await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"][param].is_string(), "{query}: {v}");
    }

    // DAU, WAU and MAU: distinct users per calendar period.
    let range = format!("from={}&to={}", now - 46 * DAY, now + MINUTE);
    for granularity in ["day", "week", "month"] {
        for name in [None, Some("cart.*")] {
            let mut want: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
            for e in sent
                .iter()
                .filter(|e| name.is_none_or(|n| matches(e.name, n)))
            {
                want.entry(period(e.ts, granularity))
                    .or_default()
                    .insert(&e.user);
            }
            let want: Vec<Value> = want
                .into_iter()
                .map(|(p, users)| json!({"period_start": p, "active_users": users.len()}))
                .collect();
            let filter = name.map(|n| format!("&name={n}")).unwrap_or_default();
            let (s, v) = aggregator
                .query(&format!(
                    "/v1/metrics/active-users?granularity={granularity}&{range}{filter}"
                ))
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["periods"], json!(want), "{granularity} {name:?}");
        }
    }
    for (query, param) in [
        ("granularity=year", "granularity"),
        ("from=x", "from"),
        ("from=2000&to=1000", "to"),
        ("name=", "name"),
    ] {
        let (s, v) = aggregator
            .query(&format!("/v1/metrics/active-users?{query}"))
            .await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"][param].is_string(), "{query}: {v}");
    }

    // Injection strings through every parameter of both routes: a 400 (or
    // 403 for a tenant), or a 200 that found nothing; never a 5xx, and the
    // tables are intact afterwards.
    let hostile = [
        "' OR 1=1 --",
        "x'; DROP TABLE event_counts_1m; --",
        "cart.add' OR '1'='1",
        "{name:String}",
        "5m') UNION SELECT * FROM system.tables --",
    ];
    for (route, params) in [
        ("rolling", &["name", "windows", "at", "tenant"][..]),
        (
            "active-users",
            &["granularity", "from", "to", "name", "tenant"][..],
        ),
    ] {
        for param in params {
            for h in hostile {
                let base = if route == "rolling" && *param != "name" {
                    "name=cart.add&"
                } else {
                    ""
                };
                let (s, v) = aggregator
                    .query(&format!(
                        "/v1/metrics/{route}?{base}{param}={}",
                        urlencode(h)
                    ))
                    .await;
                let nothing = v["windows"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["total_count"] == 0))
                    || v["periods"].as_array().is_some_and(|p| p.is_empty());
                let refused = if *param == "tenant" { 403 } else { 400 };
                assert!(
                    s == refused || (s == 200 && nothing),
                    "{route} {param}={h:?} answered {s}: {v}"
                );
            }
        }
    }
    let (_, v) = aggregator.query("/v1/metrics?name=cart.*").await;
    assert_eq!(v["total_count"], cart_total, "the counts survived");

    // The extended table: typed columns, one row per cart event, joined to events.
    let carts: Vec<&Sent> = sent
        .iter()
        .filter(|e| e.name.starts_with("cart."))
        .collect();
    let price: f64 = carts.iter().map(|e| e.i as f64 * 1.25).sum();
    let qty: i64 = carts.iter().map(|e| e.i % 4).sum();
    let want = format!("{}\t{price:.2}\t{qty}\t{}", carts.len(), carts.len());
    let got = ch(
        &stack,
        "SELECT count(), toDecimalString(sum(price), 2), sum(qty), \
                countIf(sku = concat('sku-', toString(toInt64(substring(event_id, 3)) % 5))) \
         FROM ns_cart FINAL",
    )
    .await;
    assert_eq!(got, want, "ns_cart holds every cart event, typed");
    let joined = ch(
        &stack,
        "SELECT count() FROM ns_cart AS n FINAL \
         INNER JOIN (SELECT event_id, name, timestamp FROM events FINAL) AS e \
         ON n.event_id = e.event_id WHERE n.name = e.name AND n.timestamp = e.timestamp",
    )
    .await;
    assert_eq!(joined, carts.len().to_string(), "ns_cart joins to events");
    let types = ch(
        &stack,
        "SELECT name, type FROM system.columns WHERE database = 'weir' AND table = 'ns_cart' \
         AND name IN ('sku', 'price', 'qty') ORDER BY name FORMAT CSV",
    )
    .await;
    assert_eq!(
        types,
        "\"price\",\"Nullable(Float64)\"\n\"qty\",\"Nullable(Int64)\"\n\"sku\",\"Nullable(String)\""
    );

    // A config that promotes two more properties: new columns, back-filled.
    std::fs::write(
        &config,
        NS_CONFIG.replace(
            "type = \"Int64\" }]",
            "type = \"Int64\" }, { property = \"coupon\", type = \"String\" }, { property = \"vip\", type = \"Bool\" }]",
        ),
    )
    .unwrap();
    assert!(
        aggregator.proc.terminate(),
        "the aggregator stops on SIGTERM"
    );
    aggregator.proc.restart();
    aggregator.wait_ready().await;
    let coupons = carts.iter().filter(|e| e.i % 3 == 0).count();
    let vips = carts.iter().filter(|e| e.i % 2 == 0).count();
    let got = ch(
        &stack,
        "SELECT count(), countIf(coupon IS NOT NULL), countIf(vip), countIf(vip IS NULL) FROM ns_cart FINAL",
    )
    .await;
    assert_eq!(got, format!("{}\t{coupons}\t{vips}\t0", carts.len()));
    // Two config-derived migrations, each recorded once; files below them.
    let recorded = ch(
        &stack,
        "SELECT countIf(version >= 2147483648), countIf(version < 2147483648) FROM schema_migrations FINAL",
    )
    .await;
    let files = std::fs::read_dir(repo_root().join("aggregator/migrations"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "sql")
        })
        .count();
    assert_eq!(recorded, format!("2\t{files}"));

    openapi_matches_routes_and_docs(&aggregator).await;
}

/// The `GET` paths named in docs/api.md's query API section, but for the
/// spec and Swagger UI.
fn documented_routes() -> BTreeSet<String> {
    weir_tests::docs::api_routes("## aggregator: the query API", &["GET"])
        .into_iter()
        .map(|(_, path)| path)
        .filter(|path| !["/openapi.json", "/docs"].contains(&path.as_str()))
        .collect()
}

/// Every documented operation is served and answers only statuses its own
/// documentation lists; docs/api.md names exactly the spec's paths.
async fn openapi_matches_routes_and_docs(aggregator: &Stage) {
    let http = reqwest::Client::new();
    let spec: Value = http
        .get(aggregator.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    weir_tests::docs::assert_openapi_info(&spec, "weir query API");
    let paths = spec["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        documented,
        BTreeSet::from(
            [
                "/api/read",
                "/events/metrics",
                "/v1/events",
                "/v1/metrics",
                "/v1/metrics/active-users",
                "/v1/metrics/rolling"
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        documented_routes(),
        documented,
        "docs/api.md vs /openapi.json"
    );
    for (path, item) in paths {
        let op = &item["get"];
        let statuses: BTreeSet<u16> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        let r = http.get(aggregator.url(path)).send().await.unwrap();
        assert!(
            statuses.contains(&r.status().as_u16()),
            "{path} without a key: {}",
            r.status()
        );
        let (s, _) = aggregator.query(&format!("{path}?from=bogus")).await;
        assert!(statuses.contains(&s), "{path} with a bad from: {s}");
        // A parameter the route does not take is named, never ignored.
        let (s, v) = aggregator.query(&format!("{path}?colour=red")).await;
        assert_eq!(s, 400, "{path}?colour=red: {v}");
        let reason = v["error"]["colour"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("unknown parameter; this route takes "),
            "{path}: {v}"
        );
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            assert!(reason.contains(name), "{path}: {reason} lists {name}");
        }
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{path} documents its key"
        );
    }
    let page = http.get(aggregator.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/openapi.json"));
    weir_tests::docs::assert_unknown_routes_answer_json(&aggregator.url("")).await;
}
