//! A registry's history and standing over HTTP: its audit log (filtered,
//! paged, or as JSON Lines), its open conflicts (and settling one), its
//! attestation status, and the replica journal's entries about it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chittysync::{AuditFilter, PublicKey, Value};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::problem::ApiQuery;
use crate::registries::with_etag;
use crate::{Problem, ProblemDetails, Shared, blocking};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/registries/{registry}/audit", get(audit))
        .route("/registries/{registry}/conflicts", get(conflicts))
        .route("/registries/{registry}/conflicts/resolve", post(resolve))
        .route("/registries/{registry}/status", get(status))
        .route("/registries/{registry}/journal", get(journal))
}

/// Which changes of the audit log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only changes that touched this record.
    record: Option<String>,
    /// Only changes signed by this key.
    author: Option<String>,
    /// Only changes at or after this time (ms since the epoch).
    since: Option<i64>,
    /// Only changes before this time (ms since the epoch).
    until: Option<i64>,
    /// Only changes after this position (a page's `next_after`).
    after: Option<i64>,
    /// The most entries to return.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// A page of the audit log, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// Each change: position, hash, time, author, signature status, message
    /// and effects (what it changed, from what to what).
    #[schema(value_type = Vec<Object>)]
    entries: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

/// The audit log: who changed what, when, from what to what. With `Accept:
/// application/jsonl`, every entry as JSON Lines.
#[utoipa::path(
    get, path = "/v1/registries/{registry}/audit", tag = "history",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id"), AuditParams),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 400, description = "A malformed filter", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn audit(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<AuditParams>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let author = params
        .author
        .as_deref()
        .map(|k| {
            k.parse::<PublicKey>()
                .map_err(|e| Problem::bad_request(format!("author={k}: {e}")))
        })
        .transpose()?;
    if params.limit == Some(0) {
        return Err(Problem::bad_request("limit must be above 0"));
    }
    let lines = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/jsonl"));
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let mut filter = AuditFilter::all();
        filter.record = params.record.clone();
        filter.author = author;
        filter.since = params.since;
        filter.until = params.until;
        let mut entries = registry.audit(&filter)?;
        if let Some(after) = params.after {
            entries.retain(|e| e.position > after);
        }
        if lines {
            let mut body = String::new();
            for e in &entries {
                body.push_str(&e.to_json().to_string());
                body.push('\n');
            }
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jsonl"),
            );
            return Ok(response);
        }
        let limit = params
            .limit
            .unwrap_or(state.options.max_page)
            .min(state.options.max_page);
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_after = more.then(|| entries.last().map(|e| e.position)).flatten();
        Ok(axum::Json(AuditPage {
            entries: entries.iter().map(|e| e.to_json()).collect(),
            next_after,
        })
        .into_response())
    })
    .await
}

/// One value of a conflicted field.
#[derive(Serialize, ToSchema)]
pub(crate) struct CandidateView {
    #[schema(value_type = Object)]
    value: serde_json::Value,
    /// Who wrote it.
    author: Option<String>,
    /// When (ms, the writer's hybrid clock).
    time: i64,
    /// The change that wrote it.
    change: String,
}

/// A field with concurrent values.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConflictView {
    record: String,
    field: String,
    /// The conflict policy of the field.
    policy: String,
    candidates: Vec<CandidateView>,
    /// Index of the value the policy picks; absent for `manual`, which waits
    /// for someone to settle it.
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen: Option<usize>,
}

/// The open conflicts of a registry.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConflictList {
    conflicts: Vec<ConflictView>,
}

/// Fields with concurrent values, and what their policy picks.
#[utoipa::path(
    get, path = "/v1/registries/{registry}/conflicts", tag = "history",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id")),
    responses(
        (status = 200, description = "The open conflicts", body = ConflictList),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn conflicts(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let heads = registry.heads();
        let conflicts = registry
            .conflicts()
            .into_iter()
            .map(|c| ConflictView {
                record: c.record,
                field: c.field,
                policy: c.policy.name().to_owned(),
                candidates: c
                    .candidates
                    .into_iter()
                    .map(|k| CandidateView {
                        value: k.value.to_json(),
                        author: k.author.map(|a| a.to_string()),
                        time: k.time,
                        change: k.change.to_string(),
                    })
                    .collect(),
                chosen: c.chosen,
            })
            .collect();
        Ok(with_etag(
            axum::Json(ConflictList { conflicts }).into_response(),
            &heads,
        ))
    })
    .await
}

