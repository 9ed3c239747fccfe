//! The fuzz corpus on stable Rust: every file of `fuzz/corpus/<target>/`
//! (the seeds, and the inputs of every finding since fixed) through the
//! bodies of the cargo-fuzz targets in `fuzz/src/lib.rs`, so a regression
//! fails `cargo test` without cargo-fuzz or nightly features. Runs no
//! service: no Docker, broker or ClickHouse needed.
//!
//! `cargo test -p weir-tests --test fuzz_corpus -- --ignored` rewrites the
//! Avro seeds of `processor_avro` with the current encoder.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod weir_fuzz;

use std::path::{Path, PathBuf};
use weir_core::event::{Context, Device, Item, PropertyValue};
use weir_core::{Event, WindowAggregate};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every file of the target's corpus, each on its own so one panic names
/// its file and the rest still run.
fn replay(name: &str) {
    let (_, target) = weir_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "{name} has a seed corpus");
    let failed: Vec<String> = corpus
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{name} panics on {failed:#?}");
}

#[test]
fn ingest_body_corpus() {
    replay("ingest_body");
}

#[test]
fn ingest_event_corpus() {
    replay("ingest_event");
}

#[test]
fn processor_avro_corpus() {
    replay("processor_avro");
}

#[test]
fn aggregator_query_corpus() {
    replay("aggregator_query");
}

/// `fuzz_targets/`, `corpus/` and the `TARGETS` table name the same targets,
/// so a new target cannot go without seeds or replay.
#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let stems = |dir: &str, ext: Option<&str>| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut table: Vec<String> = weir_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    table.sort();
    assert_eq!(stems("fuzz_targets", Some("rs")), table);
    assert_eq!(stems("corpus", None), table);
}

/// Events and aggregates as the processor reads them, encoded by the same
/// calls as `Codec::encode_event` / `encode_aggregate`.
fn avro_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let minimal = Event {
        received_at: 1_700_000_000_100,
        anonymous_id: Some("anon-1".into()),
        ..Event::new(
            "acme",
            "0190b8a2-7c1e-7000-8000-000000000001",
            "page_view",
            1_700_000_000_000,
        )
    };
    let full = Event {
        event_id: "e-full".into(),
        name: "cart.add".into(),
        timestamp: 1_700_000_000_123,
        received_at: 1_700_000_000_456,
        sent_at: Some(1_700_000_000_400),
        user_id: Some("u1".into()),
        session_id: Some("s1".into()),
        customer_id: Some("c1".into()),
        channel: Some("web".into()),
        service: Some("shop".into()),
        properties: [
            ("sku".to_string(), PropertyValue::String("x".into())),
            ("qty".to_string(), PropertyValue::Long(3)),
            ("price".to_string(), PropertyValue::Double(9.5)),
            ("gift".to_string(), PropertyValue::Boolean(true)),
        ]
        .into(),
        user_properties: [("plan".to_string(), PropertyValue::String("pro".into()))].into(),
        context: Some(Context {
            url: Some("https://shop/cart".into()),
            referrer: Some("https://ref".into()),
            ip: Some("203.0.113.9".into()),
            user_agent: Some("Mozilla/5.0".into()),
            locale: Some("en-GB".into()),
            device: Some(Device {
                category: Some("desktop".into()),
                os: Some("linux".into()),
                browser: Some("firefox".into()),
                ..Default::default()
            }),
            app: Some(weir_core::event::App {
                id: Some("shop".into()),
                version: Some("1.2".into()),
            }),
        }),
        items: vec![
            Item {
                id: Some("sku1".into()),
                name: Some("Mug".into()),
                price: Some(4.5),
                quantity: Some(2),
                revenue: Some(9.0),
                currency: Some("EUR".into()),
                ..Default::default()
            },
            Item::default(),
        ],
        description: Some("added to cart".into()),
        ..minimal.clone()
    };
    let aggregate = WindowAggregate {
        tenant: "acme".into(),
        name: "cart.add".into(),
        channel: "web".into(),
        window_start: 1_699_999_980_000,
        window_end: 1_700_000_040_000,
        input_partition: 3,
        count: 7,
        users: vec!["u1".into(), "u2".into()],
        emitted_seq: 42,
        is_final: true,
    };
    let event = |e: &Event| weir_fuzz::encode_wire(weir_fuzz::EVENT_SCHEMA_ID, e).unwrap();
    let full_wire = event(&full);
    let mut wrong_magic = full_wire.clone();
    wrong_magic[0] = 1;
    let mut unknown_id = full_wire.clone();
    unknown_id[4] = 9;
    vec![
        ("event_minimal", event(&minimal)),
        ("event_full", full_wire.clone()),
        (
            "event_legacy_service",
            event(&Event {
                name: "new_customer".into(),
                customer_id: Some("18".into()),
                description: Some("account was created".into()),
                ..minimal.clone()
            }),
        ),
        (
            "event_time_i64_min",
            event(&Event {
                timestamp: i64::MIN,
                ..minimal.clone()
            }),
        ),
        (
            "event_time_i64_max",
            event(&Event {
                timestamp: i64::MAX,
                sent_at: Some(i64::MIN),
                ..full.clone()
            }),
        ),
        (
            "aggregate",
            weir_fuzz::encode_wire(weir_fuzz::AGGREGATE_SCHEMA_ID, &aggregate).unwrap(),
        ),
        ("event_truncated", full_wire[..full_wire.len() / 2].to_vec()),
        ("event_wrong_magic", wrong_magic),
        ("event_unknown_schema_id", unknown_id),
        ("header_only", full_wire[..5].to_vec()),
    ]
}

#[test]
#[ignore = "rewrites fuzz/corpus/processor_avro; run by hand after a schema change"]
fn write_processor_avro_seeds() {
    let dir = fuzz_dir().join("corpus/processor_avro");
    for (name, bytes) in avro_seeds() {
        std::fs::write(dir.join(format!("{name}.avro")), bytes).unwrap();
    }
}

/// The committed seeds still decode as the current schema reads them.
#[test]
fn avro_seeds_are_current() {
    let dir = fuzz_dir().join("corpus/processor_avro");
    for (name, bytes) in avro_seeds() {
        let path = dir.join(format!("{name}.avro"));
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed, bytes,
            "{name}.avro is stale: run the ignored write_processor_avro_seeds"
        );
    }
}
