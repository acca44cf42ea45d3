//! The Google Sheets adapter: one sheet (tab) of a spreadsheet as a table,
//! through a thin reqwest client for the Sheets v4 and Drive v3 endpoints.
//!
//! - **Layout.** Row 1 holds the headers; a field lives in the column whose
//!   header is the field's mapped column name. Record ids live in a hidden
//!   id column, headed `_id` (or the binding's id column, when that is not
//!   the default `id`). Other columns are left alone.
//! - **Auth.** A service-account key file: an RS256 JWT (`iss` = the
//!   account's email, `aud` = the key file's `token_uri`, one hour) is
//!   traded for an access token, cached and refreshed before it expires
//!   (and once more if a request is refused with 401). Neither the key nor
//!   the token is ever logged or put in an error.
//! - **Reads.** A fetch first asks Drive for the file's `version` (the
//!   cursor): when it equals the previous fetch's, nothing changed and the
//!   sheet is not read. Otherwise the whole sheet is read in one
//!   `values:batchGet` (unformatted values, dates as serial numbers) and
//!   returned as a complete fetch, so deletes are seen as missing rows.
//!   Sheets keeps no per-row times: every row's modification time is the
//!   file's `modifiedTime` (an upper bound), which is what last-write-wins
//!   compares.
//! - **Ids for rows people add.** A row without an id gets a fresh UUIDv7,
//!   written into the id column by the first fetch after
//!   [`Adapter::prepare`] (one `values:batchUpdate`). Just before that
//!   write (after every wait) the sheet is read again, and a row whose id
//!   cell or content changed meanwhile (a person sorted the sheet) is
//!   skipped and left out of the fetch: it gets its id next run, and no id
//!   lands on another row. [`Adapter::describe`] (what a dry run calls)
//!   disarms this, and so does a binding that only pulls
//!   ([`SheetsOptions::pull_only`]): such fetches never write, and give
//!   such a row a provisional id `sheet-row-<hash of its cells>`.
//! - **Writes.** Every request that addresses rows by number (deletes,
//!   cell writes, id writes) takes its row numbers from a read of the id
//!   column made after the last wait before it (the write budget, a retry's
//!   backoff), so rows a person moves meanwhile are found where they are
//!   now; a 429 is retried by reading again, never by resending old row
//!   numbers. In this order: one structural `:batchUpdate` deleting rows
//!   bottom-up (a request of its own: if it is refused, only the deletes
//!   fail, for good, with the reason, and the other changes are still
//!   written); then, when rows are added, one growing the grid (new rows go
//!   below every row with content, including rows typed in since the
//!   fetch: the whole sheet is read then); then one `values:batchUpdate`
//!   (RAW) of every changed cell. A create whose id is already in the sheet
//!   updates that row, so a retried create never duplicates a row. A
//!   request that fails marks the ops it carried as failed; nothing is
//!   reported as written that was not. A structural request is never
//!   repeated after a lost answer (deleting twice would delete other
//!   rows): the next run re-reads and finishes.
//! - **Values.** Text-like fields, dates and date-times are written as
//!   strings (ISO 8601), numbers as numbers (as text when a double cannot
//!   hold them exactly), booleans as booleans, multi-selects as a JSON
//!   array string, JSON as its text. Serial numbers in date and date-time
//!   columns (what people's typed dates become) are read as days since
//!   1899-12-30; date-times are local times of the spreadsheet's time zone
//!   (`properties.timeZone`). Without a time-zone database, only zones with
//!   a fixed offset are converted (`UTC`, `GMT`, `Etc/GMT±N`); in any other
//!   zone a typed (serial) date-time is passed on as an invalid value
//!   saying what to do, so the engine reports that row instead of storing a
//!   shifted time. Dates, and date-times typed as text with an offset, read
//!   the same in every zone.
//! - **Quotas.** A client-side budget of reads and writes per minute
//!   (Google's per-user limits are 60 each), retries of 429 (honouring
//!   `Retry-After`) and, where a retry cannot apply a change twice, of 5xx
//!   and lost responses, with jittered exponential backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use chittysync::{
    Adapter, AdapterError, BoxFuture, ChangeTracking, ColumnSpec, Fetched, FieldKind, RemoteColumn,
    RemoteRow, RemoteTable, RowError, RowOp, RowResult, TableSpec, Value,
};
use chittysync_http::jitter_unit;

const SYSTEM: &str = "sheets";
const SCOPES: &str = "https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.metadata.readonly";
/// The id column's header unless the binding names another id column.
pub(crate) const DEFAULT_ID_HEADER: &str = "_id";
/// Google Sheets holds at most this many characters in one cell.
const MAX_CELL_CHARS: usize = 50_000;
/// Keep each write request's body under Google's ~2 MB advice.
const MAX_BODY_BYTES: usize = 1_900_000;
/// The JSON around one cell's value in a values write:
/// `{"range":"…","majorDimension":"ROWS","values":[[…]]},` (51 bytes).
const CELL_OVERHEAD_BYTES: usize = 52;
/// Ops per apply unless the run says otherwise: every row of any sheet
/// that fits Google's cell limit with a few columns.
const PREFERRED_BATCH: usize = 1_000_000;
/// Prefix of the provisional ids a dry run gives rows without an id.
const PROVISIONAL_PREFIX: &str = "sheet-row-";

/// Settings of a [`SheetsAdapter`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SheetsOptions {
    /// The spreadsheet's id (from its URL; a binding's `table`).
    pub spreadsheet_id: String,
    /// The sheet (tab) title; `None` = the spreadsheet's first sheet
    /// (setting `sheet`).
    pub sheet: Option<String>,
    /// The sheet's numeric id (`sheetId`, setting `sheet_id`): when set, the
    /// tab is found by it, so renaming or reordering tabs changes nothing.
    /// `chittysync adapter add` stores it ([`SheetsAdapter::pinned_sheet_id`]).
    pub sheet_id: Option<i64>,
    /// The service-account key file (JSON, as Google issues it); on unix it
    /// must not be readable by group or others (setting `key_file`).
    pub key_file: PathBuf,
    /// The header of the hidden column holding record ids (default `_id`;
    /// a binding's id column when that is not `id`).
    pub id_header: String,
    /// The Sheets API root (setting `base_url`, default
    /// `https://sheets.googleapis.com`), for proxies and emulators.
    pub base_url: String,
    /// The Drive API root (setting `drive_base_url`, default
    /// `https://www.googleapis.com`).
    pub drive_base_url: String,
    /// Sheets read requests allowed per minute (setting
    /// `reads_per_minute`, default 60: Google's per-user quota).
    pub reads_per_minute: u32,
    /// Sheets write requests allowed per minute (setting
    /// `writes_per_minute`, default 60).
    pub writes_per_minute: u32,
    /// The backoff unit (setting `retry_base_ms`, default 1000): the n-th
    /// retry waits `min(2^n + jitter, 32)` units.
    pub retry_base: Duration,
    /// Retries of a request after 429, 5xx or a lost response (setting
    /// `max_retries`, default 5).
    pub max_retries: u32,
    /// Timeout of each request (setting `timeout_ms`, default 30 s).
    pub timeout: Duration,
    /// The binding only pulls: fetches never write to the sheet, and rows
    /// without an id keep provisional ids (set from the binding's
    /// direction).
    pub pull_only: bool,
}

impl SheetsOptions {
    /// Options for the first sheet of `spreadsheet_id`, authenticated with
    /// the service-account key in `key_file`, with Google's endpoints and
    /// the defaults above.
    pub fn new(spreadsheet_id: impl Into<String>, key_file: impl Into<PathBuf>) -> Self {
        SheetsOptions {
            spreadsheet_id: spreadsheet_id.into(),
            sheet: None,
            sheet_id: None,
            key_file: key_file.into(),
            id_header: DEFAULT_ID_HEADER.into(),
            base_url: "https://sheets.googleapis.com".into(),
            drive_base_url: "https://www.googleapis.com".into(),
            reads_per_minute: 60,
            writes_per_minute: 60,
            retry_base: Duration::from_millis(1000),
            max_retries: 5,
            timeout: Duration::from_secs(30),
            pull_only: false,
        }
    }

    /// Reads the options from a binding's settings (see each field).
    fn from_binding(binding: &chittysync::AdapterBinding) -> Result<Self, AdapterError> {
        let s = &binding.settings;
        let key_file = s.get("key_file").ok_or_else(|| {
            AdapterError::Config(format!(
                "binding '{}' has no key_file setting; set it to the path of the service account's JSON key file",
                binding.name
            ))
        })?;
        let mut o = SheetsOptions::new(binding.target.clone(), key_file);
        o.sheet = s.get("sheet").cloned();
        o.pull_only = !binding.direction.pushes();
        if let Some(id) = s.get("sheet_id") {
            o.sheet_id = Some(id.trim().parse().map_err(|_| {
                AdapterError::Config(format!(
                    "binding '{}': setting sheet_id = '{id}' is not a sheet id (a whole number, the gid= in the sheet's URL)",
                    binding.name
                ))
            })?);
        }
        if binding.id_column != "id" {
            o.id_header = binding.id_column.clone();
        }
        if let Some(url) = s.get("base_url") {
            o.base_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(url) = s.get("drive_base_url") {
            o.drive_base_url = url.trim_end_matches('/').to_owned();
        }
        let number = |key: &str, default: u64| -> Result<u64, AdapterError> {
            match s.get(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    AdapterError::Config(format!(
                        "binding '{}': setting {key} = '{v}' is not a whole number",
                        binding.name
                    ))
                }),
            }
        };
        o.reads_per_minute = number("reads_per_minute", 60)? as u32;
        o.writes_per_minute = number("writes_per_minute", 60)? as u32;
        o.retry_base = Duration::from_millis(number("retry_base_ms", 1000)?);
        o.max_retries = number("max_retries", 5)? as u32;
        o.timeout = Duration::from_millis(number("timeout_ms", 30_000)?);
        Ok(o)
    }
}

// ---------------------------------------------------------------------------
// Service-account auth

