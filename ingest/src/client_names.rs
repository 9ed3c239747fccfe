//! `ClientNames`: which native field each field a client sent became, so a
//! validation error names the client's own field. The mappings of legacy
//! shapes (`compat`) and of Segment messages (`segment`) record their moves
//! in it.

/// Which native field each client field became, recorded as the mapping
/// moves them: `/api/write` without `event_name` is refused as
/// `event_name: is required`, not as weir's `name`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClientNames(Vec<(String, String)>);

impl ClientNames {
    /// Records that the client's `client` path became `native`.
    pub fn note(&mut self, native: impl Into<String>, client: impl Into<String>) {
        let (native, client) = (native.into(), client.into());
        if native != client {
            self.0.push((native, client));
        }
    }

    /// A validation error's field path, in the client's names: the longest
    /// recorded native path it starts with is replaced by the client's.
    pub fn client_field(&self, field: &str) -> String {
        let within = |prefix: &str| {
            field
                .strip_prefix(prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        };
        self.0
            .iter()
            .filter_map(|(native, client)| within(native).map(|rest| (native.len(), client, rest)))
            .max_by_key(|(len, _, _)| *len)
            .map_or_else(
                || field.to_string(),
                |(_, client, rest)| format!("{client}{rest}"),
            )
    }
}
