//! Avro in the Confluent Schema Registry wire format (magic byte, 4-byte schema
//! id, Avro binary), through `schema_registry_converter`.
//!
//! Schemas are checked into `core/schemas/` and registered under
//! `<topic>-value` with BACKWARD compatibility when a stage starts.

use crate::{Event, WindowAggregate};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const EVENT_SCHEMA: &str = include_str!("../schemas/event.avsc");
pub const AGGREGATE_SCHEMA: &str = include_str!("../schemas/window_aggregate.avsc");

/// The largest single allocation decoding a payload may make. apache-avro
/// sizes a string, array or map by the length the payload claims before
/// reading it, up to 512 MiB by default, so a poison record of a few bytes
/// made the processor allocate hundreds of MiB (found by
/// `fuzz/` processor_avro). weir's records are far smaller: Kafka caps a
/// record at 1 MB by default, and ingest bounds strings, properties and items.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Sets apache-avro's allocation limit to `MAX_DECODE_ALLOCATION_BYTES` and
/// returns the limit in force. The limit is process-wide and the first call
/// wins, so this runs before any decoding: `Codec::new` calls it.
pub fn limit_decode_allocations() -> usize {
    apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES)
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached; the same call may succeed later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The bytes or the value are wrong and always will be.
    #[error("{0}")]
    Invalid(String),
}

impl From<SRCError> for CodecError {
    fn from(e: SRCError) -> Self {
        let msg = match &e.cause {
            Some(c) => format!("{}: {c}", e.error),
            None => e.error.clone(),
        };
        if e.retriable {
            CodecError::Unavailable(msg)
        } else {
            CodecError::Invalid(msg)
        }
    }
}

pub struct Codec {
    registry_url: String,
    http: reqwest::Client,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    event_subject: SubjectNameStrategy,
    aggregate_topic: String,
    aggregate_subject: SubjectNameStrategy,
    /// Subjects of other aggregate topics, by topic.
    extra_subjects: Mutex<HashMap<String, Arc<SubjectNameStrategy>>>,
}