/// The parts of a service-account key file the adapter uses.
#[derive(Deserialize)]
struct KeyFileJson {
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

struct ServiceAccount {
    client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: jsonwebtoken::EncodingKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// Reads a service-account key file. Errors name the file and what to fix,
/// never its content.
fn load_key(path: &Path) -> Result<ServiceAccount, AdapterError> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| AdapterError::Config(format!("cannot read the key file {shown}: {e}")))?;
        if meta.permissions().mode() & 0o044 != 0 {
            return Err(AdapterError::Config(format!(
                "the key file {shown} is readable by group or others; restrict it (chmod 600) and run again"
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| AdapterError::Config(format!("cannot read the key file {shown}: {e}")))?;
    // serde's messages may quote the input: say only where it failed.
    let parsed: KeyFileJson = serde_json::from_str(&text).map_err(|e| {
        AdapterError::Config(format!(
            "the key file {shown} is not a service-account key (JSON with client_email, private_key and token_uri; it fails at line {}, column {}); download a new key for the service account",
            e.line(),
            e.column()
        ))
    })?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(parsed.private_key.as_bytes()).map_err(|_| {
        AdapterError::Config(format!(
            "the private_key of the key file {shown} is not an RSA key in PEM form; download a new key for the service account"
        ))
    })?;
    Ok(ServiceAccount {
        client_email: parsed.client_email,
        token_uri: parsed.token_uri,
        key_id: parsed.private_key_id,
        key,
    })
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

struct AccessToken {
    /// The bearer token (never logged).
    secret: String,
    /// When to get a new one.
    refresh_at: Instant,
}

/// When a token valid for `lifetime` should be replaced: five minutes
/// early, or halfway through when it lives less than ten minutes.
fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(300).min(lifetime / 2);
    lifetime - margin
}

// ---------------------------------------------------------------------------
// HTTP: budgets, retries, errors

/// Which budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    /// A Sheets read.
    Read,
    /// A Sheets write.
    Write,
    /// Drive metadata and the token endpoint (quotas of their own, far
    /// above what one binding uses).
    Other,
    /// A Sheets write whose budget was already waited for (before the
    /// re-read its row numbers come from).
    Prepaid,
}

/// The n-th retry's wait: `min(2^n + jitter, 32)` units of `base`, with
/// `jitter` in `[0, 1)`.
fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let units = (2f64.powi(attempt.min(16) as i32) + jitter.clamp(0.0, 1.0)).min(32.0);
    base.mul_f64(units)
}

/// The message of a Google error body (`{error:{code, status, message}}`),
/// or a short excerpt of a body that is not one.
fn error_reason(status: StatusCode, body: &str) -> String {
    let parsed: Option<(String, String)> = serde_json::from_str::<Json>(body).ok().and_then(|j| {
        let e = j.get("error")?;
        let message = e
            .get("message")
            .and_then(Json::as_str)
            .or_else(|| j.get("error_description").and_then(Json::as_str))
            .unwrap_or("")
            .to_owned();
        let kind = e
            .get("status")
            .and_then(Json::as_str)
            .or_else(|| e.as_str())
            .unwrap_or("")
            .to_owned();
        Some((kind, message))
    });
    match parsed {
        Some((kind, message)) if !kind.is_empty() || !message.is_empty() => {
            format!("HTTP {} {kind}: {message}", status.as_u16())
                .trim_end_matches([' ', ':'])
                .to_owned()
        }
        _ => {
            let excerpt: String = body.chars().take(200).collect();
            format!("HTTP {} {}", status.as_u16(), excerpt.trim())
                .trim_end()
                .to_owned()
        }
    }
}

/// What to tell the operator after a final failure with this status.
fn advice(status: Option<StatusCode>, client_email: &str) -> String {
    match status.map(|s| s.as_u16()) {
        Some(401) => "the access token was refused; check the key file belongs to an enabled service account".into(),
        Some(403) => format!("share the spreadsheet with {client_email} (as an editor) and enable the Sheets and Drive APIs for its project"),
        Some(404) => "check the spreadsheet id (the binding's table) and the sheet title".into(),
        Some(429) => "the Sheets quota is exhausted; lower reads_per_minute/writes_per_minute or run again in a minute".into(),
        Some(400) => "the request was refused as invalid; check the sheet title and that the sheet is not protected".into(),
        Some(413) => "the request was too large for the server; run with a smaller --batch-size".into(),
        _ => "the service is unavailable or unreachable; run again later".into(),
    }
}

/// What to do when the token endpoint refuses the key.
fn token_advice(reason: &str) -> &'static str {
    if reason.contains("invalid_grant") {
        // Google answers invalid_grant to a JWT whose iat/exp are off, too.
        "check the key file is current and the account is enabled, and that this machine's clock is right (the token request carries the current time, and is refused when the clock is off by minutes)"
    } else {
        "check the key file is current and the account is enabled"
    }
}

/// A request that failed for good.
struct Failure {
    status: Option<StatusCode>,
    reason: String,
}

/// Why one attempt of a request failed.
enum Refusal {
    /// It may be sent again (429; 5xx or no answer when repeating is safe).
    Retry {
        failure: Failure,
        retry_after: Option<Duration>,
    },
    /// Not to be repeated; `status` is the HTTP status when there was one.
    Final {
        error: AdapterError,
        status: Option<StatusCode>,
    },
}

/// One request to send.
struct Call<'a> {
    method: Method,
    url: Url,
    query: Vec<(&'a str, String)>,
    body: Option<Json>,
    budget: Budget,
    /// Whether sending it twice does no harm (then 5xx and lost responses
    /// are retried too; 429 always is: the request was not carried out).
    idempotent: bool,
}

// ---------------------------------------------------------------------------
// Values

/// `0` → `A`, `25` → `Z`, `26` → `AA`.
fn column_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut out = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        out.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// A sheet title quoted for A1 notation: `'It''s'`.
fn quote_sheet(title: &str) -> String {
    format!("'{}'", title.replace('\'', "''"))
}

/// One cell in A1 notation (`column` 0-based, `row` 1-based).
fn a1_cell(title: &str, column: usize, row: u64) -> String {
    format!("{}!{}{row}", quote_sheet(title), column_letters(column))
}

fn serial_epoch() -> time::PrimitiveDateTime {
    time::macros::datetime!(1899-12-30 0:00)
}

/// A serial date (days since 1899-12-30) as `YYYY-MM-DD`; the time of day
/// is dropped.
fn serial_to_date(serial: f64) -> Option<String> {
    if !serial.is_finite() || serial.abs() > 3_000_000.0 {
        return None;
    }
    let date = serial_epoch()
        .date()
        .checked_add(time::Duration::days(serial.floor() as i64))?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    date.format(format).ok()
}

/// The UTC offset of a spreadsheet time zone, for the zones whose offset
/// never changes: `UTC`, `GMT`, `Etc/UTC`, `Etc/GMT` and `Etc/GMT±N`
/// (POSIX signs: `Etc/GMT-2` is two hours *ahead* of UTC). `None` for
/// other zones (their offsets follow daylight-saving rules this adapter
/// does not carry). An empty zone (not reported) is taken as UTC.
fn zone_offset(zone: &str) -> Option<time::UtcOffset> {
    match zone {
        "" | "UTC" | "GMT" | "UCT" | "Zulu" | "Etc/UTC" | "Etc/UCT" | "Etc/GMT" | "Etc/GMT0"
        | "Etc/GMT+0" | "Etc/GMT-0" | "Etc/Universal" | "Etc/Zulu" | "Etc/Greenwich" => {
            return Some(time::UtcOffset::UTC);
        }
        _ => {}
    }
    let rest = zone.strip_prefix("Etc/GMT")?;
    let (sign, hours) = match rest.split_at_checked(1)? {
        ("+", h) => (-1, h),
        ("-", h) => (1, h),
        _ => return None,
    };
    let hours: i8 = hours.parse().ok().filter(|h| (1..=14).contains(h))?;
    time::UtcOffset::from_hms(sign * hours, 0, 0).ok()
}

/// A serial date-time (fractional days since 1899-12-30, a local time at
/// `offset`) as RFC 3339 in UTC, to the millisecond.
fn serial_to_datetime(serial: f64, offset: time::UtcOffset) -> Option<String> {
    if !serial.is_finite() || serial.abs() > 3_000_000.0 {
        return None;
    }
    let ms = (serial * 86_400_000.0).round() as i64;
    let at = serial_epoch()
        .checked_add(time::Duration::milliseconds(ms))?
        .assume_offset(offset)
        .to_offset(time::UtcOffset::UTC);
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A JSON number's text without a needless `.0`.
fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        // Plain decimals (`0.0000001`, `10000000000000000`), never the
        // exponent form (`1e-7`), which is not a decimal's text.
        Some(f) if f.is_finite() => format!("{f}"),
        _ => n.to_string(),
    }
}

/// [`cell_to_value_in`] a spreadsheet whose time zone is UTC.
#[cfg(test)]
fn cell_to_value(cell: &Json, ty: FieldKind) -> Option<Value> {
    cell_to_value_in(cell, ty, "Etc/GMT")
}

/// A cell as read (unformatted) → the value of a field of type `ty`, in a
/// spreadsheet whose time zone is `zone`; `None` for an empty cell. What
/// does not fit the type is passed on as read, for the engine to report as
/// invalid; so is a serial date-time in a zone whose offset is not known
/// (see [`zone_offset`]), with what to do.
fn cell_to_value_in(cell: &Json, ty: FieldKind, zone: &str) -> Option<Value> {
    use FieldKind as T;
    match cell {
        Json::Null => None,
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(match ty {
            T::MultiSelect => match serde_json::from_str::<Vec<String>>(s) {
                Ok(items) => Value::Set(items.into_iter().collect()),
                // Typed by a person: "a, b" (the engine splits on commas).
                Err(_) => Value::Text(s.clone()),
            },
            T::Json => Value::Json(s.clone()),
            _ => Value::Text(s.clone()),
        }),
        Json::Bool(b) => Some(match ty {
            T::Bool | T::Json => Value::Bool(*b),
            _ => Value::Text(b.to_string()),
        }),
        Json::Number(n) => Some(match ty {
            T::Integer => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Value::Integer(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Integer(f as i64),
                _ => Value::Decimal(number_text(n)),
            },
            T::Decimal => Value::Decimal(number_text(n)),
            T::Date => match n.as_f64().and_then(serial_to_date) {
                Some(d) => Value::Text(d),
                None => Value::Text(number_text(n)),
            },
            T::Datetime => match zone_offset(zone) {
                Some(offset) => match n.as_f64().and_then(|f| serial_to_datetime(f, offset)) {
                    Some(d) => Value::Text(d),
                    None => Value::Text(number_text(n)),
                },
                None => Value::Text(format!(
                    "{} (a date-time typed in the spreadsheet's time zone {zone}, which ChittySync cannot convert: type it as text with an offset, like 2026-11-23T18:00:00+01:00, or set the spreadsheet's time zone to UTC or Etc/GMT±N)",
                    number_text(n)
                )),
            },
            T::Json => Value::Json(n.to_string()),
            T::Bool => match n.as_i64() {
                Some(0) => Value::Bool(false),
                Some(1) => Value::Bool(true),
                _ => Value::Text(number_text(n)),
            },
            _ => Value::Text(number_text(n)),
        }),
        other => Some(Value::Json(other.to_string())),
    }
}

