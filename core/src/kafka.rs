//! Kafka connection settings shared by every stage.

use rdkafka::message::Headers;
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

/// The value of header `key`, if present and UTF-8.
pub fn header_str<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    let h = headers?.iter().find(|h| h.key == key)?;
    std::str::from_utf8(h.value?).ok()
}
