//! The Google Sheets v4 API, Google's OAuth token endpoint (service-account
//! JWT grant, for the key file's `token_uri` or Google's documented
//! audience) and Drive v3 `files.get`, from in-memory spreadsheets.
//!
//! Serves `POST /token`, `GET /drive/v3/files/{id}` (the File resource's
//! common fields, cut to `fields`) and `/v4/spreadsheets/{id}…` (metadata,
//! values get/batchGet/update/batchUpdate/append/clear/batchClear, with
//! `includeValuesInResponse`, and the structural `:batchUpdate` with
//! deleteDimension, insertDimension, appendDimension,
//! updateDimensionProperties, updateSheetProperties and addSheet, with
//! `includeSpreadsheetInResponse`).
//!
//! Limits, read through [`Control::limit`]: `read_per_minute_per_user` (60),
//! `write_per_minute_per_user` (60), `read_per_minute` (300, the whole
//! project), `write_per_minute` (300), `token_lifetime_secs` (3599),
//! `max_cells` (10,000,000 per spreadsheet), `max_cell_chars` (50,000),
//! `version_step` (1: how much each write raises the Drive `version`; the
//! real Drive only promises that it increases). [`Sheets::bump_version`]
//! raises it without touching cells, as a format change would.
//! Quota windows (a sliding minute) and token expiry follow the control's
//! clock.
//!
//! ```
//! use chittysync_emulators::Sheets;
//! use serde_json::json;
//!
//! let sheets = Sheets::new();
//! let running = sheets.start_thread()?;
//! let email = "sync@example-project.iam.gserviceaccount.com";
//! // The key file an adapter is configured with: its token_uri points here.
//! let key = sheets.service_account_key(&running.base_url(), email);
//! assert_eq!(key["token_uri"], format!("{}/token", running.base_url()));
//! let id = sheets.create_spreadsheet(&["Contacts"], &[email]);
//! // A person edits the sheet; the adapter should see it.
//! sheets.set_values(&id, "Contacts", vec![vec![json!("_id"), json!("name")]]);
//! assert_eq!(sheets.values(&id, "Contacts"), vec![vec![json!("_id"), json!("name")]]);
//! assert_eq!(sheets.version(&id), 2);
//! # Ok::<(), std::io::Error>(())
//! ```

mod a1;
mod auth;
mod fields;
mod grid;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use crate::control::Control;
use crate::server::Running;
use a1::{A1Range, format_range};
use grid::{Sheet, Spreadsheet};

/// The Google Cloud project every test service account belongs to.
const PROJECT_ID: &str = "chittysync-emulator";
/// Its project number, as quota errors name it.
const PROJECT_NUMBER: &str = "424242424242";
/// One quota window.
const MINUTE_MS: i64 = 60_000;
/// Scopes that let a token read Drive file metadata.
const DRIVE_SCOPES: [&str; 5] = [
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.metadata",
    "https://www.googleapis.com/auth/drive.metadata.readonly",
    "https://www.googleapis.com/auth/drive.file",
];

/// The Sheets (+ token + Drive version) emulator. Cloning shares the state.
#[derive(Clone)]
pub struct Sheets {
    control: Control,
    state: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    spreadsheets: BTreeMap<String, Spreadsheet>,
    /// Known service-account emails (lower-cased) → their key file's `token_uri`.
    accounts: BTreeMap<String, String>,
    tokens: HashMap<String, auth::Grant>,
    /// Quota bucket → request times within the last minute.
    quota: HashMap<String, VecDeque<i64>>,
}

impl fmt::Debug for Sheets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: tokens must never reach a log.
        let state = self.lock();
        f.debug_struct("Sheets")
            .field("spreadsheets", &state.spreadsheets.len())
            .field("accounts", &state.accounts.len())
            .field("tokens", &state.tokens.len())
            .finish()
    }
}

impl Default for Sheets {
    fn default() -> Self {
        Sheets::new()
    }
}

impl Sheets {
    /// An emulator with no spreadsheets and no service accounts.
    pub fn new() -> Sheets {
        Sheets {
            control: Control::new(),
            state: Arc::new(Mutex::new(Store::default())),
        }
    }

    /// The test controls: clock, faults, request log, limits.
    pub fn control(&self) -> &Control {
        &self.control
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The HTTP API (wrapped with [`Control::wrap`]): `/v4/spreadsheets/…`,
    /// `/drive/v3/files/{id}` and `/token`.
    pub fn router(&self) -> Router {
        let routes = Router::new()
            .route("/token", post(token_route))
            .route("/drive/v3/files/{id}", get(drive_route))
            .route("/v4/spreadsheets/{*rest}", any(sheets_route))
            .with_state(self.clone());
        self.control.wrap(routes)
    }

    /// Serves the API on a random loopback port on the current runtime.
    pub async fn start(&self) -> std::io::Result<Running> {
        Running::spawn(self.router()).await
    }

    /// Serves the API on a thread of its own.
    pub fn start_thread(&self) -> std::io::Result<Running> {
        Running::spawn_thread(self.router())
    }

    /// A service-account key file (the JSON Google issues) for a test
    /// account the emulator now knows; its `token_uri` is
    /// `{base_url}/token`. The private key is the test-only key the
    /// emulator verifies assertions with.
    pub fn service_account_key(&self, base_url: &str, client_email: &str) -> serde_json::Value {
        let base_url = base_url.trim_end_matches('/');
        let token_uri = format!("{base_url}/token");
        self.lock()
            .accounts
            .insert(client_email.to_ascii_lowercase(), token_uri.clone());
        let client_id: u128 = client_email
            .bytes()
            .fold(100_000_000_000_000_000_000u128, |n, b| {
                (n.wrapping_mul(31).wrapping_add(b as u128)) % 1_000_000_000_000_000_000_000
            });
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": "5ee7e57c0ffee0000000000000000000000d0e5a",
            "private_key": auth::PRIVATE_KEY_PEM,
            "client_email": client_email,
            "client_id": client_id.to_string(),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                client_email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        })
    }

    /// A spreadsheet with sheets of these titles (each 1000 rows by 26
    /// columns, like a new Google sheet; one `Sheet1` when `titles` is
    /// empty), shared with `share_with`. Returns its id.
    pub fn create_spreadsheet(&self, titles: &[&str], share_with: &[&str]) -> String {
        let id = format!(
            "1{}{}",
            uuid::Uuid::new_v4().simple(),
            &uuid::Uuid::new_v4().simple().to_string()[..11]
        );
        let titles: Vec<&str> = if titles.is_empty() {
            vec!["Sheet1"]
        } else {
            titles.to_vec()
        };
        // The first sheet of a new spreadsheet has id 0, as in Google's.
        let sheets = titles
            .iter()
            .enumerate()
            .map(|(i, t)| Sheet::new(if i == 0 { 0 } else { 1_000_000 + i as i64 }, t))
            .collect();
        let spreadsheet = Spreadsheet {
            id: id.clone(),
            title: "Untitled spreadsheet".to_owned(),
            sheets,
            shared_with: share_with.iter().map(|e| e.to_ascii_lowercase()).collect(),
            version: 1,
            created_ms: self.control.now_ms(),
            modified_ms: self.control.now_ms(),
            next_sheet_id: 1_000_000 + titles.len() as i64,
            time_zone: "Etc/GMT".to_owned(),
        };
        self.lock().spreadsheets.insert(id.clone(), spreadsheet);
        id
    }

    /// A person edits: replaces the whole grid of one sheet with `rows`
    /// (ragged allowed; the grid grows to fit) and bumps the Drive version.
    /// Values are stored as given (numeric-looking strings stay strings, as
    /// RAW keeps them), except that a string starting with `=` is a
    /// formula, as typing it (USER_ENTERED) would make it: reads then show
    /// its computed value, and `valueRenderOption=FORMULA` its text.
    ///
    /// # Panics
    /// When the spreadsheet or sheet does not exist (a test's mistake).
    pub fn set_values(&self, spreadsheet_id: &str, sheet: &str, rows: Vec<Vec<serde_json::Value>>) {
        let now = self.control.now_ms();
        let step = self.version_step();
        let mut state = self.lock();
        let spreadsheet = state
            .spreadsheets
            .get_mut(spreadsheet_id)
            .unwrap_or_else(|| panic!("no spreadsheet {spreadsheet_id} in the emulator"));
        let index = spreadsheet
            .sheet_index(sheet)
            .unwrap_or_else(|| panic!("no sheet {sheet:?} in spreadsheet {spreadsheet_id}"));
        let target = &mut spreadsheet.sheets[index];
        target.cells.clear();
        target.row_count = target.row_count.max(rows.len());
        for (r, row) in rows.into_iter().enumerate() {
            target.column_count = target.column_count.max(row.len());
            for (c, value) in row.into_iter().enumerate() {
                target.set(r, c, grid::typed_by_person(value));
            }
        }
        spreadsheet.touch(now, step);
    }

    /// The sheet's rows as UNFORMATTED values, trailing empty cells and
    /// rows trimmed (empty cells inside a row read as `""`).
    ///
    /// # Panics
    /// When the spreadsheet or sheet does not exist.
    pub fn values(&self, spreadsheet_id: &str, sheet: &str) -> Vec<Vec<serde_json::Value>> {
        let state = self.lock();
        let spreadsheet = state
            .spreadsheets
            .get(spreadsheet_id)
            .unwrap_or_else(|| panic!("no spreadsheet {spreadsheet_id} in the emulator"));
        let index = spreadsheet
            .sheet_index(sheet)
            .unwrap_or_else(|| panic!("no sheet {sheet:?} in spreadsheet {spreadsheet_id}"));
        let s = &spreadsheet.sheets[index];
        s.window((0, s.row_count), (0, s.column_count), false)
            .into_iter()
            .map(|row| row.iter().map(grid::unformatted).collect())
            .collect()
    }

    /// The Drive file version (only ever increases; raised by the
    /// `version_step` limit on each write, and by [`Sheets::bump_version`]).
    ///
    /// # Panics
    /// When the spreadsheet does not exist.
    pub fn version(&self, spreadsheet_id: &str) -> u64 {
        self.lock()
            .spreadsheets
            .get(spreadsheet_id)
            .unwrap_or_else(|| panic!("no spreadsheet {spreadsheet_id} in the emulator"))
            .version
    }

    /// Sets the spreadsheet's time zone (File > Settings; an IANA name such
    /// as `Europe/Berlin` or `Etc/GMT-2`), as `properties.timeZone` reports
    /// it. A new spreadsheet's is `Etc/GMT`.
    ///
    /// # Panics
    /// When the spreadsheet does not exist.
    pub fn set_time_zone(&self, id: &str, time_zone: &str) {
        self.lock()
            .spreadsheets
            .get_mut(id)
            .unwrap_or_else(|| panic!("no spreadsheet {id} in the emulator"))
            .time_zone = time_zone.to_owned();
    }

    /// A change that is not visible in the cells (a format change, a
    /// comment, a rename elsewhere): the Drive version rises by `by` (at
    /// least 1) and `modifiedTime` moves to now, while every cell stays the
    /// same. Lets adapter tests check they do not read "version changed"
    /// as "cells changed", nor assume exactly one step per own write.
    ///
    /// # Panics
    /// When the spreadsheet does not exist.
    pub fn bump_version(&self, id: &str, by: u64) {
        let now = self.control.now_ms();
        self.lock()
            .spreadsheets
            .get_mut(id)
            .unwrap_or_else(|| panic!("no spreadsheet {id} in the emulator"))
            .touch(now, by);
    }

    /// The `version_step` limit: how much each write raises the version.
    fn version_step(&self) -> u64 {
        self.limit("version_step", 1.0).max(1.0) as u64
    }

    fn limit(&self, name: &str, default: f64) -> f64 {
        self.control.limit(name, default)
    }
}

