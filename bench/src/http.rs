//! The HTTP API against its baselines, 64 clients at once on loopback:
//! `GET` of one record against a bare axum handler returning the same JSON,
//! and `PUT` of one record (validated, signed, durable) against the
//! library's own durable `put`; p50 and p99 latency of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chittysync::{FieldDef, FieldKind, Replica, Role, Schema, TokenSpec, Value};
use chittysync_server::{HttpOptions, Service};
use serde_json::json;

use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

const BENCH: &str = "HTTP API vs bare axum and the library";
const CLIENTS: usize = 64;

/// Builds request `i` of a load.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Answers `requests` requests made by [`CLIENTS`] clients at once; returns
/// the total time and each request's latency.
async fn load(
    client: &reqwest::Client,
    requests: usize,
    make: MakeRequest,
) -> Result<(Duration, Vec<f64>)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, make) = (client.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while i < requests {
                let t = Instant::now();
                let response = make(&client, i).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                response.bytes().await.map_err(|e| e.to_string())?;
                latencies.push(t.elapsed().as_secs_f64());
                i += CLIENTS;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for task in tasks {
        all.extend(task.await?.map_err(|e| format!("a request failed: {e}"))?);
    }
    Ok((started.elapsed(), all))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(f64::NAN)
}

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(options))
}

async fn measure(options: &Options) -> Result<Vec<Figure>> {
    let (warmup, iterations) = (options.pick(1, 1), options.pick(9, 2));
    let requests = options.pick(2_000, 128);
    let writes = options.pick(256, 64);
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("hub.db"))?;
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required().unique())
        .field(FieldDef::new("port", FieldKind::Integer));
    let services = replica.create_registry("services", schema)?;
    let id = services.put(
        None,
        [
            ("name", Value::from("billing")),
            ("port", Value::from(8080)),
        ],
    )?;
    let secret = replica
        .add_token(&TokenSpec {
            name: "bench".into(),
            registries: vec!["services".into()],
            role: Role::Writer,
            expires_in: None,
        })?
        .secret;
    let service = Service::new(
        replica.clone(),
        HttpOptions {
            requests_per_minute: u32::MAX,
            ..HttpOptions::default()
        },
    );
    let ours = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours_url = format!("http://{}", ours.local_addr()?);
    tokio::spawn(async move { service.serve(ours, std::future::pending()).await });

    // The baseline: a bare handler answering the same body.
    let body = json!({"id": id, "fields": {"name": "billing", "port": 8080}, "conflicted": []});
    let bare = axum::Router::new().route(
        "/record",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let base = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}/record", base.local_addr()?);
    tokio::spawn(async move { axum::serve(base, bare).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let record_url = format!("{ours_url}/v1/registries/services/records/{id}");
    let get_ours: MakeRequest = {
        let (url, secret) = (record_url.clone(), secret.clone());
        Arc::new(move |c, _| c.get(&url).bearer_auth(&secret))
    };
    let get_base: MakeRequest = Arc::new(move |c, _| c.get(&base_url));

    let mut get_latencies = Vec::new();
    let mut get_pairs = crate::measure::Pairs::default();
    for i in 0..warmup + iterations {
        // Alternate which goes first, so neither always runs warmer.
        let ((o, lat), (b, _)) = if i % 2 == 0 {
            let o = load(&client, requests, get_ours.clone()).await?;
            (o, load(&client, requests, get_base.clone()).await?)
        } else {
            let b = load(&client, requests, get_base.clone()).await?;
            (load(&client, requests, get_ours.clone()).await?, b)
        };
        if i >= warmup {
            get_pairs.ours.push(o.as_secs_f64());
            get_pairs.base.push(b.as_secs_f64());
            get_latencies.extend(lat);
        }
    }

    // Writes: each HTTP PUT replaces one of `writes` records; the baseline
    // puts the same records through the library, one durable write each.
    let ids: Vec<String> = (0..writes)
        .map(|i| {
            services.put(
                None,
                [
                    ("name", Value::from(format!("s{i}"))),
                    ("port", Value::from(1)),
                ],
            )
        })
        .collect::<std::result::Result<_, _>>()?;
    let ids = Arc::new(ids);
    let mut put_latencies = Vec::new();
    let round = std::sync::atomic::AtomicI64::new(2);
    let put_pairs = {
        let mut pairs = crate::measure::Pairs::default();
        for i in 0..warmup + iterations {
            let port = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let put: MakeRequest = {
                let (url, secret, ids) = (ours_url.clone(), secret.clone(), ids.clone());
                Arc::new(move |c, k| {
                    c.put(format!("{url}/v1/registries/services/records/{}", ids[k]))
                        .bearer_auth(&secret)
                        .json(&json!({"fields": {"name": format!("s{k}"), "port": port}}))
                })
            };
            let (o, lat) = load(&client, writes, put).await?;
            let library = {
                let (services, ids) = (services.clone(), ids.clone());
                tokio::task::spawn_blocking(move || -> std::result::Result<Duration, String> {
                    let t = Instant::now();
                    for id in ids.iter() {
                        services
                            .put(Some(id), [("port", Value::from(port + 1_000_000))])
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(t.elapsed())
                })
                .await??
            };
            if i >= warmup {
                pairs.ours.push(o.as_secs_f64());
                pairs.base.push(library.as_secs_f64());
                put_latencies.extend(lat);
            }
        }
        pairs
    };

    let mut figures = vec![
        Figure::throughput(
            BENCH,
            format!("GET one record, {CLIENTS} clients"),
            requests,
            &get_pairs,
            Some(Goal::AtLeast(0.5)),
            "ours: token check, rate limit, registry read, ETag; base: a bare axum handler returning the same JSON",
        ),
        Figure::throughput(
            BENCH,
            format!("PUT one record, {CLIENTS} clients"),
            writes,
            &put_pairs,
            Some(Goal::AtLeast(0.8)),
            "ours: HTTP PUT (validated, signed by the token's key, durable); base: the library's durable put, one at a time",
        ),
    ];
    for (case, latencies) in [("GET", &mut get_latencies), ("PUT", &mut put_latencies)] {
        let samples = latencies.len();
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            figures.push(Figure::absolute(
                BENCH,
                format!("{case} latency {name}, {CLIENTS} clients"),
                Unit::Seconds,
                percentile(latencies, p),
                samples,
                "loopback, one process serving",
            ));
        }
    }
    Ok(figures)
}
