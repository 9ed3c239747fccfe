//! weir aggregator: materialises processed events and window aggregates into
//! ClickHouse, idempotently, and serves the query API on top.

pub mod activity_api;
pub mod api;
pub mod clickhouse_sink;
pub mod config;
pub mod counts;
pub mod events_api;
pub mod late;
pub mod legacy_api;
pub mod metrics_api;
pub mod migrations;
pub mod namespaces;
pub mod query;
pub mod restore;
pub mod runtime;
pub mod store;
pub mod strict_query;
