//! The soak's statistics and its growth rule: quantiles of the post
//! latencies, least-squares slopes over the steady window, and the rule
//! that judges a stage's RSS floor and fds as growing.

use super::sampler::ProcSample;

/// RSS growth rule: slope per 10 minutes above this share of the mean...
pub(super) const RSS_LIMIT_SHARE: f64 = 0.05;
/// ...and above this many MiB per 10 minutes.
pub(super) const RSS_LIMIT_FLOOR_MIB: f64 = 1.0;
/// fd growth rule: slope above this many fds per 10 minutes...
pub(super) const FD_LIMIT_SLOPE: f64 = 2.0;
/// ...and the count moving by at least this much over the steady window.
pub(super) const FD_LIMIT_RANGE: u32 = 3;
/// Either slope must also exceed this many standard errors: a line through
/// noise has a slope too.
pub(super) const SIGNIFICANT: f64 = 2.0;

/// The `p` quantile of `sorted`; NaN if it is empty.
pub(super) fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Least-squares line through `(t, y)`: slope per second and its standard error.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 3 {
        return (f64::NAN, f64::NAN);
    }
    let (mt, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let stt: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let sty: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let slope = sty / stt;
    let residuals: f64 = points
        .iter()
        .map(|p| (p.1 - my - slope * (p.0 - mt)).powi(2))
        .sum();
    (slope, (residuals / (n - 2.0) / stt).sqrt())
}

/// The steady-window figures of one process.
pub(super) struct Trend {
    pub(super) rss_start: f64,
    pub(super) rss_end: f64,
    pub(super) rss_max: f64,
    pub(super) rss_mean: f64,
    /// The floor's slope in MiB per hour, and its standard error.
    pub(super) rss_slope_h: f64,
    pub(super) rss_se_h: f64,
    /// The floor's slope per 10 minutes as a share of its mean.
    pub(super) rss_share_10m: f64,
    /// The mean's slope in MiB per hour, and its standard error.
    pub(super) mean_slope_h: f64,
    pub(super) mean_se_h: f64,
    /// fds but the HTTP clients' connections.
    pub(super) fd_start: u32,
    pub(super) fd_end: u32,
    pub(super) clients_max: u32,
    pub(super) fd_min: u32,
    pub(super) fd_max: u32,
    /// fds per 10 minutes, and its standard error.
    pub(super) fd_slope_10m: f64,
    pub(super) fd_se_10m: f64,
    pub(super) threads_min: u32,
    pub(super) threads_max: u32,
    pub(super) cpu_pct: f64,
    pub(super) rss_growth: bool,
    pub(super) fd_growth: bool,
}

/// The steady-window figures of one process from its `(t, sample)`
/// points, and whether they show growth; `None` under three points.
pub(super) fn trend(points: &[(f64, ProcSample)]) -> Option<Trend> {
    if points.len() < 3 {
        return None;
    }
    let rss: Vec<(f64, f64)> = points.iter().map(|(t, s)| (*t, s.rss_mib)).collect();
    let floor: Vec<(f64, f64)> = points.iter().map(|(t, s)| (*t, s.rss_min_mib)).collect();
    let fds: Vec<(f64, f64)> = points
        .iter()
        .map(|(t, s)| (*t, s.own_fds() as f64))
        .collect();
    let (mean_slope, mean_se) = fit(&rss);
    let (slope, se) = fit(&floor);
    let (fd_slope, fd_se) = fit(&fds);
    let mean = rss.iter().map(|p| p.1).sum::<f64>() / rss.len() as f64;
    let floor_mean = floor.iter().map(|p| p.1).sum::<f64>() / floor.len() as f64;
    let (first, last) = (points[0], points[points.len() - 1]);
    let fd_min = points.iter().map(|p| p.1.own_fds()).min().unwrap_or(0);
    let fd_max = points.iter().map(|p| p.1.own_fds()).max().unwrap_or(0);
    let rss_10m = slope * 600.0;
    let fd_10m = fd_slope * 600.0;
    Some(Trend {
        rss_start: first.1.rss_mib,
        rss_end: last.1.rss_mib,
        rss_max: points.iter().map(|p| p.1.rss_max_mib).fold(0.0, f64::max),
        rss_mean: mean,
        rss_slope_h: slope * 3600.0,
        rss_se_h: se * 3600.0,
        rss_share_10m: rss_10m / floor_mean,
        mean_slope_h: mean_slope * 3600.0,
        mean_se_h: mean_se * 3600.0,
        fd_start: first.1.own_fds(),
        fd_end: last.1.own_fds(),
        clients_max: points.iter().map(|p| p.1.clients).max().unwrap_or(0),
        fd_min,
        fd_max,
        fd_slope_10m: fd_10m,
        fd_se_10m: fd_se * 600.0,
        threads_min: points.iter().map(|p| p.1.threads).min().unwrap_or(0),
        threads_max: points.iter().map(|p| p.1.threads).max().unwrap_or(0),
        cpu_pct: (last.1.cpu_secs - first.1.cpu_secs) / (last.0 - first.0) * 100.0,
        rss_growth: rss_10m > (RSS_LIMIT_SHARE * floor_mean).max(RSS_LIMIT_FLOOR_MIB)
            && slope > SIGNIFICANT * se,
        fd_growth: fd_10m > FD_LIMIT_SLOPE
            && fd_max - fd_min >= FD_LIMIT_RANGE
            && fd_slope > SIGNIFICANT * fd_se,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_finds_the_slope_of_a_line() {
        let points: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 3.0 + 0.5 * t as f64)).collect();
        let (slope, se) = fit(&points);
        assert!((slope - 0.5).abs() < 1e-12 && se < 1e-9);
    }
}
