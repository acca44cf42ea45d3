//! ChittySync as a service: an HTTP API over one replica.
//!
//! Programs use it with a bearer token (see [`chittysync::Replica::add_token`]):
//! deploy pipelines upsert a record by a unique field and patch it; other
//! tools read registries and records. Every write is signed by the token's
//! own key, so the audit log shows which token changed what. Operators get
//! `/health`, `/ready` and Prometheus `/metrics`; `/v1/openapi.json` is the
//! OpenAPI 3.1 document, generated from the handlers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let replica = chittysync::Replica::open("hub.db")?;
//! let service = chittysync_server::Service::new(replica, chittysync_server::HttpOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! service.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod history;
mod metrics;
mod mirrors;
mod ops;
mod problem;
mod records;
mod registries;
mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use chittysync::Replica;
use tokio::net::TcpListener;

pub use api::document as openapi;
pub use problem::{Problem, ProblemDetails};

/// Limits of the HTTP service.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// A read (`GET`, `HEAD`) that takes longer is answered with 503.
    /// Writes are never cut short: their answer must say whether they were
    /// made (the store's own lock timeout bounds them).
    pub request_timeout: Duration,
    /// Requests each token may make per minute; more get 429.
    pub requests_per_minute: u32,
    /// The most records one page of a listing holds.
    pub max_page: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
            requests_per_minute: 6_000,
            max_page: 1_000,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) replica: Replica,
    pub(crate) options: HttpOptions,
    pub(crate) limiter: auth::Limiter,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) started: Instant,
    /// How stored bindings connect; without them, mirrors are listed but
    /// not run.
    pub(crate) kinds: Option<Arc<chittysync::AdapterKinds>>,
    pub(crate) schedule: Arc<schedule::Schedule>,
}

pub(crate) type Shared = Arc<AppState>;

/// The HTTP service over one replica.
#[derive(Clone)]
pub struct Service {
    state: Shared,
}

/// The service could not listen or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP service at {address}: {source}")]
pub struct ServeError {
    address: String,
    #[source]
    source: std::io::Error,
}

impl Service {
    /// A service over `replica` with `options`.
    pub fn new(replica: Replica, options: HttpOptions) -> Self {
        Self::build(replica, options, None)
    }

    /// A service that can also run mirror bindings (through the API, and on
    /// their schedules with [`Service::run_schedules`]), connecting them with
    /// `kinds`.
    pub fn with_mirrors(
        replica: Replica,
        options: HttpOptions,
        kinds: chittysync::AdapterKinds,
    ) -> Self {
        Self::build(replica, options, Some(Arc::new(kinds)))
    }

    fn build(
        replica: Replica,
        options: HttpOptions,
        kinds: Option<Arc<chittysync::AdapterKinds>>,
    ) -> Self {
        let limiter = auth::limiter(options.requests_per_minute);
        Service {
            state: Arc::new(AppState {
                replica,
                options,
                limiter,
                metrics: metrics::Metrics::new(),
                started: Instant::now(),
                kinds,
                schedule: Arc::default(),
            }),
        }
    }

    /// Runs every binding that has a schedule when it is due, until the
    /// returned future is dropped. Does nothing without adapter kinds.
    pub async fn run_schedules(&self) {
        match &self.state.kinds {
            Some(kinds) => schedule::run(self.state.clone(), kinds.clone()).await,
            None => std::future::pending().await,
        }
    }

    /// The routes, for embedding in another axum application or for tests.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        Router::new()
            .merge(ops::routes())
            .nest(
                "/v1",
                Router::new()
                    .merge(registries::routes())
                    .merge(records::routes())
                    .merge(history::routes())
                    .merge(mirrors::routes())
                    .merge(api::routes()),
            )
            .fallback(|| async { Problem::not_found("no such resource; see /v1/openapi.json") })
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                limit_reads,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::record,
            ))
            .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the
    /// requests in flight.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServeError { address, source })
    }
}

/// Answers a read that takes longer than the limit with 503. Writes run to
/// their end: a write answered 503 while it went on to commit would be
/// repeated by a client that retries, writing twice.
async fn limit_reads(
    axum::extract::State(state): axum::extract::State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !read {
        return next.run(request).await;
    }
    match tokio::time::timeout(state.options.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the service took too long to answer; try again",
        )
        .into_response(),
    }
}

/// Runs `f` (which reads or writes the replica's SQLite file) off the async
/// threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a request's task failed");
        Err(Problem::internal(
            "the request failed inside the service; it was logged, please report it",
        ))
    })
}
