//! Processes of one test stack.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory holding the workspace binaries (`target/<profile>`), found
/// from the running executable: a test runs from `target/<profile>/deps/`,
/// a bench binary from `target/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`),
/// in MiB, from `/proc`; `None` reads the calling process. 0 when gone.
pub fn rss_mib(pid: Option<u32>) -> (f64, f64) {
    let path = pid.map_or("/proc/self/status".to_string(), |p| {
        format!("/proc/{p}/status")
    });
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A port nothing listens on, for a server a test starts.
///
/// Not `bind(0)`: that port comes from the kernel's ephemeral range, and
/// between its release here and the server's bind, any outgoing connection
/// (a Kafka client, a readiness poll) may take it as its local port. CI lost
/// a run to that: ClickHouse's `Address already in use` while the other
/// parts started. Ports below the ephemeral range are never handed out by the
/// kernel, so only another test can race for one; a per-process counter
/// started at an offset drawn from the pid keeps parallel tests and test
/// binaries on different ports.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = test_port_range();
    let span = u32::from(high - low);
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % span));
    for _ in 0..span {
        let port = low + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// From 10000 up to the first ephemeral port (`ip_local_port_range`,
/// 32768 by default); at least a thousand ports wide.
fn test_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (LOW, ephemeral.max(LOW + 1_000))
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    command: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    pub fn spawn(
        name: &str,
        command: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut p = Proc {
            name: name.into(),
            child: None,
            log,
            command,
            env,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = c.try_wait() {
                    return status.success();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        false
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The Kafka broker a test runs: `WEIR_TEST_BROKER`, `nisshi` (the default)
/// or `crabka` (crabka-broker, built by `WEIR_BROKERS=nisshi,crabka
/// deploy/local/install.sh`). Both are started by `deploy/local/part.sh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Nisshi,
    Crabka,
}

impl BrokerKind {
    pub fn named(name: &str) -> anyhow::Result<BrokerKind> {
        match name {
            "nisshi" => Ok(BrokerKind::Nisshi),
            "crabka" => Ok(BrokerKind::Crabka),
            other => anyhow::bail!("unknown broker {other:?} (nisshi or crabka)"),
        }
    }

    /// `WEIR_TEST_BROKER`, nisshi when unset.
    pub fn from_env() -> BrokerKind {
        let name = std::env::var("WEIR_TEST_BROKER").unwrap_or_else(|_| "nisshi".into());
        BrokerKind::named(&name).unwrap_or_else(|e| panic!("WEIR_TEST_BROKER: {e}"))
    }

    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Nisshi => "nisshi",
            BrokerKind::Crabka => "crabka",
        }
    }

    /// The broker's `part.sh` part.
    fn part(self) -> &'static str {
        match self {
            BrokerKind::Nisshi => "kafka",
            BrokerKind::Crabka => "crabka",
        }
    }

    /// Where `part.sh` serves it: crabka on a loopback address made from its
    /// port, because its raft listener is fixed at `<listen IP>:9093`.
    pub fn address(self, port: u16) -> String {
        match self {
            BrokerKind::Nisshi => format!("127.0.0.1:{port}"),
            BrokerKind::Crabka => format!("127.0.{}.{}:{port}", port >> 8, port & 255),
        }
    }

    /// Waits until the broker `spawn` started serves: crabka's first start
    /// opens the port twice (`part.sh` formats it with one start, then
    /// serves with a second), so the wait is for the end of formatting first.
    async fn wait_serving(self, address: &str, dir: &Path, proc: &Proc) {
        if self == BrokerKind::Crabka {
            let formatted = dir.join("kafka/weir-formatted");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !formatted.exists() {
                assert!(
                    Instant::now() < deadline,
                    "crabka was not formatted in 60 s:\n{}",
                    proc.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        wait_addr(address, proc).await;
    }

    /// Starts it on `port` with its data under `dir`, logging to `dir`.
    fn spawn(self, port: u16, dir: &Path) -> Proc {
        let cmd = vec![
            repo_root()
                .join("deploy/local/part.sh")
                .display()
                .to_string(),
            self.part().into(),
            port.to_string(),
            dir.join("kafka").display().to_string(),
        ];
        Proc::spawn(self.name(), cmd, vec![], dir.join("kafka.log"))
    }
}

/// A Kafka broker alone, for tests of one stage's Kafka I/O.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    pub kind: BrokerKind,
    /// `host:port`, what clients bootstrap from.
    pub address: String,
}

impl Broker {
    /// The broker `WEIR_TEST_BROKER` names.
    pub async fn start() -> Broker {
        Broker::start_kind(BrokerKind::from_env()).await
    }

    pub async fn start_kind(kind: BrokerKind) -> Broker {
        let dir = test_dir("weir-broker-");
        let port = free_port();
        let proc = kind.spawn(port, dir.path());
        let address = kind.address(port);
        kind.wait_serving(&address, dir.path(), &proc).await;
        Broker {
            dir,
            proc,
            kind,
            address,
        }
    }

    pub fn brokers(&self) -> String {
        self.address.clone()
    }

    /// kill -9, then start again on the same data and wait for the port.
    pub async fn kill9_and_restart(&mut self) {
        self.proc.restart();
        wait_addr(&self.address, &self.proc).await;
    }
}

/// One of weir's stages, with its HTTP port.
pub struct Stage {
    pub proc: Proc,
    pub port: u16,
}

impl Stage {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The stage's `/metrics` page; empty if it does not answer.
    pub async fn metrics_text(&self) -> String {
        match reqwest::get(self.url("/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sums the samples of a Prometheus metric (all label sets); 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// GETs `path` from the query API with the test read key: the status
    /// and the JSON body (`Null` if it is not JSON).
    pub async fn query(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .header("x-read-key", crate::load::READ_KEY)
            .send()
            .await
            .expect("the query API answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn wait_ready(&self) {
        wait_http(&self.url("/readyz"), Duration::from_secs(120), &self.proc).await;
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub kafka: Proc,
    pub broker: BrokerKind,
    /// The broker's `host:port`.
    pub kafka_address: String,
    pub registry: Proc,
    pub registry_port: u16,
    pub clickhouse: Proc,
    pub clickhouse_port: u16,
}

impl Stack {
    /// Starts a broker (the one `WEIR_TEST_BROKER` names), a registry and
    /// ClickHouse, each on its own free port.
    pub async fn start() -> Stack {
        let dir = test_dir("weir-test-");
        let part = |name: &str, port: u16, data: Option<&str>| {
            let mut cmd = vec![
                repo_root()
                    .join("deploy/local/part.sh")
                    .display()
                    .to_string(),
                name.into(),
                port.to_string(),
            ];
            if let Some(d) = data {
                cmd.push(dir.path().join(d).display().to_string());
            }
            Proc::spawn(name, cmd, vec![], dir.path().join(format!("{name}.log")))
        };
        let (kafka_port, registry_port, clickhouse_port) = (free_port(), free_port(), free_port());
        let broker = BrokerKind::from_env();
        let kafka = broker.spawn(kafka_port, dir.path());
        let kafka_address = broker.address(kafka_port);
        let registry = part("registry", registry_port, None);
        let clickhouse = part("clickhouse", clickhouse_port, Some("clickhouse"));
        broker
            .wait_serving(&kafka_address, dir.path(), &kafka)
            .await;
        wait_http(
            &format!("http://127.0.0.1:{registry_port}/subjects"),
            Duration::from_secs(60),
            &registry,
        )
        .await;
        wait_http(
            &format!("http://127.0.0.1:{clickhouse_port}/ping"),
            Duration::from_secs(120),
            &clickhouse,
        )
        .await;
        Stack {
            dir,
            kafka,
            broker,
            kafka_address,
            registry,
            registry_port,
            clickhouse,
            clickhouse_port,
        }
    }

    /// The codec the stages use, against this stack's registry.
    pub fn codec(&self) -> weir_core::codec::Codec {
        weir_core::codec::Codec::new(
            &format!("http://127.0.0.1:{}", self.registry_port),
            "events.raw",
            "aggregates.1m",
        )
        .expect("a codec for the stack's registry")
    }

    pub fn brokers(&self) -> String {
        self.kafka_address.clone()
    }

    /// Config shared by the three stages, as `WEIR_` environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("WEIR_KAFKA__BROKERS", self.brokers()),
            ("WEIR_KAFKA__PARTITIONS", "4".into()),
            (
                "WEIR_SCHEMA_REGISTRY_URL",
                format!("http://127.0.0.1:{}", self.registry_port),
            ),
            (
                "WEIR_CLICKHOUSE__URL",
                format!("http://127.0.0.1:{}", self.clickhouse_port),
            ),
            ("WEIR_CLICKHOUSE__BATCH_INTERVAL_MS", "300".into()),
            ("WEIR_COMMIT_INTERVAL_MS", "200".into()),
            (
                "WEIR_AUTH__WRITE_KEYS",
                format!("{}:{}", crate::load::WRITE_KEY, crate::load::TENANT),
            ),
            (
                "WEIR_AUTH__READ_KEYS",
                format!("{}:{}", crate::load::READ_KEY, crate::load::TENANT),
            ),
            // WEIR_TEST_STAGE_LOG widens it when a run needs librdkafka's
            // debug, e.g. "info,librdkafka=debug" with
            // WEIR_KAFKA__PROPERTIES__DEBUG=cgrp,fetch (stages inherit it).
            (
                "RUST_LOG",
                std::env::var("WEIR_TEST_STAGE_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
            ),
            ("RUST_BACKTRACE", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts `bin` (ingest, processor or aggregator) with extra env vars.
    pub fn stage(&self, bin: &str, instance: &str, extra: &[(&str, &str)]) -> Stage {
        let port = free_port();
        let mut env = self.env();
        env.push(("WEIR_LISTEN".into(), format!("127.0.0.1:{port}")));
        // Only ingest serves gRPC; a port of its own keeps parallel tests apart.
        env.push((
            "WEIR_GRPC_LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let exe = bin_dir().join(bin);
        assert!(
            exe.exists(),
            "{} is not built; run `cargo build --bins` first",
            exe.display()
        );
        let log = self.dir.path().join(format!("{bin}-{instance}.log"));
        Stage {
            proc: Proc::spawn(bin, vec![exe.display().to_string()], env, log),
            port,
        }
    }

    /// Runs a query on ClickHouse and returns the TSV answer, trimmed. A
    /// server killed mid-query (the chaos run does that) is an error after
    /// 60 s, never a hang.
    pub async fn clickhouse_query(&self, sql: &str) -> anyhow::Result<String> {
        let resp = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/?database=weir",
                self.clickhouse_port
            ))
            .timeout(Duration::from_secs(60))
            .body(sql.to_string())
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "ClickHouse: {text}");
        Ok(text.trim().to_string())
    }
}

/// A test's scratch directory (data and logs), removed when the test ends
/// unless `WEIR_TEST_KEEP` is set, for reading a failed run's logs.
fn test_dir(prefix: &str) -> tempfile::TempDir {
    let keep = std::env::var_os("WEIR_TEST_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    if keep {
        eprintln!("WEIR_TEST_KEEP: keeping {}", dir.path().display());
    }
    dir
}

pub async fn wait_tcp(port: u16, proc: &Proc) {
    wait_addr(&format!("127.0.0.1:{port}"), proc).await;
}

/// Waits up to 60 s for `address` (`host:port`) to accept a connection.
pub async fn wait_addr(address: &str, proc: &Proc) {
    let addr = address.to_string();
    let up = tokio::task::spawn_blocking(move || listening_within(&addr, Duration::from_secs(60)))
        .await
        .expect("the wait does not panic");
    assert!(
        up,
        "{} did not open {address}:\n{}",
        proc.name,
        proc.log_tail(30)
    );
}

/// Whether something accepts TCP connections on `address` before `timeout`.
pub fn listening_within(address: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(address).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) async fn wait_http(url: &str, timeout: Duration, proc: &Proc) {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{url} did not answer 200 within {timeout:?}; {} log:\n{}",
        proc.name,
        proc.log_tail(40)
    );
}