// ---------------------------------------------------------------- errors

/// A Google API error: status code and JSON body.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    body: Value,
}

impl ApiError {
    fn google(code: u16, status: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            code: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: json!({ "error": { "code": code, "message": message, "status": status } }),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::google(400, "INVALID_ARGUMENT", message)
    }

    fn unparsable_range(range: &str) -> Self {
        ApiError::invalid(format!("Unable to parse range: {range}"))
    }

    fn not_found() -> Self {
        ApiError::google(404, "NOT_FOUND", "Requested entity was not found.")
    }

    fn permission_denied() -> Self {
        ApiError::google(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        )
    }

    /// 403 for a token whose scopes do not cover the call.
    fn insufficient_scopes(service: &str) -> Self {
        ApiError {
            code: StatusCode::FORBIDDEN,
            body: json!({ "error": {
                "code": 403,
                "message": "Request had insufficient authentication scopes.",
                "status": "PERMISSION_DENIED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "domain": "googleapis.com",
                    "metadata": { "service": service }
                }]
            }}),
        }
    }

    /// 401: no token (`missing`) or a bad or expired one. The ErrorInfo
    /// reasons are the ones Google's APIs answer with (CREDENTIALS_MISSING,
    /// ACCESS_TOKEN_TYPE_UNSUPPORTED); the `WWW-Authenticate` challenge is
    /// added in [`IntoResponse`].
    fn unauthenticated(missing: bool, service: &str) -> Self {
        let (message, detail) = if missing {
            (
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "CREDENTIALS_MISSING",
                    "domain": "googleapis.com",
                    "metadata": { "service": service }
                }),
            )
        } else {
            (
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                    "metadata": { "service": service }
                }),
            )
        };
        ApiError {
            code: StatusCode::UNAUTHORIZED,
            body: json!({ "error": {
                "code": 401,
                "message": message,
                "status": "UNAUTHENTICATED",
                "details": [detail],
            }}),
        }
    }

    fn grid_limits(sheet: &Sheet, row: usize, col: usize) -> Self {
        ApiError::invalid(format!(
            "Range ('{}'!{}{}) exceeds grid limits. Max rows: {}, max columns: {}",
            sheet.title.replace('\'', "''"),
            a1::column_letters(col),
            row + 1,
            sheet.row_count,
            sheet.column_count
        ))
    }

    fn quota(write: bool, per_user: bool, limit: u64) -> Self {
        let (metric_name, metric) = if write {
            ("Write requests", "sheets.googleapis.com/write_requests")
        } else {
            ("Read requests", "sheets.googleapis.com/read_requests")
        };
        let (limit_name, limit_id) = match (write, per_user) {
            (false, true) => (
                "Read requests per minute per user",
                "ReadRequestsPerMinutePerUser",
            ),
            (false, false) => (
                "Read requests per minute",
                "ReadRequestsPerMinutePerProject",
            ),
            (true, true) => (
                "Write requests per minute per user",
                "WriteRequestsPerMinutePerUser",
            ),
            (true, false) => (
                "Write requests per minute",
                "WriteRequestsPerMinutePerProject",
            ),
        };
        ApiError {
            code: StatusCode::TOO_MANY_REQUESTS,
            body: json!({ "error": {
                "code": 429,
                "message": format!(
                    "Quota exceeded for quota metric '{metric_name}' and limit '{limit_name}' of service 'sheets.googleapis.com' for consumer 'project_number:{PROJECT_NUMBER}'."
                ),
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "RATE_LIMIT_EXCEEDED",
                        "domain": "googleapis.com",
                        "metadata": {
                            "quota_location": "global",
                            "quota_metric": metric,
                            "quota_limit": limit_id,
                            "quota_limit_value": limit.to_string(),
                            "consumer": format!("projects/{PROJECT_NUMBER}"),
                            "service": "sheets.googleapis.com",
                        }
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.Help",
                        "links": [{
                            "description": "Request a higher quota limit.",
                            "url": "https://cloud.google.com/docs/quotas/help/request_increase"
                        }]
                    }
                ]
            }}),
        }
    }
}

