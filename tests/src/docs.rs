//! What weir tells its users, read where tests can check it against what it
//! does: the routes and metrics `docs/` documents, the OpenAPI `info` against
//! the workspace's `Cargo.toml`, and the JSON body of a route that does not
//! exist. Every test that checks docs against code reads them through here,
//! so a doc that moves or changes shape breaks one place.

use crate::stack::repo_root;
use serde_json::Value;
use std::collections::BTreeSet;

/// A file under the repository root, such as `docs/api.md`.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The section of `path` under `heading` (a whole line, such as
/// `## ingest`), up to the next heading of the same or a higher level.
pub fn section(path: &str, heading: &str) -> String {
    let text = read(path);
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut lines = text.lines().skip_while(|l| *l != heading);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{path} has no '{heading}' section"));
    let mut out = vec![first];
    let mut fenced = false;
    for line in lines {
        fenced ^= line.starts_with("```");
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let ends = !fenced && (1..=level).contains(&hashes) && line[hashes..].starts_with(' ');
        if ends {
            break;
        }
        out.push(line);
    }
    out.join("\n")
}

/// The `METHOD /path` pairs a section of `docs/api.md` names, for the
/// methods given (paths cut at `?`, `,` or `)`; methods lower-case).
pub fn api_routes(heading: &str, methods: &[&str]) -> BTreeSet<(String, String)> {
    let text = section("docs/api.md", heading);
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '`')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|p| methods.contains(&p[0]) && p[1].starts_with('/'))
        .map(|p| {
            let path = p[1].split(['?', ',', ')']).next().unwrap();
            (p[0].to_lowercase(), path.to_string())
        })
        .collect()
}

/// The metrics table of `docs/operations.md`: (stage, metric name) for each
/// name in each row.
pub fn metrics() -> Vec<(String, String)> {
    let text = section("docs/operations.md", "## Endpoints and metrics");
    let mut out = vec![];
    for line in text.lines().filter(|l| l.starts_with("| `weir_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        for name in cells[1].split('`').filter(|w| w.starts_with("weir_")) {
            let name = name.split('{').next().unwrap();
            // A metric several stages export names them all: `ingest, processor`.
            for stage in cells[2].split(',') {
                out.push((stage.trim().to_string(), name.to_string()));
            }
        }
    }
    assert!(
        out.len() >= 20,
        "docs/operations.md's metrics table went missing or changed shape: {out:?}"
    );
    out
}

/// The metric names `docs/operations.md` documents.
pub fn metric_names() -> BTreeSet<String> {
    metrics().into_iter().map(|(_, name)| name).collect()
}

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

/// `doc` shows the whole of the source file `file` (a `file!()` path) in
/// one of its code blocks: an example in the docs is a test that runs.
pub fn assert_doc_shows(doc: &str, file: &str) {
    let root = repo_root();
    let path = [root.join(file), root.join("tests").join(file)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} not found"));
    let source = std::fs::read_to_string(&path).expect("the example's source");
    let text = read(doc);
    let blocks: Vec<&str> = text.split("```").skip(1).step_by(2).collect();
    let shown = blocks
        .iter()
        .filter_map(|b| b.strip_prefix("rust\n"))
        .any(|b| b == source);
    assert!(shown, "{doc} does not show {file} as it is");
}
