//! Data files: a batch of `ArchivedEvent`s to bytes and back, in Parquet
//! (zstd) or `ndjson.gz`. Pure: no I/O.
//!
//! Parquet columns are typed from the event model: times are UTC millisecond
//! timestamps, ids and names are strings, the late mark a boolean. The open
//! maps (`properties`, `user_properties`) and the nested `context` and
//! `items` are JSON text, not Parquet maps: a property value is a string, a
//! number or a boolean, and a `map<string,string>` would lose which, while
//! the archive is the record every table is rebuilt from. Every engine that
//! reads Parquet reads JSON text (`JSONExtract*` in ClickHouse,
//! `json_extract` in Athena, Presto and DuckDB).

use crate::layout::Format;
use crate::record::ArchivedEvent;
use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::io::{BufRead, Write};
use std::sync::{Arc, LazyLock};
use weir_core::Event;

/// Encodes `events` as one file of `format`.
pub fn encode(format: Format, events: &[&ArchivedEvent]) -> anyhow::Result<Vec<u8>> {
    match format {
        Format::Parquet => encode_parquet(events),
        Format::NdjsonGz => encode_ndjson_gz(events),
    }
}

/// Decodes a whole file of `format`.
pub fn decode(format: Format, bytes: Bytes) -> anyhow::Result<Vec<ArchivedEvent>> {
    match format {
        Format::Parquet => decode_parquet(bytes),
        Format::NdjsonGz => decode_ndjson_gz(&bytes),
    }
}

fn encode_ndjson_gz(events: &[&ArchivedEvent]) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for e in events {
        serde_json::to_writer(&mut gz, e)?;
        gz.write_all(b"\n")?;
    }
    Ok(gz.finish()?)
}

fn decode_ndjson_gz(bytes: &[u8]) -> anyhow::Result<Vec<ArchivedEvent>> {
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

/// The Parquet schema: one source for the writer and for docs/archive.md.
pub static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("tenant", false),
        s("event_id", false),
        s("name", false),
        s("namespace", false),
        Field::new("timestamp", ts(), false),
        Field::new("received_at", ts(), false),
        Field::new("sent_at", ts(), true),
        Field::new("schema_version", DataType::Int32, false),
        s("user_id", true),
        s("anonymous_id", true),
        s("session_id", true),
        s("customer_id", true),
        s("channel", true),
        s("service", true),
        s("description", true),
        s("properties", false),
        s("user_properties", false),
        s("context", true),
        s("items", false),
        Field::new("late", DataType::Boolean, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
});

