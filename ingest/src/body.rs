//! Request bodies: Content-Type, size limit, read timeout and
//! `Content-Encoding: gzip`, and the errors of reading and parsing them; the
//! bytes are then parsed by `strict_json`.
//!
//! The size limit applies to the decompressed bytes too, so a gzip bomb is
//! cut off at `max_bytes` rather than inflated into memory.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use std::io::Read;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge {
        max: usize,
    },
    /// The body did not arrive within the body read timeout.
    Timeout {
        after_ms: u64,
    },
    /// The connection failed while the body was read.
    Unreadable(String),
    BadEncoding(String),
    UnsupportedEncoding(String),
    /// A Content-Type other than JSON's (or text/plain, NDJSON), or a
    /// charset other than UTF-8.
    UnsupportedMediaType(String),
    /// The byte at this position starts no valid UTF-8 sequence.
    InvalidUtf8 {
        line: usize,
        column: usize,
    },
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    /// Nested deeper than serde_json's recursion limit.
    TooDeep {
        line: usize,
        column: usize,
    },
    /// A key that appears twice in one object, named by its path
    /// (`properties.plan`, `events[2].name`).
    DuplicateKey {
        line: usize,
        column: usize,
        key: String,
    },
}

/// How deep JSON may nest: serde_json's recursion limit of 128 admits 127
/// levels of arrays and objects.
pub const MAX_DEPTH: usize = 127;

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { max } => write!(f, "request body exceeds {max} bytes"),
            BodyError::Timeout { after_ms } => {
                write!(f, "the request body did not arrive within {after_ms} ms")
            }
            BodyError::Unreadable(m) => write!(f, "the request body could not be read: {m}"),
            BodyError::BadEncoding(m) | BodyError::UnsupportedMediaType(m) => f.write_str(m),
            BodyError::UnsupportedEncoding(enc) => write!(
                f,
                "Content-Encoding {enc:?} is not supported; use gzip or none"
            ),
            BodyError::InvalidUtf8 { line, column } => write!(
                f,
                "the body is not valid UTF-8: invalid byte at line {line} column {column}"
            ),
            BodyError::Malformed {
                line,
                column,
                message,
            } => write!(f, "malformed JSON at line {line} column {column}: {message}"),
            BodyError::TooDeep { line, column } => write!(
                f,
                "JSON nested deeper than {MAX_DEPTH} levels at line {line} column {column}"
            ),
            BodyError::DuplicateKey { line, column, key } => write!(
                f,
                "duplicate key {key:?} at line {line} column {column}: a key may appear once in an object"
            ),
        }
    }
}

impl BodyError {
    /// The same error, on line `n` of a longer body (NDJSON).
    pub(crate) fn on_line(self, n: usize) -> Self {
        match self {
            BodyError::InvalidUtf8 { column, .. } => BodyError::InvalidUtf8 { line: n, column },
            BodyError::Malformed {
                column, message, ..
            } => BodyError::Malformed {
                line: n,
                column,
                message,
            },
            BodyError::TooDeep { column, .. } => BodyError::TooDeep { line: n, column },
            BodyError::DuplicateKey { column, key, .. } => BodyError::DuplicateKey {
                line: n,
                column,
                key,
            },
            other => other,
        }
    }
}

/// Media types a body may be sent as: JSON and its line-delimited forms,
/// `text/plain` (what `navigator.sendBeacon` sends a string as), and
/// `application/x-www-form-urlencoded` (what `curl -d` claims by default).
/// No Content-Type at all is accepted too; the body must be JSON whatever
/// the header says.
const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "text/plain",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/jsonlines",
    "application/x-jsonlines",
    "application/x-www-form-urlencoded",
];

/// At most this much of a client's text is quoted back in an error.
const QUOTE_BYTES: usize = 64;

/// `s`, cut to `QUOTE_BYTES` on a character boundary.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_BYTES {
        return s.to_string();
    }
    let mut end = QUOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Refuses a Content-Type the gateway does not read, or a charset other
