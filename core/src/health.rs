//! One health model for every stage: a stage is ready when every one of its
//! components is. A component is either polled by the service shell (a
//! `HealthCheck`: Kafka answers, the registry answers, ClickHouse answers)
//! or set by the stage's own loop (the processor while it rewinds, an
//! aggregator consumer while its inserts fail). `/readyz` answers 200 only
//! when all are ready, and lists each with its state either way.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A component's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Status {
    /// Registered, not yet checked.
    Starting,
    Ready,
    /// Not ready, and why.
    NotReady(String),
}

/// The readiness of every component of a stage.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, Status>>>);

impl Health {
    /// Registers a component, `Starting` until its first report.
    pub fn component(&self, name: impl Into<String>) -> Component {
        let name = name.into();
        self.set(&name, Status::Starting);
        Component {
            name,
            health: self.clone(),
        }
    }

    fn set(&self, name: &str, status: Status) {
        let mut map = self.0.lock().expect("health lock");
        if map.get(name) != Some(&status) {
            match &status {
                Status::NotReady(reason) => {
                    tracing::warn!(component = name, reason, "not ready")
                }
                Status::Ready => tracing::info!(component = name, "ready"),
                Status::Starting => {}
            }
        }
        map.insert(name.to_string(), status);
    }

    /// Ready when there is at least one component and every one is ready.
    pub fn is_ready(&self) -> bool {
        let map = self.0.lock().expect("health lock");
        !map.is_empty() && map.values().all(|s| *s == Status::Ready)
    }

    /// Every component and its state.
    pub fn report(&self) -> BTreeMap<String, Status> {
        self.0.lock().expect("health lock").clone()
    }

    /// Polls `check` every `every` until `shutdown`, reporting into its own
    /// component.
    pub fn poll(&self, check: impl HealthCheck, every: Duration, shutdown: CancellationToken) {
        let component = self.component(check.name());
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                match check.check().await {
                    Ok(()) => component.ready(),
                    Err(reason) => component.not_ready(reason),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        });
    }
}

/// One component's handle, for the code that knows its state.
#[derive(Clone)]
pub struct Component {
    name: String,
    health: Health,
}

impl Component {
    pub fn ready(&self) {
        self.health.set(&self.name, Status::Ready);
    }

    pub fn not_ready(&self, reason: impl Into<String>) {
        self.health.set(&self.name, Status::NotReady(reason.into()));
    }
}

/// A dependency the shell polls: Kafka, the Schema Registry, ClickHouse.
pub trait HealthCheck: Send + Sync + 'static {
    /// The component's name in `/readyz`.
    fn name(&self) -> String;
    /// `Ok` while the dependency answers; otherwise why not.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

impl HealthCheck for Box<dyn HealthCheck> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        (**self).check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky(Arc<Mutex<bool>>);

    impl HealthCheck for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            let up = *self.0.lock().unwrap();
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("down".into())
                }
            })
        }
    }

    #[test]
    fn ready_only_when_every_component_is() {
        let health = Health::default();
        assert!(!health.is_ready(), "no component yet");
        let a = health.component("a");
        let b = health.component("b");
        assert!(!health.is_ready());
        a.ready();
        b.ready();
        assert!(health.is_ready());
        b.not_ready("inserts fail");
        assert!(!health.is_ready());
        assert_eq!(
            health.report()["b"],
            Status::NotReady("inserts fail".into())
        );
    }

    #[tokio::test]
    async fn a_polled_check_follows_its_dependency() {
        let health = Health::default();
        let up = Arc::new(Mutex::new(false));
        let shutdown = CancellationToken::new();
        health.poll(
            Flaky(up.clone()),
            Duration::from_millis(10),
            shutdown.clone(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(health.report()["flaky"], Status::NotReady("down".into()));
        *up.lock().unwrap() = true;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(health.is_ready());
        shutdown.cancel();
    }
}
