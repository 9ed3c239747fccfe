//! The broker contract's rejoin probe: a member of a settled group that
//! joins again with changed subscription metadata must open a round the
//! others hear of. A cooperative consumer (librdkafka's cooperative-sticky,
//! which every weir stage uses) rejoins just so once it has revoked
//! partitions, and only that second round hands them to their new owner.
//! crabka answered a static member's rejoin from the settled state, so the
//! second round never came and the revoked partitions had no owner: one
//! chaos run lost two partitions' events after a broker restart left one
//! processor owning all four (docs/testing.md, "Two brokers").

use crate::broker_contract::{no, yes, Seen};
use crate::group_restart::{
    collect_joins, first_generation, heartbeat_until_refused, join_in_thread, owners, settle, Loop,
    Step, Victim, LAND,
};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use std::thread;
use std::time::Duration;

/// How long the other member heartbeats for a sign of the new round. A
/// coordinator answers the next heartbeat after the join; this is many.
const ROUND_HEARD: Duration = Duration::from_secs(3);

/// The leader's rejoin and a follower's, each in its own group.
pub fn probe(brokers: &str) -> anyhow::Result<Seen> {
    let mut broken = vec![];
    for victim in [Victim::Leader, Victim::Follower] {
        match rejoin(brokers, victim) {
            Ok(None) => {}
            Ok(Some(what)) => broken.push(format!("{victim:?} rejoined: {what}")),
            Err(e) => broken.push(format!("{victim:?} rejoined: error: {e:#}")),
        }
    }
    Ok(if broken.is_empty() {
        yes("a leader's and a follower's rejoin each opened a round, which settled with one owner per partition")
    } else {
        no(broken.join("; "))
    })
}

/// One case: `None` if the rejoin opened a round and the group settled with
/// one owner per partition, else what it did instead.
fn rejoin(brokers: &str, victim: Victim) -> anyhow::Result<Option<String>> {
    let group = format!("probe-rejoin-{victim:?}").to_lowercase();
    let (mut rejoiner, mut other) = match first_generation(brokers, &group, victim)? {
        Ok(pair) => pair,
        Err(what) => return Ok(Some(what)),
    };
    let generation = other.generation;
    rejoiner.user_data = Some(Bytes::from_static(b"revoked"));
    let rejoined = join_in_thread(rejoiner);
    thread::sleep(LAND);
    match heartbeat_until_refused(&mut other, ROUND_HEARD)? {
        Some(ResponseError::RebalanceInProgress) => {}
        Some(e) => return Ok(Some(format!("the other member's heartbeat: {e}"))),
        None => {
            return Ok(Some(format!(
                "no round: the other member's heartbeats at generation {generation} still succeed {:.0} s after the rejoin",
                (ROUND_HEARD + LAND).as_secs_f64()
            )))
        }
    }
    let joined = match collect_joins(vec![rejoined, join_in_thread(other)])? {
        Ok(joined) => joined,
        Err(what) => return Ok(Some(format!("in the new round, {what}"))),
    };
    if joined.iter().any(|m| m.generation <= generation) {
        return Ok(Some(format!(
            "the new round's joins were answered at generations {:?}, after generation {generation}",
            joined.iter().map(|m| m.generation).collect::<Vec<_>>()
        )));
    }
    let loops = joined
        .into_iter()
        .map(|m| Loop::start(m, Step::Sync))
        .collect();
    Ok(match settle(loops)? {
        Ok(members) => owners(&members),
        Err(what) => Some(format!("did not settle: {what}")),
    })
}