/// Google's OAuth realm, named in `WWW-Authenticate` challenges.
const REALM: &str = "https://accounts.google.com/";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // RFC 6750 §3 challenges, as Google sends them: a bad token is
        // `invalid_token`; a missing one names only the realm; too few
        // scopes is `insufficient_scope` with the scopes that would do.
        let reason = self
            .body
            .pointer("/error/details/0/reason")
            .and_then(Value::as_str);
        let challenge = match (self.code, reason) {
            (StatusCode::UNAUTHORIZED, Some("CREDENTIALS_MISSING")) => {
                Some(format!("Bearer realm=\"{REALM}\""))
            }
            (StatusCode::UNAUTHORIZED, _) => {
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
            }
            (StatusCode::FORBIDDEN, Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT")) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                auth::WRITE_SCOPES.join(" ")
            )),
            _ => None,
        };
        let mut response = (self.code, axum::Json(self.body)).into_response();
        if let Some(value) = challenge.and_then(|c| axum::http::HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

// ---------------------------------------------------------------- helpers

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`).
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=2&b=3` as pairs, in order (repeated keys kept).
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn rfc3339_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// An answer object without zero numbers and empty lists, as Google's
/// JSON (proto3) omits default values.
fn without_defaults(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| match v {
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::Array(items) => !items.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        other => other,
    }
}

// ---------------------------------------------------------------- token

async fn token_route(State(sheets): State<Sheets>, headers: HeaderMap, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = parse_pairs(&String::from_utf8_lossy(&body))
        .into_iter()
        .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host_uri = format!("http://{host}/token");
    let now = sheets.control.now_ms();
    let lifetime = sheets.limit("token_lifetime_secs", 3599.0) as i64;
    let mut state = sheets.lock();
    match auth::verify_assertion(&form, &state.accounts, &host_uri, now) {
        Ok((email, scopes)) => {
            let token = format!(
                "ya29.emu{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            state.tokens.insert(
                token.clone(),
                auth::Grant {
                    email,
                    scopes,
                    expires_ms: now + lifetime * 1000,
                },
            );
            axum::Json(json!({
                "access_token": token,
                "expires_in": lifetime,
                "token_type": "Bearer",
            }))
            .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(e.body())).into_response(),
    }
}

impl Sheets {
    /// The grant behind the request's bearer token, if it is live.
    fn authenticate(&self, headers: &HeaderMap, service: &str) -> Result<auth::Grant, ApiError> {
        let token = bearer(headers).ok_or_else(|| ApiError::unauthenticated(true, service))?;
        let now = self.control.now_ms();
        let state = self.lock();
        match state.tokens.get(token) {
            Some(grant) if grant.expires_ms > now => Ok(grant.clone()),
            _ => Err(ApiError::unauthenticated(false, service)),
        }
    }

    /// Counts one request against the per-user and per-project minute.
    fn charge(&self, email: &str, write: bool) -> Result<(), ApiError> {
        let kind = if write { "write" } else { "read" };
        let user_limit = self.limit(&format!("{kind}_per_minute_per_user"), 60.0) as u64;
        let project_limit = self.limit(&format!("{kind}_per_minute"), 300.0) as u64;
        let now = self.control.now_ms();
        let mut state = self.lock();
        let user_key = format!("user:{email}:{kind}");
        let project_key = format!("project:{kind}");
        let mut count = |key: &str| {
            let times = state.quota.entry(key.to_owned()).or_default();
            while times.front().is_some_and(|&t| t <= now - MINUTE_MS) {
                times.pop_front();
            }
            times.len() as u64
        };
        if count(&user_key) >= user_limit {
            return Err(ApiError::quota(write, true, user_limit));
        }
        if count(&project_key) >= project_limit {
            return Err(ApiError::quota(write, false, project_limit));
        }
        for key in [user_key, project_key] {
            state.quota.entry(key).or_default().push_back(now);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- drive

async fn drive_route(State(sheets): State<Sheets>, uri: Uri, headers: HeaderMap) -> Response {
    match sheets.drive_file(&uri, &headers) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

impl Sheets {
    fn drive_file(&self, uri: &Uri, headers: &HeaderMap) -> Result<Value, ApiError> {
        let grant = self.authenticate(headers, "drive.googleapis.com")?;
        if !grant
            .scopes
            .iter()
            .any(|s| DRIVE_SCOPES.contains(&s.as_str()))
        {
            return Err(ApiError::insufficient_scopes("drive.googleapis.com"));
        }
        let id = uri
            .path()
            .strip_prefix("/drive/v3/files/")
            .and_then(|id| percent_decode(id, false))
            .unwrap_or_default();
        let query = Query(parse_pairs(uri.query().unwrap_or("")));
        let state = self.lock();
        let file = state
            .spreadsheets
            .get(&id)
            .filter(|s| s.shared_with.contains(&grant.email))
            .ok_or_else(|| {
                // Drive answers 404 for files the caller cannot see.
                let message = format!("File not found: {id}.");
                ApiError {
                    code: StatusCode::NOT_FOUND,
                    body: json!({ "error": {
                        "code": 404,
                        "message": message,
                        "errors": [{
                            "message": message,
                            "domain": "global",
                            "reason": "notFound",
                            "location": "fileId",
                            "locationType": "parameter"
                        }]
                    }}),
                }
            })?;
        let all = drive_file_resource(file, &grant.email);
        let fields = query.get("fields").unwrap_or("kind,id,name,mimeType");
        let mask = fields::parse(fields)
            .filter(|m| fields::valid(m, "File"))
            .ok_or_else(|| ApiError::invalid(format!("Invalid field selection {fields}")))?;
        Ok(fields::project(&all, &mask))
    }
}

/// A spreadsheet as Drive v3's File resource, as the account `viewer` sees
/// a file shared with it (it owns none: the emulator's files belong to a
/// person who shared them).
fn drive_file_resource(file: &Spreadsheet, viewer: &str) -> Value {
    let owner = json!({
        "kind": "drive#user",
        "displayName": "Spreadsheet Owner",
        "me": false,
        "permissionId": "00000000000000000001",
        "emailAddress": "owner@chittysync-emulator.example",
    });
    let me = json!({
        "kind": "drive#user",
        "displayName": viewer,
        "me": true,
        "emailAddress": viewer,
    });
    let link = format!(
        "https://docs.google.com/spreadsheets/d/{}/edit?usp=drivesdk",
        file.id
    );
    let export = |format: &str| {
        format!(
            "https://docs.google.com/spreadsheets/export?id={}&exportFormat={format}",
            file.id
        )
    };
    json!({
        "kind": "drive#file",
        "id": file.id,
        "name": file.title,
        "mimeType": "application/vnd.google-apps.spreadsheet",
        "starred": false,
        "trashed": false,
        "explicitlyTrashed": false,
        "spaces": ["drive"],
        "version": file.version.to_string(),
        "webViewLink": link,
        "iconLink": "https://drive-thirdparty.googleusercontent.com/16/type/application/vnd.google-apps.spreadsheet",
        "hasThumbnail": false,
        "thumbnailVersion": "0",
        "viewedByMe": false,
        "createdTime": rfc3339_ms(file.created_ms),
        "modifiedTime": rfc3339_ms(file.modified_ms),
        "modifiedByMe": false,
        "owners": [owner],
        "lastModifyingUser": me,
        "shared": true,
        "ownedByMe": false,
        "capabilities": {
            "canEdit": true,
            "canComment": true,
            "canCopy": true,
            "canDownload": true,
            "canShare": true,
            "canRename": true,
            "canTrash": false,
            "canDelete": false,
        },
        "viewersCanCopyContent": true,
        "copyRequiresWriterPermission": false,
        "writersCanShare": true,
        "quotaBytesUsed": "0",
        "isAppAuthorized": false,
        "exportLinks": {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": export("xlsx"),
            "text/csv": export("csv"),
            "application/pdf": export("pdf"),
        },
    })
}

// ---------------------------------------------------------------- sheets

async fn sheets_route(
    State(sheets): State<Sheets>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match sheets.serve(&method, &uri, &headers, &body) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What a `/v4/spreadsheets/…` path asks for.
enum Call {
    Metadata,
    StructuralUpdate,
    BatchGet,
    BatchUpdateValues,
    BatchClear,
    Get(String),
    Update(String),
    Append(String),
    Clear(String),
}

fn route(method: &Method, rest: &str) -> Option<(String, Call)> {
    let (id_part, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, Some(tail)),
        None => (rest, None),
    };
    let post = method == Method::POST;
    let get = method == Method::GET;
    let (id, call) = match tail {
        None => match id_part.strip_suffix(":batchUpdate") {
            Some(id) if post => (id, Call::StructuralUpdate),
            None if get => (id_part, Call::Metadata),
            _ => return None,
        },
        Some("values:batchGet") if get => (id_part, Call::BatchGet),
        Some("values:batchUpdate") if post => (id_part, Call::BatchUpdateValues),
        Some("values:batchClear") if post => (id_part, Call::BatchClear),
        Some(tail) => {
            let range = tail.strip_prefix("values/")?;
            // The range is one path segment: an unencoded `/` makes a path
            // no route matches (Google's router answers 404); `%2F` is fine.
            if range.contains('/') {
                return None;
            }
            let call = if post {
                if let Some(r) = range.strip_suffix(":append") {
                    Call::Append(percent_decode(r, false)?)
                } else if let Some(r) = range.strip_suffix(":clear") {
                    Call::Clear(percent_decode(r, false)?)
                } else {
                    return None;
                }
            } else if get {
                Call::Get(percent_decode(range, false)?)
            } else if method == Method::PUT {
                Call::Update(percent_decode(range, false)?)
            } else {
                return None;
            };
            (id_part, call)
        }
    };
    Some((percent_decode(id, false)?, call))
}

/// Read options shared by get and batchGet.
struct ReadOptions {
    render: fn(&Value) -> Value,
    columns: bool,
}

impl ReadOptions {
    fn from_query(query: &Query) -> Result<Self, ApiError> {
        let render = render_option(query.get("valueRenderOption"), "")?;
        date_time_option(query.get("dateTimeRenderOption"), "")?;
        let columns = major_dimension(query.get("majorDimension"))?;
        Ok(ReadOptions { render, columns })
    }

    /// The values a write answers with (`updatedData`), when the request
    /// set `includeValuesInResponse`, rendered as its
    /// `responseValueRenderOption` and `responseDateTimeRenderOption` say
    /// (as rows).
    fn for_response(
        include: Option<bool>,
        render: Option<&str>,
        date_time: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        let render = render_option(render, "response_")?;
        date_time_option(date_time, "response_")?;
        Ok(include.unwrap_or(false).then_some(ReadOptions {
            render,
            columns: false,
        }))
    }
}

/// A `ValueRenderOption` (default FORMATTED_VALUE); `prefix` names the
/// parameter in errors (`response_` for a write's answer).
fn render_option(value: Option<&str>, prefix: &str) -> Result<fn(&Value) -> Value, ApiError> {
    match value.unwrap_or("FORMATTED_VALUE") {
        "FORMATTED_VALUE" => Ok(grid::formatted),
        "UNFORMATTED_VALUE" => Ok(grid::unformatted),
        "FORMULA" => Ok(grid::formula),
        other => Err(ApiError::invalid(format!(
            "Invalid value at '{prefix}value_render_option' (type.googleapis.com/google.apps.sheets.v4.ValueRenderOption), \"{other}\""
        ))),
    }
}

/// A `DateTimeRenderOption` (default SERIAL_NUMBER).
fn date_time_option(value: Option<&str>, prefix: &str) -> Result<(), ApiError> {
    match value.unwrap_or("SERIAL_NUMBER") {
        "SERIAL_NUMBER" | "FORMATTED_STRING" => Ok(()),
        other => Err(ApiError::invalid(format!(
            "Invalid value at '{prefix}date_time_render_option' (type.googleapis.com/google.apps.sheets.v4.DateTimeRenderOption), \"{other}\""
        ))),
    }
}

/// A boolean query parameter: `true` or `false`, as Google's parser takes.
fn bool_param(query: &Query, name: &str, field: &str) -> Result<Option<bool>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some("true") | Some("1") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid value at '{field}' (TYPE_BOOL), \"{other}\""
        ))),
    }
}

