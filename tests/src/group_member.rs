//! A bare classic consumer-group member over the Kafka wire protocol
//! (JoinGroup, SyncGroup, Heartbeat), for the broker contract's restart
//! probe. That probe must land a static member's restart between a
//! rebalance's JoinGroup answers and its leader's SyncGroup, and librdkafka
//! has no hook there; this member sends one request at a time, when told.
//! kafka-protocol encodes the messages; this file frames them and keeps the
//! member's view of its group.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, RequestHeader, ResponseHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// JoinGroup v5 is the first with `group.instance.id` (KIP-345); these are
/// the last versions before the flexible encoding, which every broker here
/// speaks.
const JOIN_VERSION: i16 = 5;
const SYNC_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const FIND_COORDINATOR_VERSION: i16 = 1;
/// The topic the members subscribe to (the broker never reads it) and the
/// consumer protocol they speak.
const TOPIC: &str = "probe.group";
const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";
/// The consumer protocol's subscription and assignment, version 0.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;
/// Kafka's least (`group.min.session.timeout.ms`), as the stage tests use:
/// a dead member leaves within seconds, and a live one heartbeats far more
/// often than that while the probe steps the others.
const SESSION_TIMEOUT_MS: i32 = 6_000;
const REBALANCE_TIMEOUT_MS: i32 = 10_000;

/// An error code of a group response: `None` is success.
pub type Answer = Option<ResponseError>;

/// One static member of a consumer group on its own connection. A one-broker
/// cluster is its own group coordinator, so the member talks to `addr` alone.
pub struct GroupMember {
    stream: TcpStream,
    correlation: i32,
    addr: String,
    group: String,
    /// Its `group.instance.id`.
    pub instance: String,
    /// The member id the coordinator gave it; empty before its first join.
    pub id: String,
    /// The generation of its last successful join.
    pub generation: i32,
    /// The leader of that generation.
    pub leader: String,
    /// The members the leader assigns to, as (member id, instance id): the
    /// leader's join answer only.
    pub members: Vec<(String, String)>,
    /// The generation and partitions of its last successful SyncGroup.
    pub assigned: Option<(i32, Vec<i32>)>,
    /// Which incarnation of its instance this is, from 0: a leader's plan
    /// depends on it (`group_restart::deal`).
    pub incarnation: usize,
    /// The user data of its subscription: changing it changes the metadata
    /// its next join sends, as a cooperative consumer's does once it has
    /// revoked partitions (`group_rejoin`).
    pub user_data: Option<Bytes>,
}

impl GroupMember {
    /// Connects a new incarnation of `instance`, with no member id yet, once
    /// `addr` coordinates `group`.
    pub fn connect(addr: &str, group: &str, instance: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        // A JoinGroup waits for the whole round; anything longer is a hang.
        stream.set_read_timeout(Some(Duration::from_millis(
            (REBALANCE_TIMEOUT_MS + 20_000) as u64,
        )))?;
        let mut member = Self {
            stream,
            correlation: 0,
            addr: addr.into(),
            group: group.into(),
            instance: instance.into(),
            id: String::new(),
            generation: -1,
            leader: String::new(),
            members: vec![],
            assigned: None,
            incarnation: 0,
            user_data: None,
        };
        member.await_coordinator()?;
        Ok(member)
    }

