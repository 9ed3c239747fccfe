//! The archive's side of the test harness: a real S3-protocol server
//! (`s3s-fs`, started through `deploy/local/part.sh s3`), archiver stages
//! on it or on a directory, and what a test reads back from the archive.

use crate::stack::{free_port, repo_root, Proc, Stack, Stage};
use std::collections::BTreeMap;
use weir_archiver::config::StoreConfig;
use weir_archiver::layout::Format;
use weir_archiver::reader::{self, HourListing};
use weir_archiver::store::ArchiveStore;

/// The bucket part.sh makes, and the keys it starts the server with.
pub const BUCKET: &str = "weir-archive";
pub const ACCESS_KEY: &str = "weir";
pub const SECRET_KEY: &str = "weir-local-secret";

/// An S3 server on a directory of the stack's.
pub struct S3Server {
    pub proc: Proc,
    pub port: u16,
}

impl S3Server {
    pub async fn start(stack: &Stack) -> S3Server {
        Self::start_at(stack, free_port()).await
    }

    /// A server on `port`, which a store config may already name.
    pub async fn start_at(stack: &Stack, port: u16) -> S3Server {
        let cmd = vec![
            repo_root()
                .join("deploy/local/part.sh")
                .display()
                .to_string(),
            "s3".into(),
            port.to_string(),
            stack.dir.path().join("s3").display().to_string(),
        ];
        let proc = Proc::spawn("s3", cmd, vec![], stack.dir.path().join("s3.log"));
        crate::stack::wait_tcp(port, &proc).await;
        S3Server { proc, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// kill -9, then the same server on the same data.
    pub async fn kill9_and_restart(&mut self) {
        self.proc.restart();
        crate::stack::wait_tcp(self.port, &self.proc).await;
    }

    /// The store config of `s3://weir-archive/<prefix>` on this server.
    pub fn store(&self, prefix: &str, format: Format) -> StoreConfig {
        s3_store(self.port, prefix, format)
    }
}

/// The store config of `s3://weir-archive/<prefix>` on an S3 server at
/// `port`, whether or not one runs there yet.
pub fn s3_store(port: u16, prefix: &str, format: Format) -> StoreConfig {
    StoreConfig {
        url: format!("s3://{BUCKET}/{prefix}"),
        options: [
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        format,
    }
}

/// A store's settings as an archiver's `WEIR_STORE__*` environment.
pub fn store_env(store: &StoreConfig) -> Vec<(String, String)> {
    let format = match store.format {
        Format::Parquet => "parquet",
        Format::NdjsonGz => "ndjson_gz",
    };
    let mut env = vec![
        ("WEIR_STORE__URL".to_string(), store.url.clone()),
        ("WEIR_STORE__FORMAT".to_string(), format.to_string()),
    ];
    for (k, v) in &store.options {
        env.push((
            format!("WEIR_STORE__OPTIONS__{}", k.to_ascii_uppercase()),
            v.clone(),
        ));
    }
    env
}

/// Starts an archiver of its own consumer group on `store`, with `extra`
/// settings, and waits until it is ready.
pub async fn start_archiver(
    stack: &Stack,
    name: &str,
    store: &StoreConfig,
    extra: &[(&str, &str)],
) -> Stage {
    let stage = archiver_stage(stack, name, store, extra);
    stage.wait_ready().await;
    stage
}

/// Starts an archiver (group `weir-archiver-<name>`) without waiting for it.
pub fn archiver_stage(
    stack: &Stack,
    name: &str,
    store: &StoreConfig,
    extra: &[(&str, &str)],
) -> Stage {
    let mut env = store_env(store);
    env.push(("WEIR_GROUP_ID".into(), format!("weir-archiver-{name}")));
    env.push(("WEIR_INSTANCE_ID".into(), name.into()));
    env.push(("WEIR_SESSION_TIMEOUT_MS".into(), "6000".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    stack.stage("archiver", name, &env)
}

/// What a reader sees in an archive at one moment.
#[derive(Debug, Default)]
pub struct ArchiveView {
    /// Every event id in the live files, with how many times it is there
    /// (no dedup: a test counts doubles).
    pub ids: BTreeMap<String, usize>,
    /// Each live file's name and number of events.
    pub files: Vec<(String, usize)>,
}

/// Reads every live file of `store`, as a reader would.
pub async fn archived(store: &ArchiveStore) -> anyhow::Result<ArchiveView> {
    let mut view = ArchiveView::default();
    for tenant in reader::tenant_dirs(store).await? {
        for date in store.list_prefixes(&tenant).await? {
            for hour in store.list_prefixes(&date).await? {
                let listing = HourListing::read(store, &hour).await?;
                for f in listing.live() {
                    let events = reader::read_file(store, &f.location).await?;
                    view.files.push((f.location.to_string(), events.len()));
                    for e in events {
                        *view.ids.entry(e.event.event_id).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    Ok(view)
}

/// The event ids ClickHouse counts for the test tenant, with their copies
/// in `events FINAL` (always 1 for a sound table).
pub async fn counted_ids(stack: &Stack) -> anyhow::Result<BTreeMap<String, usize>> {
    let tsv = stack
        .clickhouse_query(&format!(
            "SELECT event_id, count() FROM events FINAL WHERE tenant = '{}' GROUP BY event_id FORMAT TSV",
            crate::load::TENANT
        ))
        .await?;
    Ok(tsv
        .lines()
        .filter_map(|l| {
            let (id, n) = l.split_once('\t')?;
            Some((id.to_string(), n.parse().ok()?))
        })
        .collect())
}

/// Runs `archiver backfill --from <from_ms> --to <to_ms> [extra...]` on
/// `store` against the stack's ClickHouse, to its end; returns its exit
/// status and its output (stdout, then stderr).
pub fn backfill(
    stack: &Stack,
    store: &StoreConfig,
    from_ms: i64,
    to_ms: i64,
    extra: &[&str],
) -> (bool, String) {
    let rfc3339 = |ms: i64| weir_core::event::ms_to_rfc3339(ms).expect("a time in range");
    let out = std::process::Command::new(crate::stack::bin_dir().join("archiver"))
        .arg("backfill")
        .args(["--from", &rfc3339(from_ms), "--to", &rfc3339(to_ms)])
        .args(extra)
        .envs(stack.env())
        .envs(store_env(store))
        .output()
        .expect("the archiver binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
