//! `ArchiveStore`: the object store the archive lives in, chosen by URL,
//! and its health check. Every read and write of the archive goes through
//! it; puts are whole-object and atomic (S3 PUT, a rename on a filesystem),
//! so a reader never sees half a file.

use crate::config::StoreConfig;
use crate::layout::{self, Format};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use weir_core::health::HealthCheck;

/// How long the health check waits for the store.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    /// The archive's root inside the store (the URL's path).
    pub root: Path,
    pub format: Format,
    url: String,
}

impl ArchiveStore {
    pub fn build(cfg: &StoreConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&cfg.url)
            .map_err(|e| anyhow::anyhow!("store.url {:?} is not a URL: {e}", cfg.url))?;
        if url.scheme() == "file" {
            // The filesystem store refuses a root that does not exist yet.
            std::fs::create_dir_all(url.path())
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", url.path()))?;
        }
        let mut options: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        options.extend(cfg.options.clone());
        let (store, root) = object_store::parse_url_opts(&url, options)
            .map_err(|e| anyhow::anyhow!("store.url {}: {e}", cfg.url))?;
        Ok(Self {
            store: Arc::from(store),
            root,
            format: cfg.format,
            url: redacted(&url),
        })
    }

    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("writing", path, e))?;
        Ok(())
    }

    /// An empty object whose name is its message (a dirty marker).
    pub async fn put_marker(&self, path: object_store::path::Path) -> anyhow::Result<()> {
        self.put(&path, Vec::new()).await
    }

    /// The object's bytes, or `None` if there is none.
    pub async fn get(&self, path: &Path) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| self.error("reading", path, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", path, e)),
        }
    }

    /// Deletes an object; one that is already gone is fine.
    pub async fn delete(&self, path: &Path) -> anyhow::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("deleting", path, e)),
        }
    }

    /// Every object under `prefix`, at any depth.
    pub async fn list(&self, prefix: &Path) -> anyhow::Result<Vec<ObjectMeta>> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.error("listing", prefix, e))
    }

    /// The objects directly in `dir` (not in its subdirectories).
    pub async fn list_dir(&self, dir: &Path) -> anyhow::Result<Vec<ObjectMeta>> {
        let listed = self
            .store
            .list_with_delimiter(Some(dir))
            .await
            .map_err(|e| self.error("listing", dir, e))?;
        Ok(listed.objects)
    }

    /// The directories directly under `dir`.
    pub async fn list_prefixes(&self, dir: &Path) -> anyhow::Result<Vec<Path>> {
        let listed = self
            .store
            .list_with_delimiter(Some(dir))
            .await
            .map_err(|e| self.error("listing", dir, e))?;
        Ok(listed.common_prefixes)
    }

    /// One cheap request that needs the bucket, the network and the
    /// credentials: a listing of the archiver's own directory.
    pub async fn check(&self) -> anyhow::Result<()> {
        let probe = layout::health_probe(&self.root);
        // The store's client retries an unreachable endpoint for minutes;
        // readiness must turn within one poll.
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.list_with_delimiter(Some(&probe)))
            .await
        {
            Ok(listed) => listed
                .map(|_| ())
                .map_err(|e| self.error("listing", &probe, e)),
            Err(_) => Err(anyhow::anyhow!(
                "listing {probe} in {}: no answer within {} s (is the store reachable?)",
                self.url,
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }

    /// An error that says what failed, where, and the likely cause.
    fn error(&self, doing: &str, path: &Path, e: object_store::Error) -> anyhow::Error {
        // A list answered 401/403 arrives as a generic error: its text says.
        let text = e.to_string();
        let refused = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "401 Unauthorized",
            "403 Forbidden",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ]
        .iter()
        .any(|m| text.contains(m));
        let cause = if refused { "credentials refused: " } else { "" };
        anyhow::anyhow!("{doing} {path} in {}: {cause}{e}", self.url)
    }

    pub fn health(&self) -> StoreHealth {
        StoreHealth(self.clone())
    }
}

/// The URL without any password in it, for logs and errors.
fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    u.to_string()
}

/// The archive's store answers: `/readyz` is not ready while it does not.
pub struct StoreHealth(ArchiveStore);

impl HealthCheck for StoreHealth {
    fn name(&self) -> String {
        "object-store".into()
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.check().await.map_err(|e| format!("{e:#}")) })
    }
}
