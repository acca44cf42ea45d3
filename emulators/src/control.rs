//! What a test controls in an emulator: the clock, injected faults, the
//! request log and limits. One [`Control`] per emulator instance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The largest request body the emulators accept (both APIs refuse larger).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// One injected failure: the next matching request gets this response
/// instead of being served (or is served after `delay_ms`, when `status`
/// is `None`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Fault {
    /// The status to answer with; `None` serves the request normally (after
    /// the delay).
    #[serde(default)]
    pub status: Option<u16>,
    /// The JSON body to answer with.
    #[serde(default)]
    pub body: Option<Value>,
    /// Extra response headers (e.g. `Retry-After`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Only requests with this method (e.g. `PATCH`); any when `None`.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this; any when `None`.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Matching requests to let through before the fault starts applying.
    #[serde(default)]
    pub skip: u32,
    /// How many requests this fault applies to.
    #[serde(default = "one")]
    pub times: u32,
    /// Serve the request first (it takes effect), then answer with
    /// `status` instead (a write that landed but whose answer was lost).
    #[serde(default)]
    pub after_processing: bool,
    /// Send the status and headers, then break off the body (the answer
    /// cannot be read).
    #[serde(default)]
    pub break_body: bool,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// The next request fails with `status` and `body`.
    pub fn status(status: u16, body: Value) -> Self {
        Fault {
            status: Some(status),
            body: Some(body),
            times: 1,
            ..Fault::default()
        }
    }

    /// Applies to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Lets the first `n` matching requests through first.
    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path contains `part`.
    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.to_owned());
        self
    }

    /// Serves the request before answering with this fault's status.
    pub fn after_processing(mut self) -> Self {
        self.after_processing = true;
        self
    }

    /// Breaks off the answer's body after its status and headers.
    pub fn break_body(mut self) -> Self {
        self.break_body = true;
        self
    }

    /// Delays the answer.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = delay.as_millis() as u64;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// One request as the emulator received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The body as text (bodies are JSON or form-encoded).
    pub body: String,
    /// The status the emulator answered with.
    pub status: u16,
    /// When, by the emulator's clock (ms since the epoch).
    pub at_ms: i64,
}

impl LoggedRequest {
    /// Whether the request could change state (anything but `GET`, and
    /// not the read-only `POST`s the caller names, such as a Notion query).
    pub fn is_mutating(&self, read_only_posts: &[&str]) -> bool {
        match self.method.as_str() {
            "GET" | "HEAD" | "OPTIONS" => false,
            "POST" => !read_only_posts.iter().any(|p| self.path.ends_with(p)),
            _ => true,
        }
    }
}

/// Something a test does at the moment a fault answers a request.
type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    /// The clock's offset from real time, or a fixed time.
    clock_offset_ms: i64,
    clock_fixed_ms: Option<i64>,
    faults: VecDeque<Fault>,
    log: Vec<LoggedRequest>,
    limits: BTreeMap<String, f64>,
    /// Run, once each, when the next fault answers a request.
    fault_hooks: Vec<Hook>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("faults", &self.faults.len())
            .field("log", &self.log.len())
            .field("fault_hooks", &self.fault_hooks.len())
            .finish_non_exhaustive()
    }
}

/// An emulator's test controls, shared by its handlers and the test.
#[derive(Clone, Debug, Default)]
pub struct Control {
    inner: Arc<Mutex<Inner>>,
}

impl Control {
    /// Fresh controls: real time, no faults, an empty log, no limits set
    /// (each emulator applies its own defaults for unset limits).
    pub fn new() -> Self {
        Control::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The emulator's time, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        let inner = self.lock();
        inner.clock_fixed_ms.unwrap_or_else(|| {
            let real = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            real + inner.clock_offset_ms
        })
    }

    /// Stops the clock at `ms` (until [`Control::advance`] or
    /// [`Control::real_time`]).
    pub fn set_time(&self, ms: i64) {
        self.lock().clock_fixed_ms = Some(ms);
    }

    /// Moves the clock forward (a fixed clock stays fixed).
    pub fn advance(&self, by: Duration) {
        let by = by.as_millis() as i64;
        let mut inner = self.lock();
        match &mut inner.clock_fixed_ms {
            Some(t) => *t += by,
            None => inner.clock_offset_ms += by,
        }
    }

