//! `ClickHouseSink`: idempotent batch inserts into ClickHouse.
//!
//! Both tables replace rather than add (see the migrations), so inserting the
//! same batch twice, after a crash between insert and offset commit, or a
//! processor re-emission, changes nothing that FINAL queries see.

use crate::config::ClickHouseConfig;
use crate::late::{EventKey, LateMinute, Lookup, LATE_LANE, MINUTE_MS};
use crate::migrations;
use crate::namespaces::NamespaceTable;
use crate::store::CountStore;
use clickhouse::{Client, Row};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use weir_core::health::HealthCheck;
use weir_core::{Event, WindowAggregate};

#[derive(Debug, Clone, Row, Serialize)]
pub struct EventRow {
    pub tenant: String,
    pub event_id: String,
    pub name: String,
    pub namespace: String,
    pub timestamp: i64,
    pub received_at: i64,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub customer_id: Option<String>,
    pub channel: String,
    pub service: String,
    pub properties: Vec<(String, String)>,
    pub user_properties: Vec<(String, String)>,
    pub context: String,
    pub items: String,
    pub description: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    /// 1: counted through the late lane (see `late`).
    pub late: u8,
}

impl EventRow {
    pub fn new(e: Event, partition: i32, offset: i64) -> Self {
        let props = |m: std::collections::BTreeMap<String, weir_core::event::PropertyValue>| {
            m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
        };
        Self {
            namespace: e.namespace().to_string(),
            context: e
                .context
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
                .unwrap_or_default(),
            items: if e.items.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&e.items).unwrap_or_default()
            },
            tenant: e.tenant,
            event_id: e.event_id,
            name: e.name,
            timestamp: e.timestamp,
            received_at: e.received_at,
            user_id: e.user_id,
            anonymous_id: e.anonymous_id,
            session_id: e.session_id,
            customer_id: e.customer_id,
            channel: e.channel.unwrap_or_default(),
            service: e.service.unwrap_or_default(),
            properties: props(e.properties),
            user_properties: props(e.user_properties),
            description: e.description.unwrap_or_default(),
            kafka_partition: partition as u32,
            kafka_offset: offset as u64,
            late: 0,
        }
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct AggregateRow {
    pub tenant: String,
    pub name: String,
    pub channel: String,
    pub window_start: i64,
    pub window_end: i64,
    pub input_partition: u32,
    pub count: u64,
    pub user_ids: Vec<String>,
    pub emitted_seq: u64,
    pub is_final: u8,
}

impl From<WindowAggregate> for AggregateRow {
    fn from(a: WindowAggregate) -> Self {
        Self {
            tenant: a.tenant,
            name: a.name,
            channel: a.channel,
            window_start: a.window_start,
            window_end: a.window_end,
            input_partition: a.input_partition as u32,
            count: a.count.max(0) as u64,
            user_ids: a.users,
            emitted_seq: a.emitted_seq.max(0) as u64,
            is_final: a.is_final as u8,
        }
    }
}

/// One record of `events.late` or `events.invalid`, for the late and
/// invalid rates. Its Kafka position is its key: a re-read replaces it.
#[derive(Debug, Row, Serialize)]
pub struct DeadLetterRow {
    /// `late` or `invalid`.
    pub kind: &'static str,
    pub reason: String,
    pub kafka_partition: u32,
    pub kafka_offset: u64,
    pub dead_lettered_at: i64,
    /// The record's key: the event id, as ingest keyed it.
    pub event_id: String,
    pub name: String,
}

#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
}

