//! Extended tables: for a configured namespace such as `cart`, the properties
//! named in config become typed columns of a table `ns_cart`, which joins to
//! `events` on `event_id`.
//!
//! The table is filled by a materialized view on `events`, so ClickHouse
//! does the typing and an event re-inserted after a replay replaces its own
//! row, as in `events`. The statements are derived from config and applied
//! as a migration (see `migrations`): a changed config adds its columns,
//! redefines the view, and back-fills the table from the history.

use serde::{Deserialize, Serialize};

/// One `[[namespaces]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceTable {
    /// The namespace: the part of an event name before its first dot.
    pub name: String,
    pub columns: Vec<PromotedProperty>,
}

/// A property promoted into a column of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotedProperty {
    pub property: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// The column types a property can take. A value that does not convert is
/// NULL, never an error: the event itself is kept whole in `events`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Bool,
    DateTime64,
}

impl ColumnType {
    fn sql_type(self) -> &'static str {
        match self {
            ColumnType::String => "Nullable(String)",
            ColumnType::Int64 => "Nullable(Int64)",
            ColumnType::Float64 => "Nullable(Float64)",
            ColumnType::Bool => "Nullable(Bool)",
            ColumnType::DateTime64 => "Nullable(DateTime64(3, 'UTC'))",
        }
    }

    /// The expression that converts the property's text (properties are
    /// stored as text in `events`) into the column's type.
    fn converted(self, text: &str) -> String {
        match self {
            ColumnType::String => format!("if(mapContains(properties, '{text}'), properties['{text}'], NULL)"),
            ColumnType::Int64 => format!("toInt64OrNull(properties['{text}'])"),
            ColumnType::Float64 => format!("toFloat64OrNull(properties['{text}'])"),
            ColumnType::Bool => format!(
                "multiIf(properties['{text}'] = 'true', true, properties['{text}'] = 'false', false, NULL)"
            ),
            ColumnType::DateTime64 => {
                format!("parseDateTime64BestEffortOrNull(properties['{text}'], 3, 'UTC')")
            }
        }
    }
}

/// Names spliced into DDL must be plain identifiers: they come from config,
/// but a typo must not become SQL.
fn identifier(what: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(
        ok,
        "{what} {s:?} must be 1 to 64 lower-case letters, digits or underscores, not starting with a digit"
    );
    Ok(())
}

/// The columns every extended table has, ahead of the promoted ones.
const KEY_COLUMNS: &[&str] = &["tenant", "event_id", "name", "timestamp"];

impl NamespaceTable {
    pub fn table(&self) -> String {
        format!("ns_{}", self.name)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        identifier("namespace", &self.name)?;
        anyhow::ensure!(
            !self.columns.is_empty(),
            "namespace {:?} promotes no properties",
            self.name
        );
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.columns {
            identifier("property", &c.property)?;
            anyhow::ensure!(
                !KEY_COLUMNS.contains(&c.property.as_str()),
                "property {:?} of namespace {:?} would shadow a key column",
                c.property,
                self.name
            );
            anyhow::ensure!(
                seen.insert(&c.property),
                "property {:?} is promoted twice in namespace {:?}",
                c.property,
                self.name
            );
        }
        Ok(())
    }

    /// The statements that bring the table, its columns and its view to this
    /// config, each safe to run again.
    pub fn statements(&self) -> Vec<String> {
        let (table, view) = (self.table(), format!("{}_mv", self.table()));
        let mut out = vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} \
             (tenant LowCardinality(String), event_id String, name LowCardinality(String), \
              timestamp DateTime64(3, 'UTC')) \
             ENGINE = ReplacingMergeTree PARTITION BY toYYYYMMDD(timestamp) \
             ORDER BY (tenant, toDate(timestamp), name, event_id)"
        )];
        for c in &self.columns {
            out.push(format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS `{}` {}",
                c.property,
                c.kind.sql_type()
            ));
        }
        let select: Vec<String> = KEY_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .chain(
                self.columns
                    .iter()
                    .map(|c| format!("{} AS `{}`", c.kind.converted(&c.property), c.property)),
            )
            .collect();
        let select = format!(
            "SELECT {} FROM events WHERE namespace = '{}'",
            select.join(", "),
            self.name
        );
        out.push(format!("DROP VIEW IF EXISTS {view}"));
        out.push(format!(
            "CREATE MATERIALIZED VIEW {view} TO {table} AS {select}"
        ));
        // Events stored before this definition: the view sees only new inserts.
        let columns: Vec<&str> = KEY_COLUMNS
            .iter()
            .copied()
            .chain(self.columns.iter().map(|c| c.property.as_str()))
            .collect();
        out.push(format!(
            "INSERT INTO {table} ({}) {}",
            columns.join(", "),
            select.replace("FROM events", "FROM events FINAL")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cart() -> NamespaceTable {
        NamespaceTable {
            name: "cart".into(),
            columns: vec![
                PromotedProperty {
                    property: "sku".into(),
                    kind: ColumnType::String,
                },
                PromotedProperty {
                    property: "price".into(),
                    kind: ColumnType::Float64,
                },
            ],
        }
    }

    #[test]
    fn config_reads_as_documented() {
        let t: NamespaceTable = toml::from_str(
            "name = \"cart\"\ncolumns = [{ property = \"sku\", type = \"String\" }, { property = \"price\", type = \"Float64\" }]",
        )
        .unwrap();
        assert_eq!(t, cart());
        t.validate().unwrap();
    }

    #[test]
    fn names_that_are_not_plain_identifiers_are_refused() {
        for bad in ["", "Cart", "1cart", "cart-x", "cart;drop", "a b"] {
            let mut t = cart();
            t.name = bad.into();
            assert!(t.validate().is_err(), "{bad:?}");
        }
        let mut t = cart();
        t.columns[0].property = "x') OR 1=1 --".into();
        assert!(t.validate().is_err());
        t.columns[0].property = "event_id".into();
        assert!(t.validate().is_err());
        t.columns[0].property = "price".into();
        assert!(t.validate().is_err(), "a property promoted twice");
    }
}
