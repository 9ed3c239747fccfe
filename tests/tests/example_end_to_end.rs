//! The end-to-end test docs/testing.md shows: a new test starts from this.
use serde_json::json;
use weir_tests::{eventually, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_twice_is_counted_once() {
    let p = Pipeline::start().await;
    let event = json!({"event_id": "e-1", "name": "cart.add", "user_id": "u1"});
    let acked = p.post(&[event.clone(), event]).await;
    assert_eq!(acked.len(), 1, "one id acknowledged");
    let m = eventually("cart.add is counted", || async {
        let m = p.metrics("name=cart.add").await;
        (m["total_count"] == 1).then_some(m)
    })
    .await;
    assert_eq!(m["unique_users"], 1);
    weir_tests::docs::assert_doc_shows("docs/testing.md", file!());
}