/// A value of a field of type `ty` → the cell written (RAW). Numbers are
/// written as numbers when they read back exactly, else as text.
fn value_to_cell(value: &Value, ty: FieldKind) -> Json {
    use FieldKind as T;
    match (ty, value) {
        (T::Integer, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => json!(i),
        (T::Decimal, Value::Decimal(d)) | (T::Decimal, Value::Text(d)) => {
            match d.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) if number_text(&n) == *d => Json::Number(n),
                _ => Json::String(d.clone()),
            }
        }
        (T::Decimal, Value::Integer(i)) if i.unsigned_abs() <= 1 << 53 => json!(i),
        (_, Value::Bool(b)) if ty != T::Json => json!(b),
        (_, Value::Set(items)) => {
            Json::String(serde_json::to_string(items).expect("strings serialize"))
        }
        (T::Json, v) => Json::String(match v {
            Value::Json(text) => text.clone(),
            other => other.to_json().to_string(),
        }),
        (_, v) => Json::String(v.to_string()),
    }
}

/// A cell's length in characters, as Sheets counts it.
fn cell_chars(cell: &Json) -> usize {
    match cell {
        Json::String(s) => s.chars().count(),
        other => other.to_string().len(),
    }
}

/// The id in an id cell (people may type numbers).
fn id_of(cell: Option<&Json>) -> Option<String> {
    match cell? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Number(n) => Some(number_text(n)),
        _ => None,
    }
}

fn is_empty_cell(cell: &Json) -> bool {
    matches!(cell, Json::Null) || matches!(cell, Json::String(s) if s.is_empty())
}

/// The provisional id of a row without an id: a hash of its cells.
fn provisional_id(cells: &[Json]) -> String {
    use sha2::{Digest, Sha256};
    let mut trimmed = cells;
    while let Some((last, rest)) = trimmed.split_last() {
        if !is_empty_cell(last) {
            break;
        }
        trimmed = rest;
    }
    let text = serde_json::to_string(trimmed).expect("cells serialize");
    let digest = Sha256::digest(text.as_bytes());
    format!("{PROVISIONAL_PREFIX}{}", hex::encode(&digest[..12]))
}

/// A row's cells with its id cell emptied.
fn without_id(cells: &[Json], id_col: usize) -> Vec<Json> {
    let mut out = cells.to_vec();
    if let Some(c) = out.get_mut(id_col) {
        *c = Json::Null;
    }
    out
}

/// A fingerprint of a row's content (its cells but the id).
fn content_of(cells: &[Json], id_col: usize) -> String {
    provisional_id(&without_id(cells, id_col))
}

/// An id to write into a row added without one.
struct NewId {
    /// The row (1-based) as read.
    row: u64,
    /// The id cell as read (a copy of another row's id, or none).
    had: Option<String>,
    /// [`content_of`] the row as read.
    content: String,
    /// The id to write.
    id: String,
}

