//! Checks of what weir tells its users against what it does: the OpenAPI
//! `info` against the workspace's `Cargo.toml`, and the JSON body of a route
//! that does not exist.

use crate::stack::repo_root;
use serde_json::Value;

/// The workspace's `[workspace.package]` table.
fn workspace_package() -> toml::Table {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let mut manifest: toml::Table = text.parse().expect("Cargo.toml is TOML");
    let workspace = manifest.remove("workspace").expect("[workspace]");
    workspace
        .get("package")
        .and_then(|p| p.as_table())
        .expect("[workspace.package]")
        .clone()
}

/// A served spec's `info` names weir, its version, repository and license as
/// `Cargo.toml` declares them, and no one else's contact.
pub fn assert_openapi_info(spec: &Value, title: &str) {
    let package = workspace_package();
    let field = |k: &str| {
        package[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}"))
            .to_string()
    };
    let info = &spec["info"];
    assert_eq!(info["title"], title, "{info}");
    assert_eq!(info["version"], field("version"), "{info}");
    assert_eq!(info["license"]["name"], field("license"), "{info}");
    assert_eq!(info["license"]["identifier"], field("license"), "{info}");
    assert_eq!(info["contact"]["name"], "weir", "{info}");
    assert_eq!(info["contact"]["url"], field("repository"), "{info}");
    assert!(info["contact"].get("email").is_none(), "{info}");
}

/// Requests a path no stage serves and a method `/healthz` does not take;
/// both answer a JSON error with their code.
pub async fn assert_unknown_routes_answer_json(base_url: &str) {
    let http = reqwest::Client::new();
    for (method, path, status, code) in [
        (reqwest::Method::GET, "/no/such/route", 404, "not_found"),
        (reqwest::Method::POST, "/v1/event", 404, "not_found"),
        (
            reqwest::Method::DELETE,
            "/healthz",
            405,
            "method_not_allowed",
        ),
    ] {
        let r = http
            .request(method.clone(), format!("{base_url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(kind, "application/json", "{method} {path}");
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(path)),
            "{method} {path}: {body}"
        );
    }
}
