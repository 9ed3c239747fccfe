//! The first-party snippet in a real browser: headless Chromium (Debian's
//! package) loads a page that includes `/v1/weir.js` from a running gateway;
//! a click goes out through fetch, and a page hide through sendBeacon; both
//! events must reach Kafka.

use std::process::{Command, Stdio};
use std::time::Duration;
use weir_tests::load::{topic_records, Record, TENANT, WRITE_KEY};
use weir_tests::stack::free_port;
use weir_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippet_sends_clicks_and_beacons_from_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let chromium = chromium.expect("chromium is installed by deploy/local/install.sh");
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;

    // The page is served from its own origin, as a customer's site would be.
    let site = stack.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let page = format!(
        r#"<!doctype html><html><body>
<button data-weir-event="ui.buy_click">Buy</button>
<script src="{}" data-write-key="{WRITE_KEY}"></script>
<script>
  window.addEventListener("load", function () {{
    document.querySelector("button").click();
    weir.flush();
    weir.track("ui.leave", {{ step: 2 }});
    window.dispatchEvent(new Event("pagehide"));
  }});
</script></body></html>"#,
        ingest.url("/v1/weir.js")
    );
    std::fs::write(site.join("page.html"), page).unwrap();
    let site_port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &site_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page_url = format!("http://127.0.0.1:{site_port}/page.html");

    let profile = stack.dir.path().join("chromium-profile");
    let out = tokio::task::spawn_blocking({
        let page_url = page_url.clone();
        move || {
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(&page_url)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("chromium runs");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let codec = stack.codec();
    let mut events = vec![];
    for _ in 0..50 {
        events.clear();
        for Record { payload, .. } in topic_records(&stack.brokers(), "events.raw").unwrap() {
            events.push(codec.decode_event(Some(&payload)).await.unwrap());
        }
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["ui.buy_click", "ui.leave"],
        "the click (fetch) and the page hide (sendBeacon) both arrive\n{}",
        ingest.proc.log_tail(20)
    );
    for e in &events {
        assert_eq!(e.tenant, TENANT);
        assert_eq!(
            e.context.as_ref().and_then(|c| c.url.as_deref()),
            Some(page_url.as_str())
        );
        assert!(
            e.anonymous_id.is_some(),
            "the snippet keeps an anonymous id"
        );
        assert_eq!(e.channel.as_deref(), Some("web"));
    }
    let click = events.iter().find(|e| e.name == "ui.buy_click").unwrap();
    assert_eq!(click.properties["text"].to_string(), "Buy");
}
