//! `GET /v1/metrics`: the total count and unique users of an event name or
//! prefix over a range, optionally grouped by a column, a time bucket or a
//! property (see `counts` for where the numbers come from).

use crate::counts::{range, required_name, rfc3339, Scope, OPEN_RANGE};
use crate::query::{bad_request, name_filter, unavailable, ApiState, QueryErrors, ReadScope};
use crate::strict_query::StrictQuery;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// An event name, or a prefix such as `cart.*`.
    name: Option<String>,
    /// Start, inclusive: RFC 3339 or epoch ms. Default: the beginning.
    from: Option<String>,
    /// End, exclusive: RFC 3339 or epoch ms. Default: no end.
    to: Option<String>,
    /// Only this tenant's events (a read key is bound to its own tenant anyway).
    tenant: Option<String>,
    /// `channel`, `name`, `namespace`, `minute`, `hour`, `day`, `property:<key>`, or
    /// `trait:<key>` (the user's latest trait from Segment identify, or `trait:group_id`).
    group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MetricsAnswer {
    name: String,
    /// RFC 3339, as every route answers times.
    from: String,
    to: String,
    total_count: u64,
    unique_users: u64,
    /// Present with `group_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    grouped_metrics: Option<Vec<GroupAnswer>>,
}

#[derive(Row, Deserialize)]
struct GroupRow {
    group_key: String,
    total_count: u64,
    unique_user_count: u64,
    is_total: u8,
}

#[derive(Row, Deserialize, Serialize, ToSchema)]
pub struct GroupAnswer {
    group_key: String,
    total_count: u64,
    unique_user_count: u64,
}

