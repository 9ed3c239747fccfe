//! What the soak watches: each process's RSS, open fds, threads and CPU
//! time read from `/proc`, folded into periodic samples with the load's
//! rate and latency and the stages' `/metrics` gauges.

use crate::Stage;
use std::time::Duration;

/// `/proc/<pid>/stat` counts CPU time in clock ticks; 100 a second on Linux.
const CLK_TCK: f64 = 100.0;

/// One process watched by the sampler.
pub(super) struct Watched {
    pub(super) label: &'static str,
    pub(super) pid: u32,
    /// Its HTTP port, whose client connections are counted apart.
    pub(super) port: Option<u16>,
    /// A weir stage, judged; the others are shown for information.
    pub(super) stage: bool,
}

#[derive(Clone, Copy)]
pub(super) struct ProcSample {
    /// In a sample: the mean of the readings since the previous sample.
    pub(super) rss_mib: f64,
    /// In a sample: the highest reading since the previous sample.
    pub(super) rss_max_mib: f64,
    /// In a sample: the lowest reading since the previous sample, the floor
    /// under the buffers of in-flight work.
    pub(super) rss_min_mib: f64,
    pub(super) fds: u32,
    /// Established connections accepted on its HTTP port (among `fds`).
    pub(super) clients: u32,
    pub(super) threads: u32,
    pub(super) cpu_secs: f64,
}

impl ProcSample {
    /// The fds judged: all but the HTTP clients' live connections, whose
    /// number follows the load client's concurrency (the server closes a
    /// connection idle for 10 s). A leaked connection is not established
    /// any more, so it still counts.
    pub(super) fn own_fds(&self) -> u32 {
        self.fds.saturating_sub(self.clients)
    }
}

/// Established TCP connections whose local port is `port`, from
/// `/proc/net/tcp` and `tcp6`: the server side of connections to `port`.
fn established_on(port: u16) -> u32 {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let mut f = l.split_whitespace().skip(1);
                    let local = f.next().unwrap_or_default();
                    let state = f.nth(1).unwrap_or_default();
                    local.ends_with(&port) && state == "01"
                })
                .count() as u32
        })
        .sum()
}

/// RSS, open fds, threads and CPU time of `pid`; `None` if it is gone.
pub(super) fn read_proc(pid: u32, port: Option<u16>) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    };
    // A zombie has no VmRSS line: it is gone.
    let rss_kib = field("VmRSS:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field
    // 3 of stat(5), utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    Some(ProcSample {
        rss_mib: rss_kib / 1024.0,
        rss_max_mib: rss_kib / 1024.0,
        rss_min_mib: rss_kib / 1024.0,
        fds,
        clients: port.map_or(0, established_on),
        threads: field("Threads:").unwrap_or(0.0) as u32,
        cpu_secs: ticks / CLK_TCK,
    })
}

pub(super) struct Sample {
    pub(super) t: f64,
    pub(super) procs: Vec<Option<ProcSample>>,
    pub(super) acked: u64,
    /// Acknowledged events/s since the previous sample.
    pub(super) rate: f64,
    /// p99 of the posts acknowledged since the previous sample, ms.
    pub(super) p99_ms: f64,
    pub(super) processor_lag: f64,
    pub(super) aggregator_lag: f64,
    pub(super) dedup_keys: f64,
    pub(super) open_windows: f64,
}

/// A metric of a stage, or NaN if it does not answer within 2 s.
pub(super) async fn metric(stage: &Stage, name: &str) -> f64 {
    tokio::time::timeout(Duration::from_secs(2), stage.metric(name))
        .await
        .unwrap_or(f64::NAN)
}

/// Each process's sample from its readings since the previous sample (the
/// mean, highest and least RSS; the last reading's fds, threads and CPU
/// time), `None` for one gone meanwhile; clears the readings.
pub(super) fn take_sample(
    readings: &mut [Vec<ProcSample>],
    gone: &mut [bool],
) -> Vec<Option<ProcSample>> {
    readings
        .iter_mut()
        .zip(gone)
        .map(|(r, gone)| {
            let last = *r.last()?;
            let n = r.len() as f64;
            let p = ProcSample {
                rss_mib: r.iter().map(|p| p.rss_mib).sum::<f64>() / n,
                rss_max_mib: r.iter().map(|p| p.rss_mib).fold(0.0, f64::max),
                rss_min_mib: r.iter().map(|p| p.rss_mib).fold(f64::INFINITY, f64::min),
                ..last
            };
            r.clear();
            (!std::mem::take(gone)).then_some(p)
        })
        .collect()
}