/// Adds `updatedData` to an UpdateValuesResponse: the cells of the range
/// asked for after the write (trailing empty rows and columns left out),
/// or of the range written when only a start cell was given.
fn with_updated_data(
    spreadsheet: &Spreadsheet,
    mut answer: Value,
    requested: &str,
    options: Option<&ReadOptions>,
) -> Result<Value, ApiError> {
    let Some(options) = options else {
        return Ok(answer);
    };
    let (_, range) = resolve(spreadsheet, requested)?;
    let only_start =
        range.end_row == Some(range.start_row + 1) && range.end_col == Some(range.start_col + 1);
    let text = match answer.get("updatedRange").and_then(Value::as_str) {
        Some(written) if only_start => written.to_owned(),
        _ => requested.to_owned(),
    };
    answer["updatedData"] = read_range(spreadsheet, &text, options)?;
    Ok(answer)
}

/// `COLUMNS` → true; `ROWS`, unspecified → false.
fn major_dimension(value: Option<&str>) -> Result<bool, ApiError> {
    match value.unwrap_or("ROWS") {
        "ROWS" | "DIMENSION_UNSPECIFIED" => Ok(false),
        "COLUMNS" => Ok(true),
        other => Err(ApiError::invalid(format!(
            "Invalid value at 'major_dimension' (type.googleapis.com/google.apps.sheets.v4.Dimension), \"{other}\""
        ))),
    }
}

/// RAW → false, USER_ENTERED → true; anything else (or none) is refused.
fn input_option(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        Some("RAW") => Ok(false),
        Some("USER_ENTERED") => Ok(true),
        None | Some("") | Some("INPUT_VALUE_OPTION_UNSPECIFIED") => Err(ApiError::invalid(
            "Invalid valueInputOption: INPUT_VALUE_OPTION_UNSPECIFIED",
        )),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid value at 'value_input_option' (type.googleapis.com/google.apps.sheets.v4.ValueInputOption), \"{other}\""
        ))),
    }
}

/// A range resolved against a spreadsheet: the sheet's index and the
/// parsed bounds.
fn resolve(spreadsheet: &Spreadsheet, text: &str) -> Result<(usize, A1Range), ApiError> {
    let range = a1::parse(text, |name| spreadsheet.sheet_index(name).is_some())
        .ok_or_else(|| ApiError::unparsable_range(text))?;
    let index = match &range.sheet {
        Some(name) => spreadsheet
            .sheet_index(name)
            .ok_or_else(|| ApiError::unparsable_range(text))?,
        None => 0,
    };
    Ok((index, range))
}

/// The part of a range inside the grid: (rows, cols), end-exclusive.
fn clamp(sheet: &Sheet, range: &A1Range) -> ((usize, usize), (usize, usize)) {
    let r1 = range
        .end_row
        .unwrap_or(sheet.row_count)
        .min(sheet.row_count);
    let c1 = range
        .end_col
        .unwrap_or(sheet.column_count)
        .min(sheet.column_count);
    ((range.start_row.min(r1), r1), (range.start_col.min(c1), c1))
}

