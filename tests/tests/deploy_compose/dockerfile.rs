//! The `Dockerfile` and `.dockerignore`: stages, pinned bases, the binaries
//! the image copies, a non-root user, the directories it gives that user, and
//! what the build context keeps.

use super::*;

pub(crate) struct Instruction {
    pub(crate) keyword: String,
    pub(crate) args: String,
}

pub(crate) struct Stage {
    pub(crate) image: String,
    pub(crate) name: Option<String>,
    pub(crate) body: Vec<Instruction>,
}

/// Splits a Dockerfile into stages: comment lines (parser directives
/// included) dropped, continuation lines joined, keywords upper-cased.
pub(crate) fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines may sit inside a continued instruction.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = vec![];
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words.first().unwrap_or(&"").to_string(),
                name,
                body: vec![],
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(Instruction { keyword, args });
        }
    }
    stages
}

/// `COPY [--flags] src... dst` as (from, sources, destination).
pub(crate) fn copy_parts(args: &str) -> (Option<String>, Vec<String>, String) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let from = words
        .iter()
        .find_map(|w| w.strip_prefix("--from="))
        .map(String::from);
    let paths: Vec<String> = words
        .iter()
        .filter(|w| !w.starts_with("--"))
        .map(|w| w.to_string())
        .collect();
    match paths.split_last() {
        Some((dst, srcs)) => (from, srcs.to_vec(), dst.clone()),
        None => (from, vec![], String::new()),
    }
}

/// What the final image contains, as the compose checks need it.
pub(crate) struct ImageFacts {
    /// Absolute paths the final stage copies in from other stages.
    pub(crate) files: BTreeSet<String>,
    /// Their file names under /usr/local/bin, /usr/bin or /bin: the programs
    /// a `command:` can name.
    pub(crate) binaries: BTreeSet<String>,
    /// Those of them copied `--chown` to the uid the final stage runs as: the
    /// paths that user may write (a directory among them stays writable under
    /// a new Docker named volume, which takes the directory's owner).
    pub(crate) owned: BTreeSet<String>,
}

/// The uid of a `USER` or `--chown=` argument (`user[:group]`); distroless
/// names its uid 65532 `nonroot`.
pub(crate) fn uid_of(user: &str) -> &str {
    match user.split(':').next().unwrap_or(user) {
        "nonroot" => "65532",
        uid => uid,
    }
}

pub(crate) fn image_facts(text: &str) -> ImageFacts {
    let stages = parse_dockerfile(text);
    let body = stages.last().map(|s| &s.body[..]).unwrap_or_default();
    let user = body
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| uid_of(&i.args).to_string());
    let mut files = BTreeSet::new();
    let mut owned = BTreeSet::new();
    for ins in body {
        if ins.keyword != "COPY" {
            continue;
        }
        let (_, srcs, dst) = copy_parts(&ins.args);
        let chown = ins
            .args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--chown="))
            .map(uid_of);
        let to_user = chown.is_some() && chown == user.as_deref();
        for src in &srcs {
            let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or(src);
            let path = if dst.ends_with('/') {
                format!("{dst}{base}")
            } else if srcs.len() == 1 {
                dst.clone()
            } else {
                continue;
            };
            if to_user {
                owned.insert(path.clone());
            }
            files.insert(path);
        }
    }
    let binaries = files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.rsplit_once('/')?;
            ["/usr/local/bin", "/usr/bin", "/bin"]
                .contains(&dir)
                .then(|| name.to_string())
        })
        .collect();
    ImageFacts {
        files,
        binaries,
        owned,
    }
}