fn encode_parquet(events: &[&ArchivedEvent]) -> anyhow::Result<Vec<u8>> {
    let n = events.len();
    let strings = |f: &dyn Fn(&ArchivedEvent) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let times = |f: &dyn Fn(&Event) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        for e in events {
            b.append_option(f(&e.event));
        }
        Arc::new(b.finish())
    };
    let mut version = Int32Builder::with_capacity(n);
    let mut late = BooleanBuilder::with_capacity(n);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    for e in events {
        version.append_value(e.event.schema_version);
        late.append_value(e.late);
        partition.append_value(e.kafka_partition);
        offset.append_value(e.kafka_offset);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|e| Some(e.event.tenant.clone())),
        strings(&|e| Some(e.event.event_id.clone())),
        strings(&|e| Some(e.event.name.clone())),
        strings(&|e| Some(e.event.namespace().to_string())),
        times(&|e| Some(e.timestamp)),
        times(&|e| Some(e.received_at)),
        times(&|e| e.sent_at),
        Arc::new(version.finish()),
        strings(&|e| e.event.user_id.clone()),
        strings(&|e| e.event.anonymous_id.clone()),
        strings(&|e| e.event.session_id.clone()),
        strings(&|e| e.event.customer_id.clone()),
        strings(&|e| e.event.channel.clone()),
        strings(&|e| e.event.service.clone()),
        strings(&|e| e.event.description.clone()),
        strings(&|e| json(&e.event.properties)),
        strings(&|e| json(&e.event.user_properties)),
        strings(&|e| e.event.context.as_ref().and_then(json)),
        strings(&|e| json(&e.event.items)),
        Arc::new(late.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    let batch = RecordBatch::try_new(SCHEMA.clone(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, SCHEMA.clone(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

/// A column value held as JSON text.
fn json<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_string(v).ok()
}

fn decode_parquet(bytes: Bytes) -> anyhow::Result<Vec<ArchivedEvent>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("column {name} is missing"))
        };
        let s = |name: &str| col(name).map(|c| c.as_string::<i32>().clone());
        let t =
            |name: &str| col(name).map(|c| c.as_primitive::<TimestampMillisecondType>().clone());
        let (tenant, id, name) = (s("tenant")?, s("event_id")?, s("name")?);
        let (ts, received, sent) = (t("timestamp")?, t("received_at")?, t("sent_at")?);
        let version = col("schema_version")?.as_primitive::<Int32Type>().clone();
        let (user, anon, session, customer) = (
            s("user_id")?,
            s("anonymous_id")?,
            s("session_id")?,
            s("customer_id")?,
        );
        let (channel, service, description) = (s("channel")?, s("service")?, s("description")?);
        let (props, user_props, context, items) = (
            s("properties")?,
            s("user_properties")?,
            s("context")?,
            s("items")?,
        );
        let late = col("late")?.as_boolean().clone();
        let partition = col("kafka_partition")?.as_primitive::<Int32Type>().clone();
        let offset = col("kafka_offset")?.as_primitive::<Int64Type>().clone();
        let opt = |a: &arrow_array::StringArray, i: usize| {
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        for i in 0..batch.num_rows() {
            let event = Event {
                event_id: id.value(i).to_string(),
                name: name.value(i).to_string(),
                timestamp: ts.value(i),
                received_at: received.value(i),
                sent_at: (!sent.is_null(i)).then(|| sent.value(i)),
                tenant: tenant.value(i).to_string(),
                schema_version: version.value(i),
                user_id: opt(&user, i),
                anonymous_id: opt(&anon, i),
                session_id: opt(&session, i),
                customer_id: opt(&customer, i),
                channel: opt(&channel, i),
                service: opt(&service, i),
                properties: serde_json::from_str(props.value(i))?,
                user_properties: serde_json::from_str(user_props.value(i))?,
                context: opt(&context, i)
                    .map(|c| serde_json::from_str(&c))
                    .transpose()?,
                items: serde_json::from_str(items.value(i))?,
                description: opt(&description, i),
            };
            out.push(ArchivedEvent {
                event,
                late: late.value(i),
                kafka_partition: partition.value(i),
                kafka_offset: offset.value(i),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_core::event::{Context, Item, PropertyValue};

    pub(crate) fn sample(n: usize) -> Vec<ArchivedEvent> {
        (0..n)
            .map(|i| {
                let mut event =
                    Event::new("acme", &format!("id-{i}"), "cart.add", 1_000 + i as i64);
                event.received_at = 2_000 + i as i64;
                event.sent_at = (i % 2 == 0).then_some(1_500);
                event.user_id = (i % 3 == 0).then(|| format!("u{i}"));
                event.anonymous_id = Some("anon".into());
                event.channel = Some("web".into());
                event.properties = BTreeMap::from([
                    ("price".to_string(), PropertyValue::Double(9.5)),
                    ("qty".to_string(), PropertyValue::Long(2)),
                    ("sku".to_string(), PropertyValue::String("A-1".into())),
                    ("gift".to_string(), PropertyValue::Boolean(false)),
                    ("round".to_string(), PropertyValue::Double(3.0)),
                ]);
                event.context = (i % 2 == 1).then(|| Context {
                    url: Some("https://shop.example/cart".into()),
                    ..Default::default()
                });
                event.items = vec![Item {
                    id: Some("sku-1".into()),
                    price: Some(9.5),
                    quantity: Some(2),
                    ..Default::default()
                }];
                ArchivedEvent {
                    event,
                    late: i % 5 == 0,
                    kafka_partition: (i % 4) as i32,
                    kafka_offset: i as i64 * 10,
                }
            })
            .collect()
    }

    #[test]
    fn both_formats_give_back_every_field_and_value_type() {
        let events = sample(50);
        let refs: Vec<&ArchivedEvent> = events.iter().collect();
        for format in [Format::Parquet, Format::NdjsonGz] {
            let bytes = encode(format, &refs).unwrap();
            let back = decode(format, Bytes::from(bytes)).unwrap();
            assert_eq!(back, events, "{format:?}");
        }
    }

    #[test]
    fn a_parquet_file_is_zstd_compressed_with_typed_times() {
        let events = sample(3);
        let bytes = encode_parquet(&events.iter().collect::<Vec<_>>()).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
        let meta = builder.metadata().row_group(0).column(0).compression();
        assert!(matches!(meta, Compression::ZSTD(_)), "{meta:?}");
        let field = builder
            .schema()
            .field_with_name("timestamp")
            .unwrap()
            .clone();
        assert_eq!(
            field.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_panic() {
        let events = sample(3);
        let bytes = encode_parquet(&events.iter().collect::<Vec<_>>()).unwrap();
        assert!(decode(
            Format::Parquet,
            Bytes::from(bytes[..bytes.len() / 2].to_vec())
        )
        .is_err());
        let gz = encode_ndjson_gz(&events.iter().collect::<Vec<_>>()).unwrap();
        assert!(decode(Format::NdjsonGz, Bytes::from(gz[..gz.len() / 2].to_vec())).is_err());
    }
}
