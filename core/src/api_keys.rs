//! API keys: which tenant a request writes (ingest) or reads (the query API) for.
//!
//! A key arrives as `Authorization: Bearer <key>`, as the user name of
//! `Authorization: Basic` (how Segment-style SDKs send it), or in the kind's
//! own header, `X-Write-Key` or `X-Read-Key`. Write and read keys are separate
//! sets, so a key shipped in a browser snippet cannot read anything. Keys are
//! held only as SHA-256 digests and compared in constant time; neither a key
//! nor its digest is ever logged.

use axum::http::HeaderMap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The `[auth]` section, one for all stages, so that one environment can
/// configure them all: ingest reads the write keys, the aggregator's query
/// API the read keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// On by default: a request without a valid key gets 401.
    pub enabled: bool,
    /// `KEY:TENANT` entries, comma-separated (handy as `WEIR_AUTH__WRITE_KEYS`).
    pub write_keys: String,
    /// A file of `KEY:TENANT` lines; `#` starts a comment.
    pub write_keys_file: String,
    /// Keys of the query API, `KEY:TENANT` as well: a read key sees its
    /// tenant's data only.
    pub read_keys: String,
    pub read_keys_file: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            write_keys: String::new(),
            write_keys_file: String::new(),
            read_keys: String::new(),
            read_keys_file: String::new(),
        }
    }
}

impl AuthConfig {
    /// The keys of `kind`; `None` when auth is off. With auth on, no keys at
    /// all is a configuration mistake, told at start-up.
    pub fn keys(&self, kind: KeyKind) -> anyhow::Result<Option<ApiKeys>> {
        if !self.enabled {
            return Ok(None);
        }
        let (inline, file, setting, env) = match kind {
            KeyKind::Write => (
                &self.write_keys,
                &self.write_keys_file,
                "auth.write_keys",
                "WEIR_AUTH__WRITE_KEYS",
            ),
            KeyKind::Read => (
                &self.read_keys,
                &self.read_keys_file,
                "auth.read_keys",
                "WEIR_AUTH__READ_KEYS",
            ),
        };
        let keys = ApiKeys::load(kind, inline, file, setting)?;
        anyhow::ensure!(
            !keys.is_empty(),
            "auth is on but no {}s are configured: set {setting} ({env}=KEY:TENANT) \
             or {setting}_file, or turn auth off with auth.enabled=false",
            kind.label()
        );
        Ok(Some(keys))
    }
}

/// What a key set grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Write,
    Read,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Write => "write key",
            KeyKind::Read => "read key",
        }
    }

    fn header(self) -> &'static str {
        match self {
            KeyKind::Write => "x-write-key",
            KeyKind::Read => "x-read-key",
        }
    }

    fn query_param(self) -> &'static str {
        match self {
            KeyKind::Write => "write_key",
            KeyKind::Read => "read_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No key in the request.
    Missing,
    /// A key that matches no configured key.
    Invalid,
}

/// The configured keys of one kind, by digest.
#[derive(Clone)]
pub struct ApiKeys {
    kind: KeyKind,
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({:?}, {} keys)", self.kind, self.by_digest.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// The keys given inline (`KEY:TENANT,...`) and in `file` (one per line),
    /// if a file is named. `setting` names the config key in errors.
    pub fn load(kind: KeyKind, inline: &str, file: &str, setting: &str) -> anyhow::Result<Self> {
        let mut text = inline.to_string();
        if !file.is_empty() {
            let content = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {setting}_file {file}: {e}"))?;
            text.push('\n');
            text.push_str(&content);
        }
        Self::parse(kind, &text)
    }

    /// Parses `key:tenant` entries separated by commas or newlines; blank
    /// lines and `#` comments are skipped.
    pub fn parse(kind: KeyKind, text: &str) -> anyhow::Result<Self> {
        let label = kind.label();
        let mut keys = Self {
            kind,
            by_digest: HashMap::new(),
        };
        for (i, line) in text.split([',', '\n']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, tenant) = line
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("{label} entry {} is not KEY:TENANT", i + 1))?;
            let (key, tenant) = (key.trim(), tenant.trim());
            anyhow::ensure!(
                key.len() >= 8,
                "{label} entry {} is shorter than 8 characters",
                i + 1
            );
            anyhow::ensure!(!tenant.is_empty(), "{label} entry {} has no tenant", i + 1);
            keys.by_digest.insert(digest(key), tenant.to_string());
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The tenant of the request's key.
    pub fn tenant(&self, headers: &HeaderMap) -> Result<&str, AuthError> {
        self.tenant_of(presented_key(headers, self.kind.header()))
    }

