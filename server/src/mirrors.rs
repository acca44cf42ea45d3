//! `/v1/mirrors`: the bindings of the token's registries, their schedules
//! and last runs, a dry run (`plan`) and a run now (`run`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use chittysync::{AdapterBinding, MirrorOptions, MirrorRun};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{AppState, Problem, ProblemDetails, Shared, blocking, schedule};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/mirrors", get(list))
        .route("/mirrors/{name}", get(show))
        .route("/mirrors/{name}/plan", post(plan))
        .route("/mirrors/{name}/run", post(run))
}

/// A binding as listed.
#[derive(Serialize, ToSchema)]
pub(crate) struct MirrorView {
    name: String,
    registry: String,
    /// The adapter kind (`postgres`, `notion`, `sheets`, …).
    kind: String,
    /// What it mirrors to: a table, a Notion database, a spreadsheet.
    target: String,
    /// `both`, `push` or `pull`.
    direction: String,
    /// How often the service runs it by itself (seconds), if scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    every_secs: Option<u64>,
    /// Whether a run is under way.
    running: bool,
    /// When the schedule runs it next (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run_at: Option<i64>,
    /// The last run: when, how long, outcome, rows applied, failed and
    /// invalid, conflicts left open, and the error of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    last_run: Option<serde_json::Value>,
}

/// The bindings of the token's registries.
#[derive(Serialize, ToSchema)]
pub(crate) struct MirrorList {
    mirrors: Vec<MirrorView>,
}

/// One binding and its recent runs, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct MirrorDetail {
    #[serde(flatten)]
    mirror: MirrorView,
    #[schema(value_type = Vec<Object>)]
    runs: Vec<serde_json::Value>,
}

fn view(state: &AppState, binding: &AdapterBinding, last: Option<&MirrorRun>) -> MirrorView {
    MirrorView {
        name: binding.name.clone(),
        registry: binding.registry.clone(),
        kind: binding.kind.clone(),
        target: binding.target.clone(),
        direction: binding.direction.name().to_owned(),
        every_secs: binding.every_secs,
        running: state.schedule.running(&binding.name),
        next_run_at: binding
            .every_secs
            .and_then(|_| state.schedule.next_run(&binding.name)),
        last_run: last.map(MirrorRun::to_json),
    }
}

/// The binding `name` if its registry is one the token may use; otherwise
/// the same 404 as for no binding.
fn binding_for(state: &AppState, caller: &Caller, name: &str) -> Result<AdapterBinding, Problem> {
    let hidden = || {
        Problem::not_found(format!(
            "no mirror named '{name}' is shared with this token"
        ))
    };
    let binding = state
        .replica
        .binding(name)
        .map_err(|e| Problem::internal(e.to_string()))?
        .ok_or_else(hidden)?;
    caller
        .registry(state, &binding.registry)
        .map_err(|_| hidden())?;
    Ok(binding)
}

fn runs_of(state: &AppState, name: &str, limit: u32) -> Result<Vec<MirrorRun>, Problem> {
    state
        .replica
        .mirror_runs(name, limit)
        .map_err(|e| Problem::internal(e.to_string()))
}

/// The mirrors of the registries this token may use.
#[utoipa::path(
    get, path = "/v1/mirrors", tag = "mirrors",
    security(("token" = [])),
    responses(
        (status = 200, description = "The mirrors", body = MirrorList),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<axum::Json<MirrorList>, Problem> {
    blocking(move || {
        let bindings = state
            .replica
            .bindings()
            .map_err(|e| Problem::internal(e.to_string()))?;
        let mut mirrors = Vec::new();
        for binding in bindings {
            if caller.registry(&state, &binding.registry).is_err() {
                continue;
            }
            let last = runs_of(&state, &binding.name, 1)?;
            mirrors.push(view(&state, &binding, last.first()));
        }
        Ok(axum::Json(MirrorList { mirrors }))
    })
    .await
}

/// One mirror: its binding, schedule and last 20 runs.
#[utoipa::path(
    get, path = "/v1/mirrors/{name}", tag = "mirrors",
    security(("token" = [])),
    params(("name" = String, Path, description = "The binding's name")),
    responses(
        (status = 200, description = "The mirror", body = MirrorDetail),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such mirror, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<MirrorDetail>, Problem> {
    blocking(move || {
        let binding = binding_for(&state, &caller, &name)?;
        let runs = runs_of(&state, &name, 20)?;
        Ok(axum::Json(MirrorDetail {
            mirror: view(&state, &binding, runs.first()),
            runs: runs.iter().map(MirrorRun::to_json).collect(),
        }))
    })
    .await
}

/// Plans a run and writes nothing (a dry run): what would change on each side.
#[utoipa::path(
    post, path = "/v1/mirrors/{name}/plan", tag = "mirrors",
    security(("token" = [])),
    params(("name" = String, Path, description = "The binding's name")),
    responses(
        (status = 200, description = "The plan", body = Object),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such mirror, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "A run is under way", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 502, description = "The mirror's target failed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "This service does not run mirrors", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn plan(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    let mut options = MirrorOptions::default();
    options.dry_run = true;
    run_now(state, caller, name, options).await
}

/// Runs a mirror now (both ways, as its binding says) and returns its report.
#[utoipa::path(
    post, path = "/v1/mirrors/{name}/run", tag = "mirrors",
    security(("token" = [])),
    params(("name" = String, Path, description = "The binding's name")),
    responses(
        (status = 200, description = "The run's report", body = Object),
        (status = 401, description = "No valid token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token may not write", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such mirror, or not shared with this token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "A run is under way", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 502, description = "The mirror's target failed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "This service does not run mirrors", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn run(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    run_now(state, caller, name, MirrorOptions::default()).await
}

async fn run_now(
    state: Shared,
    caller: Caller,
    name: String,
    options: MirrorOptions,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    let Some(kinds) = state.kinds.clone() else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-mirrors",
            "this service was started without adapters, so it cannot run mirrors",
        ));
    };
    let checked = state.clone();
    let caller = blocking(move || {
        let binding = binding_for(&checked, &caller, &name)?;
        let registry = caller.registry(&checked, &binding.registry)?;
        caller.require_writer(&registry)?;
        Ok((caller, name))
    })
    .await;
    let (_caller, name) = caller?;
    let Some(claim) = state.schedule.guard(&name, None) else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "running",
            format!("mirror '{name}' is running now; try again when it has finished"),
        ));
    };
    // The run goes on to its end (and is recorded) even if this request is
    // cancelled or times out: stopping between its writes and saving its
    // merge bases would make the next run write the same rows again.
    let task = state.clone();
    let running = tokio::task::spawn_blocking(move || {
        let outcome = tokio::runtime::Handle::current().block_on(schedule::run_once(
            &task.replica,
            &kinds,
            &name,
            &options,
            &task.metrics,
        ));
        claim.finish(true);
        outcome
    });
    let outcome = running.await.map_err(|_| {
        Problem::internal("the mirror run failed inside the service; it was logged")
    })?;
    match outcome.map_err(|failed| *failed) {
        Ok((_, report)) => Ok(axum::Json(report.to_json())),
        Err((_, e @ chittysync::MirrorError::Busy { .. })) => {
            Err(Problem::new(StatusCode::CONFLICT, "running", e.to_string()))
        }
        Err((run, _)) => Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "mirror-failed",
            run.error
                .unwrap_or_else(|| "the mirror run failed".to_owned()),
        )),
    }
}
