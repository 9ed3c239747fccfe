//! The broker contract's group probe: a static member (every weir stage
//! joins with a `group.instance.id`) killed and restarted, in a settled
//! group or at any moment of a rebalance, must, once the group settles, own
//! its share of one assignment the leader made for the group as it is, so
//! every partition has exactly one owner. A partition with none is never
//! read: on crabka a restarted leader rejoined a settled group, its new plan
//! was installed without a rebalance, and the follower kept its old share;
//! one partition's events went uncounted (docs/testing.md, "Two brokers").
//!
//! The members are `GroupMember`s, so the restart lands exactly where the
//! case says; once it has, each member runs a consumer's loop (join, sync,
//! heartbeat, rejoin when told) in its own thread until the group settles.

use crate::broker_contract::{no, yes, Seen, T};
use crate::group_member::{Answer, GroupMember};
use kafka_protocol::error::ResponseError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The partitions the leaders deal out.
const PARTITIONS: i32 = 4;
/// A consumer's heartbeat interval, short so the probe settles fast.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// The member whose join opens the second round.
const NEWCOMER: &str = "c";
/// Heartbeats in a row, at the generation of its assignment, that show a
/// member settled.
const SETTLED_HEARTBEATS: u32 = 5;
/// Time for a restarted member's join to reach the coordinator before the
/// probe takes the rebalance's next step.
pub(crate) const LAND: Duration = Duration::from_millis(500);

/// Where in a rebalance the restart lands.
#[derive(Clone, Copy, Debug)]
pub enum Moment {
    /// In a settled group.
    Stable,
    /// After a new member's join opened a round, before the others rejoined.
    Preparing,
    /// After the round's JoinGroup answers, before the leader's SyncGroup.
    Completing,
    /// After the leader's SyncGroup, before the followers'.
    Synced,
    /// After a round it missed dropped it from the group.
    Evicted,
}

/// Which member restarts.
#[derive(Clone, Copy, Debug)]
pub enum Victim {
    Leader,
    Follower,
}

/// A leader's plan: partitions dealt round-robin over the members in
/// instance-id order, starting `incarnation` places along. Two members and
/// three get different shares, so a member that keeps an older generation's
/// share overlaps another's. A real assignor plans afresh when its leader
/// restarts and may reach another plan (librdkafka's cooperative-sticky,
/// which every weir stage uses, does when the leader no longer owns what it
/// had); starting one place further makes sure it does, so a broker that
/// installs a returning leader's plan without a rebalance, leaving the
/// followers on the old one, is caught.
pub fn deal(members: &[(String, String)], incarnation: usize) -> BTreeMap<String, Vec<i32>> {
    let mut ordered = members.to_vec();
    ordered.sort_by(|a, b| a.1.cmp(&b.1));
    let mut plan: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let at = (p as usize + incarnation) % ordered.len().max(1);
        if let Some((id, _)) = ordered.get(at) {
            plan.entry(id.clone()).or_default().push(p);
        }
    }
    plan
}

/// What `m` sends in its SyncGroup: its plan if it leads, else nothing.
fn plan(m: &GroupMember) -> BTreeMap<String, Vec<i32>> {
    if m.is_leader() {
        deal(&m.members, m.incarnation)
    } else {
        BTreeMap::new()
    }
}

/// Every (moment, victim) case, each in its own group, at once.
pub fn probe(brokers: &str) -> anyhow::Result<Seen> {
    let cases: Vec<(Moment, Victim)> = [
        Moment::Stable,
        Moment::Preparing,
        Moment::Completing,
        Moment::Synced,
        Moment::Evicted,
    ]
    .into_iter()
    .flat_map(|m| [(m, Victim::Leader), (m, Victim::Follower)])
    .collect();
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(moment, victim)| {
            let brokers = brokers.to_string();
            thread::spawn(move || {
                let started = Instant::now();
                let seen = restart(&brokers, moment, victim);
                (moment, victim, seen, started.elapsed())
            })
        })
        .collect();
    let count = runs.len();
    let mut broken = vec![];
    let mut slowest = (Duration::ZERO, String::new());
    for run in runs {
        let (moment, victim, seen, took) = run
            .join()
            .map_err(|_| anyhow::anyhow!("a case's thread panicked"))?;
        if took > slowest.0 {
            slowest = (took, format!("{victim:?} restarted {moment:?}"));
        }
        match seen {
            Ok(None) => {}
            Ok(Some(what)) => broken.push(format!("{victim:?} restarted {moment:?}: {what}")),
            Err(e) => broken.push(format!("{victim:?} restarted {moment:?}: error: {e:#}")),
        }
    }
    Ok(if broken.is_empty() {
        yes(format!(
            "{count} restarts (leader or follower; settled, preparing, completing, synced, evicted): one owner per partition (slowest: {}, {:.1} s)",
            slowest.1,
            slowest.0.as_secs_f64()
        ))
    } else {
        no(broken.join("; "))
    })
}

