//! The soak's printed tables: the samples as they come and at the end,
//! the steady window's figures and verdict per process, and the rule
//! they are judged by.

use super::sampler::{ProcSample, Sample, Watched};
use super::trend::{
    trend, FD_LIMIT_RANGE, FD_LIMIT_SLOPE, RSS_LIMIT_FLOOR_MIB, RSS_LIMIT_SHARE, SIGNIFICANT,
};

/// Prints the samples table.
pub(super) fn print_samples(watched: &[Watched], samples: &[Sample]) {
    println!(
        "samples (per process: RSS MiB, the mean of 1-s readings since the previous sample / open fds; ev/s and p99 of the batch posts \
         since the previous sample; consumer lags in records; dedup keys and open windows held by both processors; \
         a stage's fds as own+N, N its HTTP clients' established connections):"
    );
    println!("{}", header(watched));
    println!("|{}", "---|".repeat(8 + watched.len()));
    for s in samples {
        println!("{}", row(s));
    }
}

/// Prints the steady window's figures and verdict per process (the
/// samples from `warmup` seconds on); returns the stages that failed.
pub(super) fn print_steady_window(
    watched: &[Watched],
    samples: &[Sample],
    warmup: f64,
) -> Vec<String> {
    println!(
        "steady window: samples from {warmup:.0} s to the end; RSS start, end and mean are the samples' means, max the \
         highest reading; a slope is a least-squares line (± standard error), the judged one that of the samples' \
         floors (their least 1-s reading); fds without the HTTP clients' established connections; CPU % of one core:"
    );
    println!("| process | RSS start MiB | end | max | mean | RSS floor slope MiB/h | floor slope % per 10 min | RSS mean slope MiB/h | fds start | end | min | max | fd slope per 10 min | HTTP client conns max | threads min–max | CPU % | verdict |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = vec![];
    for (i, w) in watched.iter().enumerate() {
        let points: Vec<(f64, ProcSample)> = samples
            .iter()
            .filter(|s| s.t >= warmup)
            .filter_map(|s| s.procs[i].map(|p| (s.t, p)))
            .collect();
        let died = samples.iter().any(|s| s.procs[i].is_none());
        let Some(tr) = trend(&points) else {
            println!("| {} | too few samples in the steady window |", w.label);
            if w.stage {
                failures.push(format!("{}: too few samples", w.label));
            }
            continue;
        };
        let verdict = match (w.stage, died, tr.rss_growth, tr.fd_growth) {
            (_, true, _, _) => "DIED",
            (false, ..) => "info (stores data)",
            (true, _, false, false) => "no growth",
            (true, _, true, false) => "RSS GROWS",
            (true, _, false, true) => "FDS GROW",
            (true, _, true, true) => "RSS AND FDS GROW",
        };
        if w.stage && verdict != "no growth" {
            failures.push(format!("{}: {verdict}", w.label));
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} ± {:.1} | {:+.2} % | {:+.1} ± {:.1} | {} | {} | {} | {} | {:+.1} ± {:.1} | {} | {}–{} | {:.0} | {verdict} |",
            w.label,
            tr.rss_start,
            tr.rss_end,
            tr.rss_max,
            tr.rss_mean,
            tr.rss_slope_h,
            tr.rss_se_h,
            tr.rss_share_10m * 100.0,
            tr.mean_slope_h,
            tr.mean_se_h,
            tr.fd_start,
            tr.fd_end,
            tr.fd_min,
            tr.fd_max,
            tr.fd_slope_10m,
            tr.fd_se_10m,
            tr.clients_max,
            tr.threads_min,
            tr.threads_max,
            tr.cpu_pct,
        );
    }
    failures
}

/// Prints the growth rule.
pub(super) fn print_rule() {
    println!(
        "rule: a stage grows if over the steady window its RSS floor's slope exceeds {:.0} % of the floor's mean per 10 min \
         and {RSS_LIMIT_FLOOR_MIB:.0} MiB per 10 min (a leak that would add 30 % an hour; below 1 MiB is allocator \
         noise), or its fd slope exceeds {FD_LIMIT_SLOPE:.0} fds per 10 min with the count moving by {FD_LIMIT_RANGE} \
         or more; and in either case the slope exceeds {SIGNIFICANT:.0} standard errors (a line through noise has a \
         slope too). A slower leak needs a longer run (--minutes).",
        RSS_LIMIT_SHARE * 100.0
    );
}

/// The samples table's header line.
pub(super) fn header(watched: &[Watched]) -> String {
    let mut h =
        "| t s | acked | ev/s | p99 ms | lag proc | lag agg | dedup keys | windows |".to_string();
    for w in watched {
        h.push_str(&format!(" {} |", w.label));
    }
    h
}

/// A sample as a line of the samples table.
pub(super) fn row(s: &Sample) -> String {
    let mut r = format!(
        "| {:.0} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
        s.t,
        s.acked,
        s.rate,
        s.p99_ms,
        s.processor_lag,
        s.aggregator_lag,
        s.dedup_keys,
        s.open_windows
    );
    for p in &s.procs {
        match p {
            Some(p) if p.clients > 0 => r.push_str(&format!(
                " {:.1} / {}+{} |",
                p.rss_mib,
                p.own_fds(),
                p.clients
            )),
            Some(p) => r.push_str(&format!(" {:.1} / {} |", p.rss_mib, p.fds)),
            None => r.push_str(" gone |"),
        }
    }
    r
}