impl Sheets {
    fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let grant = self.authenticate(headers, "sheets.googleapis.com")?;
        let write = method != Method::GET;
        let allowed: &[&str] = if write {
            &auth::WRITE_SCOPES
        } else {
            &auth::READ_SCOPES
        };
        if !grant.scopes.iter().any(|s| allowed.contains(&s.as_str())) {
            return Err(ApiError::insufficient_scopes("sheets.googleapis.com"));
        }
        self.charge(&grant.email, write)?;
        let rest = uri.path().strip_prefix("/v4/spreadsheets/").unwrap_or("");
        let (id, call) = route(method, rest).ok_or_else(|| {
            ApiError::google(
                404,
                "NOT_FOUND",
                format!("Method not found: {method} {}", uri.path()),
            )
        })?;
        let query = Query(parse_pairs(uri.query().unwrap_or("")));
        let now = self.control.now_ms();
        let max_cells = self.limit("max_cells", 10_000_000.0) as usize;
        let max_chars = self.limit("max_cell_chars", 50_000.0) as usize;
        let step = self.version_step();
        let mut state = self.lock();
        let spreadsheet = state
            .spreadsheets
            .get_mut(&id)
            .ok_or_else(ApiError::not_found)?;
        if !spreadsheet.shared_with.contains(&grant.email) {
            return Err(ApiError::permission_denied());
        }
        let limits = Limits {
            max_cells,
            max_chars,
        };
        match call {
            Call::Metadata => metadata(spreadsheet, &query),
            Call::Get(range) => {
                let options = ReadOptions::from_query(&query)?;
                read_range(spreadsheet, &range, &options)
            }
            Call::BatchGet => {
                let options = ReadOptions::from_query(&query)?;
                let ranges = query
                    .all("ranges")
                    .into_iter()
                    .map(|r| read_range(spreadsheet, r, &options))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(without_defaults(
                    json!({ "spreadsheetId": spreadsheet.id, "valueRanges": ranges }),
                ))
            }
            write => {
                // Writes apply to a copy that replaces the original only
                // when every part succeeded: all or nothing.
                let mut copy = spreadsheet.clone();
                let body = json_body(body)?;
                let answer = write_call(&mut copy, write, &query, &body, limits)?;
                if copy.cell_count() > limits.max_cells {
                    return Err(ApiError::invalid(format!(
                        "This action would increase the number of cells in the workbook above the limit of {} cells.",
                        limits.max_cells
                    )));
                }
                copy.touch(now, step);
                *spreadsheet = copy;
                Ok(answer)
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_cells: usize,
    max_chars: usize,
}

/// A sheet's SheetProperties; frozen counts only when set, as Google
/// leaves out zeros.
fn sheet_properties(sheet: &Sheet, index: usize) -> Value {
    let mut grid = json!({ "rowCount": sheet.row_count, "columnCount": sheet.column_count });
    if sheet.frozen_rows > 0 {
        grid["frozenRowCount"] = Value::from(sheet.frozen_rows);
    }
    if sheet.frozen_columns > 0 {
        grid["frozenColumnCount"] = Value::from(sheet.frozen_columns);
    }
    json!({
        "sheetId": sheet.id,
        "title": sheet.title,
        "index": index,
        "sheetType": "GRID",
        "gridProperties": grid,
    })
}

/// `spreadsheets.get`: the Spreadsheet resource, cut to the `fields` mask
/// when one is given (see [`fields`]).
fn metadata(spreadsheet: &Spreadsheet, query: &Query) -> Result<Value, ApiError> {
    let fields = query.get("fields").unwrap_or("");
    let mask = match fields.trim() {
        "" => None,
        text => {
            let mask = fields::parse(text)
                .filter(|m| fields::valid(m, "Spreadsheet"))
                .ok_or_else(|| ApiError::invalid("Request contains an invalid argument."))?;
            Some(mask)
        }
    };
    let grid_data = query.get("includeGridData") == Some("true");
    let want_columns = grid_data || fields.contains("columnMetadata");
    let want_rows = grid_data || fields.contains("rowMetadata");
    let sheets: Vec<Value> = spreadsheet
        .sheets
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let mut sheet = json!({ "properties": sheet_properties(s, index) });
            if want_columns || want_rows {
                let meta = |hidden: &std::collections::BTreeSet<usize>, n: usize, size: u32| {
                    (0..n)
                        .map(|i| {
                            if hidden.contains(&i) {
                                json!({ "hiddenByUser": true, "pixelSize": size })
                            } else {
                                json!({ "pixelSize": size })
                            }
                        })
                        .collect::<Vec<_>>()
                };
                let mut data = json!({});
                if want_rows {
                    data["rowMetadata"] = Value::from(meta(&s.hidden_rows, s.row_count, 21));
                }
                if want_columns {
                    data["columnMetadata"] =
                        Value::from(meta(&s.hidden_columns, s.column_count, 100));
                }
                sheet["data"] = json!([data]);
            }
            sheet
        })
        .collect();
    let all = json!({
        "spreadsheetId": spreadsheet.id,
        "properties": {
            "title": spreadsheet.title,
            "locale": "en_US",
            "autoRecalc": "ON_CHANGE",
            "timeZone": spreadsheet.time_zone,
        },
        "sheets": sheets,
        "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{}/edit", spreadsheet.id),
    });
    Ok(match mask {
        Some(mask) => fields::project(&all, &mask),
        None => all,
    })
}

fn read_range(
    spreadsheet: &Spreadsheet,
    text: &str,
    options: &ReadOptions,
) -> Result<Value, ApiError> {
    let (index, range) = resolve(spreadsheet, text)?;
    let sheet = &spreadsheet.sheets[index];
    if range.start_row >= sheet.row_count || range.start_col >= sheet.column_count {
        return Err(ApiError::grid_limits(
            sheet,
            range.start_row,
            range.start_col,
        ));
    }
    let (rows, cols) = clamp(sheet, &range);
    let render = options.render;
    let values: Vec<Value> = sheet
        .window(rows, cols, options.columns)
        .iter()
        .map(|line| Value::from(line.iter().map(render).collect::<Vec<_>>()))
        .collect();
    let mut answer = json!({
        "range": format_range(&sheet.title, rows, cols),
        "majorDimension": if options.columns { "COLUMNS" } else { "ROWS" },
    });
    if !values.is_empty() {
        answer["values"] = Value::from(values);
    }
    Ok(answer)
}

/// A ValueRange body's values as rows (transposed from COLUMNS).
fn value_rows(value_range: &Value) -> Result<Vec<Vec<Value>>, ApiError> {
    let columns = major_dimension(value_range.get("majorDimension").and_then(Value::as_str))?;
    let lines: Vec<Vec<Value>> = match value_range.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(lines)) => lines
            .iter()
            .map(|line| match line {
                Value::Array(cells) => Ok(cells.clone()),
                _ => Err(ApiError::invalid(
                    "Invalid JSON payload received. 'values' must be a list of lists.",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid JSON payload received. 'values' must be a list of lists.",
            ));
        }
    };
    if !columns {
        return Ok(lines);
    }
    let height = lines.iter().map(Vec::len).max().unwrap_or(0);
    Ok((0..height)
        .map(|r| {
            let mut row: Vec<Value> = lines
                .iter()
                .map(|col| col.get(r).cloned().unwrap_or(Value::Null))
                .collect();
            while row.last().is_some_and(Value::is_null) {
                row.pop();
            }
            row
        })
        .collect())
}

/// Writes rows at a range's top-left corner, checking they fit the range
/// and the grid. Returns an UpdateValuesResponse.
fn write_rows(
    spreadsheet: &mut Spreadsheet,
    index: usize,
    range: &A1Range,
    text: &str,
    rows: &[Vec<Value>],
    user_entered: bool,
    limits: Limits,
) -> Result<Value, ApiError> {
    let id = spreadsheet.id.clone();
    let sheet = &mut spreadsheet.sheets[index];
    let (r0, c0) = (range.start_row, range.start_col);
    let height = rows.len();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    // A single cell only says where to start, as in the real API.
    let single_cell = range.end_row == Some(r0 + 1) && range.end_col == Some(c0 + 1);
    let (end_row, end_col) = if single_cell {
        (None, None)
    } else {
        (range.end_row, range.end_col)
    };
    if let Some(end) = end_row
        && r0 + height > end
    {
        return Err(ApiError::invalid(format!(
            "Requested writing within range [{text}], but tried writing to row [{}]",
            end + 1
        )));
    }
    if let Some(end) = end_col
        && c0 + width > end
    {
        return Err(ApiError::invalid(format!(
            "Requested writing within range [{text}], but tried writing to column [{}]",
            a1::column_letters(end)
        )));
    }
    if r0 >= sheet.row_count || r0 + height > sheet.row_count {
        return Err(ApiError::grid_limits(sheet, r0.max(sheet.row_count), c0));
    }
    if c0 >= sheet.column_count || c0 + width > sheet.column_count {
        return Err(ApiError::grid_limits(sheet, r0, c0.max(sheet.column_count)));
    }
    // Only cells actually written count (a JSON null leaves its cell as
    // it is); rows and columns count those with at least one such cell.
    let mut cells = 0;
    let mut rows_written = std::collections::BTreeSet::new();
    let mut cols_written = std::collections::BTreeSet::new();
    for (r, row) in rows.iter().enumerate() {
        for (c, value) in row.iter().enumerate() {
            if let Value::String(s) = value
                && s.chars().count() > limits.max_chars
            {
                return Err(ApiError::invalid(format!(
                    "Your input contains more than the maximum of {} characters in a single cell.",
                    limits.max_chars
                )));
            }
            let cell = grid::input_cell(value, user_entered)
                .map_err(|why| ApiError::invalid(format!("Invalid values[{r}][{c}]: {why}")))?;
            if let Some(cell) = cell {
                sheet.set(r0 + r, c0 + c, cell);
                cells += 1;
                rows_written.insert(r);
                cols_written.insert(c);
            }
        }
    }
    let mut answer = json!({ "spreadsheetId": id });
    if height > 0 && width > 0 {
        answer["updatedRange"] = Value::from(format_range(
            &sheet.title,
            (r0, r0 + height),
            (c0, c0 + width),
        ));
        answer["updatedRows"] = Value::from(rows_written.len());
        answer["updatedColumns"] = Value::from(cols_written.len());
        answer["updatedCells"] = Value::from(cells);
    }
    Ok(without_defaults(answer))
}