/// One case: `None` if the group settled with one owner per partition,
/// else what it did instead.
pub fn restart(brokers: &str, moment: Moment, victim: Victim) -> anyhow::Result<Option<String>> {
    let group = format!("probe-restart-{moment:?}-{victim:?}").to_lowercase();
    let member = |instance: &str| GroupMember::connect(brokers, &group, instance);
    let (doomed, other) = match first_generation(brokers, &group, victim)? {
        Ok(pair) => pair,
        Err(what) => return Ok(Some(what)),
    };
    let loops = match moment {
        Moment::Stable => vec![
            kill_and_restart(doomed)?,
            Loop::start(other, Step::Heartbeat),
        ],
        Moment::Preparing => {
            let newcomer = Loop::start(member(NEWCOMER)?, Step::Join);
            let mut other = other;
            await_round(&mut other)?;
            vec![
                kill_and_restart(doomed)?,
                Loop::start(other, Step::Join),
                newcomer,
            ]
        }
        Moment::Evicted => {
            // Dead through a whole round: the others settle without it.
            let next = doomed.reborn()?;
            drop(doomed);
            let without = match settle(vec![
                Loop::start(other, Step::Join),
                Loop::start(member(NEWCOMER)?, Step::Join),
            ])? {
                Ok(members) => members,
                Err(what) => {
                    return Ok(Some(format!("the round without it did not settle: {what}")))
                }
            };
            let mut loops = vec![Loop::start(next, Step::Join)];
            loops.extend(without.into_iter().map(|m| Loop::start(m, Step::Heartbeat)));
            loops
        }
        Moment::Completing | Moment::Synced => {
            // The newcomer's join opens the round; the others rejoin once a
            // heartbeat says so, as consumers do, so all three are in it.
            let newcomer = join_in_thread(member(NEWCOMER)?);
            let mut other = other;
            await_round(&mut other)?;
            let joins = vec![newcomer, join_in_thread(doomed), join_in_thread(other)];
            let mut joined = match collect_joins(joins)? {
                Ok(joined) => joined,
                Err(what) => return Ok(Some(format!("in the second round, {what}"))),
            };
            let generations: Vec<i32> = joined.iter().map(|m| m.generation).collect();
            if generations.iter().any(|g| *g != generations[0]) {
                return Ok(Some(format!(
                    "the second round's joins were answered at generations {generations:?}"
                )));
            }
            // The victim by its role in this round: its leader, or a follower
            // that was in the first generation.
            let l = joined.iter().position(GroupMember::is_leader);
            let v = match victim {
                Victim::Leader => l,
                Victim::Follower => joined
                    .iter()
                    .enumerate()
                    .position(|(i, m)| Some(i) != l && m.instance != NEWCOMER),
            };
            let Some(v) = v else {
                return Ok(Some("the second round has no leader".into()));
            };
            let mut dead = joined.remove(v);
            let mut loops = vec![];
            if let Moment::Synced = moment {
                if dead.is_leader() {
                    dead.sync(&plan(&dead))?;
                } else if let Some(l) = joined.iter().position(GroupMember::is_leader) {
                    let mut leader = joined.remove(l);
                    // A failed sync shows in its next heartbeat, which rejoins.
                    leader.sync(&plan(&leader))?;
                    loops.push(Loop::start(leader, Step::Heartbeat));
                }
            }
            loops.push(kill_and_restart(dead)?);
            loops.extend(joined.into_iter().map(|m| Loop::start(m, Step::Sync)));
            loops
        }
    };
    Ok(match settle(loops)? {
        Ok(members) => owners(&members),
        Err(what) => Some(format!("did not settle: {what}")),
    })
}

