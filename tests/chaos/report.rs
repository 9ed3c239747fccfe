//! What a chaos run saw, the verdict on it, and the summary table it prints.

use super::faults::{Dealt, Fault};
use super::Profile;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One event name's count and unique users: the reference and the API.
pub struct NameCheck {
    pub name: &'static str,
    pub want_count: u64,
    pub got_count: u64,
    pub want_users: u64,
    pub got_users: u64,
}

pub struct Summary {
    pub profile: Profile,
    pub load_secs: f64,
    /// From the end of the load until ClickHouse held every event.
    pub drained_secs: f64,
    pub sent: usize,
    pub requests: usize,
    pub retries_5xx: usize,
    pub retries_transport: usize,
    pub duplicates: usize,
    pub acknowledged: usize,
    pub rejected: BTreeMap<(String, String), (usize, String)>,
    /// Distinct acknowledged ids, on time or late: what must be counted.
    pub must_count: usize,
    /// For each event the late lane counted (`late = 1` in `events`), ms
    /// from ingest's acknowledgement until ClickHouse stored it, sorted.
    pub late_lag_ms: Vec<f64>,
    /// The query API's total over every name.
    pub api_total: u64,
    /// Rows of `events FINAL`.
    pub stored_rows: usize,
    /// Acknowledged ids not in `events`.
    pub lost_ids: usize,
    /// Where those stopped (`locate`), when there are any.
    pub whereabouts: Vec<String>,
    /// Ids in `events` that are not acknowledged events.
    pub stray_ids: usize,
    pub want_users: u64,
    pub got_users: u64,
    pub names: Vec<NameCheck>,
    pub too_late: BTreeSet<String>,
    pub late: BTreeSet<String>,
    pub poisoned: BTreeSet<String>,
    pub invalid: BTreeSet<String>,
    pub dealt: Vec<Dealt>,
    pub batch_ms: Vec<f64>,
}

impl Summary {
    /// Events counted fewer times than acknowledged.
    pub fn lost(&self) -> u64 {
        let short = (self.must_count as u64).saturating_sub(self.api_total);
        short.max(self.lost_ids as u64)
    }

    /// Events counted more often than acknowledged.
    pub fn doubled(&self) -> u64 {
        let extra = self.api_total.saturating_sub(self.must_count as u64);
        let rows = (self.stored_rows as u64).saturating_sub(self.must_count as u64);
        extra.max(rows).max(self.stray_ids as u64)
    }

    fn kills(&self, pick: impl Fn(&Fault) -> bool) -> usize {
        self.dealt.iter().filter(|d| pick(&d.fault)).count()
    }