fn write_call(
    spreadsheet: &mut Spreadsheet,
    call: Call,
    query: &Query,
    body: &Value,
    limits: Limits,
) -> Result<Value, ApiError> {
    match call {
        Call::Update(text) => {
            let user_entered = input_option(query.get("valueInputOption"))?;
            let (index, range) = resolve(spreadsheet, &text)?;
            // A body may repeat the range; it must name the same cells.
            if let Some(body_range) = body.get("range").and_then(Value::as_str) {
                let (body_index, parsed) = resolve(spreadsheet, body_range)?;
                let same = body_index == index
                    && (
                        parsed.start_row,
                        parsed.start_col,
                        parsed.end_row,
                        parsed.end_col,
                    ) == (
                        range.start_row,
                        range.start_col,
                        range.end_row,
                        range.end_col,
                    );
                if !same {
                    return Err(ApiError::invalid(format!(
                        "Requested range [{body_range}] in the body does not match the range [{text}] in the URL."
                    )));
                }
            }
            let rows = value_rows(body)?;
            let respond = ReadOptions::for_response(
                bool_param(
                    query,
                    "includeValuesInResponse",
                    "include_values_in_response",
                )?,
                query.get("responseValueRenderOption"),
                query.get("responseDateTimeRenderOption"),
            )?;
            let answer = write_rows(
                spreadsheet,
                index,
                &range,
                &text,
                &rows,
                user_entered,
                limits,
            )?;
            with_updated_data(spreadsheet, answer, &text, respond.as_ref())
        }
        Call::BatchUpdateValues => {
            let user_entered = input_option(body.get("valueInputOption").and_then(Value::as_str))?;
            let include = match body.get("includeValuesInResponse") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid value at 'include_values_in_response' (TYPE_BOOL), {other}"
                    )));
                }
            };
            let respond = ReadOptions::for_response(
                include,
                body.get("responseValueRenderOption")
                    .and_then(Value::as_str),
                body.get("responseDateTimeRenderOption")
                    .and_then(Value::as_str),
            )?;
            let data = body
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut responses = Vec::new();
            let mut sheets_touched = std::collections::BTreeSet::new();
            let (mut total_rows, mut total_cols, mut total_cells) = (0, 0, 0);
            for (i, value_range) in data.iter().enumerate() {
                let text = value_range
                    .get("range")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("Invalid data[{i}]: a range is required."))
                    })?;
                let (index, range) = resolve(spreadsheet, text)?;
                let rows = value_rows(value_range)?;
                let answer = write_rows(
                    spreadsheet,
                    index,
                    &range,
                    text,
                    &rows,
                    user_entered,
                    limits,
                )?;
                if answer.get("updatedCells").is_some() {
                    sheets_touched.insert(index);
                }
                total_rows += answer["updatedRows"].as_u64().unwrap_or(0);
                total_cols += answer["updatedColumns"].as_u64().unwrap_or(0);
                total_cells += answer["updatedCells"].as_u64().unwrap_or(0);
                responses.push(answer);
            }
            // Each response shows its cells after the whole batch.
            for (response, value_range) in responses.iter_mut().zip(&data) {
                let text = value_range["range"].as_str().unwrap_or_default();
                *response =
                    with_updated_data(spreadsheet, response.take(), text, respond.as_ref())?;
            }
            Ok(without_defaults(json!({
                "spreadsheetId": spreadsheet.id,
                "totalUpdatedRows": total_rows,
                "totalUpdatedColumns": total_cols,
                "totalUpdatedCells": total_cells,
                "totalUpdatedSheets": sheets_touched.len(),
                "responses": responses,
            })))
        }
        Call::Append(text) => append(spreadsheet, &text, query, body, limits),
        Call::Clear(text) => {
            let cleared = clear(spreadsheet, &text)?;
            Ok(json!({ "spreadsheetId": spreadsheet.id, "clearedRange": cleared }))
        }
        Call::BatchClear => {
            let ranges = body
                .get("ranges")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut cleared = Vec::new();
            for r in &ranges {
                let text = r
                    .as_str()
                    .ok_or_else(|| ApiError::invalid("Invalid ranges: each must be a string."))?;
                cleared.push(clear(spreadsheet, text)?);
            }
            Ok(without_defaults(
                json!({ "spreadsheetId": spreadsheet.id, "clearedRanges": cleared }),
            ))
        }
        Call::StructuralUpdate => structural(spreadsheet, body),
        Call::Metadata | Call::Get(_) | Call::BatchGet => Err(ApiError::not_found()),
    }
}

fn clear(spreadsheet: &mut Spreadsheet, text: &str) -> Result<String, ApiError> {
    let (index, range) = resolve(spreadsheet, text)?;
    let sheet = &mut spreadsheet.sheets[index];
    if range.start_row >= sheet.row_count || range.start_col >= sheet.column_count {
        return Err(ApiError::grid_limits(
            sheet,
            range.start_row,
            range.start_col,
        ));
    }
    let (rows, cols) = clamp(sheet, &range);
    for r in rows.0..rows.1 {
        for c in cols.0..cols.1 {
            sheet.set(r, c, Value::Null);
        }
    }
    Ok(format_range(&sheet.title, rows, cols))
}