/// Two static members, `a` and `b`, settled in a first generation of
/// `group`: (`victim`, the other), or what kept them from settling.
pub(crate) fn first_generation(
    brokers: &str,
    group: &str,
    victim: Victim,
) -> anyhow::Result<Result<(GroupMember, GroupMember), String>> {
    let member = |instance: &str| GroupMember::connect(brokers, group, instance);
    let mut first = match settle(vec![
        Loop::start(member("a")?, Step::Join),
        Loop::start(member("b")?, Step::Join),
    ])? {
        Ok(members) => members,
        Err(what) => return Ok(Err(format!("the first generation did not settle: {what}"))),
    };
    let Some(l) = first.iter().position(GroupMember::is_leader) else {
        return Ok(Err("the first generation has no leader".into()));
    };
    let follower = first.remove(1 - l);
    let leader = first.remove(0);
    Ok(Ok(match victim {
        Victim::Leader => (leader, follower),
        Victim::Follower => (follower, leader),
    }))
}

/// Kills `m` (its connection closes, as a SIGKILLed process's does) and
/// starts its next incarnation's loop, giving its join time to reach the
/// coordinator before the case's next step.
fn kill_and_restart(m: GroupMember) -> anyhow::Result<Loop> {
    let next = m.reborn()?;
    drop(m);
    let reborn = Loop::start(next, Step::Join);
    thread::sleep(LAND);
    Ok(reborn)
}

/// Heartbeats until the coordinator says a new round has begun.
fn await_round(m: &mut GroupMember) -> anyhow::Result<()> {
    anyhow::ensure!(
        heartbeat_until_refused(m, T)?.is_some(),
        "the newcomer's join opened no round"
    );
    Ok(())
}

/// Heartbeats `m` until the coordinator refuses one, for at most `within`:
/// the refusal, or `None` if every heartbeat succeeded.
pub(crate) fn heartbeat_until_refused(
    m: &mut GroupMember,
    within: Duration,
) -> anyhow::Result<Option<ResponseError>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = m.heartbeat()? {
            return Ok(Some(e));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        thread::sleep(HEARTBEAT_INTERVAL);
    }
}

/// `m`'s JoinGroup, answered when its round completes.
pub(crate) fn join_in_thread(
    mut m: GroupMember,
) -> JoinHandle<(GroupMember, anyhow::Result<Answer>)> {
    thread::spawn(move || {
        let answer = m.join();
        (m, answer)
    })
}

/// Waits for the answers of joins `join_in_thread` sent: the members, or
/// the first refusal ("`instance`'s join: `error`").
pub(crate) fn collect_joins(
    joins: Vec<JoinHandle<(GroupMember, anyhow::Result<Answer>)>>,
) -> anyhow::Result<Result<Vec<GroupMember>, String>> {
    let mut joined = vec![];
    for j in joins {
        let (m, answer) = j
            .join()
            .map_err(|_| anyhow::anyhow!("a join's thread panicked"))?;
        if let Some(e) = answer? {
            return Ok(Err(format!("{}'s join: {e}", m.instance)));
        }
        joined.push(m);
    }
    Ok(Ok(joined))
}

/// `None` if every partition has exactly one owner.
pub(crate) fn owners(members: &[GroupMember]) -> Option<String> {
    let mut by_partition: BTreeMap<i32, Vec<String>> =
        (0..PARTITIONS).map(|p| (p, vec![])).collect();
    let mut shares = vec![];
    for m in members {
        let (generation, partitions) = m.assigned.clone().unwrap_or((-1, vec![]));
        shares.push(format!(
            "{} {partitions:?} (generation {generation})",
            m.instance
        ));
        for p in partitions {
            by_partition.entry(p).or_default().push(m.instance.clone());
        }
    }
    let wrong: Vec<String> = by_partition
        .iter()
        .filter(|(_, owners)| owners.len() != 1)
        .map(|(p, owners)| format!("partition {p} owned by {owners:?}"))
        .collect();
    (!wrong.is_empty()).then(|| format!("{}; shares: {}", wrong.join(", "), shares.join(", ")))
}

