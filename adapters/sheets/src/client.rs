//! The HTTP client: requests to the Sheets and Drive APIs, within the read
//! and write budgets, authenticated, retried as [`chittysync_http`] and
//! Google's advice say; and what their errors tell the user.

use std::fmt;
use std::time::SystemTime;

use reqwest::{Method, StatusCode, Url};
use serde_json::{Value as Json, json};

use chittysync::AdapterError;
use chittysync_http::{
    Backoff, Failed, Outcome, RetryAfter, RetryPolicy, Transient, exhausted_reason,
    parse_retry_after, retry,
};

use crate::{SYSTEM, SheetsAdapter, SheetsOptions};

/// Which budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Budget {
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

/// Which failures are retried: 429 on any request (the request was not
/// carried out); 5xx, and lost or unreadable answers, only on requests
/// safe to repeat.
const TRANSIENT: Transient = Transient::DEFAULT;

/// The message of a Google error body (`{error:{code, status, message}}`),
/// or a short excerpt of a body that is not one.
pub(crate) fn error_reason(status: StatusCode, body: &str) -> String {
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
        Some(413) => "the request was too large for the server; send fewer rows per request (a smaller batch size)".into(),
        _ => "the service is unavailable or unreachable; run again later".into(),
    }
}

/// A request that failed: its HTTP status when there was an answer, and
/// why.
pub(crate) struct Failure {
    pub(crate) status: Option<StatusCode>,
    pub(crate) reason: String,
}

/// Why one attempt of a request failed.
pub(crate) enum Refusal {
    /// An error answer, or none.
    Request(Failure),
    /// An error already worded in full (no access token).
    Error(AdapterError),
}

impl Refusal {
    /// The HTTP status of the answer, when there was one.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            Refusal::Request(f) => f.status,
            Refusal::Error(_) => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Request(failure) => f.write_str(&failure.reason),
            Refusal::Error(error) => error.fmt(f),
        }
    }
}

/// One request to send.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) query: Vec<(&'a str, String)>,
    pub(crate) body: Option<Json>,
    pub(crate) budget: Budget,
    /// Whether sending it twice does no harm (then 5xx and lost responses
    /// are retried too; 429 always is: the request was not carried out).
    pub(crate) idempotent: bool,
}

/// Why a request got no answer (never the URL's query or a header).
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time (timed out)".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed before an answer".into()
    }
}

/// How requests are retried: the n-th retry waits `min(2^n + jitter, 32)`
/// units of `retry_base` (Google's advice); a `Retry-After` makes it wait
/// at least that long, up to 64 units.
fn retry_policy(options: &SheetsOptions) -> RetryPolicy {
    RetryPolicy {
        max_retries: options.max_retries,
        backoff: Backoff::AddedUnit {
            unit: options.retry_base,
            max_units: 32.0,
        },
        retry_after: RetryAfter::AtLeast {
            cap: options.retry_base * 64,
        },
    }
}

impl SheetsAdapter {
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