/// The `[[bin]]` names of a crate, and its package name.
pub(crate) fn crate_bins(dir: &str) -> (String, Vec<String>) {
    let manifest: toml::Table = read(&repo().join(dir).join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml is TOML");
    let package = manifest["package"]["name"]
        .as_str()
        .expect("package.name")
        .to_string();
    let bins = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .map(|bins| {
            bins.iter()
                .filter_map(|b| b["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (package, bins)
}

pub(crate) fn workspace_members() -> Vec<String> {
    let manifest: toml::Table = read(&repo().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml is TOML");
    manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

/// The Dockerfile lint: stages and pins, the non-root final stage, the
/// feature argument reaching `cargo build`, the stages' binaries built and
/// copied into the image, the archiver's default store directory given to
/// the image's user, and every workspace manifest in the manifests-first
/// layer.
pub(crate) fn dockerfile_problems(text: &str) -> Vec<String> {
    let stages = parse_dockerfile(text);
    let mut problems = vec![];
    if stages.len() < 2 || stages[..stages.len() - 1].iter().any(|s| s.name.is_none()) {
        problems.push(
            "wants a named build stage (FROM ... AS name) and a separate runtime stage".into(),
        );
    }
    let names: BTreeSet<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in &stages {
        if !names.contains(stage.image.as_str()) {
            if let Some(p) = unpinned(&stage.image) {
                problems.push(format!("FROM {p}"));
            }
        }
        for ins in stage.body.iter().filter(|i| i.keyword == "COPY") {
            let (from, _, _) = copy_parts(&ins.args);
            match from {
                Some(f) if !names.contains(f.as_str()) && f.parse::<usize>().is_err() => {
                    if let Some(p) = unpinned(&f) {
                        problems.push(format!("COPY --from={p}"));
                    }
                }
                _ => {}
            }
        }
    }
    let Some(last) = stages.last() else {
        return problems;
    };

    let user = last
        .body
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| i.args.clone());
    let uid = user.as_deref().map(|u| u.split(':').next().unwrap_or(u));
    let non_root = uid.is_some_and(|u| u == "nonroot" || u.parse::<u32>().is_ok_and(|n| n != 0));
    if !non_root {
        problems.push(format!(
            "the final stage runs as {user:?}; it needs USER with a non-zero uid or nonroot"
        ));
    }

    let builds: Vec<(&Stage, &Instruction)> = stages
        .iter()
        .flat_map(|s| s.body.iter().map(move |i| (s, i)))
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    let [(build_stage, build)] = builds[..] else {
        problems.push(format!(
            "wants exactly one `cargo build`, found {}",
            builds.len()
        ));
        return problems;
    };
    let cargo: String = build
        .args
        .split("cargo build")
        .nth(1)
        .unwrap_or_default()
        .split("&&")
        .next()
        .unwrap_or_default()
        .to_string();
    let declared = build_stage
        .body
        .iter()
        .any(|i| i.keyword == "ARG" && i.args.split('=').next() == Some("CARGO_FEATURES"));
    let used = ["\"$CARGO_FEATURES\"", "\"${CARGO_FEATURES}\""]
        .iter()
        .any(|v| {
            cargo.contains(&format!("--features {v}")) || cargo.contains(&format!("--features={v}"))
        });
    if !declared || !used {
        problems.push(format!(
            "the build stage must declare ARG CARGO_FEATURES (declared: {declared}) and pass it as --features \"$CARGO_FEATURES\" (passed: {used})"
        ));
    }
    if !cargo.contains("--release") {
        problems.push("`cargo build` is not --release".into());
    }

    let facts = image_facts(text);
    for dir in STAGES {
        let (package, bins) = crate_bins(dir);
        if bins.is_empty() {
            problems.push(format!("{dir}/Cargo.toml has no [[bin]]"));
        }
        if !cargo.contains(&format!("-p {package}")) && !cargo.contains("--workspace") {
            problems.push(format!("`cargo build` does not select {package}"));
        }
        for bin in bins {
            if !cargo.contains("--bins") && !cargo.contains(&format!("--bin {bin}")) {
                problems.push(format!("`cargo build` does not build the {bin} binary"));
            }
            if !facts.binaries.contains(&bin) {
                problems.push(format!(
                    "the final stage does not copy the {bin} binary onto the PATH"
                ));
            }
        }
    }

    // The archiver's default store is a directory of the image: the root
    // filesystem belongs to root, so the Dockerfile must hand it to the user.
    let store = ArchiverConfig::default().store.url;
    if let Some(dir) = store.strip_prefix("file://") {
        let dir = dir.trim_end_matches('/');
        if !facts.owned.contains(dir) {
            problems.push(format!(
                "the final stage does not create {dir} (the archiver's default store, {store}) with COPY --chown to its USER: uid {} could not write it, nor a named volume mounted there",
                uid.unwrap_or("?")
            ));
        }
    }

    let copied: BTreeSet<String> = build_stage
        .body
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| copy_parts(&i.args).1)
        .collect();
    for member in workspace_members() {
        if !copied.contains(&format!("{member}/Cargo.toml")) {
            problems.push(format!(
                "the build stage does not copy {member}/Cargo.toml before the sources, so `cargo fetch` cannot load the workspace"
            ));
        }
    }
    problems
}

/// Whether a .dockerignore pattern matches a path: `*` within a path
/// component, `**` across components, `?` one character; a pattern that
/// matches a directory also covers what is inside it.
pub(crate) fn ignore_matches(pattern: &str, path: &str) -> bool {
    pub(crate) fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                (0..=s.len()).any(|i| glob(rest, &s[i..]))
            }
            (Some(b'*'), _) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| glob(&p[1..], &s[i..])),
            (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
    let mut prefix = String::new();
    path.split('/').any(|component| {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        glob(pattern.as_bytes(), prefix.as_bytes())
    })
}

pub(crate) fn ignored(patterns: &[&str], path: &str) -> bool {
    // The last matching line wins; `!` lines bring paths back.
    patterns
        .iter()
        .fold(false, |state, p| match p.strip_prefix('!') {
            Some(p) if ignore_matches(p, path) => false,
            None if ignore_matches(p, path) => true,
            _ => state,
        })
}

/// .dockerignore keeps the build output, git history and local stack state
/// out of the context, and none of what the image build reads.
pub(crate) fn dockerignore_problems(text: &str) -> Vec<String> {
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = vec![];
    for path in ["target", ".git", ".local"] {
        if !ignored(&patterns, &format!("{path}/x")) {
            problems.push(format!(".dockerignore does not exclude {path}/"));
        }
    }
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "core/assets/swagger-ui/swagger-ui-bundle.js.gz".to_string(),
        "core/schemas/event.avsc".to_string(),
        "ingest/build.rs".to_string(),
        "ingest/proto/event.proto".to_string(),
        "ingest/assets/weir.js".to_string(),
        "aggregator/migrations/0001_events_and_counts.sql".to_string(),
    ];
    needed.extend(
        workspace_members()
            .iter()
            .flat_map(|m| [format!("{m}/Cargo.toml"), format!("{m}/src/lib.rs")]),
    );
    for path in needed {
        if !repo().join(&path).exists() {
            problems.push(format!(
                "{path}, which the image build reads, is gone; update this test"
            ));
        } else if ignored(&patterns, &path) {
            problems.push(format!(
                ".dockerignore excludes {path}, which the image build reads"
            ));
        }
    }
    problems
}
