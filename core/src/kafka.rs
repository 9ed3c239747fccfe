//! Kafka connection settings shared by every stage.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Partitions for topics this stage creates when they are missing.
    pub partitions: i32,
    /// Replication factor for topics this stage creates.
    pub replication: i32,
    /// Extra librdkafka properties (security.protocol, sasl.*, ...), applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            partitions: 4,
            replication: 1,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A client config with the brokers set and `overrides` applied, then the
    /// user's extra properties, which win.
    pub fn client_config(&self, overrides: &[(&str, &str)]) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in overrides {
            cfg.set(*k, *v);
        }
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// A partition's end offset as of the consumer's last fetch from it: no
/// request is made, so this is cheap enough to read at every commit.
/// `None` before the first fetch.
pub fn cached_end_offset<C: rdkafka::consumer::ConsumerContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client owns a live handle for as long as `client` is
    // borrowed, the topic is a NUL-terminated string that outlives the call,
    // and librdkafka only writes the two offsets. rdkafka 0.39 exposes only
    // the networked `fetch_watermarks`, which blocks.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