    /// Lets the clock run with real time again (keeping any offset).
    pub fn real_time(&self) {
        self.lock().clock_fixed_ms = None;
    }

    /// Queues a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Runs `hook` once, at the moment the next injected fault answers a
    /// request, before the answer leaves: a test's "meanwhile, a person…"
    /// then happens exactly between a refused request and its retry.
    pub fn on_next_fault(&self, hook: impl FnOnce() + Send + 'static) {
        self.lock().fault_hooks.push(Box::new(hook));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Sets a named limit (each emulator documents its names).
    pub fn set_limit(&self, name: &str, value: f64) {
        self.lock().limits.insert(name.to_owned(), value);
    }

    /// A named limit, or `default` when unset.
    pub fn limit(&self, name: &str, default: f64) -> f64 {
        self.lock().limits.get(name).copied().unwrap_or(default)
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut inner = self.lock();
        let at = inner.faults.iter().position(|f| f.matches(method, path))?;
        let fault = &mut inner.faults[at];
        if fault.skip > 0 {
            fault.skip -= 1;
            return None;
        }
        let taken = fault.clone();
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            inner.faults.remove(at);
        }
        Some(taken)
    }

    fn log(&self, entry: LoggedRequest) {
        self.lock().log.push(entry);
    }

    /// Wraps an emulator's routes: serves `/_control/…`, logs every other
    /// request and applies queued faults before the emulator sees it.
    pub fn wrap(&self, routes: Router) -> Router {
        let control_routes = Router::new()
            .route(
                "/_control/faults",
                post(add_fault).delete(clear_faults_route),
            )
            .route("/_control/log", get(read_log).delete(clear_log_route))
            .route("/_control/clock", post(set_clock))
            .route("/_control/limits", post(set_limits))
            .with_state(self.clone());
        routes
            .layer(middleware::from_fn_with_state(self.clone(), intercept))
            .merge(control_routes)
    }
}

async fn intercept(State(control): State<Control>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        }
    };
    let body_text = String::from_utf8_lossy(&bytes).into_owned();
    let at_ms = control.now_ms();
    let fault = control.take_fault(&method, &path);
    if fault.as_ref().is_some_and(|f| f.status.is_some()) {
        let hooks = std::mem::take(&mut control.lock().fault_hooks);
        for hook in hooks {
            hook();
        }
    }
    if let Some(f) = &fault
        && f.delay_ms > 0
    {
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
    }
    let response = match fault {
        Some(Fault {
            status,
            break_body: true,
            after_processing,
            ..
        }) => {
            let served = if after_processing {
                let request = Request::from_parts(parts, Body::from(bytes));
                Some(next.run(request).await)
            } else {
                None
            };
            let status = status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .or_else(|| served.as_ref().map(Response::status))
                .unwrap_or(StatusCode::OK);
            // The headers and a first piece go out, then the body breaks
            // (a pause between, so the client has read the headers).
            let broken = futures_util::stream::unfold(0u8, |step| async move {
                match step {
                    0 => Some((
                        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"object\":")),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Err(std::io::Error::other("the answer was cut off")), 2))
                    }
                    _ => None,
                }
            });
            let mut response = Response::new(Body::from_stream(broken));
            *response.status_mut() = status;
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Some(Fault {
            status: Some(status),
            body,
            headers,
            after_processing,
            ..
        }) => {
            if after_processing {
                let request = Request::from_parts(parts, Body::from(bytes));
                let _ = next.run(request).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, Json(body.unwrap_or(Value::Null))).into_response();
            for (k, v) in headers {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        _ => {
            let request = Request::from_parts(parts, Body::from(bytes));
            next.run(request).await
        }
    };
    control.log(LoggedRequest {
        method,
        path,
        query,
        body: body_text,
        status: response.status().as_u16(),
        at_ms,
    });
    response
}