/// What `group_by` groups on: a column or time bucket of the per-minute
/// table, or a property of the events themselves.
pub(crate) enum Grouping {
    Counts(&'static str),
    Property(String),
    /// The latest value of a user trait (Segment identify or group).
    Trait(String),
}

/// The per-minute bucket: the one grouping the hourly rollup cannot serve.
const MINUTE_BUCKET: &str = "formatDateTime(toStartOfMinute(window_start), '%Y-%m-%dT%H:%i:00Z')";

pub(crate) fn grouping(g: &str) -> Result<Grouping, String> {
    Ok(match g {
        "channel" => Grouping::Counts("channel"),
        "name" => Grouping::Counts("name"),
        "namespace" => Grouping::Counts("namespace"),
        "minute" => Grouping::Counts(MINUTE_BUCKET),
        "hour" => {
            Grouping::Counts("formatDateTime(toStartOfHour(window_start), '%Y-%m-%dT%H:00:00Z')")
        }
        "day" => Grouping::Counts("toString(toDate(window_start))"),
        _ => match (g.strip_prefix("property:"), g.strip_prefix("trait:")) {
            (Some(key), _) if !key.is_empty() => Grouping::Property(key.to_string()),
            (_, Some(key)) if !key.is_empty() => Grouping::Trait(key.to_string()),
            _ => {
                return Err("must be channel, name, namespace, minute, hour, day, \
                            property:<key> or trait:<key>"
                    .into())
            }
        },
    })
}

/// Total count and unique users of an event name or prefix over a range,
/// optionally grouped.
#[utoipa::path(
    get, path = "/v1/metrics", tag = "metrics", params(MetricsParams),
    responses(
        (status = 200, description = "Exact totals, and `grouped_metrics` with `group_by`", body = MetricsAnswer),
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn metrics(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(p): StrictQuery<MetricsParams>,
) -> Response {
    let tenant = match scope.tenant(p.tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let name = required_name(p.name, &mut errors);
    let (from, to) = range(p.from.as_deref(), p.to.as_deref(), OPEN_RANGE, &mut errors);
    let group = match p.group_by.as_deref().map(grouping).transpose() {
        Ok(g) => g,
        Err(e) => {
            errors.insert("group_by", e);
            None
        }
    };
    if !errors.is_empty() {
        return bad_request(errors);
    }
    let scope = Scope {
        name: Some(name_filter(&name)),
        tenant,
        from,
        to,
    };
    match measure(&state.client, &scope, group.as_ref()).await {
        Ok(m) => Json(MetricsAnswer {
            name,
            from: rfc3339(from),
            to: rfc3339(to),
            total_count: m.total_count,
            unique_users: m.unique_users,
            grouped_metrics: m.groups,
        })
        .into_response(),
        Err(r) => r,
    }
}

/// What a metrics query finds: the range's totals and, with a grouping,
/// each group's.
pub(crate) struct Measured {
    pub total_count: u64,
    pub unique_users: u64,
    pub groups: Option<Vec<GroupAnswer>>,
}

/// The totals of `scope` and, with `group`, its groups: what `/v1/metrics`
/// and the event-stream route `/events/metrics` answer, each in its shape.
pub(crate) async fn measure(
    client: &clickhouse::Client,
    scope: &Scope,
    group: Option<&Grouping>,
) -> Result<Measured, Response> {
    // Per-minute groups need the minute table; everything else can read
    // whole hours from the rollup.
    let minutes = matches!(group, Some(Grouping::Counts(MINUTE_BUCKET)));
    let counts = scope.counts(minutes);
    match group {
        None => {
            let t = scope.totals(client).await.map_err(unavailable)?;
            Ok(Measured {
                total_count: t.total_count,
                unique_users: t.unique_users,
                groups: None,
            })
        }
        // One scan for the groups and the total: the empty grouping set is
        // the total, told apart by `grouping()`, not by a key value. The
        // expression comes from the fixed list in `grouping`.
        Some(Grouping::Counts(expr)) => {
            let sql = format!(
                "SELECT {expr} AS group_key, toUInt64(sum(count)) AS total_count, \
                        toUInt64(uniqExactMerge(users_exact)) AS unique_user_count, \
                        toUInt8(grouping(group_key)) AS is_total \
                 FROM {counts} AS c \
                 GROUP BY GROUPING SETS ((group_key), ()) ORDER BY is_total DESC, group_key \
                 SETTINGS force_grouping_standard_compatibility = 1"
            );
            let rows = scope
                .bind(client.query(&sql))
                .fetch_all::<GroupRow>()
                .await
                .map_err(unavailable)?;
            let mut m = Measured {
                total_count: 0,
                unique_users: 0,
                groups: Some(vec![]),
            };
            for r in rows {
                // Standard `grouping()`: 1 where the key is rolled up.
                if r.is_total == 1 {
                    (m.total_count, m.unique_users) = (r.total_count, r.unique_user_count);
                } else if let Some(groups) = &mut m.groups {
                    groups.push(GroupAnswer {
                        group_key: r.group_key,
                        total_count: r.total_count,
                        unique_user_count: r.unique_user_count,
                    });
                }
            }
            Ok(m)
        }
        // The per-minute table has no properties or traits: these come from
        // the events themselves, over the same range of event time; the
        // totals from the counts as above. A user without the trait is in
        // the group "".
        Some(g @ (Grouping::Property(key) | Grouping::Trait(key))) => {
            let t = scope.totals(client).await.map_err(unavailable)?;
            let range = scope.where_sql().replace("window_start", "timestamp");
            let sql = if matches!(g, Grouping::Property(_)) {
                format!(
                    "SELECT properties[{{key:String}}] AS group_key, count() AS total_count, \
                            toUInt64(uniqExact(coalesce(user_id, anonymous_id))) AS unique_user_count \
                     FROM events FINAL WHERE {range} \
                     GROUP BY group_key ORDER BY group_key"
                )
            } else {
                format!(
                    "SELECT t.value AS group_key, count() AS total_count, \
                            toUInt64(uniqExact(e.uid)) AS unique_user_count \
                     FROM (SELECT tenant, coalesce(user_id, anonymous_id) AS uid \
                           FROM events FINAL WHERE {range}) AS e \
                     LEFT JOIN (SELECT tenant, user_id AS uid, argMax(value, updated_at) AS value \
                                FROM user_traits WHERE key = {{key:String}} \
                                GROUP BY tenant, uid) AS t \
                     ON e.tenant = t.tenant AND e.uid = t.uid \
                     GROUP BY group_key ORDER BY group_key"
                )
            };
            let groups = scope
                .bind(client.query(&sql))
                .param("key", key)
                .fetch_all::<GroupAnswer>()
                .await
                .map_err(unavailable)?;
            Ok(Measured {
                total_count: t.total_count,
                unique_users: t.unique_users,
                groups: Some(groups),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_takes_only_the_documented_values() {
        for ok in [
            "channel",
            "name",
            "namespace",
            "minute",
            "hour",
            "day",
            "property:plan",
            "trait:plan",
        ] {
            assert!(grouping(ok).is_ok(), "{ok}");
        }
        for bad in ["", "week", "property:", "trait:", "name; DROP TABLE events"] {
            assert!(grouping(bad).is_err(), "{bad}");
        }
    }
}