    pub(crate) fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.shown.clone(),
            reason,
        }
    }

    pub(crate) fn sheets_url(&self, tail: &[&str]) -> Url {
        let mut url = Url::parse(&self.options.base_url).expect("checked in new");
        {
            let mut segments = url.path_segments_mut().expect("an http(s) URL");
            segments.pop_if_empty();
            segments.extend(["v4", "spreadsheets"]);
            segments.extend(tail);
        }
        url
    }

    /// How requests are retried (see [`retry_policy`]).
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        retry_policy(&self.options)
    }

    /// What the debug log of a retry calls `action`.
    pub(crate) fn request_name(&self, action: &str) -> String {
        format!("sheets {}: {action}", self.shown)
    }

    /// Sends a request within the budget, with auth, retries and backoff.
    pub(crate) async fn send(&self, call: Call<'_>, action: &str) -> Result<Json, AdapterError> {
        let what = self.request_name(action);
        retry(&self.retry_policy(), &what, |_| self.attempt(&call))
            .await
            .map_err(|failed| match failed {
                Failed::Final(refusal) => self.refused(action, refusal),
                Failed::Exhausted { error, attempts } => self.exhausted(action, error, attempts),
            })
    }

    /// The error of a refused request.
    pub(crate) fn refused(&self, action: &str, refusal: Refusal) -> AdapterError {
        match refusal {
            Refusal::Request(failure) => self.failed(action, failure),
            Refusal::Error(error) => error,
        }
    }

    /// The final error after `attempts` attempts that may have passed.
    pub(crate) fn exhausted(&self, action: &str, refusal: Refusal, attempts: u32) -> AdapterError {
        match refusal {
            Refusal::Request(mut failure) => {
                failure.reason = exhausted_reason(&failure.reason, attempts);
                self.failed(action, failure)
            }
            Refusal::Error(error) => error,
        }
    }

    /// Sends a request once (within the budget, with auth, renewing a
    /// refused token once), and says whether it may be sent again (see
    /// [`TRANSIENT`]).
    pub(crate) async fn attempt(&self, call: &Call<'_>) -> Outcome<Json, Refusal> {
        let mut refreshed = false;
        loop {
            match call.budget {
                Budget::Read => self.reads.until_ready().await,
                Budget::Write => self.writes.until_ready().await,
                Budget::Other | Budget::Prepaid => {}
            }
            let token = match self.access_token().await {
                Ok(token) => token,
                Err(error) => return Outcome::Fail(Refusal::Error(error)),
            };
            let mut request = self
                .http
                .request(call.method.clone(), call.url.clone())
                .query(&call.query)
                .bearer_auth(token);
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            // No answer, or one that could not be read: the request may
            // have been carried out.
            let lost = |reason: String| {
                let error = Refusal::Request(Failure {
                    status: None,
                    reason,
                });
                if TRANSIENT.transport(call.idempotent) {
                    Outcome::Retry {
                        error,
                        retry_after: None,
                    }
                } else {
                    Outcome::Fail(error)
                }
            };
            let resp = match request.send().await {
                Ok(resp) => resp,
                Err(e) => return lost(transport_reason(&e)),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                // Expired or revoked early: one new token, then again.
                refreshed = true;
                self.forget_token().await;
                continue;
            }
            if status.is_success() {
                return match resp.text().await {
                    Err(e) => lost(format!(
                        "the answer (HTTP {}) could not be read: {}",
                        status.as_u16(),
                        transport_reason(&e)
                    )),
                    Ok(text) if text.trim().is_empty() => Outcome::Done(Json::Null),
                    Ok(text) => match serde_json::from_str(&text) {
                        Ok(json) => Outcome::Done(json),
                        Err(_) => Outcome::Fail(Refusal::Request(Failure {
                            status: None,
                            reason: "the answer is not JSON (is base_url the Sheets API?)".into(),
                        })),
                    },
                };
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let text = resp.text().await.unwrap_or_default();
            let error = Refusal::Request(Failure {
                status: Some(status),
                reason: error_reason(status, &text),
            });
            return if TRANSIENT.status(status.as_u16(), call.idempotent) {
                Outcome::Retry { error, retry_after }
            } else {
                Outcome::Fail(error)
            };
        }
    }

    pub(crate) async fn batch_get(
        &self,
        ranges: &[String],
        action: &str,
    ) -> Result<Vec<Json>, AdapterError> {
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
    pub(crate) fn values_call(&self, cells: Vec<(String, Json)>, budget: Budget) -> Call<'static> {
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
    pub(crate) fn structural_call(&self, requests: Vec<Json>, budget: Budget) -> Call<'static> {
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
    pub(crate) async fn write_cells(
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
    pub(crate) async fn structural(
        &self,
        requests: Vec<Json>,
        action: &str,
    ) -> Result<(), AdapterError> {
        self.send(self.structural_call(requests, Budget::Write), action)
            .await
            .map(|_| ())
    }

    /// The file's Drive version (the cursor) and when it last changed (ms
    /// since the epoch).
    pub(crate) async fn drive_version(&self) -> Result<(String, Option<i64>), AdapterError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use chittysync_http::RequestBudget;

    use crate::auth::token_advice;

    #[test]
    fn backoff_doubles_up_to_32_units() {
        let mut options = SheetsOptions::new("sheet-id", "key.json");
        options.retry_base = Duration::from_millis(10);
        let p = retry_policy(&options);
        let ms = Duration::from_millis;
        assert_eq!(p.wait(0, None, 0.0), ms(10));
        assert_eq!(p.wait(1, None, 0.0), ms(20));
        assert_eq!(p.wait(3, None, 0.5), ms(85));
        assert_eq!(p.wait(5, None, 0.9), ms(320));
        assert_eq!(p.wait(30, None, 0.9), ms(320));
        // A Retry-After is waited, up to 64 units, never less than the backoff.
        assert_eq!(p.wait(0, Some(Duration::from_secs(1)), 0.0), ms(640));
        assert_eq!(p.wait(3, Some(Duration::ZERO), 0.0), ms(80));
        assert!(TRANSIENT.status(429, false));
        assert!(TRANSIENT.status(503, true) && !TRANSIENT.status(503, false));
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
    fn budgets_never_exceed_the_quota_in_a_minute() {
        // A burst of a twentieth, the rest spread: at most the quota per
        // minute.
        let budget = RequestBudget::per_minute(600);
        let mut allowed = 0;
        while budget.try_spend() {
            allowed += 1;
        }
        assert_eq!(allowed, 30);
    }
}
