//! Request bodies: size limit, `Content-Encoding: gzip`, and JSON or NDJSON
//! parsing with errors that name the line and column.
//!
//! The size limit applies to the decompressed bytes too, so a gzip bomb is
//! cut off at `max_bytes` rather than inflated into memory.

use axum::body::{to_bytes, Body, Bytes};
use axum::http::HeaderMap;
use serde_json::Value;
use std::io::Read;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge {
        max: usize,
    },
    BadEncoding(String),
    UnsupportedEncoding(String),
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads the body, at most `max_bytes` before and after decompression.
pub async fn read(headers: &HeaderMap, body: Body, max_bytes: usize) -> Result<Bytes, BodyError> {
    let raw = to_bytes(body, max_bytes)
        .await
        .map_err(|_| BodyError::TooLarge { max: max_bytes })?;
    let encoding = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => gunzip(&raw, max_bytes),
        other => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
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

/// One JSON document.
pub fn json(bytes: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(bytes).map_err(|e| BodyError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// One JSON document per non-blank line: each line parsed on its own, so a
/// bad line is rejected without losing the good ones. Returns (line number,
/// parse result) pairs, lines counted from 1.
pub fn ndjson(bytes: &[u8]) -> Vec<(usize, Result<Value, BodyError>)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| {
            let parsed = serde_json::from_slice(l).map_err(|e| BodyError::Malformed {
                line: i + 1,
                column: e.column(),
                message: format!("line {}: {e}", i + 1),
            });
            (i + 1, parsed)
        })
        .collect()
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

    #[test]
    fn ndjson_keeps_good_lines_and_numbers_bad_ones() {
        let lines = ndjson(b"{\"a\":1}\n\n{bad\n{\"b\":2}\n");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].1.is_ok() && lines[2].1.is_ok());
        assert_eq!(lines[1].0, 3);
        assert!(matches!(
            &lines[1].1,
            Err(BodyError::Malformed { line: 3, .. })
        ));
    }
}
