//! The ClickHouse schema as versioned SQL migrations, applied at start-up.
//!
//! Each migration runs once and is recorded in `schema_migrations`; its
//! statements are written with IF NOT EXISTS as well, so a crash half way
//! through a migration is repaired by running it again.
//!
//! Extended tables (`namespaces`) are migrations derived from config: each
//! distinct definition runs once, recorded under a version of
//! `CONFIG_VERSIONS` and up derived from its statements, so a changed config
//! migrates again and an unchanged one does not.

use crate::namespaces::NamespaceTable;
use clickhouse::Client;

/// Versions from here up are config-derived; files count up from 1.
const CONFIG_VERSIONS: u32 = 1 << 31;

/// (version, name, sql), in order. Never edit a released migration: add one.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "events_and_counts",
        include_str!("../migrations/0001_events_and_counts.sql"),
    ),
    (
        2,
        "dead_letters_and_lag",
        include_str!("../migrations/0002_dead_letters_and_lag.sql"),
    ),
    (
        3,
        "exact_unique_users",
        include_str!("../migrations/0003_exact_unique_users.sql"),
    ),
    (
        4,
        "hourly_rollup",
        include_str!("../migrations/0004_hourly_rollup.sql"),
    ),
    (
        5,
        "late_lane",
        include_str!("../migrations/0005_late_lane.sql"),
    ),
    (
        6,
        "identities",
        include_str!("../migrations/0006_identities.sql"),
    ),
];

pub async fn apply(client: &Client, namespaces: &[NamespaceTable]) -> anyhow::Result<()> {
    for ns in namespaces {
        ns.validate()?;
    }
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now()) \
             ENGINE = ReplacingMergeTree ORDER BY version",
        )
        .execute()
        .await?;
    let applied: Vec<u32> = client
        .query("SELECT version FROM schema_migrations FINAL")
        .fetch_all()
        .await?;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        run(client, *version, name, &statements(sql)).await?;
    }
    for ns in namespaces {
        let statements = ns.statements();
        // A 31-bit hash: a collision would only skip re-running statements
        // that are all safe to run again anyway.
        let version = CONFIG_VERSIONS | (fnv1a(statements.join(";").as_bytes()) >> 1);
        if applied.contains(&version) {
            continue;
        }
        let name = ns.table();
        run(client, version, &name, &statements).await?;
    }
    Ok(())
}

async fn run(
    client: &Client,
    version: u32,
    name: &str,
    statements: &[String],
) -> anyhow::Result<()> {
    for stmt in statements {
        client
            .query(stmt)
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} ({name}) failed: {e}"))?;
    }
    client
        .query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
        .bind(version)
        .bind(name)
        .execute()
        .await?;
    tracing::info!(version, name, "migration applied");
    Ok(())
}

/// A stable hash (std's `Hasher`s may change between releases).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Splits a file into statements on `;` at line ends, dropping comment lines.
fn statements(sql: &str) -> Vec<String> {
    let body: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(";\n")
        .chain(std::iter::once(""))
        .map(|s| s.trim().trim_end_matches(';').trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_statements_and_skips_comments() {
        let s = super::statements("-- x;\nCREATE A;\n\nCREATE B\n  (x);\n");
        assert_eq!(s, vec!["CREATE A", "CREATE B\n  (x)"]);
    }
}