/// `values:append`. The reference says the range is searched "for
/// existing data" to "find a \"table\" within that range", and values go
/// "to the next row of the table, starting with the first column of the
/// table"
/// (<https://developers.google.com/workspace/sheets/api/reference/rest/v4/spreadsheets.values/append>,
/// <https://developers.google.com/workspace/sheets/api/guides/values#append_values>).
/// The emulator's exact rule:
/// - search columns: the range's columns; a single-cell range searches
///   from its column to the sheet's last column;
/// - the table starts at the first non-empty row (a row with a value in
///   the search columns) at or after the range's first row, and runs
///   through the following rows up to the first empty one (so a blank row
///   ends the table; data below it is not part of it);
/// - its columns run from the first to the last non-empty column of its
///   rows (within the search columns); `tableRange` is that block;
/// - values are written from the row after the table, at the table's
///   first column; with no table, at the range's first cell (and no
///   `tableRange`).
///
/// INSERT_ROWS inserts new rows there, OVERWRITE writes over what follows.
/// Either way the grid grows to fit.
fn append(
    spreadsheet: &mut Spreadsheet,
    text: &str,
    query: &Query,
    body: &Value,
    limits: Limits,
) -> Result<Value, ApiError> {
    let user_entered = input_option(query.get("valueInputOption"))?;
    let insert = match query.get("insertDataOption").unwrap_or("OVERWRITE") {
        "INSERT_ROWS" => true,
        "OVERWRITE" => false,
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid value at 'insert_data_option' (type.googleapis.com/google.apps.sheets.v4.InsertDataOption), \"{other}\""
            )));
        }
    };
    let respond = ReadOptions::for_response(
        bool_param(
            query,
            "includeValuesInResponse",
            "include_values_in_response",
        )?,
        query.get("responseValueRenderOption"),
        query.get("responseDateTimeRenderOption"),
    )?;
    let (index, range) = resolve(spreadsheet, text)?;
    let rows = value_rows(body)?;
    let sheet = &mut spreadsheet.sheets[index];
    if range.start_row >= sheet.row_count || range.start_col >= sheet.column_count {
        return Err(ApiError::grid_limits(
            sheet,
            range.start_row,
            range.start_col,
        ));
    }
    // The table may run past the range's own rows (and, for a single cell,
    // past its column), as in the real API.
    let (_, cols) = clamp(sheet, &range);
    let single_cell = range.end_row == Some(range.start_row + 1) && cols.1 == cols.0 + 1;
    let row_span = (range.start_row, sheet.row_count);
    let col_span = if single_cell {
        (cols.0, sheet.column_count)
    } else {
        cols
    };
    let view: &Sheet = sheet;
    let filled = |r: usize| (col_span.0..col_span.1).any(|c| !view.get(r, c).is_null());
    let table = (row_span.0..row_span.1).find(|&r| filled(r)).map(|first| {
        let end = (first..row_span.1)
            .find(|&r| !filled(r))
            .unwrap_or(row_span.1);
        let non_empty: Vec<usize> = (first..end)
            .flat_map(|r| (col_span.0..col_span.1).filter(move |&c| !view.get(r, c).is_null()))
            .collect();
        let c0 = non_empty.iter().copied().min().unwrap_or(col_span.0);
        let c1 = non_empty.iter().copied().max().map_or(c0 + 1, |c| c + 1);
        (first, end, c0, c1)
    });
    let table_range = table.map(|(r0, r1, c0, c1)| format_range(&view.title, (r0, r1), (c0, c1)));
    let (at, at_col) = table.map_or((range.start_row, range.start_col), |(_, end, c0, _)| {
        (end, c0)
    });
    let height = rows.len();
    if insert {
        sheet.insert(false, at.min(sheet.row_count), height);
    } else if at + height > sheet.row_count {
        sheet.row_count = at + height;
    }
    let target = A1Range {
        sheet: None,
        start_row: at,
        start_col: at_col,
        end_row: None,
        end_col: None,
    };
    let updates = write_rows(
        spreadsheet,
        index,
        &target,
        text,
        &rows,
        user_entered,
        limits,
    )?;
    // The appended cells are what the answer shows.
    let written = updates
        .get("updatedRange")
        .and_then(Value::as_str)
        .map_or_else(|| text.to_owned(), str::to_owned);
    let updates = match &respond {
        Some(options) if updates.get("updatedRange").is_some() => {
            let mut updates = updates;
            updates["updatedData"] = read_range(spreadsheet, &written, options)?;
            updates
        }
        _ => updates,
    };
    let mut answer = json!({ "spreadsheetId": spreadsheet.id, "updates": updates });
    if let Some(table) = table_range {
        answer["tableRange"] = Value::from(table);
    }
    Ok(answer)
}

/// Reads a `DimensionRange`: the sheet's index in the spreadsheet, whether
/// it is COLUMNS, and `[start, end)` checked against the grid.
fn dimension_range(
    spreadsheet: &mut Spreadsheet,
    range: &Value,
    at: &str,
) -> Result<(i64, bool, usize, usize), ApiError> {
    let sheet_id = range.get("sheetId").and_then(Value::as_i64).unwrap_or(0);
    let columns = match range.get("dimension").and_then(Value::as_str) {
        Some("ROWS") => false,
        Some("COLUMNS") => true,
        _ => {
            return Err(ApiError::invalid(format!(
                "Invalid {at}: dimension must be ROWS or COLUMNS."
            )));
        }
    };
    let sheet = spreadsheet
        .sheet_by_id(sheet_id)
        .ok_or_else(|| ApiError::invalid(format!("Invalid {at}: No grid with id: {sheet_id}")))?;
    let count = if columns {
        sheet.column_count
    } else {
        sheet.row_count
    };
    let start = range.get("startIndex").and_then(Value::as_u64).unwrap_or(0) as usize;
    let end = range
        .get("endIndex")
        .and_then(Value::as_u64)
        .map_or(count, |e| e as usize);
    if start >= end {
        return Err(ApiError::invalid(format!(
            "Invalid {at}: the range [{start}, {end}) is empty; endIndex must be greater than startIndex."
        )));
    }
    Ok((sheet_id, columns, start, end))
}

fn structural(spreadsheet: &mut Spreadsheet, body: &Value) -> Result<Value, ApiError> {
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut replies = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let Some((kind, args)) = request
            .as_object()
            .and_then(|o| (o.len() == 1).then(|| o.iter().next()).flatten())
        else {
            return Err(ApiError::invalid(format!(
                "Invalid requests[{i}]: each request must set exactly one kind."
            )));
        };
        let at = format!("requests[{i}].{kind}");
        let reply = match kind.as_str() {
            "deleteDimension" => {
                let range = args.get("range").cloned().unwrap_or(Value::Null);
                let (sheet_id, columns, start, end) = dimension_range(spreadsheet, &range, &at)?;
                let sheet = spreadsheet
                    .sheet_by_id(sheet_id)
                    .ok_or_else(ApiError::not_found)?;
                let (count, noun) = if columns {
                    (sheet.column_count, "column")
                } else {
                    (sheet.row_count, "row")
                };
                if end > count {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: Cannot delete a {noun} that doesn't exist. Tried to delete {noun} index {} but there are only {count} {noun}s.",
                        end - 1
                    )));
                }
                if end - start == count {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: You can't delete all the {noun}s on the sheet."
                    )));
                }
                sheet.delete(columns, start, end);
                json!({})
            }
            "insertDimension" => {
                let range = args.get("range").cloned().unwrap_or(Value::Null);
                let (sheet_id, columns, start, end) = dimension_range(spreadsheet, &range, &at)?;
                let sheet = spreadsheet
                    .sheet_by_id(sheet_id)
                    .ok_or_else(ApiError::not_found)?;
                let count = if columns {
                    sheet.column_count
                } else {
                    sheet.row_count
                };
                if start > count {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: startIndex {start} is past the end of the grid ({count})."
                    )));
                }
                if start == 0 && args.get("inheritFromBefore") == Some(&Value::Bool(true)) {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: Cannot inherit from before when inserting at index 0."
                    )));
                }
                sheet.insert(columns, start, end - start);
                json!({})
            }
            "appendDimension" => {
                let sheet_id = args.get("sheetId").and_then(Value::as_i64).unwrap_or(0);
                let columns = match args.get("dimension").and_then(Value::as_str) {
                    Some("ROWS") => false,
                    Some("COLUMNS") => true,
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "Invalid {at}: dimension must be ROWS or COLUMNS."
                        )));
                    }
                };
                let length = args.get("length").and_then(Value::as_u64).unwrap_or(0) as usize;
                if length == 0 {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: length must be greater than 0."
                    )));
                }
                let sheet = spreadsheet.sheet_by_id(sheet_id).ok_or_else(|| {
                    ApiError::invalid(format!("Invalid {at}: No grid with id: {sheet_id}"))
                })?;
                if columns {
                    sheet.column_count += length;
                } else {
                    sheet.row_count += length;
                }
                json!({})
            }
            "updateDimensionProperties" => {
                let range = args.get("range").cloned().unwrap_or(Value::Null);
                let (sheet_id, columns, start, end) = dimension_range(spreadsheet, &range, &at)?;
                let fields = args.get("fields").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(format!("Invalid {at}: fields is required."))
                })?;
                let sheet = spreadsheet
                    .sheet_by_id(sheet_id)
                    .ok_or_else(ApiError::not_found)?;
                let count = if columns {
                    sheet.column_count
                } else {
                    sheet.row_count
                };
                if end > count {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: index {} is past the end of the grid ({count}).",
                        end - 1
                    )));
                }
                let applies = fields
                    .split(',')
                    .any(|f| matches!(f.trim(), "*" | "hiddenByUser"));
                if applies {
                    let hidden = args
                        .pointer("/properties/hiddenByUser")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let set = if columns {
                        &mut sheet.hidden_columns
                    } else {
                        &mut sheet.hidden_rows
                    };
                    for i in start..end {
                        if hidden {
                            set.insert(i);
                        } else {
                            set.remove(&i);
                        }
                    }
                }
                json!({})
            }
            "addSheet" => {
                let props = args.get("properties").cloned().unwrap_or(json!({}));
                let sheet_id = match props.get("sheetId").and_then(Value::as_i64) {
                    Some(id) if spreadsheet.sheets.iter().any(|s| s.id == id) => {
                        return Err(ApiError::invalid(format!(
                            "Invalid {at}: A sheet with id {id} already exists."
                        )));
                    }
                    Some(id) => id,
                    None => {
                        spreadsheet.next_sheet_id += 1;
                        spreadsheet.next_sheet_id
                    }
                };
                let title = match props.get("title").and_then(Value::as_str) {
                    Some(t) => t.to_owned(),
                    None => (1..)
                        .map(|n| format!("Sheet{n}"))
                        .find(|t| spreadsheet.sheet_index(t).is_none())
                        .unwrap_or_default(),
                };
                if spreadsheet.sheet_index(&title).is_some() {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: A sheet with the name \"{title}\" already exists. Please enter another name."
                    )));
                }
                let mut sheet = Sheet::new(sheet_id, &title);
                if let Some(rows) = props
                    .pointer("/gridProperties/rowCount")
                    .and_then(Value::as_u64)
                {
                    sheet.row_count = rows as usize;
                }
                if let Some(cols) = props
                    .pointer("/gridProperties/columnCount")
                    .and_then(Value::as_u64)
                {
                    sheet.column_count = cols as usize;
                }
                let index = props
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(spreadsheet.sheets.len(), |i| {
                        (i as usize).min(spreadsheet.sheets.len())
                    });
                let reply = json!({ "addSheet": { "properties": {
                    "sheetId": sheet.id,
                    "title": sheet.title,
                    "index": index,
                    "sheetType": "GRID",
                    "gridProperties": { "rowCount": sheet.row_count, "columnCount": sheet.column_count },
                }}});
                spreadsheet.sheets.insert(index, sheet);
                reply
            }
            "updateSheetProperties" => {
                update_sheet_properties(spreadsheet, args, &at)?;
                json!({})
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid JSON payload received. Unknown name \"{other}\" at 'requests[{i}]': Cannot find field."
                )));
            }
        };
        replies.push(reply);
    }
    let mut answer = json!({ "spreadsheetId": spreadsheet.id, "replies": replies });
    if body.get("includeSpreadsheetInResponse") == Some(&Value::Bool(true)) {
        // The Spreadsheet resource after the updates, with grid data
        // only when asked (`responseIncludeGridData`).
        let grid = body.get("responseIncludeGridData") == Some(&Value::Bool(true));
        let query = Query(vec![("includeGridData".into(), grid.to_string())]);
        answer["updatedSpreadsheet"] = metadata(spreadsheet, &query)?;
    }
    Ok(without_defaults(answer))
}

