//! Configuration loading, the same for every stage.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config` or
//! `WEIR_CONFIG`), environment variables `WEIR_<SECTION>__<KEY>`, and finally
//! `--set section.key=value` flags. `--print-config` prints the result with
//! secrets redacted.

use clap::Parser;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};
use std::path::PathBuf;

/// Flags every binary takes, before or after its command.
#[derive(Debug, Parser)]
pub struct CommonArgs {
    /// TOML config file.
    #[arg(long, env = "WEIR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set kafka.brokers=host:9092`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub overrides: Vec<String>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
}

/// Keys whose values `--print-config` never shows.
const SECRET_MARKERS: &[&str] = &["password", "secret", "key", "token", "sasl"];

impl CommonArgs {
    /// Loads `T` from defaults, file, env and flags.
    pub fn load<T: Serialize + DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        let mut fig = Figment::from(Serialized::defaults(T::default()));
        if let Some(path) = &self.config {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            fig = fig.merge(Toml::file(path));
        }
        // Only this stage's own top-level keys are read from the environment,
        // so one environment can configure all three stages.
        let known: Vec<String> = match toml::Value::try_from(T::default())? {
            toml::Value::Table(t) => t.keys().cloned().collect(),
            _ => vec![],
        };
        fig = fig.merge(Env::prefixed("WEIR_").split("__").filter(move |k| {
            let k = k.as_str().to_ascii_lowercase();
            let top = k
                .split("__")
                .next()
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or_default();
            known.iter().any(|t| t == top)
        }));
        for o in &self.overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set takes KEY=VALUE, got {o:?}"))?;
            let value: toml::Value = v
                .parse::<toml::Value>()
                .or_else(|_| {
                    format!("v = {v}")
                        .parse::<toml::Table>()
                        .map(|t| t["v"].clone())
                })
                .unwrap_or_else(|_| toml::Value::String(v.to_string()));
            fig = fig.merge(Serialized::default(k, value));
        }
        Ok(fig.extract()?)
    }

    /// When `--print-config` was given, prints `cfg` redacted and returns true.
    pub fn print_config_if_asked<T: Serialize>(&self, cfg: &T) -> anyhow::Result<bool> {
        if !self.print_config {
            return Ok(false);
        }
        let mut v = toml::Value::try_from(cfg)?;
        redact(&mut v, false);
        println!("{}", toml::to_string_pretty(&v)?);
        Ok(true)
    }
}

fn redact(v: &mut toml::Value, secret: bool) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let k = k.to_ascii_lowercase();
                redact(v, secret || SECRET_MARKERS.iter().any(|m| k.contains(m)));
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| redact(v, secret)),
        other if secret => *other = toml::Value::String("<redacted>".into()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Cfg {
        kafka: Kafka,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Kafka {
        brokers: String,
        partitions: i32,
        sasl_password: String,
    }
    impl Default for Kafka {
        fn default() -> Self {
            Self {
                brokers: "a:1".into(),
                partitions: 1,
                sasl_password: "hunter2".into(),
            }
        }
    }

    #[test]
    fn flags_override_defaults_and_parse_types() {
        let args = CommonArgs::parse_from([
            "x",
            "--set",
            "kafka.partitions=8",
            "--set",
            "kafka.brokers=b:2",
        ]);
        let cfg: Cfg = args.load().unwrap();
        assert_eq!(cfg.kafka.partitions, 8);
        assert_eq!(cfg.kafka.brokers, "b:2");
    }

    #[test]
    fn env_keys_of_other_stages_are_ignored() {
        std::env::set_var("WEIR_KAFKA__PARTITIONS", "6");
        std::env::set_var("WEIR_CLICKHOUSE__URL", "http://elsewhere");
        let cfg: Cfg = CommonArgs::parse_from(["x"]).load().unwrap();
        assert_eq!(cfg.kafka.partitions, 6);
    }

    #[test]
    fn secrets_are_redacted() {
        let mut v = toml::Value::try_from(Cfg::default()).unwrap();
        redact(&mut v, false);
        let s = toml::to_string(&v).unwrap();
        assert!(s.contains("<redacted>") && !s.contains("hunter2"), "{s}");
    }
}
