//! Write keys: which tenant a request writes for.
//!
//! A key arrives as `Authorization: Bearer <key>`, as the user name of
//! `Authorization: Basic` (how Segment-style SDKs send it), or as
//! `X-Write-Key`. Keys are held only as SHA-256 digests and compared in
//! constant time; neither a key nor its digest is ever logged.

use axum::http::HeaderMap;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No key in the request.
    Missing,
    /// A key that matches no configured key.
    Invalid,
}

/// The configured write keys, by digest.
#[derive(Clone, Default)]
pub struct WriteKeys {
    by_digest: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for WriteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteKeys({} keys)", self.by_digest.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl WriteKeys {
    /// Parses `key:tenant` entries separated by commas or newlines; blank
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut keys = Self::default();
        for (i, line) in text.split([',', '\n']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, tenant) = line
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("write key entry {} is not KEY:TENANT", i + 1))?;
            let (key, tenant) = (key.trim(), tenant.trim());
            anyhow::ensure!(
                key.len() >= 8,
                "write key entry {} is shorter than 8 characters",
                i + 1
            );
            anyhow::ensure!(
                !tenant.is_empty(),
                "write key entry {} has no tenant",
                i + 1
            );
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
        self.tenant_of(presented_key(headers))
    }

    /// As `tenant`, also accepting `?write_key=` in the query: the one way a
    /// `navigator.sendBeacon` request, which cannot set headers, can carry it.
    pub fn tenant_with_query(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<&str, AuthError> {
        let from_query = || {
            query?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "write_key")
                .and_then(|(_, v)| percent_decode(v))
        };
        self.tenant_of(presented_key(headers).or_else(from_query))
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

fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-write-key").and_then(|v| v.to_str().ok()) {
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
        let keys = WriteKeys::parse("secret-key-1:acme, other-key-22:globex\n# comment").unwrap();
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
        let keys = WriteKeys::parse("secret key/1:acme").unwrap();
        let q = Some("a=1&write_key=secret%20key%2F1");
        assert_eq!(keys.tenant_with_query(&HeaderMap::new(), q), Ok("acme"));
        assert_eq!(
            keys.tenant_with_query(&HeaderMap::new(), Some("write_key=")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn missing_and_wrong_keys_are_told_apart() {
        let keys = WriteKeys::parse("secret-key-1:acme").unwrap();
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
    fn bad_entries_are_rejected_with_their_position() {
        assert!(WriteKeys::parse("no-tenant-here")
            .unwrap_err()
            .to_string()
            .contains("entry 1"));
        assert!(WriteKeys::parse("ok-key-123:t,short:t")
            .unwrap_err()
            .to_string()
            .contains("entry 2"));
    }
}