/// A member's next step in its consumer loop.
#[derive(Clone, Copy)]
pub(crate) enum Step {
    Join,
    /// SyncGroup for the generation it joined (with a plan if it leads).
    Sync,
    Heartbeat,
}

/// What a member's loop last saw: its synced generation and how many
/// heartbeats in a row at it succeeded.
#[derive(Clone, Default)]
struct Progress {
    synced: Option<i32>,
    heartbeats: u32,
    last: String,
    fatal: Option<String>,
}

/// A member running a consumer's loop in its own thread.
pub(crate) struct Loop {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    thread: JoinHandle<GroupMember>,
}

impl Loop {
    pub(crate) fn start(mut m: GroupMember, first: Step) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // A member that synced before its loop starts (a leader stepped by
        // hand) is synced at its generation already.
        let progress = Arc::new(Mutex::new(Progress {
            synced: m
                .assigned
                .as_ref()
                .map(|(g, _)| *g)
                .filter(|g| *g == m.generation),
            ..Progress::default()
        }));
        let (s, p) = (stop.clone(), progress.clone());
        let thread = thread::spawn(move || {
            let mut step = first;
            while !s.load(Ordering::Relaxed) {
                let answer = match step {
                    Step::Join => m.join().map(|a| (a, Step::Sync)),
                    Step::Sync => m.sync(&plan(&m)).map(|a| (a, Step::Heartbeat)),
                    Step::Heartbeat => {
                        thread::sleep(HEARTBEAT_INTERVAL);
                        m.heartbeat().map(|a| (a, Step::Heartbeat))
                    }
                };
                let mut seen = p.lock().expect("progress lock");
                let (answer, next) = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        seen.fatal = Some(format!("{}: {e:#}", m.instance));
                        break;
                    }
                };
                seen.last = format!("{} {:?}", m.instance, answer.map(|e| e.to_string()));
                if let Some(ResponseError::FencedInstanceId) = answer {
                    seen.fatal = Some(format!("{} fenced (fatal to librdkafka)", m.instance));
                    break;
                }
                match (step, answer) {
                    (Step::Sync, None) => {
                        seen.synced = Some(m.generation);
                        seen.heartbeats = 0;
                    }
                    (Step::Heartbeat, None) => seen.heartbeats += 1,
                    _ => seen.heartbeats = 0,
                }
                drop(seen);
                step = if answer.is_some() {
                    // Rejoin, as a consumer does, after a beat.
                    thread::sleep(HEARTBEAT_INTERVAL / 2);
                    Step::Join
                } else {
                    next
                };
            }
            m
        });
        Self {
            stop,
            progress,
            thread,
        }
    }

    fn seen(&self) -> Progress {
        self.progress.lock().expect("progress lock").clone()
    }
}

/// Runs the loops until every member has synced one generation and
/// heartbeats at it; gives the members back, or what kept them apart.
pub(crate) fn settle(loops: Vec<Loop>) -> anyhow::Result<Result<Vec<GroupMember>, String>> {
    let deadline = Instant::now() + 2 * T;
    let verdict = loop {
        let seen: Vec<Progress> = loops.iter().map(Loop::seen).collect();
        if let Some(fatal) = seen.iter().find_map(|s| s.fatal.clone()) {
            break Err(fatal);
        }
        let generations: Vec<Option<i32>> = seen.iter().map(|s| s.synced).collect();
        if generations[0].is_some()
            && generations.iter().all(|g| *g == generations[0])
            && seen.iter().all(|s| s.heartbeats >= SETTLED_HEARTBEATS)
        {
            break Ok(());
        }
        if Instant::now() > deadline {
            let last: Vec<String> = seen.iter().map(|s| s.last.clone()).collect();
            break Err(format!(
                "synced generations {generations:?}, last answers {last:?}"
            ));
        }
        thread::sleep(HEARTBEAT_INTERVAL);
    };
    for l in &loops {
        l.stop.store(true, Ordering::Relaxed);
    }
    let mut members = vec![];
    for l in loops {
        members.push(
            l.thread
                .join()
                .map_err(|_| anyhow::anyhow!("a member's thread panicked"))?,
        );
    }
    Ok(verdict.map(|()| members))
}
