//! Topic names and their creation.

use crate::kafka::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The topics of the pipeline. Names are configurable so that several weirs
/// can share a cluster; the defaults are the ones docs/architecture.md names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    pub raw: String,
    pub clean: String,
    pub aggregates: String,
    pub late: String,
    pub invalid: String,
    pub state: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            raw: "events.raw".into(),
            clean: "events.clean".into(),
            aggregates: "aggregates.1m".into(),
            late: "events.late".into(),
            invalid: "events.invalid".into(),
            state: "processor.state".into(),
        }
    }
}

/// One topic to make sure of.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub compacted: bool,
}

/// Creates the topics that do not exist yet. An existing topic is left as it
/// is, whatever its partition count.
pub async fn ensure_topics(kafka: &KafkaConfig, specs: &[TopicSpec<'_>]) -> anyhow::Result<()> {
    // The admin API refuses an empty request, and there is nothing to do.
    if specs.is_empty() {
        return Ok(());
    }
    let replication = kafka.replication;
    let compact = [("cleanup.policy", "compact")];
    let new: Vec<NewTopic> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(s.name, s.partitions, TopicReplication::Fixed(replication));
            if s.compacted {
                compact.iter().fold(t, |t, (k, v)| t.set(k, v))
            } else {
                t
            }
        })
        .collect();
    // Stages and brokers start together under compose or Kubernetes, so the
    // broker may not answer yet: retry for about two minutes before giving up.
    let admin: AdminClient<DefaultClientContext> = kafka.client_config(&[]).create()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(5)));
    let mut attempt = 0;
    let results = loop {
        attempt += 1;
        match admin.create_topics(&new, &opts).await {
            Ok(r) => break r,
            Err(e) if attempt < 24 => {
                tracing::warn!(error = %e, attempt, "creating topics failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!("cannot create topics after {attempt} attempts: {e}"),
        }
    };
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
