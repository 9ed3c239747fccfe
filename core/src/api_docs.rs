//! A stage's API documentation: `/openapi.json`, the spec generated from its
//! handlers, and `/docs`, Swagger UI reading that spec.
//!
//! Swagger UI's files are vendored from npm's `swagger-ui-dist` (see
//! `assets/swagger-ui/vendor.sh`) and compiled in, gzipped: a build never
//! downloads, and the docs work offline and in air-gapped clusters.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::io::Read;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContactBuilder, Info, InfoBuilder, LicenseBuilder, OpenApi, RefOr};

const BUNDLE_JS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js.gz");
const CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css.gz");

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>TITLE: API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
</script>
</body>
</html>
"##;

/// The `info` of a stage's spec: weir, its version, repository and license,
/// from the workspace's `Cargo.toml` (every crate inherits them). An
/// `OpenApiRouter`'s default `info` is the OpenAPI library's own metadata,
/// author and license included, so a stage must always replace it.
pub fn info(title: &str, description: &str) -> Info {
    let repository = env!("CARGO_PKG_REPOSITORY");
    InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .contact(Some(
            ContactBuilder::new()
                .name(Some("weir"))
                .url(Some(repository))
                .build(),
        ))
        .license(Some(
            LicenseBuilder::new()
                .name(env!("CARGO_PKG_LICENSE"))
                .identifier(Some(env!("CARGO_PKG_LICENSE")))
                .build(),
        ))
        .build()
}

/// The field names of an object type's schema: what a parser checks a
/// client's object against, so the spec and the parser cannot disagree on
/// which fields exist.
pub fn object_fields<T: utoipa::ToSchema>() -> Vec<String> {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
        _ => panic!("{} is not an object schema", T::name()),
    }
}

/// `/openapi.json`, `/docs` and the two files the page loads.
pub fn router<S: Clone + Send + Sync + 'static>(spec: OpenApi) -> Router<S> {
    let json = spec.to_pretty_json().expect("an OpenAPI spec serializes");
    let page = PAGE.replace("TITLE", &html_escape(&spec.info.title));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route(
            "/docs",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|h: HeaderMap| async move {
                gzipped(&h, BUNDLE_JS, "application/javascript; charset=utf-8")
            }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|h: HeaderMap| async move { gzipped(&h, CSS, "text/css; charset=utf-8") }),
        )
}

/// Serves gzipped bytes as they are to clients that accept gzip (every
/// browser), inflated to the rest.
fn gzipped(request: &HeaderMap, gz: &'static [u8], content_type: &'static str) -> Response {
    let accepts_gzip = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    let kind = (header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if accepts_gzip {
        let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return ([kind, cache, encoding], gz).into_response();
    }
    let mut plain = Vec::new();
    match flate2::read::GzDecoder::new(gz).read_to_end(&mut plain) {
        Ok(_) => ([kind, cache], plain).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_files_inflate_to_swagger_ui() {
        let mut js = String::new();
        flate2::read::GzDecoder::new(BUNDLE_JS)
            .read_to_string(&mut js)
            .unwrap();
        assert!(js.contains("SwaggerUIBundle"));
        let mut css = String::new();
        flate2::read::GzDecoder::new(CSS)
            .read_to_string(&mut css)
            .unwrap();
        assert!(css.contains(".swagger-ui"));
    }
}
