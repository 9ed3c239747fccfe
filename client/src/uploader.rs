//! `Uploader`: one call, one request to ingest's batch route, and what
//! became of each event. It does not retry: it says whether a retry can
//! help (and after how long the server asked), and the events keep their
//! ids, so the caller retries them as they are. `BatchUploader` builds its
//! queue and retries on it.

use crate::event::{Encoded, Event};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Where to send, and how.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// ingest's base URL, such as `https://ingest.example.com`.
    pub endpoint: String,
    /// The write key, sent as `Authorization: Bearer`.
    pub write_key: String,
    /// One request's time limit. Default 30 s.
    pub timeout: Duration,
    /// Gzip request bodies. Default on.
    pub gzip: bool,
    /// Stamp each attempt's `sent_at`, so ingest corrects the event times
    /// of a client whose clock is wrong. Default on.
    pub stamp_sent_at: bool,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>, write_key: impl Into<String>) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            write_key: write_key.into(),
            timeout: Duration::from_secs(30),
            gzip: true,
            stamp_sent_at: true,
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventResult {
    pub event_id: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kafka has it; weir counts it once. Warnings flag what ingest noticed
    /// (an old timestamp, say) without refusing it.
    Accepted { warnings: Vec<String> },
    /// ingest refused it and says why; sending it again cannot help.
    Rejected { message: String },
    /// The client gave up on it (retries exhausted, or closed before it was
    /// sent): it may or may not have been counted.
    Dropped { reason: String },
}

/// Why a request got no per-event answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer (refused, cut, timed out), a 408, 429 or 5xx: retry the
    /// same events, no sooner than `retry_after`.
    #[error("retryable: {reason}")]
    Retryable {
        /// The HTTP status, or `None` when there was no answer.
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 413: the request is too large; send fewer events at a time.
    #[error("the request is too large: {0}")]
    TooLarge(String),
    /// Any other refusal of the whole request (a bad write key, say):
    /// retrying cannot help.
    #[error("refused: {0}")]
    Refused(String),
}

/// Sends batches of events, one request a call.
#[derive(Debug, Clone)]
pub struct Uploader {
    config: ClientConfig,
    http: reqwest::Client,
}

impl Uploader {
    pub fn new(config: ClientConfig) -> Result<Uploader, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Uploader { config, http })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// POSTs `events` as one batch; on an answer, the outcome of each, in
    /// the order given.
    pub async fn send(&self, events: &[Event]) -> Result<Vec<EventResult>, SendError> {
        let encoded: Vec<Encoded> = events.iter().map(Event::encode).collect();
        self.send_encoded(&encoded.iter().collect::<Vec<_>>()).await
    }

    /// `send`, for events written when they were queued.
    pub(crate) async fn send_encoded(
        &self,
        events: &[&Encoded],
    ) -> Result<Vec<EventResult>, SendError> {
        let sent_at = self.config.stamp_sent_at.then(now_ms);
        let mut bytes = Vec::with_capacity(events.iter().map(|e| e.len()).sum::<usize>() + 16);
        bytes.extend_from_slice(b"{\"events\":[");
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            e.write_to(&mut bytes, sent_at);
        }
        bytes.extend_from_slice(b"]}");
        let mut req = self
            .http
            .post(format!("{}/v1/events/batch", self.config.endpoint))
            .bearer_auth(&self.config.write_key)
            .header("content-type", "application/json");
        if self.config.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).expect("writing to memory");
            bytes = gz.finish().expect("writing to memory");
            req = req.header("content-encoding", "gzip");
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                status: None,
                reason: format!("no answer: {e}"),
                retry_after: None,
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            StatusCode::ACCEPTED => Ok(results(events, &answer)),
            // A batch with no valid event: each one's reason.
            StatusCode::BAD_REQUEST if answer["error"]["rejected"].is_array() => {
                Ok(results(events, &answer["error"]))
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(SendError::TooLarge(message(&answer, status))),
            s if s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error() =>
            {
                Err(SendError::Retryable {
                    status: Some(s.as_u16()),
                    reason: message(&answer, status),
                    retry_after,
                })
            }
            s => Err(SendError::Refused(message(&answer, s))),
        }
    }
}

fn message(answer: &Value, status: StatusCode) -> String {
    match answer["error"]["message"].as_str() {
        Some(m) => format!("{status}: {m}"),
        None => status.to_string(),
    }
}

/// Per-event outcomes from an answer's `accepted` and `rejected` lists,
/// which name events by their index in the request.
fn results(events: &[&Encoded], answer: &Value) -> Vec<EventResult> {
    let mut out: Vec<EventResult> = events
        .iter()
        .map(|e| EventResult {
            event_id: e.id.clone(),
            outcome: Outcome::Dropped {
                reason: "ingest's answer did not mention this event".into(),
            },
        })
        .collect();
    let entries = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    for a in entries("accepted") {
        if let Some(r) = a["index"].as_u64().and_then(|i| out.get_mut(i as usize)) {
            let warnings = a["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    format!(
                        "{}: {}",
                        w["field"].as_str().unwrap_or(""),
                        w["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            r.outcome = Outcome::Accepted { warnings };
        }
    }
    for rj in entries("rejected") {
        if let Some(r) = rj["index"].as_u64().and_then(|i| out.get_mut(i as usize)) {
            r.outcome = Outcome::Rejected {
                message: rj["message"].as_str().unwrap_or("rejected").to_string(),
            };
        }
    }
    out
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_follow_the_answers_indexes() {
        let events = [Event::new("a"), Event::new("b"), Event::new("c")];
        let answer = json!({
            "accepted": [{"index": 0, "event_id": events[0].id()},
                         {"index": 2, "event_id": events[2].id(),
                          "warnings": [{"field": "timestamp", "message": "is 30 h old"}]}],
            "rejected": [{"index": 1, "message": "name: is required"}],
        });
        let encoded: Vec<Encoded> = events.iter().map(Event::encode).collect();
        let r = results(&encoded.iter().collect::<Vec<_>>(), &answer);
        assert_eq!(r[0].outcome, Outcome::Accepted { warnings: vec![] });
        assert_eq!(
            r[1].outcome,
            Outcome::Rejected {
                message: "name: is required".into()
            }
        );
        assert_eq!(
            r[2].outcome,
            Outcome::Accepted {
                warnings: vec!["timestamp: is 30 h old".into()]
            }
        );
        assert_eq!(r[2].event_id, events[2].id());
    }
}