    /// Every way the run broke the promise; empty if it held.
    pub fn violations(&self) -> Vec<String> {
        let mut v = vec![];
        if self.lost() > 0 || self.doubled() > 0 {
            v.push(format!(
                "lost {}, doubled {} (API total {}, events rows {}, want {})",
                self.lost(),
                self.doubled(),
                self.api_total,
                self.stored_rows,
                self.must_count
            ));
        }
        if self.got_users != self.want_users {
            v.push(format!(
                "unique users {} != {}",
                self.got_users, self.want_users
            ));
        }
        for n in &self.names {
            if (n.got_count, n.got_users) != (n.want_count, n.want_users) {
                v.push(format!(
                    "{}: count {} users {}, want {} and {}",
                    n.name, n.got_count, n.got_users, n.want_count, n.want_users
                ));
            }
        }
        if self.late_lag_ms.len() != self.too_late.len() {
            v.push(format!(
                "the late lane counted {} events, want {}",
                self.late_lag_ms.len(),
                self.too_late.len()
            ));
        }
        if self.late != self.too_late {
            v.push(format!(
                "events.late: {} ids, want {} ({} missing, {} unexpected)",
                self.late.len(),
                self.too_late.len(),
                self.too_late.difference(&self.late).count(),
                self.late.difference(&self.too_late).count()
            ));
        }
        if self.invalid != self.poisoned {
            v.push(format!(
                "events.invalid: {:?}, want {:?}",
                self.invalid, self.poisoned
            ));
        }
        for d in &self.dealt {
            if d.recovered_after.is_none() {
                v.push(format!(
                    "no recovery after {} at {:.0} s",
                    d.fault,
                    d.at.as_secs_f64()
                ));
            }
        }
        if self.rejected.keys().any(|(kind, field)| {
            super::load_client::INVALID
                .iter()
                .any(|(k, f)| k == kind && f != field)
        }) {
            v.push(format!(
                "a rejection named the wrong field: {:?}",
                self.rejected
            ));
        }
        v
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.profile;
        let mut ms = self.batch_ms.clone();
        ms.sort_by(f64::total_cmp);
        writeln!(
            f,
            "weir chaos run: profile {}, seed {}, {} events at {} ev/s in batches of {}",
            p.name, p.seed, p.events, p.rate, p.batch
        )?;
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<34} {v}");
        row(f, "sent (distinct events)", self.sent.to_string())?;
        row(
            f,
            "requests (retries: 5xx, timeout/conn)",
            format!(
                "{} ({}, {})",
                self.requests, self.retries_5xx, self.retries_transport
            ),
        )?;
        row(
            f,
            "deliberate duplicate re-sends",
            self.duplicates.to_string(),
        )?;
        row(
            f,
            "acknowledged (distinct ids)",
            self.acknowledged.to_string(),
        )?;
        let rejected: usize = self.rejected.values().map(|r| r.0).sum();
        row(f, "rejected", rejected.to_string())?;
        for ((kind, field), (n, message)) in &self.rejected {
            row(f, &format!("  {kind} ({field})"), format!("{n}: {message}"))?;
        }
        row(
            f,
            "must be counted (on time + late)",
            format!("{} ({} late)", self.must_count, self.too_late.len()),
        )?;
        row(
            f,
            "in ClickHouse (API total / rows)",
            format!("{} / {}", self.api_total, self.stored_rows),
        )?;
        row(
            f,
            "unique users (API / reference)",
            format!("{} / {}", self.got_users, self.want_users),
        )?;
        row(
            f,
            "events.late (ids / expected)",
            format!("{} / {}", self.late.len(), self.too_late.len()),
        )?;
        let lag = &self.late_lag_ms;
        row(
            f,
            "late lane: counted, lag p50/p99/max",
            format!(
                "{}, {:.0} / {:.0} / {:.0} ms",
                lag.len(),
                pct(lag, 0.5),
                pct(lag, 0.99),
                pct(lag, 1.0)
            ),
        )?;
        row(
            f,
            "events.invalid (keys / poisoned)",
            format!("{} / {}", self.invalid.len(), self.poisoned.len()),
        )?;
        row(f, "LOST", self.lost().to_string())?;
        for line in &self.whereabouts {
            writeln!(f, "    {line}")?;
        }
        row(f, "DOUBLED", self.doubled().to_string())?;
        row(
            f,
            "load / drain after load",
            format!("{:.0} s / {:.1} s", self.load_secs, self.drained_secs),
        )?;
        row(
            f,
            "batch ack p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                pct(&ms, 0.5),
                pct(&ms, 0.99),
                pct(&ms, 1.0)
            ),
        )?;
        row(
            f,
            "kills: ingest, proc-0, proc-1, aggr",
            format!(
                "{}, {}, {}, {}",
                self.kills(|x| *x == Fault::KillIngest),
                self.kills(|x| *x == Fault::KillProcessor(0)),
                self.kills(|x| *x == Fault::KillProcessor(1)),
                self.kills(|x| *x == Fault::KillAggregator)
            ),
        )?;
        row(
            f,
            "restarts: broker, ClickHouse; cuts",
            format!(
                "{}, {}; {}",
                self.kills(|x| *x == Fault::RestartBroker),
                self.kills(|x| *x == Fault::RestartClickHouse),
                self.kills(|x| matches!(x, Fault::Blackhole(_)))
            ),
        )?;
        writeln!(
            f,
            "  {:>3} {:>8}  {:<38} {:>8} {:>10}",
            "#", "at", "fault", "outage", "recovered"
        )?;
        for (i, d) in self.dealt.iter().enumerate() {
            writeln!(
                f,
                "  {:>3} {:>7.1}s  {:<38} {:>7.1}s {:>10}",
                i + 1,
                d.at.as_secs_f64(),
                d.fault.to_string(),
                d.outage.as_secs_f64(),
                d.recovered_after
                    .map_or("NEVER".to_string(), |r| format!("{:.1}s", r.as_secs_f64()))
            )?;
        }
        Ok(())
    }
}
