//! `/v1/registries`: the registries a token may use, and one registry's
//! schema, members, heads, state digest and counts.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chittysync::{ChangeHash, Registry};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{Problem, ProblemDetails, Shared, blocking};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/registries", get(list))
        .route("/registries/{registry}", get(show))
}

/// A registry, as listed.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistrySummary {
    /// Its id (32 hex digits).
    id: String,
    /// Its name.
    name: String,
    /// Live records.
    records: usize,
    /// Its heads, as in the `ETag` of its records.
    heads: Vec<String>,
}

/// The registries this token may use.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistryList {
    registries: Vec<RegistrySummary>,
}

/// A member of a registry.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    /// Their public key.
    key: String,
    /// `reader`, `writer` or `admin`.
    role: String,
    /// A human name for the key, if an admin gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<String>,
}

/// One registry in full.
#[derive(Serialize, ToSchema)]
pub(crate) struct RegistryDetail {
    /// Its id (32 hex digits).
    id: String,
    /// Its name.
    name: String,
    /// Its schema: fields with their types and rules.
    #[schema(value_type = Object)]
    schema: serde_json::Value,
    /// Who may read and write it.
    members: Vec<MemberView>,
    /// Its heads.
    heads: Vec<String>,
    /// A digest of its state: equal on replicas that hold the same records.
    state_digest: String,
    /// Live records.
    records: usize,
    /// Signed changes in its history.
    changes: usize,
    /// Fields with concurrent values.
    conflicts: usize,
}

/// The `ETag` of a registry's state: its heads, sorted, joined by `.`.
pub(crate) fn etag(heads: &[ChangeHash]) -> String {
    let mut hex: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    hex.sort();
    format!("\"{}\"", hex.join("."))
}

/// The heads an `If-Match` header names, if it has one. `*` (any state)
/// gives `None`, like no header.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Vec<ChangeHash>>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Problem::bad_request("If-Match is not text"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let bad = || {
        Problem::bad_request(format!(
            "If-Match must be one ETag this service sent (a quoted list of heads), not {text}"
        ))
    };
    let inner = text
        .strip_prefix("W/")
        .unwrap_or(text)
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    if inner.is_empty() {
        return Ok(Some(Vec::new()));
    }
    inner
        .split('.')
        .map(|h| h.parse::<ChangeHash>().map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Adds the registry's `ETag` to a response.
pub(crate) fn with_etag(mut response: Response, heads: &[ChangeHash]) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(heads)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn summary(registry: &Registry) -> RegistrySummary {
    RegistrySummary {
        id: registry.id().to_string(),
        name: registry.name(),
        records: registry.len(),
        heads: registry.heads().iter().map(ToString::to_string).collect(),
    }
}

/// Lists the registries this token may use.
#[utoipa::path(
    get, path = "/v1/registries", tag = "registries",
    security(("token" = [])),
    responses(
        (status = 200, description = "The registries this token may use", body = RegistryList),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<axum::Json<RegistryList>, Problem> {
    blocking(move || {
        let mut registries = Vec::new();
        for id in &caller.0.token.registries {
            if let Ok(registry) = state.replica.registry_by_id(*id) {
                registries.push(summary(&registry));
            }
        }
        registries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(axum::Json(RegistryList { registries }))
    })
    .await
}

/// One registry: schema, members, heads, state digest and counts.
#[utoipa::path(
    get, path = "/v1/registries/{registry}", tag = "registries",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id")),
    responses(
        (status = 200, description = "The registry", body = RegistryDetail,
         headers(("ETag" = String, description = "The registry's heads"))),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let heads = registry.heads();
        let detail = RegistryDetail {
            id: registry.id().to_string(),
            name: registry.name(),
            schema: serde_json::to_value(registry.schema())
                .map_err(|e| Problem::internal(format!("the schema does not serialise: {e}")))?,
            members: registry
                .members()
                .into_iter()
                .map(|m| MemberView {
                    key: m.key.to_string(),
                    role: m.role.name().to_owned(),
                    alias: m.alias,
                })
                .collect(),
            heads: heads.iter().map(ToString::to_string).collect(),
            state_digest: registry.state_digest(),
            records: registry.len(),
            changes: registry.change_count(),
            conflicts: registry.conflicts().len(),
        };
        Ok(with_etag(axum::Json(detail).into_response(), &heads))
    })
    .await
}