    /// As `tenant`, also accepting `?write_key=` (or `?read_key=`) in the
    /// query: the one way a `navigator.sendBeacon` request, which cannot set
    /// headers, can carry it.
    pub fn tenant_with_query(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<&str, AuthError> {
        let from_query = || {
            query?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == self.kind.query_param())
                .and_then(|(_, v)| percent_decode(v))
        };
        self.tenant_of(presented_key(headers, self.kind.header()).or_else(from_query))
    }

    fn tenant_of(&self, key: Option<String>) -> Result<&str, AuthError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::Missing)?;
        let d = digest(&key);
        // The map lookup is on a digest, which tells an attacker nothing about
        // the key; the final comparison is constant time all the same.
        match self.by_digest.get_key_value(&d) {
            Some((stored, tenant)) if bool::from(stored.ct_eq(&d)) => Ok(tenant),
            _ => Err(AuthError::Invalid),
        }
    }
}

fn percent_decode(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn presented_key(headers: &HeaderMap, own_header: &str) -> Option<String> {
    if let Some(v) = headers.get(own_header).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string()).filter(|k| !k.is_empty());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = auth.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.trim().to_string()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            // The key is the user name; a password, if any, is ignored.
            Some(text.split(':').next().unwrap_or_default().to_string())
        }
        _ => None,
    }
    .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_header_form_maps_to_the_tenant() {
        let keys = ApiKeys::parse(
            KeyKind::Write,
            "secret-key-1:acme, other-key-22:globex\n# comment",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys.tenant(&headers("authorization", "Bearer secret-key-1")),
            Ok("acme")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("other-key-22:");
        assert_eq!(
            keys.tenant(&headers("authorization", &format!("Basic {basic}"))),
            Ok("globex")
        );
        assert_eq!(
            keys.tenant(&headers("x-write-key", "secret-key-1")),
            Ok("acme")
        );
    }

    #[test]
    fn beacon_requests_carry_the_key_in_the_query() {
        let keys = ApiKeys::parse(KeyKind::Write, "secret key/1:acme").unwrap();
        let q = Some("a=1&write_key=secret%20key%2F1");
        assert_eq!(keys.tenant_with_query(&HeaderMap::new(), q), Ok("acme"));
        assert_eq!(
            keys.tenant_with_query(&HeaderMap::new(), Some("write_key=")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn missing_and_wrong_keys_are_told_apart() {
        let keys = ApiKeys::parse(KeyKind::Write, "secret-key-1:acme").unwrap();
        assert_eq!(keys.tenant(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(
            keys.tenant(&headers("authorization", "Bearer nope-nope-nope")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            keys.tenant(&headers("authorization", "Token secret-key-1")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn read_keys_come_in_their_own_header_and_write_keys_do_not_read() {
        let keys = ApiKeys::parse(KeyKind::Read, "reader-key-1:acme").unwrap();
        assert_eq!(
            keys.tenant(&headers("x-read-key", "reader-key-1")),
            Ok("acme")
        );
        assert_eq!(
            keys.tenant(&headers("x-write-key", "reader-key-1")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            keys.tenant_with_query(&HeaderMap::new(), Some("read_key=reader-key-1")),
            Ok("acme")
        );
        let err = ApiKeys::parse(KeyKind::Read, "x:t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("read key entry 1"), "{err}");
    }

    #[test]
    fn bad_entries_are_rejected_with_their_position() {
        assert!(ApiKeys::parse(KeyKind::Write, "no-tenant-here")
            .unwrap_err()
            .to_string()
            .contains("entry 1"));
        assert!(ApiKeys::parse(KeyKind::Write, "ok-key-123:t,short:t")
            .unwrap_err()
            .to_string()
            .contains("entry 2"));
    }
}