/// `updateSheetProperties`: the properties the `fields` mask names
/// (`title`, `index`, `gridProperties` or any of its `rowCount`,
/// `columnCount`, `frozenRowCount`, `frozenColumnCount`; `*` for all of
/// them) take their values from `properties`, where a missing value is the
/// field's default, as in a protobuf field mask.
fn update_sheet_properties(
    spreadsheet: &mut Spreadsheet,
    args: &Value,
    at: &str,
) -> Result<(), ApiError> {
    let fields = args
        .get("fields")
        .and_then(Value::as_str)
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| ApiError::invalid(format!("Invalid {at}: fields is required.")))?;
    let props = args.get("properties").cloned().unwrap_or(json!({}));
    let sheet_id = props.get("sheetId").and_then(Value::as_i64).unwrap_or(0);
    let index = spreadsheet
        .sheets
        .iter()
        .position(|s| s.id == sheet_id)
        .ok_or_else(|| ApiError::invalid(format!("Invalid {at}: No grid with id: {sheet_id}")))?;
    const GRID: [&str; 4] = [
        "rowCount",
        "columnCount",
        "frozenRowCount",
        "frozenColumnCount",
    ];
    let mut paths = Vec::new();
    for field in fields.split(',').map(str::trim) {
        match field {
            "*" => {
                paths.extend(["title", "index"].map(String::from));
                paths.extend(GRID.map(|g| format!("gridProperties.{g}")));
            }
            "gridProperties" => paths.extend(GRID.map(|g| format!("gridProperties.{g}"))),
            "title" | "index" => paths.push(field.to_owned()),
            f if f
                .strip_prefix("gridProperties.")
                .is_some_and(|g| GRID.contains(&g)) =>
            {
                paths.push(f.to_owned());
            }
            "sheetId"
            | "sheetType"
            | "hidden"
            | "tabColor"
            | "tabColorStyle"
            | "rightToLeft"
            | "gridProperties.hideGridlines"
            | "gridProperties.rowGroupControlAfter"
            | "gridProperties.columnGroupControlAfter" => {
                return Err(ApiError::invalid(format!(
                    "Invalid {at}: the emulator does not model the sheet property '{field}'."
                )));
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid field mask path '{other}' in {at}: SheetProperties has no such field."
                )));
            }
        }
    }
    let number = |pointer: &str| -> Result<usize, ApiError> {
        match props.pointer(pointer) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid {at}: {pointer} must be a non-negative integer."
                ))
            }),
        }
    };
    let mut sheet = spreadsheet.sheets[index].clone();
    let mut new_index = index;
    for path in &paths {
        match path.as_str() {
            "title" => {
                let title = props.get("title").and_then(Value::as_str).unwrap_or("");
                if title.trim().is_empty() {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: A sheet's name cannot be empty."
                    )));
                }
                if spreadsheet
                    .sheet_index(title)
                    .is_some_and(|other| other != index)
                {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: A sheet with the name \"{title}\" already exists. Please enter another name."
                    )));
                }
                sheet.title = title.to_owned();
            }
            "index" => new_index = number("/index")?.min(spreadsheet.sheets.len() - 1),
            "gridProperties.rowCount" => {
                let rows = number("/gridProperties/rowCount")?;
                if rows == 0 {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: You can't delete all the rows on the sheet."
                    )));
                }
                if rows < sheet.row_count {
                    let count = sheet.row_count;
                    sheet.delete(false, rows, count);
                } else {
                    sheet.row_count = rows;
                }
            }
            "gridProperties.columnCount" => {
                let cols = number("/gridProperties/columnCount")?;
                if cols == 0 {
                    return Err(ApiError::invalid(format!(
                        "Invalid {at}: You can't delete all the columns on the sheet."
                    )));
                }
                if cols < sheet.column_count {
                    let count = sheet.column_count;
                    sheet.delete(true, cols, count);
                } else {
                    sheet.column_count = cols;
                }
            }
            "gridProperties.frozenRowCount" => {
                sheet.frozen_rows = number("/gridProperties/frozenRowCount")?
            }
            "gridProperties.frozenColumnCount" => {
                sheet.frozen_columns = number("/gridProperties/frozenColumnCount")?;
            }
            _ => unreachable!("paths are checked above"),
        }
    }
    if sheet.frozen_rows >= sheet.row_count {
        return Err(ApiError::invalid(format!(
            "Invalid {at}: You can't freeze all visible rows on the sheet."
        )));
    }
    if sheet.frozen_columns >= sheet.column_count {
        return Err(ApiError::invalid(format!(
            "Invalid {at}: You can't freeze all visible columns on the sheet."
        )));
    }
    spreadsheet.sheets.remove(index);
    spreadsheet.sheets.insert(new_index, sheet);
    Ok(())
}

#[cfg(test)]
mod tests;
