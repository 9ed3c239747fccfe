//! The replaced systems' read routes on the real pipeline, with the seeds'
//! own example requests: event-service's `GET /api/read` and event-stream's
//! `GET /events/metrics`, each reading what those clients wrote through
//! their own write routes; and the write routes' errors naming the
//! client's fields, not weir's.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use weir_core::event::ms_to_rfc3339;
use weir_tests::load::{now_ms, urlencode, WRITE_KEY};
use weir_tests::{eventually, Pipeline, Stage};

async fn post(ingest: &Stage, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(ingest.url(path))
        .bearer_auth(WRITE_KEY)
        .json(&body)
        .send()
        .await
        .expect("ingest answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_clients_read_in_their_own_shapes() {
    let p = Pipeline::start().await;
    let (ingest, aggregator) = (&p.ingest, &p.aggregator);
    let now = now_ms();

    // event-service: its README's two logs, written through /api/write.
    let signed_in_at = ms_to_rfc3339((now - 120_000) / 1000 * 1000).unwrap();
    let (s, v) = post(
        ingest,
        "/api/write",
        json!({"event_name": "user_signed_in", "description": "a new user has code",
               "created_at": signed_in_at}),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let signed_in_id = v["event_id"].as_str().unwrap().to_string();
    let (s, v) = post(
        ingest,
        "/api/write",
        json!({"event_name": "new customer", "description": "account was created for a given identity",
               "customer_id": 18}),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["log"]["customer_id"], 18, "{v}");

    // event-stream: page views on two channels, and a click, in epoch
    // seconds as its clients send them.
    let secs = |ago_ms: i64| (now - ago_ms) / 1000;
    let stream = [
        ("page_view", "web", "user-1", 300_000),
        ("page_view", "web", "user-2", 240_000),
        ("page_view", "web", "user-1", 180_000),
        ("page_view", "mobile", "user-3", 120_000),
        ("page_view", "mobile", "user-1", 60_000),
        ("button_click", "mobile", "user-4", 60_000),
    ];
    let events: Vec<Value> = stream
        .iter()
        .map(|(name, channel, user, ago)| {
            json!({"name": name, "channel_type": channel, "user_id": user, "timestamp": secs(*ago),
                   "event_params": [{"key": "page_title", "string_value": "Home"}]})
        })
        .collect();
    let (s, v) = post(ingest, "/events/batch", json!({ "events": events })).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["ids"].as_array().unwrap().len(), 6, "{v}");

    let read =
        |query: &'static str| async move { aggregator.query(&format!("/api/read?{query}")).await };
    eventually("event-service's logs are readable", || async {
        let (s, v) = read("").await;
        (s == 200 && v["metadata"]["total_records"] == 8).then_some(())
    })
    .await;

    // Example 2: sort=created_at&event_name=user finds user_signed_in.
    let (s, v) = read("sort=created_at&event_name=user").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({
            "logs": [{"id": signed_in_id, "created_at": signed_in_at,
                      "event_name": "user_signed_in", "description": "a new user has code"}],
            "metadata": {"current_page": 1, "page_size": 20, "first_page": 1, "last_page": 1,
                         "total_records": 1}
        })
    );
    // Example 3: sort=-event_name&page_size=1&page=2. Descending names are
    // user_signed_in, page_view x5, new_customer, button_click: page 2 of
    // one is a page_view; the event-service logs alone are read below.
    let (s, v) = read("sort=-event_name&page_size=1&page=2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["logs"][0]["event_name"], "page_view", "{v}");
    assert_eq!(
        v["metadata"],
        json!({"current_page": 2, "page_size": 1, "first_page": 1, "last_page": 8, "total_records": 8})
    );
    let (_, v) = read("sort=-event_name&page_size=1&page=7").await;
    assert_eq!(
        v["logs"],
        json!([{"id": v["logs"][0]["id"], "created_at": v["logs"][0]["created_at"],
                "event_name": "new_customer",
                "description": "account was created for a given identity", "customer_id": 18}])
    );
    // Filters: the seed's `?event_name=new` and `?customer_id=18`, both
    // together, the name as it was written, and any case.
    for (query, want) in [
        ("event_name=new", vec!["new_customer"]),
        ("customer_id=18", vec!["new_customer"]),
        ("event_name=new&customer_id=18", vec!["new_customer"]),
        ("event_name=new%20customer", vec!["new_customer"]),
        ("event_name=SIGNED", vec!["user_signed_in"]),
        ("event_name=new&customer_id=19", vec![]),
        (
            "sort=event_name",
            vec![
                "button_click",
                "new_customer",
                "page_view",
                "page_view",
                "page_view",
                "page_view",
                "page_view",
                "user_signed_in",
            ],
        ),
    ] {
        let (s, v) = read(query).await;
        assert_eq!(s, 200, "{query}: {v}");
        let names: Vec<&str> = v["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["event_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, want, "{query}");
    }
    // Sorting by created_at, both ways: event time order.
    let (_, asc) = read("sort=created_at").await;
    let (_, desc) = read("sort=-created_at").await;
    let times = |v: &Value| -> Vec<String> {
        v["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["created_at"].as_str().unwrap().to_string())
            .collect()
    };
    let mut sorted = times(&asc);
    sorted.sort();
    assert_eq!(times(&asc), sorted);
    sorted.reverse();
    assert_eq!(times(&desc), sorted);
    // Example 4 and the other refusals, in the seed's error shape.
    let (s, v) = read("sort=time").await;
    assert_eq!(
        (s, v),
        (400, json!({"error": {"sort": "invalid sort value"}}))
    );
    for (query, param) in [
        ("page=0", "page"),
        ("page_size=5000", "page_size"),
        ("event_name=", "event_name"),
        ("name=user", "name"),
    ] {
        let (s, v) = read(query).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"][param].is_string(), "{query}: {v}");
    }

    // event-stream's metrics, with its README's requests.
    let metrics =
        |query: String| async move { aggregator.query(&format!("/events/metrics?{query}")).await };
    let v = eventually("event-stream's page views are counted", || async {
        let (s, v) = metrics("event_name=page_view".into()).await;
        (s == 200 && v["total_count"] == 5).then_some(v)
    })
    .await;
    assert_eq!(
        v,
        json!({"event_name": "page_view", "from": "1970-01-01T00:00:00Z",
               "to": "9999-12-31T23:59:59.999Z", "total_count": 5, "unique_user_count": 3,
               "grouped_metrics": []})
    );
    // With a time range (RFC 3339, [from, to) of window starts, so from a
    // whole minute): the last three page views.
    let from_ms = secs(180_000) * 1000 / 60_000 * 60_000;
    let from = ms_to_rfc3339(from_ms).unwrap();
    let to = ms_to_rfc3339(now + 60_000).unwrap();
    let (s, v) = metrics(format!(
        "event_name=page_view&from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            &v["from"],
            &v["to"],
            &v["total_count"],
            &v["unique_user_count"]
        ),
        (&json!(from), &json!(to), &json!(3), &json!(2)),
        "{v}"
    );
    // Epoch milliseconds are accepted on input, answered in RFC 3339.
    let (_, v) = metrics(format!("event_name=page_view&from={from_ms}")).await;
    assert_eq!((&v["from"], &v["total_count"]), (&json!(from), &json!(3)));
    // Grouped by channel, day and hour: exact per group.
    let (_, v) = metrics("event_name=page_view&group_by=channel".into()).await;
    assert_eq!(
        v["grouped_metrics"],
        json!([{"group_key": "mobile", "total_count": 2, "unique_user_count": 2},
               {"group_key": "web", "total_count": 3, "unique_user_count": 2}])
    );
    for (group_by, key_len) in [("daily", 10), ("hourly", 13)] {
        let mut want: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
        for (_, _, user, ago) in stream.iter().filter(|e| e.0 == "page_view") {
            let t = ms_to_rfc3339(secs(*ago) * 1000).unwrap();
            let key = if group_by == "daily" {
                t[..key_len].to_string()
            } else {
                format!("{}:00:00Z", &t[..key_len])
            };
            let g = want.entry(key).or_default();
            g.0 += 1;
            g.1.insert(user);
        }
        let want: Vec<Value> = want
            .into_iter()
            .map(|(k, (n, users))| {
                json!({"group_key": k, "total_count": n, "unique_user_count": users.len()})
            })
            .collect();
        let (s, v) = metrics(format!("event_name=page_view&group_by={group_by}")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["grouped_metrics"], json!(want), "{group_by}");
        assert_eq!(v["total_count"], 5);
    }
    for (query, param) in [
        ("group_by=channel", "event_name"),
        ("event_name=page_view&group_by=weekly", "group_by"),
        ("event_name=page_view&from=yesterday", "from"),
        ("event_name=page_view&platform=web", "platform"),
    ] {
        let (s, v) = metrics(query.into()).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"][param].is_string(), "{query}: {v}");
    }

    // Every route answers times in RFC 3339: /v1/metrics too.
    let (_, v) = aggregator
        .query(&format!("/v1/metrics?name=page_view&from={from_ms}"))
        .await;
    assert_eq!(
        (&v["from"], &v["to"], &v["total_count"]),
        (&json!(from), &json!("9999-12-31T23:59:59.999Z"), &json!(3)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_write_errors_name_the_clients_fields() {
    let p = Pipeline::start().await;
    let ingest = &p.ingest;
    let fields = |v: &Value| -> Vec<String> {
        v["error"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no fields: {v}"))
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_string())
            .collect()
    };
    // event-service without its required event_name.
    let (s, v) = post(ingest, "/api/write", json!({"description": "no name"})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(fields(&v), ["event_name"], "{v}");
    assert_eq!(v["error"]["message"], "event_name: is required", "{v}");
    let (s, v) = post(
        ingest,
        "/api/write",
        json!({"event_name": "x", "description": "d", "created_at": "yesterday"}),
    )
    .await;
    assert_eq!(
        (s, fields(&v)),
        (400, vec!["created_at".to_string()]),
        "{v}"
    );
    // event-stream: its channel_type and device fields.
    let (s, v) = post(
        ingest,
        "/events",
        json!({"name": "page_view", "channel_type": "fridge",
               "device": {"operating_system": 7}}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let mut f = fields(&v);
    f.sort();
    assert_eq!(f, ["channel_type", "device.operating_system"], "{v}");
    // In a batch, each rejected entry names the client's field too.
    let (s, v) = post(
        ingest,
        "/events/batch",
        json!({"events": [{"name": "a", "channel_type": "web"},
                          {"name": "b", "channel_type": "web", "user_pseudo_id": 5}]}),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        v["rejected"][0]["fields"][0]["field"], "user_pseudo_id",
        "{v}"
    );
}
