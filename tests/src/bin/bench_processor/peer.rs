//! The peer beside weir's processor: a Quix Streams application
//! (`tests/peer/quix_processor.py`, installed from PyPI into a venv by
//! `tests/peer/venv.sh`) doing the same job over the same preloaded
//! `events.raw` on the same broker: decode the Avro through the registry,
//! drop duplicate ids, count per name and one-minute window with unique
//! users. Also the window counts both must give, and weir's, read back from
//! `aggregates.1m`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use weir_tests::Stack;

/// Per (name, window start): the count and the distinct users.
pub type Windows = BTreeMap<(String, i64), (u64, BTreeSet<String>)>;

/// One window's count and unique users, comparable across weir and the peer.
pub type Counts = BTreeMap<(String, i64), (u64, u64)>;

pub fn counts(w: &Windows) -> Counts {
    w.iter()
        .map(|(k, (c, u))| (k.clone(), (*c, u.len() as u64)))
        .collect()
}

/// weir's windows as the processor left them in `aggregates.1m`: per window
/// key and input partition the emission with the highest `emitted_seq`
/// (both commit modes' runs wrote there, with equal results), summed over
/// channels and partitions.
pub async fn weir_windows(stack: &Stack) -> anyhow::Result<Counts> {
    let records = weir_tests::load::topic_records(&stack.brokers(), "aggregates.1m")?;
    let codec = stack.codec();
    let mut latest = BTreeMap::new();
    for r in records {
        let a = codec.decode_aggregate(Some(&r.payload)).await?;
        let key = (
            a.name.clone(),
            a.channel.clone(),
            a.window_start,
            a.input_partition,
        );
        let newer = latest
            .get(&key)
            .is_none_or(|old: &weir_core::WindowAggregate| old.emitted_seq < a.emitted_seq);
        if newer {
            latest.insert(key, a);
        }
    }
    let mut windows = Windows::new();
    for a in latest.into_values() {
        let w = windows.entry((a.name, a.window_start)).or_default();
        w.0 += a.count as u64;
        w.1.extend(a.users);
    }
    Ok(counts(&windows))
}

/// What the peer printed about its run.
pub struct PeerRun {
    pub guarantee: String,
    pub events_per_sec: f64,
    pub windows: Counts,
    /// The peer's own summary line, as printed.
    pub summary: String,
}

/// Runs the peer over `events.raw` with `guarantee` (`exactly-once` or
/// `at-least-once`) until it has read `expect` records, its input read in
/// fetches of `fetch_bytes` (which bounds how far apart in event time it
/// takes the partitions on nisshi; see the app), then reads the
/// windows it wrote. An error here is a finding about the peer, reported
/// by the caller, not a failure of the bench.
pub fn run(
    stack: &Stack,
    expect: usize,
    guarantee: &str,
    fetch_bytes: usize,
) -> anyhow::Result<PeerRun> {
    let root = weir_tests::repo_root();
    let venv = Command::new(root.join("tests/peer/venv.sh")).output()?;
    anyhow::ensure!(
        venv.status.success(),
        "tests/peer/venv.sh failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout)?
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let output = format!("bench.quix.{guarantee}");
    let out = Command::new(&python)
        .arg(root.join("tests/peer/quix_processor.py"))
        .args(["--brokers", &stack.brokers()])
        .args([
            "--registry",
            &format!("http://127.0.0.1:{}", stack.registry_port),
        ])
        .args(["--input", "events.raw", "--output", &output])
        .args(["--group", &format!("bench-quix-{guarantee}")])
        .args(["--expect", &expect.to_string()])
        .args(["--guarantee", guarantee])
        .args(["--fetch-bytes", &fetch_bytes.to_string()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "the Quix Streams app ({guarantee}) exited with {}: {}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let summary = String::from_utf8(out.stdout)?
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&summary)
        .map_err(|e| anyhow::anyhow!("the peer's summary {summary:?}: {e}"))?;
    let events_per_sec = v["events_per_sec"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("no events_per_sec in {summary}"))?;
    let mut windows = Counts::new();
    for r in weir_tests::load::topic_records(&stack.brokers(), &output)? {
        let w: serde_json::Value = serde_json::from_slice(&r.payload)?;
        let (Some(name), Some(start), Some(count), Some(users)) = (
            w["name"].as_str(),
            w["window_start"].as_i64(),
            w["count"].as_u64(),
            w["users"].as_u64(),
        ) else {
            anyhow::bail!(
                "a window the peer wrote is not {{name, window_start, count, users}}: {w}"
            );
        };
        // A window emitted twice (a retry under at-least-once) must agree.
        let old = windows.insert((name.to_string(), start), (count, users));
        anyhow::ensure!(
            old.is_none_or(|o| o == (count, users)),
            "the peer emitted window {name}@{start} twice with different counts: {old:?} and {:?}",
            (count, users)
        );
    }
    Ok(PeerRun {
        guarantee: guarantee.to_string(),
        events_per_sec,
        windows,
        summary,
    })
}

/// How `got` differs from `want`: windows with another count or another
/// number of users, windows `want` does not have, and, unless
/// `emitted_only`, windows missing from `got`. The peer emits closed windows
/// only and its grace keeps the last minutes open, so it is checked on what
/// it emitted.
pub fn differences(want: &Counts, got: &Counts, emitted_only: bool) -> Vec<String> {
    let mut out = vec![];
    for (k, g) in got {
        match want.get(k) {
            None => out.push(format!("{}@{}: {g:?}, not expected", k.0, k.1)),
            Some(w) if w != g => {
                out.push(format!("{}@{}: (count, users) {g:?}, want {w:?}", k.0, k.1))
            }
            Some(_) => {}
        }
    }
    if !emitted_only {
        for (k, w) in want.iter().filter(|(k, _)| !got.contains_key(*k)) {
            out.push(format!("{}@{}: missing (want {w:?})", k.0, k.1));
        }
    }
    out
}