/// How to settle a conflict: the value to keep.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resolution {
    record: String,
    field: String,
    /// The value to keep (any value the field takes, not only a candidate).
    #[schema(value_type = Object)]
    value: serde_json::Value,
}

/// Settles a conflict by writing the chosen value, signed by the token.
#[utoipa::path(
    post, path = "/v1/registries/{registry}/conflicts/resolve", tag = "history",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id")),
    request_body = Resolution,
    responses(
        (status = 204, description = "Settled"),
        (status = 400, description = "A malformed body", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, record or conflict", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The value breaks the schema", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn resolve(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let resolution: Resolution = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "the body must be {{\"record\": ID, \"field\": NAME, \"value\": VALUE}} ({e})"
        ))
    })?;
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        caller.require_writer(&registry)?;
        let open = registry
            .conflicts()
            .iter()
            .any(|c| c.record == resolution.record && c.field == resolution.field);
        if !open {
            return Err(Problem::not_found(format!(
                "record {} of registry '{}' has no conflict on field '{}'",
                resolution.record,
                registry.name(),
                resolution.field
            )));
        }
        let value = Value::from_json(&resolution.value);
        registry.write_as(
            &caller.0.identity,
            &caller.message("settle a conflict"),
            |w| {
                w.put(
                    Some(&resolution.record),
                    [(resolution.field.clone(), value)],
                )
                .map(drop)
            },
        )?;
        Ok(with_etag(
            StatusCode::NO_CONTENT.into_response(),
            &registry.heads(),
        ))
    })
    .await
}

/// A registry's state and who attests it.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatusView {
    heads: Vec<String>,
    /// The state digest members attest.
    digest: String,
    changes: u64,
    /// Members who signed this exact state.
    attested_by: Vec<String>,
    /// How many members the registry has (n).
    members: usize,
    /// The threshold k, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
    /// Whether at least k members attest the current state.
    attested: bool,
}

/// The registry's attestation status (quorum k of n).
#[utoipa::path(
    get, path = "/v1/registries/{registry}/status", tag = "history",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id")),
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn status(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<StatusView>, Problem> {
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let s = registry.status()?;
        Ok(axum::Json(StatusView {
            heads: s.heads.iter().map(ToString::to_string).collect(),
            attested: s.attested(),
            digest: s.digest,
            changes: s.change_count,
            attested_by: s.attested_by.iter().map(ToString::to_string).collect(),
            members: s.members,
            quorum: s.quorum,
        }))
    })
    .await
}

/// Journal entries about a registry.
#[derive(Serialize, ToSchema)]
pub(crate) struct JournalPage {
    /// Each entry: sequence number, time, kind and detail.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<serde_json::Value>,
}

/// What this replica recorded about the registry: writes, imports, refusals,
/// bindings and tokens, oldest first (at most the last 1,000).
#[utoipa::path(
    get, path = "/v1/registries/{registry}/journal", tag = "history",
    security(("token" = [])),
    params(("registry" = String, Path, description = "The registry's name or id")),
    responses(
        (status = 200, description = "The journal's entries about the registry", body = JournalPage),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such registry, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn journal(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<JournalPage>, Problem> {
    blocking(move || {
        let registry = caller.registry(&state, &name)?;
        let id = registry.id();
        let entries = state
            .replica
            .journal_of(id, 1_000)?
            .into_iter()
            .map(|e| {
                let mut detail = e.detail;
                // A token's entry lists all its registries; show none of
                // the others.
                if let Some(list) = detail.get_mut("registries") {
                    *list = serde_json::json!([registry.name()]);
                }
                serde_json::json!({
                    "seq": e.seq, "at": e.at, "kind": e.kind, "detail": detail,
                })
            })
            .collect();
        Ok(axum::Json(JournalPage { entries }))
    })
    .await
}