impl ClickHouseSink {
    /// Connects, creates the database and applies the migrations.
    pub async fn build(
        cfg: &ClickHouseConfig,
        namespaces: &[NamespaceTable],
    ) -> anyhow::Result<Self> {
        let base = Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_password(&cfg.password);
        let create = format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            cfg.database.replace('`', "")
        );
        // ClickHouse may still be starting when the aggregator does: wait up to a minute.
        let mut attempt = 0;
        while let Err(e) = base.query(&create).execute().await {
            attempt += 1;
            anyhow::ensure!(attempt < 30, "ClickHouse at {} is not usable: {e}", cfg.url);
            tracing::warn!(error = %e, attempt, "ClickHouse not reachable yet; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        let client = base.with_database(&cfg.database);
        migrations::apply(&client, namespaces).await?;
        Ok(Self { client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn health_check(&self) -> anyhow::Result<()> {
        self.client.query("SELECT 1").execute().await?;
        Ok(())
    }

    /// This sink's health check, which the service shell polls into `/readyz`.
    pub fn health(&self) -> ClickHouseHealth {
        ClickHouseHealth(self.clone())
    }

    /// Recomputes the hourly rollup of the hours in `[from_ms, to_ms)`
    /// (whole hours) from the minute table.
    pub async fn refresh_range(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<()> {
        let starts: BTreeSet<i64> = (from_ms.div_euclid(HOUR_MS)..to_ms.div_euclid(HOUR_MS))
            .map(|h| h * HOUR_MS)
            .collect();
        self.refresh_hours(&starts).await
    }

    pub async fn insert_dead_letters(&self, rows: &[DeadLetterRow]) -> anyhow::Result<()> {
        self.insert("dead_letters", rows).await
    }

    async fn insert<R>(&self, table: &str, rows: &[R]) -> anyhow::Result<()>
    where
        R: Row + Serialize + for<'a> clickhouse::RowWrite<Value<'a> = R>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<R>(table).await?;
        for r in rows {
            insert.write(r).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

/// The rollup's unit.
const HOUR_MS: i64 = 3_600_000;

/// A list bound as an SQL tuple, `('a', 'b')`, the right side of `IN` (the
/// client binds a slice as an array, which `IN` does not take). Never empty
/// where it is used.
struct SqlTuple<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for SqlTuple<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// The production store: every step one ClickHouse statement.
impl CountStore for ClickHouseSink {
    async fn insert_events<'a>(&'a self, rows: &'a [&'a EventRow]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<EventRow>("events").await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Into the Null table whose view turns user ids into mergeable states.
    async fn insert_aggregates(&self, rows: &[AggregateRow]) -> anyhow::Result<()> {
        self.insert("event_counts_1m_in", rows).await
    }

    async fn stored_keys(&self, lookup: &Lookup) -> anyhow::Result<HashSet<EventKey>> {
        if lookup.is_empty() {
            return Ok(HashSet::new());
        }
        let days: Vec<u32> = lookup
            .days
            .iter()
            .map(|d| (d.div_euclid(86_400_000)).clamp(0, u16::MAX as i64) as u32)
            .collect();
        let found: Vec<(String, String)> = self
            .client
            .query(
                "SELECT DISTINCT toString(tenant), event_id FROM events \
                 WHERE tenant IN ? AND toUInt32(toDate(timestamp)) IN ? AND event_id IN ?",
            )
            .bind(SqlTuple(&lookup.tenants.iter().collect::<Vec<_>>()))
            .bind(SqlTuple(&days))
            .bind(SqlTuple(&lookup.event_ids.iter().collect::<Vec<_>>()))
            .fetch_all()
            .await?;
        Ok(found.into_iter().collect())
    }

    /// Recomputes the late lane of `minutes` from the late events stored
    /// (see `late`): one row per minute, name and channel, with every
    /// distinct late event and user of it, versioned by ClickHouse's clock.
    /// It reads `events` without FINAL, counting distinct ids: a late row is
    /// never replaced by an on-time one (that is stored first, or the late
    /// copy is not stored), so FINAL would only merge copies of one event,
    /// and it cost a merge of whole day partitions on every batch.
    async fn recompute_late(&self, minutes: &BTreeSet<LateMinute>) -> anyhow::Result<()> {
        if minutes.is_empty() {
            return Ok(());
        }
        let tenants: BTreeSet<&str> = minutes.iter().map(|m| m.tenant.as_str()).collect();
        let starts: BTreeSet<i64> = minutes.iter().map(|m| m.window_start).collect();
        let days: BTreeSet<u32> = starts
            .iter()
            .map(|s| s.div_euclid(86_400_000).clamp(0, u16::MAX as i64) as u32)
            .collect();
        let sql = format!(
            "INSERT INTO event_counts_1m_in \
               (tenant, name, channel, window_start, window_end, input_partition, count, \
                user_ids, emitted_seq, is_final) \
             SELECT tenant, name, channel, fromUnixTimestamp64Milli(ws, 'UTC'), \
                    fromUnixTimestamp64Milli(ws + {MINUTE_MS}, 'UTC'), {LATE_LANE}, \
                    uniqExact(event_id), \
                    groupUniqArrayIf(ifNull(user_id, ifNull(anonymous_id, '')), \
                                     isNotNull(user_id) OR isNotNull(anonymous_id)), \
                    toUInt64(toUnixTimestamp64Nano(now64(9))), 1 \
             FROM ( \
               SELECT tenant, name, channel, event_id, user_id, anonymous_id, \
                      intDiv(toUnixTimestamp64Milli(timestamp), {MINUTE_MS}) * {MINUTE_MS} AS ws \
               FROM events \
               WHERE late = 1 AND tenant IN ? AND toUInt32(toDate(timestamp)) IN ? \
             ) \
             WHERE ws IN ? \
             GROUP BY tenant, name, channel, ws"
        );
        self.client
            .query(&sql)
            .bind(SqlTuple(&tenants.into_iter().collect::<Vec<_>>()))
            .bind(SqlTuple(&days.into_iter().collect::<Vec<_>>()))
            .bind(SqlTuple(&starts.iter().collect::<Vec<_>>()))
            .execute()
            .await?;
        Ok(())
    }

    /// Recomputes the hourly rollup for every hour of the minutes starting
    /// at `starts`, from the minute table (see migration 0004). Runs after
    /// the rows are inserted and before their offsets are committed, so a
    /// crash in between redoes it.
    async fn refresh_hours(&self, starts: &BTreeSet<i64>) -> anyhow::Result<()> {
        let hours: Vec<i64> = starts
            .iter()
            .map(|s| s.div_euclid(HOUR_MS))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
            return Ok(());
        };
        // One query for every hour, next to each other or days apart (late
        // events); the range bounds let ClickHouse skip other partitions.
        self.client
            .query(
                "INSERT INTO event_counts_1h \
                 SELECT tenant, name, any(namespace), channel, toStartOfHour(window_start) AS hour, \
                        sum(count), uniqCombined64MergeState(users), uniqExactMergeState(users_exact), \
                        toUInt64(toUnixTimestamp64Nano(now64(9))) \
                 FROM event_counts_1m FINAL \
                 WHERE window_start >= fromUnixTimestamp64Milli(?, 'UTC') \
                   AND window_start < fromUnixTimestamp64Milli(?, 'UTC') \
                   AND intDiv(toUnixTimestamp64Milli(window_start), 3600000) IN ? \
                 GROUP BY tenant, name, channel, hour",
            )
            .bind(first * HOUR_MS)
            .bind((last + 1) * HOUR_MS)
            .bind(SqlTuple(&hours))
            .execute()
            .await?;
        Ok(())
    }
}

/// ClickHouse answers `SELECT 1`: the aggregator's inserts and the query API
/// both need it.
pub struct ClickHouseHealth(ClickHouseSink);

impl HealthCheck for ClickHouseHealth {
    fn name(&self) -> String {
        "clickhouse".into()
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            // The reason is public on /readyz; the error itself goes to the log.
            self.0.health_check().await.map_err(|e| {
                tracing::debug!(error = %format!("{e:#}"), "ClickHouse health check failed");
                "ClickHouse does not answer".to_string()
            })
        })
    }
}
