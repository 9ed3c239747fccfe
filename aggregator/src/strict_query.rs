//! `StrictQuery`: the query-string extractor of every query route. It
//! refuses a parameter the route does not document, or one given twice,
//! with a 400 naming it, so a typo such as `event_name=` on a route that
//! takes `name=` is an error rather than a silently unfiltered answer.
//!
//! The parameters a route takes are read from its `IntoParams` type, the
//! same list the OpenAPI spec shows, so the check cannot drift from the
//! documentation.

use crate::query::bad_request;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::IntoParams;

/// The route's parameters, parsed after every name was checked.
pub struct StrictQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for StrictQuery<T>
where
    T: DeserializeOwned + IntoParams,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse(parts.uri.query().unwrap_or(""))
            .map(StrictQuery)
            .map_err(bad_request)
    }
}

/// The names `T` documents.
pub fn documented<T: IntoParams>() -> BTreeSet<String> {
    T::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// The parameters, or each refused one with its reason.
fn parse<T: DeserializeOwned + IntoParams>(query: &str) -> Result<T, BTreeMap<String, String>> {
    let refused = |reason: String| BTreeMap::from([("query".to_string(), reason)]);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| refused(format!("is not a valid query string: {e}")))?;
    let known = documented::<T>();
    let mut seen = BTreeSet::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for (name, _) in &pairs {
        if !known.contains(name) {
            let takes = known.iter().cloned().collect::<Vec<_>>().join(", ");
            errors.insert(
                name.clone(),
                format!("unknown parameter; this route takes {takes}"),
            );
        } else if !seen.insert(name.clone()) {
            errors.insert(name.clone(), "is given more than once".into());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_urlencoded::from_str(query).map_err(|e| refused(format!("could not be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, IntoParams, PartialEq)]
    #[into_params(parameter_in = Query)]
    struct Params {
        name: Option<String>,
        page: Option<String>,
    }

    fn refused(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let ok: Params = parse("name=a%20b&page=2").unwrap();
        assert_eq!(
            ok,
            Params {
                name: Some("a b".into()),
                page: Some("2".into())
            }
        );
        assert_eq!(parse::<Params>("").unwrap().name, None);

        assert_eq!(
            parse::<Params>("event_name=x&name=y").unwrap_err(),
            refused(&[(
                "event_name",
                "unknown parameter; this route takes name, page"
            )])
        );
        assert_eq!(
            parse::<Params>("name=x&name=y").unwrap_err(),
            refused(&[("name", "is given more than once")])
        );
    }
}
