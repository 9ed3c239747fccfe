//! The ClickHouse schema as versioned SQL migrations, applied at start-up.
//!
//! Each migration runs once and is recorded in `schema_migrations`; its
//! statements are written with IF NOT EXISTS as well, so a crash half way
//! through a migration is repaired by running it again.

use clickhouse::Client;

/// (version, name, sql), in order. Never edit a released migration: add one.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "events_and_counts",
    include_str!("../migrations/0001_events_and_counts.sql"),
)];

pub async fn apply(client: &Client) -> anyhow::Result<()> {
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
        for stmt in statements(sql) {
            client
                .query(&stmt)
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
    }
    Ok(())
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
