//! `/metrics` in the Prometheus text format: requests by route and status,
//! latency histograms, and the replica's size (registries, tokens, store
//! bytes, journal length), read when scraped.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    binding: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BindingLabels {
    binding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowLabels {
    binding: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The service's metrics.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    mirror_runs: Family<RunLabels, Counter>,
    mirror_seconds: Family<BindingLabels, Histogram, fn() -> Histogram>,
    mirror_rows: Family<RowLabels, Counter>,
    registries: Gauge,
    tokens: Gauge,
    store_bytes: Gauge,
    journal_entries: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("chittysync");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let registries = Gauge::default();
        let tokens = Gauge::default();
        let store_bytes = Gauge::default();
        let journal_entries = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route and method",
            latency.clone(),
        );
        let mirror_runs = Family::<RunLabels, Counter>::default();
        let mirror_seconds: Family<BindingLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let mirror_rows = Family::<RowLabels, Counter>::default();
        registry.register(
            "mirror_runs",
            "Mirror runs by this service, by binding and outcome (ok, partial, failed, dry-run)",
            mirror_runs.clone(),
        );
        registry.register(
            "mirror_run_duration_seconds",
            "Time mirror runs took, by binding",
            mirror_seconds.clone(),
        );
        registry.register(
            "mirror_rows",
            "Rows mirror runs applied, failed or found invalid, by binding",
            mirror_rows.clone(),
        );
        registry.register(
            "registries",
            "Registries the replica holds",
            registries.clone(),
        );
        registry.register("api_tokens", "API tokens of the replica", tokens.clone());
        registry.register(
            "store_bytes",
            "Size of the replica's store on disk (with its write-ahead log)",
            store_bytes.clone(),
        );
        registry.register(
            "journal_entries",
            "Entries in the replica's journal",
            journal_entries.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            mirror_runs,
            mirror_seconds,
            mirror_rows,
            registries,
            tokens,
            store_bytes,
            journal_entries,
        }
    }

    /// Counts a mirror run.
    pub(crate) fn mirror_run(&self, run: &chittysync::MirrorRun) {
        let binding = run.binding.clone();
        self.mirror_runs
            .get_or_create(&RunLabels {
                binding: binding.clone(),
                outcome: run.outcome.name().to_owned(),
            })
            .inc();
        self.mirror_seconds
            .get_or_create(&BindingLabels {
                binding: binding.clone(),
            })
            .observe(run.duration.as_secs_f64());
        for (result, n) in [
            ("applied", run.applied),
            ("failed", run.failed),
            ("invalid", run.invalid),
        ] {
            self.mirror_rows
                .get_or_create(&RowLabels {
                    binding: binding.clone(),
                    result: result.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// The metrics as Prometheus text, the replica's figures read now.
    pub(crate) fn render(&self, replica: &chittysync::Replica) -> String {
        let path = replica.path();
        let bytes: u64 = [path.to_path_buf(), path.with_extension("db-wal")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        if let Ok(list) = replica.registries() {
            self.registries.set(list.len() as i64);
        }
        if let Ok(tokens) = replica.tokens() {
            self.tokens.set(tokens.len() as i64);
        }
        if let Ok(n) = replica.journal_len() {
            self.journal_entries
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counts and times every request, by its route pattern (never the raw
/// path, so ids do not become labels).
pub(crate) async fn record(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