    /// FindCoordinator until the broker names one. A one-broker cluster is
    /// its own coordinator, but Apache Kafka creates `__consumer_offsets`
    /// only when a client first asks, and answers group requests with
    /// COORDINATOR_NOT_AVAILABLE until then.
    fn await_coordinator(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let req = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(self.group.clone()))
                .with_key_type(0);
            let resp = self.call(FIND_COORDINATOR_VERSION, &req)?;
            match ResponseError::try_from_code(resp.error_code) {
                None => return Ok(()),
                Some(e) if Instant::now() > deadline => {
                    anyhow::bail!("no coordinator for {} after 30 s: {e}", self.group)
                }
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The next incarnation of this member's instance, as a restarted
    /// process: a new connection, no member id yet.
    pub fn reborn(&self) -> anyhow::Result<Self> {
        let mut next = Self::connect(&self.addr, &self.group, &self.instance)?;
        next.incarnation = self.incarnation + 1;
        Ok(next)
    }

    /// This member leads its generation.
    pub fn is_leader(&self) -> bool {
        !self.id.is_empty() && self.leader == self.id
    }

    /// Joins (or rejoins) the group and waits for the round's answer. Kafka
    /// gives a static member its id in the answer; a broker that asks for a
    /// join with an id first (MEMBER_ID_REQUIRED, KIP-394's dynamic-member
    /// handshake, as crabka does) gets one more join with it, as librdkafka
    /// sends. UNKNOWN_MEMBER_ID forgets the id.
    pub fn join(&mut self) -> anyhow::Result<Answer> {
        let subscription = consumer_bytes(
            &ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_static_str(TOPIC)])
                .with_user_data(self.user_data.clone()),
        )?;
        loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(self.id.clone()))
                .with_group_instance_id(Some(StrBytes::from_string(self.instance.clone())))
                .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR))
                    .with_metadata(subscription.clone())]);
            let resp = self.call(JOIN_VERSION, &req)?;
            let answer = ResponseError::try_from_code(resp.error_code);
            match answer {
                // Once: a broker that asks again would loop for ever.
                Some(ResponseError::MemberIdRequired) if self.id.is_empty() => {
                    self.id = resp.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => self.id.clear(),
                Some(_) => {}
                None => {
                    self.id = resp.member_id.to_string();
                    self.generation = resp.generation_id;
                    self.leader = resp.leader.to_string();
                    self.members = resp
                        .members
                        .iter()
                        .map(|m| {
                            let instance = m.group_instance_id.as_deref().unwrap_or_default();
                            (m.member_id.to_string(), instance.to_string())
                        })
                        .collect();
                }
            }
            return Ok(answer);
        }
    }

    /// SyncGroup for its generation, with `plan` (member id → partitions) if
    /// it leads, and records what the coordinator assigned it.
    pub fn sync(&mut self, plan: &BTreeMap<String, Vec<i32>>) -> anyhow::Result<Answer> {
        let mut assignments = vec![];
        for (member, partitions) in plan {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(partitions.clone()),
            ]);
            assignments.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member.clone()))
                    .with_assignment(consumer_bytes(&assignment)?),
            );
        }
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.id.clone()))
            .with_group_instance_id(Some(StrBytes::from_string(self.instance.clone())))
            .with_assignments(assignments);
        let resp = self.call(SYNC_VERSION, &req)?;
        let answer = ResponseError::try_from_code(resp.error_code);
        if answer.is_none() {
            let mut partitions = vec![];
            let mut bytes = resp.assignment;
            if bytes.remaining() >= 2 {
                let version = bytes.get_i16();
                let a = ConsumerProtocolAssignment::decode(&mut bytes, version)?;
                for tp in a.assigned_partitions {
                    partitions.extend(tp.partitions);
                }
            }
            partitions.sort_unstable();
            self.assigned = Some((self.generation, partitions));
        }
        Ok(answer)
    }

    /// One heartbeat for its generation.
    pub fn heartbeat(&mut self) -> anyhow::Result<Answer> {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.id.clone()))
            .with_group_instance_id(Some(StrBytes::from_string(self.instance.clone())));
        let resp = self.call(HEARTBEAT_VERSION, &req)?;
        Ok(ResponseError::try_from_code(resp.error_code))
    }

    /// One request and its response, framed as the protocol says: a length,
    /// the header, the body.
    fn call<R: Request>(&mut self, version: i16, req: &R) -> anyhow::Result<R::Response> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir-broker-contract")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version))?;
        req.encode(&mut buf, version)?;
        self.stream
            .write_all(&i32::try_from(buf.len())?.to_be_bytes())?;
        self.stream.write_all(&buf)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(len))?];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let h = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        anyhow::ensure!(
            h.correlation_id == self.correlation,
            "response {} to request {}",
            h.correlation_id,
            self.correlation
        );
        R::Response::decode(&mut body, version)
    }
}

/// A consumer-protocol message as it travels inside a group message: its
/// version, then its body.
fn consumer_bytes(message: &impl Encodable) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&CONSUMER_PROTOCOL_VERSION.to_be_bytes());
    message.encode(&mut buf, CONSUMER_PROTOCOL_VERSION)?;
    Ok(buf.freeze())
}
