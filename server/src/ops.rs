//! What operators and load balancers ask: `/health` (the process answers),
//! `/ready` (the replica is open and writable) and `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{Problem, ProblemDetails, Shared, blocking};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// The process is alive.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: String,
    /// Seconds since the service started.
    uptime_seconds: u64,
    /// The replica's public key.
    public_key: String,
}

/// Whether the process answers.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub(crate) async fn health(State(state): State<Shared>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        public_key: state.replica.public_key().to_string(),
    })
}

/// Whether the replica is open and its store answers a write.
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store cannot be written", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn ready(State(state): State<Shared>) -> Result<axum::Json<Health>, Problem> {
    let replica = state.replica.clone();
    blocking(move || replica.check_writable().map_err(Problem::from)).await?;
    Ok(health(State(state)).await)
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<Shared>) -> Result<Response, Problem> {
    let shared = state.clone();
    let text = blocking(move || Ok(shared.metrics.render(&shared.replica))).await?;
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