async fn add_fault(State(control): State<Control>, Json(fault): Json<Fault>) -> StatusCode {
    control.inject(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults_route(State(control): State<Control>) -> StatusCode {
    control.clear_faults();
    StatusCode::NO_CONTENT
}

async fn read_log(State(control): State<Control>) -> Json<Vec<LoggedRequest>> {
    Json(control.requests())
}

async fn clear_log_route(State(control): State<Control>) -> StatusCode {
    control.clear_log();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ClockBody {
    #[serde(default)]
    set_ms: Option<i64>,
    #[serde(default)]
    advance_ms: Option<u64>,
    #[serde(default)]
    real_time: bool,
}

async fn set_clock(State(control): State<Control>, Json(body): Json<ClockBody>) -> Json<Value> {
    if body.real_time {
        control.real_time();
    }
    if let Some(ms) = body.set_ms {
        control.set_time(ms);
    }
    if let Some(ms) = body.advance_ms {
        control.advance(Duration::from_millis(ms));
    }
    Json(json!({ "now_ms": control.now_ms() }))
}

async fn set_limits(
    State(control): State<Control>,
    Json(limits): Json<BTreeMap<String, f64>>,
) -> StatusCode {
    for (k, v) in limits {
        control.set_limit(&k, v);
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_to_matching_requests_the_given_number_of_times() {
        let c = Control::new();
        c.inject(Fault::status(429, json!({})).times(2).method("PATCH"));
        assert!(c.take_fault("GET", "/v1/pages/x").is_none());
        assert!(c.take_fault("PATCH", "/v1/pages/x").is_some());
        assert!(c.take_fault("PATCH", "/v1/pages/x").is_some());
        assert!(c.take_fault("PATCH", "/v1/pages/x").is_none());
        c.inject(Fault::status(503, json!({})).skip(1));
        assert!(c.take_fault("POST", "/v1/pages").is_none());
        assert!(c.take_fault("POST", "/v1/pages").is_some());
        assert!(c.take_fault("POST", "/v1/pages").is_none());
    }

    #[test]
    fn the_clock_can_be_fixed_and_advanced() {
        let c = Control::new();
        c.set_time(1_000);
        c.advance(Duration::from_secs(61));
        assert_eq!(c.now_ms(), 62_000);
        c.real_time();
        assert!(c.now_ms() > 1_700_000_000_000);
    }

    #[tokio::test]
    async fn other_processes_have_the_same_powers_over_http() {
        let control = Control::new();
        let app = control.wrap(Router::new().route("/v1/ping", get(|| async { "pong" })));
        let server = crate::Running::spawn(app).await.unwrap();
        let base = server.base_url();
        let http = reqwest::Client::new();
        let ping = || http.get(format!("{base}/v1/ping")).send();

        // A fault queued over HTTP answers the next matching request.
        let queued = http
            .post(format!("{base}/_control/faults"))
            .json(
                &json!({"status": 503, "body": {"error": "down"}, "method": "GET",
                          "path_contains": "/ping", "headers": {"Retry-After": "2"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(queued.status(), 204);
        let refused = ping().await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "2");
        assert_eq!(
            refused.json::<Value>().await.unwrap(),
            json!({"error": "down"})
        );
        assert_eq!(ping().await.unwrap().text().await.unwrap(), "pong");

        // The clock: fixed, then advanced; requests are logged by it.
        let clock: Value = http
            .post(format!("{base}/_control/clock"))
            .json(&json!({"set_ms": 1_000_000, "advance_ms": 61_000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(clock["now_ms"], 1_061_000);
        ping().await.unwrap();

        // The log holds every served request (not the control routes), with
        // the status each got.
        let log: Vec<LoggedRequest> = http
            .get(format!("{base}/_control/log"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 200, 200]);
        assert_eq!(log[2].at_ms, 1_061_000);
        assert!(log.iter().all(|r| r.path == "/v1/ping"));

        // Limits set over HTTP are the ones the emulator reads.
        http.post(format!("{base}/_control/limits"))
            .json(&json!({"rate_per_sec": 7.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(control.limit("rate_per_sec", 3.0), 7.5);

        // Clearing the log and the faults.
        http.post(format!("{base}/_control/faults"))
            .json(&json!({"status": 500, "times": 5}))
            .send()
            .await
            .unwrap();
        http.delete(format!("{base}/_control/faults"))
            .send()
            .await
            .unwrap();
        http.delete(format!("{base}/_control/log"))
            .send()
            .await
            .unwrap();
        assert_eq!(ping().await.unwrap().status(), 200, "no fault left");
        assert_eq!(control.requests().len(), 1);
    }
}
