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

/// A consumer error after which the consumer reads nothing more. The one a
/// stage meets in practice: another instance joined the group with the same
/// `group.instance.id` (two pods with one `instance_id`), and the broker
/// fenced this one. Staying up would leave a ready stage that reads nothing,
/// so the stage stops with this error, and its supervisor restarts it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kafka consumer failed fatally and reads nothing more ({0}); if another \
     instance with this instance_id joined the group, give each instance its own"
)]
pub struct FatalConsumerError(pub rdkafka::error::KafkaError);

/// Sorts a consumer error: a fatal one is returned for the stage to stop on;
/// any other is logged, and the client recovers from it by itself.
pub fn consumer_error(e: rdkafka::error::KafkaError) -> Result<(), FatalConsumerError> {
    match e {
        rdkafka::error::KafkaError::MessageConsumptionFatal(_) => Err(FatalConsumerError(e)),
        e => {
            tracing::warn!(error = %e, "consumer error");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn only_fatal_consumer_errors_stop_a_stage() {
        let fenced = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId);
        let stop = consumer_error(fenced).unwrap_err();
        assert!(stop.to_string().contains("instance_id"), "{stop}");
        let transient = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(consumer_error(transient).is_ok());
    }
}
