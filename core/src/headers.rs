//! The Kafka headers weir's stages exchange: the one place their names are
//! spelled. A stage writes them through `RecordHeaders` and reads them
//! through `Header::read`, so a producer and its consumer cannot disagree on
//! a name.

use rdkafka::message::{Header as KafkaHeader, Headers, OwnedHeaders};

/// A header on a record one stage writes and another reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// W3C trace context: on `events.raw` (ingest) and carried onward by the
    /// processor to `events.clean`.
    TraceParent,
    /// `events.clean`: the start of the first primary window the event
    /// counts in (epoch ms).
    WindowStart,
    /// `events.late` (written by releases before late events were counted):
    /// why the event was dead-lettered.
    Reason,
    /// `events.late` (earlier releases): the partition's watermark when it
    /// arrived (epoch ms).
    Watermark,
    /// `events.late`, `events.invalid`: where the record came from,
    /// `<topic>/<partition>/<offset>`.
    Source,
    /// `events.invalid`: why the record could not be decoded.
    Error,
    /// `processor.state`: the last input offset a changelog entry reflects.
    Upto,
    /// `events.clean`: a late event put back by `processor replay-late`.
    Replayed,
    /// `events.clean`: the event came after its windows closed, so the
    /// aggregator counts it through the late lane (the value is the
    /// partition's watermark when it arrived, epoch ms).
    Late,
}

impl Header {
    /// The header's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Header::TraceParent => "traceparent",
            Header::WindowStart => "weir-window-start",
            Header::Reason => "weir-reason",
            Header::Watermark => "weir-watermark",
            Header::Source => "weir-source",
            Header::Error => "weir-error",
            Header::Upto => "weir-upto",
            Header::Replayed => "weir-replayed",
            Header::Late => "weir-late",
        }
    }

    /// This header's value on a record, if present and UTF-8.
    pub fn read<H: Headers>(self, headers: Option<&H>) -> Option<&str> {
        let h = headers?.iter().find(|h| h.key == self.name())?;
        std::str::from_utf8(h.value?).ok()
    }

    /// This header's value as an integer (offsets, epoch milliseconds).
    pub fn read_i64<H: Headers>(self, headers: Option<&H>) -> Option<i64> {
        self.read(headers)?.parse().ok()
    }
}

/// The headers of a record being produced.
#[derive(Debug, Default, Clone)]
pub struct RecordHeaders(Vec<(Header, String)>);

impl RecordHeaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `header` with `value`.
    pub fn with(mut self, header: Header, value: impl ToString) -> Self {
        self.0.push((header, value.to_string()));
        self
    }

    /// Adds `header` if there is a value.
    pub fn with_some(self, header: Header, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.with(header, v),
            None => self,
        }
    }

    /// The value of `header`, if added.
    pub fn get(&self, header: Header) -> Option<&str> {
        self.0
            .iter()
            .find(|(h, _)| *h == header)
            .map(|(_, v)| v.as_str())
    }

    /// The headers as librdkafka takes them.
    pub fn to_kafka(&self) -> OwnedHeaders {
        self.0.iter().fold(OwnedHeaders::new(), |out, (h, v)| {
            out.insert(KafkaHeader {
                key: h.name(),
                value: Some(v.as_str()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_headers_read_back_by_name() {
        let written = RecordHeaders::new()
            .with(Header::Upto, 42)
            .with(Header::Source, "events.raw/3/17")
            .with_some(Header::TraceParent, None::<&str>)
            .to_kafka();
        assert_eq!(Header::Upto.read_i64(Some(&written)), Some(42));
        assert_eq!(Header::Source.read(Some(&written)), Some("events.raw/3/17"));
        assert_eq!(Header::TraceParent.read(Some(&written)), None);
        assert_eq!(Header::Error.read(None::<&OwnedHeaders>), None);
        assert_eq!(written.count(), 2);
    }

    #[test]
    fn every_name_is_distinct() {
        let all = [
            Header::TraceParent,
            Header::WindowStart,
            Header::Reason,
            Header::Watermark,
            Header::Source,
            Header::Error,
            Header::Upto,
            Header::Replayed,
            Header::Late,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|h| h.name()).collect();
        assert_eq!(names.len(), all.len());
    }
}