impl Codec {
    /// `event_topic` and `aggregate_topic` name the subjects the two schemas
    /// are registered under.
    pub fn new(
        registry_url: &str,
        event_topic: &str,
        aggregate_topic: &str,
    ) -> anyhow::Result<Self> {
        limit_decode_allocations();
        let settings = SrSettings::new_builder(registry_url.to_string())
            .set_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("schema registry settings: {e}"))?;
        let supplied = |name: &str, schema: &str| {
            SuppliedSchema::new(Some(name.into()), SchemaType::Avro, schema.into())
        };
        Ok(Self {
            registry_url: registry_url.trim_end_matches('/').to_string(),
            // One client for the compatibility calls and the readiness probe.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
            event_subject: SubjectNameStrategy::TopicNameStrategyWithSchema(
                event_topic.into(),
                false,
                supplied("weir.Event", EVENT_SCHEMA),
            ),
            aggregate_topic: aggregate_topic.into(),
            aggregate_subject: SubjectNameStrategy::TopicNameStrategyWithSchema(
                aggregate_topic.into(),
                false,
                supplied("weir.WindowAggregate", AGGREGATE_SCHEMA),
            ),
            extra_subjects: Mutex::default(),
        })
    }

    /// Sets BACKWARD compatibility on both subjects and registers the schemas,
    /// so that an incompatible change fails at start-up, not on the first event.
    pub async fn register(&self) -> anyhow::Result<()> {
        for subject in [&self.event_subject, &self.aggregate_subject] {
            let name = subject.get_subject().map_err(|e| anyhow::anyhow!("{e}"))?;
            let url = format!("{}/config/{}", self.registry_url, name);
            let resp = self
                .http
                .put(&url)
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(r#"{"compatibility":"BACKWARD"}"#)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("schema registry at {} unreachable: {e}", self.registry_url)
                })?;
            anyhow::ensure!(
                resp.status().is_success(),
                "setting compatibility on {name}: HTTP {}",
                resp.status()
            );
        }
        self.encoder
            .get_schema_and_id(
                &self.event_subject.get_subject()?,
                self.event_subject.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("registering the event schema: {e}"))?;
        self.encoder
            .get_schema_and_id(
                &self.aggregate_subject.get_subject()?,
                self.aggregate_subject.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("registering the aggregate schema: {e}"))?;
        Ok(())
    }

    /// Whether the registry answers right now (for readiness probes).
    pub async fn registry_reachable(&self) -> bool {
        let url = format!("{}/subjects", self.registry_url);
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    pub async fn encode_event(&self, event: &Event) -> Result<Vec<u8>, CodecError> {
        Ok(self
            .encoder
            .encode_struct(event, &self.event_subject)
            .await?)
    }

    pub async fn encode_aggregate(&self, agg: &WindowAggregate) -> Result<Vec<u8>, CodecError> {
        Ok(self
            .encoder
            .encode_struct(agg, &self.aggregate_subject)
            .await?)
    }

    /// Encodes `agg` under `topic`'s own subject (registered on first use),
    /// for window specs whose aggregates have a topic of their own. Each
    /// topic's subject is built once.
    pub async fn encode_aggregate_to(
        &self,
        topic: &str,
        agg: &WindowAggregate,
    ) -> Result<Vec<u8>, CodecError> {
        if topic == self.aggregate_topic {
            return self.encode_aggregate(agg).await;
        }
        let subject = {
            let mut subjects = self.extra_subjects.lock().expect("subjects lock");
            subjects
                .entry(topic.to_string())
                .or_insert_with(|| {
                    Arc::new(SubjectNameStrategy::TopicNameStrategyWithSchema(
                        topic.into(),
                        false,
                        SuppliedSchema::new(
                            Some("weir.WindowAggregate".into()),
                            SchemaType::Avro,
                            AGGREGATE_SCHEMA.into(),
                        ),
                    ))
                })
                .clone()
        };
        Ok(self.encoder.encode_struct(agg, &subject).await?)
    }

    pub async fn decode_event(&self, bytes: Option<&[u8]>) -> Result<Event, CodecError> {
        self.decode(bytes).await
    }

    pub async fn decode_aggregate(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<WindowAggregate, CodecError> {
        self.decode(bytes).await
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<T, CodecError> {
        if bytes.is_none_or(|b| b.is_empty()) {
            return Err(CodecError::Invalid("empty payload".into()));
        }
        let decoded = self.decoder.decode(bytes).await?;
        apache_avro::from_value(&decoded.value).map_err(|e| {
            CodecError::Invalid(format!("payload does not match the expected record: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Context, Device, Item, PropertyValue};
    use apache_avro::{Reader, Schema, Writer};

    /// Writes `value` with `schema` and reads it back, as a consumer would.
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(schema: &str, value: &T) -> T {
        // As in the stages, where `Codec::new` sets the limit before any decoding.
        limit_decode_allocations();
        let schema = Schema::parse_str(schema).unwrap();
        let mut w = Writer::new(&schema, Vec::new()).unwrap();
        w.append_ser(value).unwrap();
        let bytes = w.into_inner().unwrap();
        let back = Reader::new(&bytes[..]).unwrap().next().unwrap().unwrap();
        apache_avro::from_value(&back).unwrap()
    }

    fn sample() -> Event {
        Event {
            event_id: "e1".into(),
            name: "cart.add".into(),
            timestamp: 1_700_000_000_123,
            received_at: 1_700_000_000_456,
            sent_at: None,
            tenant: "acme".into(),
            schema_version: 1,
            user_id: Some("u1".into()),
            anonymous_id: None,
            session_id: None,
            customer_id: Some("c".into()),
            channel: Some("web".into()),
            service: None,
            properties: [
                ("s".to_string(), PropertyValue::String("x".into())),
                ("n".to_string(), PropertyValue::Long(3)),
                ("f".to_string(), PropertyValue::Double(1.5)),
                ("b".to_string(), PropertyValue::Boolean(true)),
            ]
            .into(),
            user_properties: Default::default(),
            context: Some(Context {
                url: Some("https://x".into()),
                device: Some(Device {
                    os: Some("linux".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            items: vec![Item {
                id: Some("sku".into()),
                price: Some(9.5),
                quantity: Some(2),
                ..Default::default()
            }],
            description: None,
        }
    }

    #[test]
    fn event_round_trips_through_its_schema() {
        let event = sample();
        assert_eq!(round_trip(EVENT_SCHEMA, &event), event);
    }

    #[test]
    fn a_claimed_length_past_the_limit_is_refused_before_allocating() {
        assert_eq!(limit_decode_allocations(), MAX_DECODE_ALLOCATION_BYTES);
        let schema = Schema::parse_str(EVENT_SCHEMA).unwrap();
        // The first field, event_id, claims a 300 MB string; the rest is missing.
        let mut payload = vec![];
        let mut n = (300_000_000u64) << 1; // zigzag of a positive long
        while n >= 0x80 {
            payload.push((n as u8) | 0x80);
            n >>= 7;
        }
        payload.push(n as u8);
        let err = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .and_then(|r| r.read_value(&mut &payload[..]))
            .unwrap_err();
        assert!(err.to_string().contains("Unable to allocate"), "{err}");
    }

    #[test]
    fn aggregate_round_trips_through_its_schema() {
        let agg = WindowAggregate {
            tenant: "t".into(),
            name: "n".into(),
            channel: String::new(),
            window_start: 60_000,
            window_end: 120_000,
            input_partition: 3,
            count: 7,
            users: vec!["a".into(), "b".into()],
            emitted_seq: 42,
            is_final: true,
        };
        assert_eq!(round_trip(AGGREGATE_SCHEMA, &agg), agg);
    }
}
