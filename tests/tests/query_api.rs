//! The aggregator's read API on the real pipeline: `GET /v1/events` with its
//! filters, sorts and pages, its 400s, and SQL-injection strings sent through
//! every parameter, which must stay inert.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use weir_tests::load::{now_ms, urlencode, WRITE_KEY};
use weir_tests::pipeline::groups;
use weir_tests::{eventually, Pipeline, Stage};

async fn get(aggregator: &Stage, query: &str) -> (u16, Value) {
    aggregator.query(&format!("/v1/events?{query}")).await
}

fn ids(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_api_filters_sorts_pages_and_stays_inert() {
    let p = Pipeline::start().await;
    let (ingest, aggregator) = (&p.ingest, &p.aggregator);
    let base = now_ms() - 60_000;
    let mut events = vec![];
    for i in 0..25i64 {
        let (name, user, customer) = match i % 5 {
            0..=2 => ("cart.add", format!("u{}", i % 3), format!("c{}", i % 2)),
            _ => ("page_view", format!("u{}", i % 4), "c9".to_string()),
        };
        events.push(json!({
            "event_id": format!("q-{i:02}"), "name": name, "user_id": user,
            "customer_id": customer, "timestamp": base + i * 1_000,
            "channel": if i % 4 == 0 { "mobile" } else { "web" },
            "properties": {"plan": if i % 2 == 0 { "free" } else { "pro" }},
        }));
    }
    let r = reqwest::Client::new()
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let all = eventually("the events reach the table", || async {
        let (s, v) = get(aggregator, "").await;
        (s == 200 && v["metadata"]["total_records"] == 25).then_some(v)
    })
    .await;
    // Newest first by default, one page of the default size.
    assert_eq!(
        all["metadata"],
        json!({"current_page": 1, "page_size": 50, "first_page": 1, "last_page": 1, "total_records": 25})
    );
    let newest_first: Vec<String> = (0..25).rev().map(|i| format!("q-{i:02}")).collect();
    assert_eq!(ids(&all), newest_first);
    let first = &all["events"][0]; // q-24
    assert_eq!(first["name"], "page_view");
    assert_eq!(first["customer_id"], "c9");
    assert_eq!(first["user_id"], "u0");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));

    // Filters.
    let count = |v: &Value| v["metadata"]["total_records"].as_u64().unwrap();
    let expect = |f: &dyn Fn(i64) -> bool| (0..25).filter(|&i| f(i)).count() as u64;
    for (query, want) in [
        ("name=cart.add", expect(&|i| i % 5 < 3)),
        ("name=cart.*", expect(&|i| i % 5 < 3)),
        ("name=page_view", expect(&|i| i % 5 >= 3)),
        ("namespace=cart", expect(&|i| i % 5 < 3)),
        (
            "user_id=u1",
            expect(&|i| if i % 5 < 3 { i % 3 == 1 } else { i % 4 == 1 }),
        ),
        ("customer_id=c9", expect(&|i| i % 5 >= 3)),
        (
            "customer_id=c1&name=cart.add",
            expect(&|i| i % 5 < 3 && i % 2 == 1),
        ),
        (&format!("from={}&to={}", base + 5_000, base + 10_000), 5),
    ] {
        let (s, v) = get(aggregator, query).await;
        assert_eq!((s, count(&v)), (200, want), "{query}: {v}");
    }

    // Sorts.
    let (_, v) = get(aggregator, "sort=timestamp").await;
    let oldest_first: Vec<String> = (0..25).map(|i| format!("q-{i:02}")).collect();
    assert_eq!(ids(&v), oldest_first);
    let (_, v) = get(aggregator, "sort=-name").await;
    let names: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] >= w[1]), "{names:?}");

    // Pages: disjoint, complete, and the metadata says so.
    let mut seen = BTreeSet::new();
    for page in 1..=3 {
        let (s, v) = get(
            aggregator,
            &format!("sort=timestamp&page_size=10&page={page}"),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v["metadata"]["last_page"], 3);
        assert_eq!(v["metadata"]["current_page"], page);
        let page_ids = ids(&v);
        assert_eq!(page_ids.len(), if page < 3 { 10 } else { 5 });
        for id in page_ids {
            assert!(seen.insert(id), "pages overlap");
        }
    }
    assert_eq!(seen.len(), 25);

    // Bad parameters: 400 naming the parameter.
    for (query, param) in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("page_size=5000", "page_size"),
        ("sort=created_at", "sort"),
        ("from=yesterday", "from"),
        ("from=2000&to=1000", "to"),
        ("name=", "name"),
        // A filter typo is an error, not every event.
        ("event_name=cart.add", "event_name"),
        ("name=cart.add&name=page_view", "name"),
    ] {
        let (s, v) = get(aggregator, query).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"][param].is_string(), "{query}: {v}");
    }

    // Injection strings through every parameter: a 200 with nothing found,
    // or a 400; never a 5xx, and the table is intact afterwards.
    let hostile = [
        "' OR 1=1 --",
        "x'; DROP TABLE events; --",
        "cart.add' OR '1'='1",
        "{name:String}",
        "\\' UNION SELECT * FROM system.tables --",
    ];
    for param in [
        "name",
        "namespace",
        "user_id",
        "customer_id",
        "tenant",
        "from",
        "to",
        "sort",
        "page",
        "page_size",
    ] {
        for h in hostile {
            let query = format!("{param}={}", urlencode(h));
            let (s, v) = get(aggregator, &query).await;
            // A read key reads its own tenant only: any other is a 403.
            let refused = if param == "tenant" { 403 } else { 400 };
            assert!(
                s == refused || (s == 200 && count(&v) == 0),
                "{param}={h:?} answered {s}: {v}"
            );
        }
        let (s, m) = aggregator
            .query(&format!("/v1/metrics?name={}", urlencode(hostile[0])))
            .await;
        assert_eq!(s, 200);
        assert_eq!(m["total_count"], 0);
    }
    let (_, v) = get(aggregator, "").await;
    assert_eq!(count(&v), 25, "the table survived");

    // GET /v1/metrics?group_by=...: groups add up, each exact.
    let metrics =
        |query: String| async move { aggregator.query(&format!("/v1/metrics?{query}")).await };
    let cart = |f: &dyn Fn(i64) -> bool| (0..25).filter(|&i| i % 5 < 3 && f(i)).count() as u64;
    let (s, v) = metrics("name=cart.*&group_by=name".into()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(groups(&v), [("cart.add".to_string(), cart(&|_| true), 3)]);
    let (_, v) = metrics("name=cart.add&group_by=channel".into()).await;
    assert_eq!(
        groups(&v),
        [
            ("mobile".to_string(), cart(&|i| i % 4 == 0), {
                let users: BTreeSet<i64> = (0..25)
                    .filter(|i| i % 5 < 3 && i % 4 == 0)
                    .map(|i| i % 3)
                    .collect();
                users.len() as u64
            }),
            ("web".to_string(), cart(&|i| i % 4 != 0), 3),
        ]
    );
    let (_, v) = metrics("name=cart.add&group_by=property:plan".into()).await;
    let by_plan = groups(&v);
    assert_eq!(
        by_plan
            .iter()
            .map(|g| (g.0.as_str(), g.1))
            .collect::<Vec<_>>(),
        [
            ("free", cart(&|i| i % 2 == 0)),
            ("pro", cart(&|i| i % 2 == 1))
        ]
    );
    for bucket in ["minute", "hour", "day", "namespace"] {
        let (s, v) = metrics(format!("name=cart.add&group_by={bucket}")).await;
        assert_eq!(s, 200, "{bucket}: {v}");
        let sum: u64 = groups(&v).iter().map(|g| g.1).sum();
        assert_eq!(
            sum,
            v["total_count"].as_u64().unwrap(),
            "{bucket} groups add up: {v}"
        );
    }
    for bad in ["bogus", "property:", &urlencode("name; DROP TABLE events")] {
        let (s, v) = metrics(format!("name=cart.add&group_by={bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"]["group_by"].is_string(), "{v}");
    }
    let (s, v) = metrics(format!(
        "name=cart.add&group_by=property:{}",
        urlencode("' OR 1=1 --")
    ))
    .await;
    assert_eq!(s, 200, "a hostile property key is only a key: {v}");
    assert_eq!(groups(&v).iter().map(|g| g.1).sum::<u64>(), cart(&|_| true));
}