/// than UTF-8.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), BodyError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    let refuse = |m: String| Err(BodyError::UnsupportedMediaType(m));
    if values.next().is_some() {
        return refuse("send one Content-Type header, not several".into());
    }
    let Ok(text) = value.to_str() else {
        return refuse("the Content-Type header is not ASCII text".into());
    };
    if text.trim().is_empty() {
        return Ok(());
    }
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json_like = MEDIA_TYPES.contains(&essence.as_str())
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !json_like {
        return refuse(format!(
            "Content-Type {:?} is not supported; send application/json \
             (text/plain and application/x-ndjson are read as JSON too)",
            quote(&essence)
        ));
    }
    for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = param.split_once('=') else {
            return refuse(format!(
                "Content-Type parameter {:?} is not name=value",
                quote(param)
            ));
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"').to_ascii_lowercase();
            if !matches!(charset.as_str(), "utf-8" | "utf8" | "us-ascii") {
                return refuse(format!(
                    "Content-Type charset {:?} is not supported; send UTF-8",
                    quote(&charset)
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, BodyError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let Ok(text) = value.to_str() else {
        return Err(BodyError::UnsupportedEncoding("<not ASCII text>".into()));
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(BodyError::UnsupportedEncoding(quote(other))),
    }
}

/// What of a body is still read and thrown away before an error is
/// answered, so that a client still sending it reads the answer rather
/// than a connection reset (as nginx's lingering close does).
const DRAIN_BYTES: u64 = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// The same for a request refused before its body was read (no key, an
/// unsupported Content-Type): less, since its sender may be anyone.
const REFUSED_DRAIN_BYTES: u64 = 64 * 1024;
const REFUSED_DRAIN_TIME: Duration = Duration::from_millis(250);

/// Reads and discards what is left of `body`, up to `max` bytes and `within`.
async fn drain(body: &mut Body, max: u64, within: Duration) {
    if body.size_hint().lower() > max {
        return; // the client said how much: too much to wait for
    }
    let _ = tokio::time::timeout(within, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// Throws away the body of a request refused before reading it.
pub async fn discard(mut body: Body) {
    drain(&mut body, REFUSED_DRAIN_BYTES, REFUSED_DRAIN_TIME).await;
}

/// Reads the body, at most `max_bytes` before and after decompression, and
/// within `timeout` of the call.
pub async fn read(
    headers: &HeaderMap,
    mut body: Body,
    max_bytes: usize,
    timeout: Option<Duration>,
) -> Result<Bytes, BodyError> {
    let encoding = match content_encoding(headers) {
        Ok(e) => e,
        Err(e) => {
            discard(body).await;
            return Err(e);
        }
    };
    let collected = match timeout {
        None => collect(&mut body, max_bytes).await,
        Some(t) => tokio::time::timeout(t, collect(&mut body, max_bytes))
            .await
            .unwrap_or(Err(BodyError::Timeout {
                after_ms: t.as_millis() as u64,
            })),
    };
    let raw = match collected {
        Ok(raw) => raw,
        Err(e @ BodyError::TooLarge { .. }) => {
            drain(&mut body, DRAIN_BYTES, DRAIN_TIME).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip(&raw, max_bytes),
    }
}

async fn collect(body: &mut Body, max_bytes: usize) -> Result<Bytes, BodyError> {
    let too_large = BodyError::TooLarge { max: max_bytes };
    let hint = body.size_hint().lower();
    if hint > max_bytes as u64 {
        return Err(too_large);
    }
    let mut out = Vec::with_capacity(hint as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max_bytes {
                return Err(too_large);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.into())
}

fn gunzip(raw: &[u8], max_bytes: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(raw);
    decoder
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::BadEncoding(format!("invalid gzip body: {e}")))?;
    if out.len() > max_bytes {
        return Err(BodyError::TooLarge { max: max_bytes });
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        assert_eq!(&gunzip(&gz(b"{\"a\":1}"), 100).unwrap()[..], b"{\"a\":1}");
        // 10 MB of zeros compress to ~10 kB; inflating must stop at the limit.
        let bomb = gz(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            gunzip(&bomb, 1_000_000),
            Err(BodyError::TooLarge { max: 1_000_000 })
        );
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(BodyError::BadEncoding(_))
        ));
    }

    fn with_type(v: &'static [u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_bytes(v).unwrap(),
        );
        h
    }

    #[test]
    fn content_types_other_than_json_are_refused() {
        assert_eq!(check_content_type(&HeaderMap::new()), Ok(()));
        for ok in [
            &b"application/json"[..],
            b"Application/JSON; charset=UTF-8",
            b"text/plain;charset=\"utf-8\"",
            b"application/x-ndjson",
            b"application/vnd.api+json",
            b"application/x-www-form-urlencoded",
        ] {
            assert_eq!(check_content_type(&with_type(ok)), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            (
                &b"application/xml"[..],
                "\"application/xml\" is not supported",
            ),
            (b"multipart/form-data; boundary=x", "multipart/form-data"),
            (b"application/json; charset=utf-16", "charset \"utf-16\""),
            (b"text/plain; charset=latin1", "charset \"latin1\""),
            (b"application/json; oops", "not name=value"),
            (b"application/\xffjson", "not ASCII"),
        ] {
            match check_content_type(&with_type(bad)) {
                Err(BodyError::UnsupportedMediaType(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    fn trickle(chunks: Vec<&'static [u8]>, every: Duration) -> Body {
        let stream = futures::stream::iter(chunks).then(move |c| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::io::Error>(Bytes::from_static(c))
        });
        Body::from_stream(stream)
    }

    use futures::StreamExt;

    #[tokio::test]
    async fn a_slow_body_times_out_and_a_large_one_is_refused() {
        let h = HeaderMap::new();
        let slow = trickle(vec![b"{"; 20], Duration::from_millis(50));
        assert_eq!(
            read(&h, slow, 1000, Some(Duration::from_millis(200))).await,
            Err(BodyError::Timeout { after_ms: 200 })
        );
        let fine = trickle(vec![b"{", b"}"], Duration::from_millis(10));
        assert_eq!(
            read(&h, fine, 1000, Some(Duration::from_secs(5)))
                .await
                .unwrap(),
            &b"{}"[..]
        );
        let big = trickle(vec![&[b' '; 600], &[b' '; 600]], Duration::from_millis(1));
        assert_eq!(
            read(&h, big, 1000, None).await,
            Err(BodyError::TooLarge { max: 1000 })
        );
        let mut gz = HeaderMap::new();
        gz.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(
            read(&gz, Body::from("{}"), 1000, None).await,
            Err(BodyError::UnsupportedEncoding("br".into()))
        );
    }
}