/// Splits cell writes into request bodies of at most `max_bytes` (roughly),
/// never splitting one op's cells: returns groups of op indexes.
fn chunk_by_size(sizes: &[(usize, usize)], max_bytes: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for &(op, bytes) in sizes {
        if !current.is_empty() && used + bytes > max_bytes {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(op);
        used += bytes;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

// ---------------------------------------------------------------------------
// Layout

/// Where things are in the sheet.
#[derive(Clone, Debug)]
struct Layout {
    /// The sheet's numeric id (for structural requests).
    sheet_id: i64,
    /// The sheet's title (for ranges).
    title: String,
    /// The spreadsheet's time zone (serial date-times are local to it).
    time_zone: String,
    /// Rows in the grid.
    row_count: u64,
    /// Columns in the grid.
    column_count: u64,
    /// Header texts of row 1.
    headers: Vec<String>,
    /// The id column (0-based).
    id_col: usize,
    /// The mapped fields and their columns (0-based).
    columns: Vec<(ColumnSpec, usize)>,
}

/// The cells an op writes: `(column, cell)`.
type Cells = Vec<(usize, Json)>;

/// Where rows are, as read: the layout, each id's row (1-based) and the
/// last row with content.
struct Snapshot {
    layout: Layout,
    row_of: HashMap<String, u64>,
    last: u64,
}

/// The sheet's properties.
#[derive(Clone, Debug)]
struct SheetMeta {
    sheet_id: i64,
    /// The spreadsheet's time zone (`properties.timeZone`).
    time_zone: String,
    title: String,
    row_count: u64,
    column_count: u64,
}

fn header_texts(row: Option<&Vec<Json>>) -> Vec<String> {
    row.map(|cells| {
        cells
            .iter()
            .map(|c| match c {
                Json::String(s) => s.trim().to_owned(),
                Json::Null => String::new(),
                other => other.to_string(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The rows of a value range (`values`), or none.
fn range_rows(range: &Json) -> Vec<Vec<Json>> {
    range
        .get("values")
        .and_then(Json::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The adapter

#[derive(Default)]
struct State {
    /// The layout as last read.
    layout: Option<Layout>,
    /// Whether fetches may write ids (armed by `prepare`, disarmed by
    /// `describe`).
    fill_ids: bool,
}

/// A sheet of a Google spreadsheet as an adapter.
pub struct SheetsAdapter {
    spec: TableSpec,
    options: SheetsOptions,
    shown: String,
    account: ServiceAccount,
    http: reqwest::Client,
    reads: DefaultDirectRateLimiter,
    writes: DefaultDirectRateLimiter,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    state: std::sync::Mutex<State>,
}

impl fmt::Debug for SheetsAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key or the token.
        f.debug_struct("SheetsAdapter")
            .field("spreadsheet", &self.shown)
            .field("service_account", &self.account.client_email)
            .finish_non_exhaustive()
    }
}

/// A budget of `per_minute` requests that never exceeds it in any minute:
/// a burst of a twentieth, the rest spread evenly, so a busy client keeps
/// using 95 % of the quota (a larger burst would lower the steady rate).
fn limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    let per_minute = per_minute.max(1);
    let burst = (per_minute / 20).max(1);
    let steady = (per_minute - burst).max(1);
    let period = Duration::from_secs(60) / steady;
    let quota = Quota::with_period(period.max(Duration::from_micros(1)))
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
    RateLimiter::direct(quota)
}

impl SheetsAdapter {
    /// An adapter on the sheet `options` names, laid out as `spec` (its
    /// `table` should be the spreadsheet id). Reads the key file now, so a
    /// missing or unsafe key is reported before any request.
    pub fn new(spec: TableSpec, options: SheetsOptions) -> Result<Self, AdapterError> {
        let account = load_key(&options.key_file)?;
        if options.spreadsheet_id.trim().is_empty()
            || options.spreadsheet_id.contains(['/', '?', '#'])
        {
            return Err(AdapterError::Config(format!(
                "'{}' is not a spreadsheet id; give the id from the spreadsheet's URL (the part after /d/)",
                options.spreadsheet_id
            )));
        }
        for base in [&options.base_url, &options.drive_base_url] {
            let usable = Url::parse(base)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base());
            if !usable {
                return Err(AdapterError::Config(format!(
                    "'{base}' is not an http(s) URL; give the API root like https://sheets.googleapis.com"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| AdapterError::Config(format!("cannot build the HTTP client: {e}")))?;
        let shown = match &options.sheet {
            Some(sheet) => format!("{}/{sheet}", options.spreadsheet_id),
            None => options.spreadsheet_id.clone(),
        };
        Ok(SheetsAdapter {
            reads: limiter(options.reads_per_minute),
            writes: limiter(options.writes_per_minute),
            spec,
            shown,
            account,
            http,
            options,
            token: tokio::sync::Mutex::new(None),
            state: std::sync::Mutex::new(State::default()),
        })
    }

    /// An adapter for a stored binding: `table` is the spreadsheet id; the
    /// settings are those of [`SheetsOptions`] (`key_file` is required).
    pub fn for_binding(
        binding: &chittysync::AdapterBinding,
        schema: &chittysync::Schema,
    ) -> Result<Self, chittysync::MirrorError> {
        let wrap = |source| chittysync::MirrorError::Adapter {
            binding: binding.name.clone(),
            source,
        };
        let options = SheetsOptions::from_binding(binding).map_err(wrap)?;
        SheetsAdapter::new(binding.table_spec(schema), options).map_err(wrap)
    }

    /// The numeric id (`sheetId`) of the sheet this adapter mirrors (read
    /// now unless known). Stored as the binding's `sheet_id` setting, it
    /// keeps the binding on that tab when tabs are renamed, reordered or
    /// added before it.
    pub async fn pinned_sheet_id(&self) -> Result<i64, AdapterError> {
        Ok(self.layout().await?.sheet_id)
    }

    fn failed(&self, action: &str, f: Failure) -> AdapterError {
        AdapterError::Request {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            action: action.into(),
            reason: format!(
                "{}; {}",
                f.reason,
                advice(f.status, &self.account.client_email)
            ),
        }
    }

    fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            reason,
        }
    }

    fn sheets_url(&self, tail: &[&str]) -> Url {
        let mut url = Url::parse(&self.options.base_url).expect("checked in new");
        {
            let mut segments = url.path_segments_mut().expect("an http(s) URL");
            segments.pop_if_empty();
            segments.extend(["v4", "spreadsheets"]);
            segments.extend(tail);
        }
        url
    }

    // -- auth ---------------------------------------------------------------

    async fn access_token(&self) -> Result<String, AdapterError> {
        let mut cache = self.token.lock().await;
        if let Some(t) = cache.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.secret.clone());
        }
        let fresh = self.new_token().await?;
        let secret = fresh.secret.clone();
        *cache = Some(fresh);
        Ok(secret)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn new_token(&self) -> Result<AccessToken, AdapterError> {
        let connect = |reason: String| AdapterError::Connect {
            system: SYSTEM.into(),
            reason,
        };
        let mut attempt = 0;
        loop {
            let iat = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let claims = Claims {
                iss: &self.account.client_email,
                scope: SCOPES,
                aud: &self.account.token_uri,
                iat,
                exp: iat + 3600,
            };
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = self.account.key_id.clone();
            let assertion = jsonwebtoken::encode(&header, &claims, &self.account.key)
                .map_err(|_| connect("cannot sign the token request with the key file's private key; download a new key".into()))?;
            let sent = self
                .http
                .post(&self.account.token_uri)
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
                .send()
                .await;
            let retry = match sent {
                Ok(resp) if resp.status().is_success() => {
                    #[derive(Deserialize)]
                    struct TokenResponse {
                        access_token: String,
                        #[serde(default)]
                        expires_in: Option<u64>,
                    }
                    let body: TokenResponse = resp.json().await.map_err(|_| {
                        connect(format!(
                            "the token endpoint {} answered without an access token",
                            self.account.token_uri
                        ))
                    })?;
                    let lifetime = Duration::from_secs(body.expires_in.unwrap_or(3600));
                    return Ok(AccessToken {
                        secret: body.access_token,
                        refresh_at: Instant::now() + refresh_after(lifetime),
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        error_reason(status, &text)
                    } else {
                        let reason = error_reason(status, &text);
                        return Err(connect(format!(
                            "the token endpoint {} refused the service account {}: {reason}; {}",
                            self.account.token_uri,
                            self.account.client_email,
                            token_advice(&reason)
                        )));
                    }
                }
                Err(e) => transport_reason(&e),
            };
            if attempt >= self.options.max_retries {
                return Err(connect(format!(
                    "no access token from {} after {} attempts: {retry}",
                    self.account.token_uri,
                    attempt + 1
                )));
            }
            tokio::time::sleep(backoff(self.options.retry_base, attempt, jitter_unit())).await;
            attempt += 1;
        }
    }

    // -- requests -----------------------------------------------------------

    /// Sends a request within the budget, with auth, retries and backoff.
    async fn send(&self, call: Call<'_>, action: &str) -> Result<Json, AdapterError> {
        let mut attempt = 0;
        loop {
            match self.attempt(&call, action).await {
                Ok(body) => return Ok(body),
                Err(Refusal::Final { error, .. }) => return Err(error),
                Err(Refusal::Retry {
                    failure,
                    retry_after,
                }) => {
                    if attempt >= self.options.max_retries {
                        return Err(self.exhausted(action, failure, attempt));
                    }
                    self.pause(action, &failure, attempt, retry_after).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The final error after `attempt` retries.
    fn exhausted(&self, action: &str, mut failure: Failure, attempt: u32) -> AdapterError {
        failure.reason = format!("{} (after {} attempts)", failure.reason, attempt + 1);
        self.failed(action, failure)
    }

    /// Waits before the retry after `attempt` retries.
    async fn pause(
        &self,
        action: &str,
        failure: &Failure,
        attempt: u32,
        retry_after: Option<Duration>,
    ) {
        let wait = backoff(self.options.retry_base, attempt, jitter_unit());
        let wait = match retry_after {
            Some(asked) => asked.min(self.options.retry_base * 64).max(wait),
            None => wait,
        };
        tracing::debug!(table = %self.shown, %action, reason = %failure.reason, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }

    /// Sends a request once (within the budget, with auth, renewing a
    /// refused token once); says whether it may be retried.
    async fn attempt(&self, call: &Call<'_>, action: &str) -> Result<Json, Refusal> {
        let mut refreshed = false;
        loop {
            match call.budget {
                Budget::Read => self.reads.until_ready().await,
                Budget::Write => self.writes.until_ready().await,
                Budget::Other | Budget::Prepaid => {}
            }
            let token = self.access_token().await.map_err(|error| Refusal::Final {
                error,
                status: None,
            })?;
            let mut request = self
                .http
                .request(call.method.clone(), call.url.clone())
                .query(&call.query)
                .bearer_auth(token);
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            return match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status();
                    let text = resp.text().await.map_err(|e| {
                        let failure = Failure {
                            status: None,
                            reason: format!(
                                "the answer (HTTP {}) could not be read: {}",
                                status.as_u16(),
                                transport_reason(&e)
                            ),
                        };
                        if call.idempotent {
                            Refusal::Retry {
                                failure,
                                retry_after: None,
                            }
                        } else {
                            Refusal::Final {
                                error: self.failed(action, failure),
                                status: None,
                            }
                        }
                    })?;
                    if text.trim().is_empty() {
                        return Ok(Json::Null);
                    }
                    serde_json::from_str(&text).map_err(|_| Refusal::Final {
                        error: self.failed(
                            action,
                            Failure {
                                status: None,
                                reason: "the answer is not JSON (is base_url the Sheets API?)"
                                    .into(),
                            },
                        ),
                        status: None,
                    })
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    // Expired or revoked early: one new token, then again.
                    refreshed = true;
                    self.forget_token().await;
                    continue;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && call.idempotent);
                    let failure = Failure {
                        status: Some(status),
                        reason: error_reason(status, &text),
                    };
                    if retryable {
                        Err(Refusal::Retry {
                            failure,
                            retry_after,
                        })
                    } else {
                        Err(Refusal::Final {
                            error: self.failed(action, failure),
                            status: Some(status),
                        })
                    }
                }
                Err(e) => {
                    let failure = Failure {
                        status: None,
                        reason: transport_reason(&e),
                    };
                    if call.idempotent {
                        Err(Refusal::Retry {
                            failure,
                            retry_after: None,
                        })
                    } else {
                        Err(Refusal::Final {
                            error: self.failed(action, failure),
                            status: None,
                        })
                    }
                }
            };
        }
    }

    async fn sheet_meta(&self) -> Result<SheetMeta, AdapterError> {
        let url = self.sheets_url(&[&self.options.spreadsheet_id]);
        let body = self
            .send(
                Call {
                    method: Method::GET,
                    url,
                    query: vec![(
                        "fields",
                        "properties.timeZone,sheets.properties(sheetId,title,gridProperties)"
                            .into(),
                    )],
                    body: None,
                    budget: Budget::Read,
                    idempotent: true,
                },
                "read the spreadsheet's sheets",
            )
            .await?;
        let sheets: Vec<&Json> = body
            .get("sheets")
            .and_then(Json::as_array)
            .map(|s| s.iter().filter_map(|s| s.get("properties")).collect())
            .unwrap_or_default();
        let title_of = |p: &Json| {
            p.get("title")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let id_of_sheet = |p: &Json| p.get("sheetId").and_then(Json::as_i64).unwrap_or(0);
        let chosen = match (self.options.sheet_id, &self.options.sheet) {
            (Some(pinned), _) => sheets.iter().find(|p| id_of_sheet(p) == pinned).ok_or_else(|| {
                let titles: Vec<String> = sheets
                    .iter()
                    .map(|p| format!("'{}' (id {})", title_of(p), id_of_sheet(p)))
                    .collect();
                self.mismatch(format!(
                    "the sheet this binding was added for (sheet id {pinned}) is no longer in the spreadsheet (it has: {}); it was deleted: restore it from the version history, or set the binding's sheet_id setting to one of these ids",
                    titles.join(", ")
                ))
            })?,
            (None, Some(wanted)) => sheets.iter().find(|p| title_of(p) == *wanted).ok_or_else(|| {
                let titles: Vec<String> = sheets.iter().map(|p| title_of(p)).collect();
                self.mismatch(format!(
                    "the spreadsheet has no sheet titled '{wanted}' (it has: {}); fix the sheet setting or add the sheet",
                    titles.join(", ")
                ))
            })?,
            (None, None) => sheets.first().ok_or_else(|| {
                self.mismatch("the spreadsheet has no sheets; add one".into())
            })?,
        };
        let grid = chosen.get("gridProperties");
        let count = |k: &str| {
            grid.and_then(|g| g.get(k))
                .and_then(Json::as_u64)
                .unwrap_or(0)
        };
        Ok(SheetMeta {
            time_zone: body
                .pointer("/properties/timeZone")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned(),
            sheet_id: chosen.get("sheetId").and_then(Json::as_i64).unwrap_or(0),
            title: title_of(chosen),
            row_count: count("rowCount"),
            column_count: count("columnCount"),
        })
    }

    /// One `values:batchGet` of `ranges` (unformatted, serial dates).
    async fn batch_get(&self, ranges: &[String], action: &str) -> Result<Vec<Json>, AdapterError> {
        let url = self.sheets_url(&[&self.options.spreadsheet_id, "values:batchGet"]);
        let mut query: Vec<(&str, String)> = ranges.iter().map(|r| ("ranges", r.clone())).collect();
        query.extend([
            ("valueRenderOption", "UNFORMATTED_VALUE".to_owned()),
            ("dateTimeRenderOption", "SERIAL_NUMBER".to_owned()),
            ("majorDimension", "ROWS".to_owned()),
        ]);
        let body = self
            .send(
                Call {
                    method: Method::GET,
                    url,
                    query,
                    body: None,
                    budget: Budget::Read,
                    idempotent: true,
                },
                action,
            )
            .await?;
        let ranges_out = body
            .get("valueRanges")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if ranges_out.len() != ranges.len() {
            return Err(self.failed(
                action,
                Failure {
                    status: None,
                    reason: format!(
                        "asked for {} ranges, got {}",
                        ranges.len(),
                        ranges_out.len()
                    ),
                },
            ));
        }
        Ok(ranges_out)
    }

    /// A `values:batchUpdate` (RAW) of `(range, cell)` pairs.
    fn values_call(&self, cells: Vec<(String, Json)>, budget: Budget) -> Call<'static> {
        let url = self.sheets_url(&[&self.options.spreadsheet_id, "values:batchUpdate"]);
        let data: Vec<Json> = cells
            .into_iter()
            .map(|(range, cell)| json!({"range": range, "majorDimension": "ROWS", "values": [[cell]]}))
            .collect();
        Call {
            method: Method::POST,
            url,
            query: Vec::new(),
            body: Some(json!({"valueInputOption": "RAW", "data": data})),
            budget,
            // The same cells get the same values: safe to repeat.
            idempotent: true,
        }
    }

    /// A structural `:batchUpdate` (atomic; never repeated after a lost
    /// answer, since deleting rows twice would delete other rows).
    fn structural_call(&self, requests: Vec<Json>, budget: Budget) -> Call<'static> {
        let url = self.sheets_url(&[&format!("{}:batchUpdate", self.options.spreadsheet_id)]);
        Call {
            method: Method::POST,
            url,
            query: Vec::new(),
            body: Some(json!({"requests": requests})),
            budget,
            idempotent: false,
        }
    }

    /// One `values:batchUpdate` (RAW) of cells whose rows do not move (the
    /// header row), retried as needed.
    async fn write_cells(
        &self,
        cells: Vec<(String, Json)>,
        action: &str,
    ) -> Result<(), AdapterError> {
        self.send(self.values_call(cells, Budget::Write), action)
            .await
            .map(|_| ())
    }

    /// One structural `:batchUpdate` that addresses no row (columns, grid
    /// growth).
    async fn structural(&self, requests: Vec<Json>, action: &str) -> Result<(), AdapterError> {
        self.send(self.structural_call(requests, Budget::Write), action)
            .await
            .map(|_| ())
    }

    /// The file's Drive version (the cursor) and when it last changed (ms
    /// since the epoch).
    async fn drive_version(&self) -> Result<(String, Option<i64>), AdapterError> {
        let mut url = Url::parse(&self.options.drive_base_url).expect("checked in new");
        url.path_segments_mut()
            .expect("an http(s) URL")
            .pop_if_empty()
            .extend(["drive", "v3", "files", &self.options.spreadsheet_id]);
        let body = self
            .send(
                Call {
                    method: Method::GET,
                    url,
                    query: vec![
                        ("fields", "modifiedTime,version".into()),
                        // Spreadsheets in shared drives are 404 without it.
                        ("supportsAllDrives", "true".into()),
                    ],
                    body: None,
                    budget: Budget::Other,
                    idempotent: true,
                },
                "read the file version from Drive",
            )
            .await?;
        let modified = body
            .get("modifiedTime")
            .and_then(Json::as_str)
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        match body.get("version") {
            Some(Json::String(v)) => Ok((v.clone(), modified)),
            Some(Json::Number(n)) => Ok((n.to_string(), modified)),
            _ => Err(self.failed(
                "read the file version from Drive",
                Failure {
                    status: None,
                    reason: "Drive answered without a version".into(),
                },
            )),
        }
    }

    // -- layout -------------------------------------------------------------

    /// Maps headers to columns; `Err` lists the missing headers.
    fn layout_from(&self, meta: &SheetMeta, headers: Vec<String>) -> Result<Layout, Vec<String>> {
        let find = |name: &str| headers.iter().position(|h| h == name);
        let mut missing = Vec::new();
        let mut columns = Vec::new();
        for c in &self.spec.columns {
            match find(&c.column) {
                Some(i) => columns.push((c.clone(), i)),
                None => missing.push(c.column.clone()),
            }
        }
        let id_col = find(&self.options.id_header);
        if id_col.is_none() {
            missing.push(self.options.id_header.clone());
        }
        match id_col {
            Some(id_col) if missing.is_empty() => Ok(Layout {
                sheet_id: meta.sheet_id,
                time_zone: meta.time_zone.clone(),
                title: meta.title.clone(),
                row_count: meta.row_count,
                column_count: meta.column_count,
                headers,
                id_col,
                columns,
            }),
            _ => Err(missing),
        }
    }

    fn missing_headers(&self, missing: &[String], create: bool) -> AdapterError {
        let only_id = missing == [self.options.id_header.clone()];
        let what = if only_id && !create {
            format!(
                "row 1 has no '{}' header (the hidden column of record ids); bind with --create to add it",
                self.options.id_header
            )
        } else {
            format!(
                "row 1 lacks the header(s) {}; type them into row 1, or map the fields to existing headers with --map FIELD=HEADER",
                missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        self.mismatch(what)
    }

    /// Reads the sheet's properties and header row; with `create`, writes
    /// the headers of an empty sheet, or adds a missing id column.
    async fn read_layout(&self, create: bool) -> Result<Layout, AdapterError> {
        let meta = self.sheet_meta().await?;
        let header_range = format!("{}!1:1", quote_sheet(&meta.title));
        let got = self
            .batch_get(&[header_range], "read the header row")
            .await?;
        let headers = header_texts(range_rows(&got[0]).first());
        let layout = match self.layout_from(&meta, headers.clone()) {
            Ok(layout) => layout,
            Err(missing) => {
                let empty = headers.iter().all(String::is_empty);
                let only_id = missing == [self.options.id_header.clone()];
                if !create || !(empty || only_id) {
                    if empty {
                        return Err(self.mismatch(
                            "the sheet is empty (no header row); bind with --create to write the headers, or type them into row 1".into(),
                        ));
                    }
                    return Err(self.missing_headers(&missing, create));
                }
                let mut headers = if empty { Vec::new() } else { headers };
                if empty {
                    headers.extend(self.spec.columns.iter().map(|c| c.column.clone()));
                }
                let start = if empty {
                    0
                } else {
                    // After the last column with any content, headed or not
                    // (people keep notes in columns without a header).
                    let got = self
                        .batch_get(&[quote_sheet(&meta.title)], "read the sheet's used columns")
                        .await?;
                    let used = range_rows(&got[0])
                        .iter()
                        .filter_map(|r| r.iter().rposition(|c| !is_empty_cell(c)))
                        .map(|last| last + 1)
                        .max()
                        .unwrap_or(0);
                    used.max(headers.len())
                };
                let id_at = start.max(headers.len());
                headers.resize(id_at, String::new());
                headers.push(self.options.id_header.clone());
                self.write_headers(&meta, &headers, start).await?;
                let mut meta = meta;
                meta.column_count = meta.column_count.max(headers.len() as u64);
                self.layout_from(&meta, headers)
                    .map_err(|m| self.missing_headers(&m, create))?
            }
        };
        self.state.lock().expect("state lock").layout = Some(layout.clone());
        Ok(layout)
    }

    /// Writes `headers[start..]` into row 1, growing the grid's columns if
    /// needed, and hides the id column (the last header).
    async fn write_headers(
        &self,
        meta: &SheetMeta,
        headers: &[String],
        start: usize,
    ) -> Result<(), AdapterError> {
        let id_col = headers.len() - 1;
        let mut requests = Vec::new();
        if (headers.len() as u64) > meta.column_count {
            requests.push(json!({"appendDimension": {
                "sheetId": meta.sheet_id, "dimension": "COLUMNS",
                "length": headers.len() as u64 - meta.column_count,
            }}));
        }
        requests.push(json!({"updateDimensionProperties": {
            "range": {"sheetId": meta.sheet_id, "dimension": "COLUMNS",
                      "startIndex": id_col, "endIndex": id_col + 1},
            "properties": {"hiddenByUser": true},
            "fields": "hiddenByUser",
        }}));
        self.structural(requests, "add and hide the id column")
            .await?;
        let cells = headers
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, h)| (a1_cell(&meta.title, i, 1), Json::String(h.clone())))
            .collect();
        self.write_cells(cells, "write the header row").await
    }

    fn describe_layout(&self, layout: &Layout) -> RemoteTable {
        RemoteTable {
            name: format!("{}/{}", self.options.spreadsheet_id, layout.title),
            columns: layout
                .headers
                .iter()
                .filter(|h| !h.is_empty())
                .map(|h| RemoteColumn {
                    name: h.clone(),
                    type_name: "cell".into(),
                })
                .collect(),
            change_tracking: ChangeTracking::FullCompare {
                reason: "Google Sheets keeps no per-row change log: a sync compares the whole sheet, unless its Drive version shows nothing changed".into(),
            },
        }
    }

    async fn prepare_now(&self, create: bool) -> Result<RemoteTable, AdapterError> {
        let layout = self.read_layout(create).await?;
        self.state.lock().expect("state lock").fill_ids = true;
        Ok(self.describe_layout(&layout))
    }

    async fn describe_now(&self) -> Result<RemoteTable, AdapterError> {
        self.state.lock().expect("state lock").fill_ids = false;
        let layout = self.read_layout(false).await?;
        Ok(self.describe_layout(&layout))
    }

    /// The layout from the last read, or a fresh one.
    async fn layout(&self) -> Result<Layout, AdapterError> {
        let cached = self.state.lock().expect("state lock").layout.clone();
        match cached {
            Some(layout) => Ok(layout),
            None => self.read_layout(false).await,
        }
    }

    // -- fetch --------------------------------------------------------------

    async fn fetch_now(&self, since: Option<&str>) -> Result<Fetched, AdapterError> {
        // The version first: an edit landing between it and the read is
        // read now and seen again next time (the version moved on).
        let (version, modified_at) = self.drive_version().await?;
        if since == Some(version.as_str()) {
            return Ok(Fetched {
                rows: Vec::new(),
                deleted: Vec::new(),
                complete: false,
                cursor: Some(version),
            });
        }
        let cached = self.layout().await?;
        let got = self
            .batch_get(&[quote_sheet(&cached.title)], "read the sheet")
            .await?;
        let mut grid = range_rows(&got[0]);
        let headers = header_texts(grid.first());
        let meta = SheetMeta {
            time_zone: cached.time_zone.clone(),
            sheet_id: cached.sheet_id,
            title: cached.title.clone(),
            row_count: cached.row_count.max(grid.len() as u64),
            column_count: cached.column_count,
        };
        let layout = self
            .layout_from(&meta, headers)
            .map_err(|m| self.missing_headers(&m, false))?;
        // A binding that only pulls never writes to the sheet: its new rows
        // keep provisional ids.
        let fill = self.state.lock().expect("state lock").fill_ids && !self.options.pull_only;
        let mut rows = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut new_ids: Vec<NewId> = Vec::new();
        for (i, cells) in grid.iter_mut().enumerate().skip(1) {
            let row_number = i as u64 + 1;
            // Only mapped columns hold a record's content: a row with
            // something only in other columns (people's notes) is none.
            let mapped = layout
                .columns
                .iter()
                .any(|(_, c)| cells.get(*c).is_some_and(|c| !is_empty_cell(c)));
            if !mapped {
                // A record whose cells were all cleared (not deleted):
                // reported, never taken as a clearing of every field.
                if let Some(id) = id_of(cells.get(layout.id_col))
                    && seen.insert(id.clone())
                {
                    let headers: Vec<&str> = layout
                        .columns
                        .iter()
                        .map(|(c, _)| c.column.as_str())
                        .collect();
                    let reason = format!(
                        "sheet row {row_number} has an id but no value in any mapped column ({}); fill it in, or delete the whole row to delete the record",
                        headers.join(", ")
                    );
                    rows.push(RemoteRow::invalid(id, reason).modified_at(modified_at));
                }
                continue;
            }
            let id = match id_of(cells.get(layout.id_col)) {
                Some(id) if seen.insert(id.clone()) => id,
                // No id, or a copy of another row's: a new row.
                _ if fill => {
                    let id = uuid::Uuid::now_v7().to_string();
                    seen.insert(id.clone());
                    new_ids.push(NewId {
                        row: row_number,
                        had: id_of(cells.get(layout.id_col)),
                        content: content_of(cells, layout.id_col),
                        id: id.clone(),
                    });
                    id
                }
                _ => {
                    let base = provisional_id(&without_id(cells, layout.id_col));
                    let mut id = base.clone();
                    let mut n = 1;
                    while !seen.insert(id.clone()) {
                        n += 1;
                        id = format!("{base}-{n}");
                    }
                    id
                }
            };
            let mut fields = BTreeMap::new();
            for (spec, col) in &layout.columns {
                if let Some(v) = cells
                    .get(*col)
                    .and_then(|c| cell_to_value_in(c, spec.field_type, &layout.time_zone))
                {
                    fields.insert(spec.field.clone(), v);
                }
            }
            rows.push(RemoteRow::new(id, fields).modified_at(modified_at));
        }
        if !new_ids.is_empty() {
            tracing::info!(table = %self.shown, rows = new_ids.len(), "giving ids to rows added without one");
            let skipped = self.write_new_ids(&layout, new_ids).await?;
            // A row that moved or got an id meanwhile gets its id next run.
            rows.retain(|r| !skipped.contains(&r.id));
        }
        self.state.lock().expect("state lock").layout = Some(layout);
        Ok(Fetched {
            rows,
            deleted: Vec::new(),
            complete: true,
            cursor: Some(version),
        })
    }

    /// Writes the ids of rows added without one. Before each attempt
    /// (after every wait: backoff and budget) the sheet is read again, and
    /// a row whose id cell is no longer as read, or whose content moved, is
    /// skipped (it gets its id next run), so an id never lands on another
    /// row. Returns the ids not written.
    async fn write_new_ids(
        &self,
        layout: &Layout,
        mut pending: Vec<NewId>,
    ) -> Result<HashSet<String>, AdapterError> {
        let action = "write ids of rows added without one";
        let mut skipped = HashSet::new();
        let mut attempt = 0;
        loop {
            self.writes.until_ready().await;
            let got = self
                .batch_get(
                    &[quote_sheet(&layout.title)],
                    "re-read the sheet before writing ids",
                )
                .await?;
            let grid = range_rows(&got[0]);
            let headers = header_texts(grid.first());
            let id_col = headers.iter().position(|h| *h == self.options.id_header);
            pending.retain(|p| {
                let here = id_col == Some(layout.id_col)
                    && grid.get(p.row as usize - 1).is_some_and(|cells| {
                        id_of(cells.get(layout.id_col)) == p.had
                            && content_of(cells, layout.id_col) == p.content
                    });
                if !here {
                    skipped.insert(p.id.clone());
                }
                here
            });
            if pending.is_empty() {
                return Ok(skipped);
            }
            let cells = pending
                .iter()
                .map(|p| {
                    (
                        a1_cell(&layout.title, layout.id_col, p.row),
                        Json::String(p.id.clone()),
                    )
                })
                .collect();
            match self
                .attempt(&self.values_call(cells, Budget::Prepaid), action)
                .await
            {
                Ok(_) => return Ok(skipped),
                Err(Refusal::Retry {
                    failure,
                    retry_after,
                }) if attempt < self.options.max_retries => {
                    self.pause(action, &failure, attempt, retry_after).await;
                    attempt += 1;
                }
                Err(Refusal::Retry { failure, .. }) => {
                    return Err(self.exhausted(action, failure, attempt));
                }
                Err(Refusal::Final { error, .. }) => return Err(error),
            }
        }
    }

    // -- apply --------------------------------------------------------------

    /// Re-reads where rows are now: the layout, each id's row and the last
    /// row with content. Only the header row and the id column, unless
    /// `whole`: rows will be added, and must go below every row with
    /// content, including rows typed in since the fetch without an id.
    /// Either way one request (two if someone moved the id column).
    async fn current_rows(
        &self,
        layout: &Layout,
        whole: bool,
    ) -> Result<(Layout, HashMap<String, u64>, u64), AdapterError> {
        let title = quote_sheet(&layout.title);
        let letter = column_letters(layout.id_col);
        let ranges = if whole {
            vec![title.clone()]
        } else {
            vec![format!("{title}!1:1"), format!("{title}!{letter}:{letter}")]
        };
        let got = self
            .batch_get(&ranges, "re-read the ids before writing")
            .await?;
        let first = range_rows(&got[0]);
        let headers = header_texts(first.first());
        let meta = SheetMeta {
            time_zone: layout.time_zone.clone(),
            sheet_id: layout.sheet_id,
            title: layout.title.clone(),
            row_count: layout.row_count,
            column_count: layout.column_count,
        };
        let fresh = self
            .layout_from(&meta, headers)
            .map_err(|m| self.missing_headers(&m, false))?;
        let ids: Vec<Option<String>> = if whole {
            first.iter().map(|r| id_of(r.get(fresh.id_col))).collect()
        } else {
            let column = if fresh.id_col == layout.id_col {
                range_rows(&got[1])
            } else {
                // Someone moved the id column: read it where it is now.
                let letter = column_letters(fresh.id_col);
                let got = self
                    .batch_get(
                        &[format!("{title}!{letter}:{letter}")],
                        "re-read the moved id column",
                    )
                    .await?;
                range_rows(&got[0])
            };
            column.iter().map(|r| id_of(r.first())).collect()
        };
        let mut rows = HashMap::new();
        let mut last = 1;
        for (i, id) in ids.into_iter().enumerate().skip(1) {
            if let Some(id) = id {
                let row = i as u64 + 1;
                last = row;
                rows.entry(id).or_insert(row);
            }
        }
        if whole {
            // Trailing empty rows are trimmed: the last one read has content.
            last = last.max(first.len() as u64);
        }
        Ok((fresh, rows, last))
    }

    /// Where rows are now (see [`Self::current_rows`]); with `whole`, the
    /// grid's size too. Called right after waiting for the write budget,
    /// so the write that follows uses row numbers read after every wait.
    async fn snapshot(&self, known: &Layout, whole: bool) -> Result<Snapshot, AdapterError> {
        let known = if whole {
            // New rows may need a bigger grid: its size now.
            let meta = self.sheet_meta().await?;
            Layout {
                sheet_id: meta.sheet_id,
                time_zone: meta.time_zone,
                title: meta.title,
                row_count: meta.row_count,
                column_count: meta.column_count,
                ..known.clone()
            }
        } else {
            known.clone()
        };
        let (layout, row_of, last) = self.current_rows(&known, whole).await?;
        Ok(Snapshot {
            layout,
            row_of,
            last,
        })
    }

    /// The cells an op writes: `(column, cell)`.
    fn op_cells(layout: &Layout, op: &RowOp) -> Cells {
        match op {
            RowOp::Delete { .. } => Vec::new(),
            RowOp::Create { fields, .. } => layout
                .columns
                .iter()
                .map(|(spec, col)| {
                    let cell = fields
                        .get(&spec.field)
                        .map_or(Json::String(String::new()), |v| {
                            value_to_cell(v, spec.field_type)
                        });
                    (*col, cell)
                })
                .collect(),
            RowOp::Update { fields, .. } => layout
                .columns
                .iter()
                .filter_map(|(spec, col)| {
                    let change = fields.get(&spec.field)?;
                    let cell = change.as_ref().map_or(Json::String(String::new()), |v| {
                        value_to_cell(v, spec.field_type)
                    });
                    Some((*col, cell))
                })
                .collect(),
        }
    }

    /// The error of an op with a value too long for a cell, if it has one.
    fn too_long(&self, layout: &Layout, op: &RowOp) -> Option<RowError> {
        let cells = Self::op_cells(layout, op);
        let (col, cell) = cells.iter().find(|(_, c)| cell_chars(c) > MAX_CELL_CHARS)?;
        let field = layout
            .columns
            .iter()
            .find(|(_, c)| c == col)
            .map_or("?", |(s, _)| s.field.as_str());
        Some(RowError {
            message: format!(
                "{SYSTEM} {}: row {}: field {field} has {} characters, but a Google Sheets cell holds at most {MAX_CELL_CHARS}; shorten the value",
                self.shown,
                op.id(),
                cell_chars(cell)
            ),
            retryable: false,
        })
    }

    /// Deletes the rows of the delete ops `todo` bottom-up, in a request of
    /// their own. Before each attempt (after every wait: backoff and
    /// budget) the ids are read again, so a row a person moved meanwhile is
    /// deleted where it is now. A refused request (4xx) fails only these
    /// ops, for good, with the reason. Returns where rows are after the
    /// deletes when that is known without reading again.
    async fn delete_rows(
        &self,
        ops: &[RowOp],
        todo: &[usize],
        known: &Layout,
        whole: bool,
        results: &mut HashMap<usize, RowResult>,
    ) -> Result<Option<Snapshot>, AdapterError> {
        let action = "delete rows";
        let mut attempt = 0;
        loop {
            self.writes.until_ready().await;
            let snap = self.snapshot(known, whole).await?;
            let mut rows: Vec<(usize, u64)> = Vec::new();
            for &i in todo {
                match snap.row_of.get(ops[i].id()) {
                    Some(&row) => rows.push((i, row)),
                    // Gone already (a person, or an earlier attempt).
                    None => {
                        results.insert(i, Ok(ops[i].id().to_owned()));
                    }
                }
            }
            if rows.is_empty() {
                return Ok(Some(snap));
            }
            rows.sort_by_key(|&(_, row)| std::cmp::Reverse(row));
            let requests: Vec<Json> = rows
                .iter()
                .map(|(_, row)| {
                    json!({"deleteDimension": {"range": {
                        "sheetId": snap.layout.sheet_id, "dimension": "ROWS",
                        "startIndex": row - 1, "endIndex": row,
                    }}})
                })
                .collect();
            let (message, retryable) = match self
                .attempt(&self.structural_call(requests, Budget::Prepaid), action)
                .await
            {
                Ok(_) => {
                    for (i, _) in &rows {
                        results.insert(*i, Ok(ops[*i].id().to_owned()));
                    }
                    let deleted: Vec<u64> = rows.iter().map(|(_, r)| *r).collect();
                    let shift =
                        |row: u64| row - deleted.iter().filter(|&&d| d < row).count() as u64;
                    let row_of = snap
                        .row_of
                        .into_iter()
                        .filter(|(_, r)| !deleted.contains(r))
                        .map(|(id, r)| (id, shift(r)))
                        .collect();
                    let last =
                        snap.last - deleted.iter().filter(|&&r| r <= snap.last).count() as u64;
                    let layout = Layout {
                        row_count: snap.layout.row_count.saturating_sub(deleted.len() as u64),
                        ..snap.layout
                    };
                    return Ok(Some(Snapshot {
                        layout,
                        row_of,
                        last,
                    }));
                }
                Err(Refusal::Retry {
                    failure,
                    retry_after,
                }) if attempt < self.options.max_retries => {
                    self.pause(action, &failure, attempt, retry_after).await;
                    attempt += 1;
                    continue;
                }
                Err(Refusal::Retry { failure, .. }) => (
                    format!(
                        "{}; no row was deleted, run the sync again",
                        self.exhausted(action, failure, attempt)
                    ),
                    true,
                ),
                Err(Refusal::Final { error, status })
                    if status.is_some_and(|s| s.is_client_error()) =>
                {
                    (
                        format!(
                            "{error}; these rows were not deleted (other changes were written)"
                        ),
                        false,
                    )
                }
                Err(Refusal::Final { error, .. }) => (
                    format!(
                        "{error}; the rows may not have been deleted: the next sync reads the sheet again and finishes"
                    ),
                    true,
                ),
            };
            for (i, _) in &rows {
                results.insert(
                    *i,
                    Err(RowError {
                        message: message.clone(),
                        retryable,
                    }),
                );
            }
            return Ok(None);
        }
    }

    /// Writes the cells of the create and update ops `todo`: grows the grid
    /// for new rows, then one values write (split only if very large). The
    /// row numbers of every request are read after the last wait before it
    /// (backoff or budget): `fresh` is used only if no wait is needed.
    /// Returns the layout as last read.
    async fn write_rows(
        &self,
        ops: &[RowOp],
        todo: Vec<usize>,
        known: &Layout,
        mut fresh: Option<Snapshot>,
        results: &mut HashMap<usize, RowResult>,
    ) -> Result<Layout, AdapterError> {
        let action = "write rows";
        let mut pending = todo;
        let mut known = known.clone();
        let mut attempt = 0;
        while !pending.is_empty() {
            let creates = pending
                .iter()
                .any(|&i| matches!(ops[i], RowOp::Create { .. }));
            let snap = match fresh.take() {
                Some(snap) if self.writes.check().is_ok() => snap,
                _ => {
                    self.writes.until_ready().await;
                    self.snapshot(&known, creates).await?
                }
            };
            known = snap.layout.clone();
            let layout = &snap.layout;
            // `(op, its row or None for a new one, cells)`.
            let mut writes: Vec<(usize, Option<u64>, Cells)> = Vec::new();
            for &i in &pending {
                let op = &ops[i];
                let mut cells = Self::op_cells(layout, op);
                match (op, snap.row_of.get(op.id())) {
                    (_, Some(&row)) => writes.push((i, Some(row), cells)),
                    (RowOp::Create { id, .. }, None) => {
                        cells.push((layout.id_col, Json::String(id.clone())));
                        writes.push((i, None, cells));
                    }
                    (_, None) => {
                        results.insert(
                            i,
                            Err(RowError {
                                message: format!(
                                    "{SYSTEM} {}: row {} is no longer in the sheet (deleted since it was read); the next sync takes the delete into account",
                                    self.shown,
                                    op.id()
                                ),
                                retryable: true,
                            }),
                        );
                    }
                }
            }
            pending = writes.iter().map(|(i, _, _)| *i).collect();
            if writes.is_empty() {
                break;
            }
            let new_rows = writes.iter().filter(|(_, r, _)| r.is_none()).count() as u64;
            let grow = (snap.last + new_rows).saturating_sub(layout.row_count);
            // The ops a failure of this request fails.
            let carried: Vec<usize>;
            let outcome = if grow > 0 {
                carried = pending.clone();
                let request = json!({"appendDimension": {
                    "sheetId": layout.sheet_id, "dimension": "ROWS", "length": grow,
                }});
                match self
                    .attempt(
                        &self.structural_call(vec![request], Budget::Prepaid),
                        "make room for new rows",
                    )
                    .await
                {
                    Ok(_) => {
                        // Appending moves no row: the snapshot still holds.
                        let layout = Layout {
                            row_count: layout.row_count + grow,
                            ..snap.layout.clone()
                        };
                        fresh = Some(Snapshot { layout, ..snap });
                        continue;
                    }
                    Err(refusal) => refusal,
                }
            } else {
                let mut next_new = snap.last;
                let ranges: Vec<(usize, Vec<(String, Json)>)> = writes
                    .into_iter()
                    .map(|(i, row, cells)| {
                        let row = row.unwrap_or_else(|| {
                            next_new += 1;
                            next_new
                        });
                        let cells = cells
                            .into_iter()
                            .map(|(col, cell)| (a1_cell(&layout.title, col, row), cell))
                            .collect();
                        (i, cells)
                    })
                    .collect();
                let sizes: Vec<(usize, usize)> = ranges
                    .iter()
                    .enumerate()
                    .map(|(k, (_, cells))| {
                        let bytes = cells
                            .iter()
                            .map(|(r, c)| r.len() + c.to_string().len() + CELL_OVERHEAD_BYTES)
                            .sum();
                        (k, bytes)
                    })
                    .collect();
                let chunk = chunk_by_size(&sizes, MAX_BODY_BYTES)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                carried = chunk.iter().map(|&k| ranges[k].0).collect();
                let cells: Vec<(String, Json)> = chunk
                    .iter()
                    .flat_map(|&k| ranges[k].1.iter().cloned())
                    .collect();
                match self
                    .attempt(&self.values_call(cells, Budget::Prepaid), action)
                    .await
                {
                    Ok(_) => {
                        for &i in &carried {
                            results.insert(i, Ok(ops[i].id().to_owned()));
                        }
                        pending.retain(|i| !carried.contains(i));
                        attempt = 0;
                        continue;
                    }
                    Err(refusal) => refusal,
                }
            };
            let message = match outcome {
                Refusal::Retry {
                    failure,
                    retry_after,
                } if attempt < self.options.max_retries => {
                    self.pause(action, &failure, attempt, retry_after).await;
                    attempt += 1;
                    continue;
                }
                Refusal::Retry { failure, .. } => {
                    format!(
                        "{}; run the sync again",
                        self.exhausted(action, failure, attempt)
                    )
                }
                Refusal::Final { error, .. } => format!("{error}; run the sync again"),
            };
            for &i in &carried {
                results.insert(
                    i,
                    Err(RowError {
                        message: message.clone(),
                        retryable: true,
                    }),
                );
            }
            pending.retain(|i| !carried.contains(i));
        }
        Ok(known)
    }

    async fn apply_now(&self, ops: &[RowOp]) -> Result<Vec<RowResult>, AdapterError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        // The last op for an id wins; its copies share its result.
        let mut last_op: HashMap<&str, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            last_op.insert(op.id(), i);
        }
        let mut todo: Vec<usize> = last_op.values().copied().collect();
        todo.sort_unstable();
        let mut results: HashMap<usize, RowResult> = HashMap::new();

        let known = self.layout().await?;
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        for &i in &todo {
            match &ops[i] {
                RowOp::Delete { .. } => deletes.push(i),
                op => match self.too_long(&known, op) {
                    Some(e) => {
                        results.insert(i, Err(e));
                    }
                    None => writes.push(i),
                },
            }
        }
        let has_creates = writes
            .iter()
            .any(|&i| matches!(ops[i], RowOp::Create { .. }));
        // Deletes first (a request of their own), so new rows land right
        // after the last remaining row.
        let fresh = if deletes.is_empty() {
            None
        } else {
            self.delete_rows(ops, &deletes, &known, has_creates, &mut results)
                .await?
        };
        let known = match &fresh {
            Some(snap) => snap.layout.clone(),
            None => known,
        };
        let layout = if writes.is_empty() {
            known
        } else {
            self.write_rows(ops, writes, &known, fresh, &mut results)
                .await?
        };
        self.state.lock().expect("state lock").layout = Some(layout);
        Ok(ops
            .iter()
            .map(|op| {
                results.get(&last_op[op.id()]).cloned().unwrap_or_else(|| {
                    Err(RowError {
                        message: format!("row {} was not written", op.id()),
                        retryable: true,
                    })
                })
            })
            .collect())
    }
}

/// Why a request got no answer (never the URL's query or a header).
fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time (timed out)".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed before an answer".into()
    }
}

impl Adapter for SheetsAdapter {
    fn system(&self) -> &str {
        SYSTEM
    }

    fn table(&self) -> &str {
        &self.shown
    }

    fn prepare(&self, create: bool) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.prepare_now(create))
    }

    fn describe(&self) -> BoxFuture<'_, Result<RemoteTable, AdapterError>> {
        Box::pin(self.describe_now())
    }

    fn fetch<'a>(&'a self, since: Option<&'a str>) -> BoxFuture<'a, Result<Fetched, AdapterError>> {
        Box::pin(self.fetch_now(since))
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [RowOp],
    ) -> BoxFuture<'a, Result<Vec<RowResult>, AdapterError>> {
        Box::pin(self.apply_now(ops))
    }

    /// Quotas count requests, not rows: a run's writes go in one apply,
    /// which splits its values write only where a request body would pass
    /// the size Google advises.
    fn preferred_batch(&self) -> Option<usize> {
        Some(PREFERRED_BATCH)
    }
}

/// The `sheets` adapter kind, for [`chittysync::AdapterKinds`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SheetsKind;

impl chittysync::AdapterKind for SheetsKind {
    fn name(&self) -> &'static str {
        "sheets"
    }

    fn settings(&self) -> &'static [chittysync::SettingSpec] {
        &[
            chittysync::SettingSpec {
                key: "key_file",
                help: "the service account's JSON key file",
            },
            chittysync::SettingSpec {
                key: "sheet",
                help: "the tab's title (default: the first tab)",
            },
            chittysync::SettingSpec {
                key: "sheet_id",
                help: "the tab's id, pinned when the binding is added",
            },
            chittysync::SettingSpec {
                key: "base_url",
                help: "the Sheets API's address",
            },
            chittysync::SettingSpec {
                key: "drive_base_url",
                help: "the Drive API's address",
            },
        ]
    }

    fn tracking(&self, _table: &RemoteTable) -> String {
        "the file's Drive version; a changed sheet is read in one request".into()
    }

    fn connect<'a>(
        &'a self,
        cx: chittysync::Connect<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Adapter>, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = SheetsAdapter::for_binding(cx.binding, cx.schema)?;
            Ok(Box::new(adapter) as Box<dyn Adapter>)
        })
    }

    fn setup<'a>(
        &'a self,
        binding: &'a mut chittysync::AdapterBinding,
        schema: &'a chittysync::Schema,
        create: bool,
    ) -> BoxFuture<'a, Result<RemoteTable, chittysync::MirrorError>> {
        Box::pin(async move {
            let adapter = SheetsAdapter::for_binding(binding, schema)?;
            let wrap = |source| chittysync::MirrorError::Adapter {
                binding: binding.name.clone(),
                source,
            };
            let table = adapter.prepare(create).await.map_err(wrap)?;
            // Pin the tab by its id: renaming, reordering or adding tabs
            // then moves nothing (without a sheet setting, "the first tab"
            // would).
            let sheet_id = adapter.pinned_sheet_id().await.map_err(wrap)?;
            binding
                .settings
                .insert("sheet_id".into(), sheet_id.to_string());
            Ok(table)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(27), "AB");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
        assert_eq!(a1_cell("It's mine", 2, 10), "'It''s mine'!C10");
    }

    #[test]
    fn serial_dates_count_from_1899_12_30() {
        assert_eq!(serial_to_date(0.0).as_deref(), Some("1899-12-30"));
        assert_eq!(serial_to_date(1.0).as_deref(), Some("1899-12-31"));
        assert_eq!(serial_to_date(46349.0).as_deref(), Some("2026-11-23"));
        // The time of day is dropped.
        assert_eq!(serial_to_date(46349.75).as_deref(), Some("2026-11-23"));
        let utc = time::UtcOffset::UTC;
        assert_eq!(
            serial_to_datetime(46349.5, utc).as_deref(),
            Some("2026-11-23T12:00:00Z")
        );
        assert_eq!(
            serial_to_datetime(46349.0 + 1.0 / 86400.0, utc).as_deref(),
            Some("2026-11-23T00:00:01Z")
        );
        assert_eq!(serial_to_date(f64::NAN), None);
        assert_eq!(serial_to_date(1e12), None);
    }

    #[test]
    fn cells_read_as_values_of_their_field_type() {
        use FieldKind as T;
        assert_eq!(cell_to_value(&json!(""), T::Text), None);
        assert_eq!(cell_to_value(&Json::Null, T::Integer), None);
        assert_eq!(
            cell_to_value(&json!(8080), T::Integer),
            Some(Value::Integer(8080))
        );
        assert_eq!(
            cell_to_value(&json!(8080.0), T::Integer),
            Some(Value::Integer(8080))
        );
        assert_eq!(
            cell_to_value(&json!(12.5), T::Decimal),
            Some(Value::Decimal("12.5".into()))
        );
        assert_eq!(
            cell_to_value(&json!(3.0), T::Decimal),
            Some(Value::Decimal("3".into()))
        );
        assert_eq!(
            cell_to_value(&json!("12.50"), T::Decimal),
            Some(Value::Text("12.50".into()))
        );
        assert_eq!(
            cell_to_value(&json!(true), T::Bool),
            Some(Value::Bool(true))
        );
        assert_eq!(
            cell_to_value(&json!(123), T::Text),
            Some(Value::Text("123".into()))
        );
        assert_eq!(
            cell_to_value(&json!(true), T::Text),
            Some(Value::Text("true".into()))
        );
        assert_eq!(
            cell_to_value(&json!("[\"a\",\"b\"]"), T::MultiSelect),
            Some(["a", "b"].into())
        );
        assert_eq!(
            cell_to_value(&json!("a, b"), T::MultiSelect),
            Some(Value::Text("a, b".into()))
        );
        assert_eq!(
            cell_to_value(&json!(46349), T::Date),
            Some(Value::Text("2026-11-23".into()))
        );
        assert_eq!(
            cell_to_value(&json!("2026-11-23"), T::Date),
            Some(Value::Text("2026-11-23".into()))
        );
        assert_eq!(
            cell_to_value(&json!(46349.25), T::Datetime),
            Some(Value::Text("2026-11-23T06:00:00Z".into()))
        );
        assert_eq!(
            cell_to_value(&json!("{\"a\":1}"), T::Json),
            Some(Value::Json("{\"a\":1}".into()))
        );
        // A fraction in an integer column stays visible for validation.
        assert_eq!(
            cell_to_value(&json!(1.5), T::Integer),
            Some(Value::Decimal("1.5".into()))
        );
    }

    #[test]
    fn serial_date_times_are_local_to_the_spreadsheet_time_zone() {
        use FieldKind as T;
        let at = |zone: &str| cell_to_value_in(&json!(46349.75), T::Datetime, zone);
        assert_eq!(
            at("Etc/GMT"),
            Some(Value::Text("2026-11-23T18:00:00Z".into()))
        );
        assert_eq!(at("UTC"), at("Etc/GMT"));
        // POSIX signs: Etc/GMT-2 is UTC+2, Etc/GMT+5 is UTC-5.
        assert_eq!(
            at("Etc/GMT-2"),
            Some(Value::Text("2026-11-23T16:00:00Z".into()))
        );
        assert_eq!(
            at("Etc/GMT+5"),
            Some(Value::Text("2026-11-23T23:00:00Z".into()))
        );
        // Zones with daylight saving are refused, saying why, never shifted.
        let Some(Value::Text(refused)) = at("Europe/Berlin") else {
            panic!("a text value")
        };
        assert!(
            refused.contains("Europe/Berlin") && refused.contains("offset"),
            "{refused}"
        );
        assert!(chittysync::coerce(T::Datetime, Value::Text(refused)).is_err());
        assert_eq!(zone_offset("Etc/GMT+15"), None);
        assert_eq!(zone_offset("Etc/GMTx"), None);
        // Dates have no time of day: every zone reads them.
        assert_eq!(
            cell_to_value_in(&json!(46349), T::Date, "Europe/Berlin"),
            Some(Value::Text("2026-11-23".into()))
        );
    }

    #[test]
    fn very_small_and_large_numbers_read_as_plain_decimals() {
        use FieldKind as T;
        for (cell, text) in [
            (json!(1e-7), "0.0000001"),
            (json!(1e16), "10000000000000000"),
            (json!(-2.5e-10), "-0.00000000025"),
            (json!(1.5e20), "150000000000000000000"),
        ] {
            let value = cell_to_value(&cell, T::Decimal).unwrap();
            assert_eq!(value, Value::Decimal(text.into()));
            chittysync::coerce(T::Decimal, value.clone()).expect("a valid decimal");
            assert_eq!(
                value_to_cell(&value, T::Decimal),
                cell,
                "{text} written back"
            );
        }
        assert_eq!(
            cell_to_value(&json!(1.5e20), T::Integer),
            Some(Value::Decimal("150000000000000000000".into()))
        );
    }

    #[test]
    fn values_write_as_cells_that_read_back_equal() {
        use FieldKind as T;
        let cases: Vec<(Value, T, Json)> = vec![
            (Value::Integer(80), T::Integer, json!(80)),
            (
                Value::Integer(i64::MAX),
                T::Integer,
                json!(i64::MAX.to_string()),
            ),
            (Value::Decimal("12.5".into()), T::Decimal, json!(12.5)),
            (
                Value::Decimal("0.10000000000000000000001".into()),
                T::Decimal,
                json!("0.10000000000000000000001"),
            ),
            (Value::Bool(false), T::Bool, json!(false)),
            (["b", "a"].into(), T::MultiSelect, json!("[\"a\",\"b\"]")),
            (
                Value::Text("2026-11-23".into()),
                T::Date,
                json!("2026-11-23"),
            ),
            (Value::Text("007".into()), T::Text, json!("007")),
            (
                Value::Json("{\"a\":[1,2]}".into()),
                T::Json,
                json!("{\"a\":[1,2]}"),
            ),
            (Value::Text("svc-1".into()), T::Reference, json!("svc-1")),
        ];
        for (value, ty, cell) in cases {
            assert_eq!(value_to_cell(&value, ty), cell, "{value:?} as {ty:?}");
            let back = cell_to_value(&cell, ty).unwrap();
            let canon = |v: Value| chittysync::coerce(ty, v).unwrap();
            assert_eq!(canon(back), canon(value.clone()), "{value:?} round trip");
        }
    }

    #[test]
    fn backoff_doubles_up_to_32_units() {
        let base = Duration::from_millis(10);
        assert_eq!(backoff(base, 0, 0.0), Duration::from_millis(10));
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(20));
        assert_eq!(backoff(base, 3, 0.5), Duration::from_millis(85));
        assert_eq!(backoff(base, 5, 0.9), Duration::from_millis(320));
        assert_eq!(backoff(base, 30, 0.9), Duration::from_millis(320));
        assert!((0.0..1.0).contains(&jitter_unit()));
    }

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        assert_eq!(
            refresh_after(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn google_error_bodies_are_summarized() {
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Quota exceeded for quota metric 'Read requests'"}}"#;
        assert_eq!(
            error_reason(StatusCode::TOO_MANY_REQUESTS, body),
            "HTTP 429 RESOURCE_EXHAUSTED: Quota exceeded for quota metric 'Read requests'"
        );
        let oauth = r#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#;
        assert_eq!(
            error_reason(StatusCode::BAD_REQUEST, oauth),
            "HTTP 400 invalid_grant: Invalid JWT"
        );
        assert_eq!(
            error_reason(StatusCode::BAD_GATEWAY, "<html>oops</html>"),
            "HTTP 502 <html>oops</html>"
        );
        assert!(advice(Some(StatusCode::FORBIDDEN), "sa@p.iam").contains("sa@p.iam"));
        assert!(token_advice("HTTP 400 invalid_grant: Invalid JWT").contains("clock"));
        assert!(!token_advice("HTTP 401 unauthorized_client").contains("clock"));
    }

    #[test]
    fn large_writes_split_between_ops_never_within_one() {
        let sizes = vec![(0, 400), (1, 400), (2, 400), (3, 1000), (4, 10)];
        assert_eq!(
            chunk_by_size(&sizes, 1000),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert_eq!(chunk_by_size(&sizes, 10_000), vec![vec![0, 1, 2, 3, 4]]);
        assert!(chunk_by_size(&[], 10).is_empty());
    }

    #[test]
    fn provisional_ids_follow_the_cells_only() {
        let a = provisional_id(&[json!("x"), json!(1)]);
        assert_eq!(
            a,
            provisional_id(&[json!("x"), json!(1), json!(""), Json::Null])
        );
        assert_ne!(a, provisional_id(&[json!("x"), json!(2)]));
        assert!(a.starts_with(PROVISIONAL_PREFIX));
    }

    #[test]
    fn budgets_never_exceed_the_quota_in_a_minute() {
        // A burst of a twentieth, the rest spread: at most the quota per
        // minute.
        let l = limiter(600);
        let mut allowed = 0;
        while l.check().is_ok() {
            allowed += 1;
        }
        assert_eq!(allowed, 30);
    }

    #[test]
    fn binding_settings_become_options() {
        let binding = chittysync::AdapterBinding::new("s", "services", "sheets", "sheet-id")
            .setting("key_file", "key.json")
            .setting("sheet", "Contacts")
            .setting("retry_base_ms", "10")
            .setting("reads_per_minute", "120");
        let o = SheetsOptions::from_binding(&binding).unwrap();
        assert_eq!(o.spreadsheet_id, "sheet-id");
        assert_eq!(o.sheet.as_deref(), Some("Contacts"));
        assert_eq!(o.id_header, DEFAULT_ID_HEADER);
        assert_eq!(o.retry_base, Duration::from_millis(10));
        assert_eq!((o.reads_per_minute, o.writes_per_minute), (120, 60));
        assert_eq!(o.base_url, "https://sheets.googleapis.com");
        assert!(!o.pull_only);
        assert_eq!(o.sheet_id, None);
        let pinned = binding.clone().setting("sheet_id", "1234");
        assert_eq!(
            SheetsOptions::from_binding(&pinned).unwrap().sheet_id,
            Some(1234)
        );
        let bad = binding.clone().setting("sheet_id", "Contacts");
        let err = SheetsOptions::from_binding(&bad).unwrap_err().to_string();
        assert!(
            err.contains("sheet_id") && err.contains("Contacts"),
            "{err}"
        );
        let pulling = binding.clone().direction(chittysync::Direction::Pull);
        assert!(SheetsOptions::from_binding(&pulling).unwrap().pull_only);

        let mut renamed = binding.clone().setting("max_retries", "many");
        let err = SheetsOptions::from_binding(&renamed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_retries") && err.contains("many"), "{err}");
        renamed.settings.remove("max_retries");
        renamed.id_column = "record_id".into();
        assert_eq!(
            SheetsOptions::from_binding(&renamed).unwrap().id_header,
            "record_id"
        );
        let mut keyless = binding;
        keyless.settings.remove("key_file");
        let err = SheetsOptions::from_binding(&keyless)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused_without_showing_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(
            &path,
            r#"{"client_email":"a@b","private_key":"SECRET-MATERIAL","token_uri":"http://x"}"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(
            err.contains("not an RSA key") && !err.contains("SECRET"),
            "{err}"
        );
        std::fs::write(&path, r#"{"client_email":"a@b","private_key":7}"#).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("a@b"), "{err}");
    }
}
