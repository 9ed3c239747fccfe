//! Image references: pinned by version tag or digest, never `latest`.

/// Why an image reference does not name one version of an image, or `None`
/// when it does: a sha256 digest, or a tag that is a version number. `latest`,
/// no tag (which means `latest`) and names such as `nonroot` or `stable` move
/// whenever the publisher pushes.
pub(crate) fn unpinned(reference: &str) -> Option<String> {
    if reference.contains('$') {
        return Some(format!(
            "{reference}: built from a variable, so its pin cannot be checked"
        ));
    }
    if let Some((_, digest)) = reference.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        return (hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("{reference}: the digest is not sha256:<64 hex digits>"));
    }
    // A ':' before the last '/' belongs to a registry's port, not to a tag.
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        None => Some(format!("{reference}: no tag, which means `latest`")),
        Some((_, tag)) if !is_version_tag(tag) => Some(format!(
            "{reference}: tag {tag:?} is not a version, so it moves"
        )),
        Some(_) => None,
    }
}

pub(crate) fn is_version_tag(tag: &str) -> bool {
    let digits = tag.strip_prefix('v').unwrap_or(tag);
    digits.starts_with(|c: char| c.is_ascii_digit())
}
