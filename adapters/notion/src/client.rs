//! The HTTP client: one request to the Notion API, authenticated, within
//! the request budget, retried as [`chittysync_http`] and the policy below
//! say; and what its errors tell the user.

use std::fmt;
use std::time::{Duration, SystemTime};

use chittysync::{AdapterError, RowError};
use chittysync_http::{
    Backoff, Failed, Outcome, RetryAfter, RetryPolicy, Transient, parse_retry_after, retry,
};
use reqwest::Method;
use serde_json::Value as Json;

use crate::{NotionAdapter, SYSTEM};

const NOTION_VERSION: &str = "2025-09-03";
/// The longest single backoff wait.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// An error answer from the API (after any retries).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    code: String,
    pub(crate) message: String,
}

/// Why a request failed.
#[derive(Clone, Debug)]
pub(crate) enum CallError {
    /// The API answered with an error.
    Api(ApiError),
    /// No usable answer (connection, timeout, unreadable body).
    Transport(String),
}

impl CallError {
    /// A per-row error: data errors are final, faults may pass.
    pub(crate) fn row_error(&self, action: &str) -> RowError {
        match self {
            CallError::Api(e) => RowError {
                message: format!(
                    "notion: {action} failed: {} ({} {}){}",
                    e.message,
                    e.status,
                    e.code,
                    hint(e.status)
                ),
                retryable: matches!(e.status, 409 | 429 | 500 | 502 | 503 | 504 | 529),
            },
            CallError::Transport(reason) => RowError {
                message: format!(
                    "notion: {action} failed: {reason}; it may or may not have landed, and the next sync finds out"
                ),
                retryable: true,
            },
        }
    }

    pub(crate) fn reason(&self) -> String {
        match self {
            CallError::Api(e) => {
                format!("{} ({} {}){}", e.message, e.status, e.code, hint(e.status))
            }
            CallError::Transport(reason) => reason.clone(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// What to do about an error status.
fn hint(status: u16) -> &'static str {
    match status {
        401 => "; check the integration token in the binding's secret variable",
        403 | 404 => {
            "; check the id and that the database is shared with the integration (Connections in Notion)"
        }
        429 => "; Notion kept rate-limiting: lower requests_per_second or sync later",
        500..=599 => "; Notion is having trouble: sync again later",
        _ => "",
    }
}

/// Parses an error body (`{object:"error", status, code, message}`).
fn parse_error(status: u16, body: &str) -> ApiError {
    let json: Json = serde_json::from_str(body).unwrap_or(Json::Null);
    let text = |k: &str| json.get(k).and_then(Json::as_str).map(str::to_owned);
    ApiError {
        status,
        code: text("code").unwrap_or_else(|| "unknown".into()),
        message: text("message").unwrap_or_else(|| {
            let mut b: String = body.chars().take(200).collect();
            if b.is_empty() {
                b = "no error message".into();
            }
            b
        }),
    }
}

/// Which failures are retried: 409, 429 and 529 on any request (Notion
/// did not carry it out); 500/502/503/504 only on requests safe to repeat
/// (reads and queries).
const TRANSIENT: Transient = Transient {
    always: &[409, 429, 529],
    when_repeatable: Some(&[500, 502, 503, 504]),
};

/// Whether a status's `Retry-After` is honoured (rate limits and overload).
fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503 | 529)
}

/// The longest `Retry-After` waited, so one odd header cannot stall a run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl NotionAdapter {
    pub(crate) fn request_error(&self, action: &str, e: &CallError) -> AdapterError {
        AdapterError::Request {
            system: SYSTEM.into(),
            table: self.options.database_id.clone(),
            action: action.to_owned(),
            reason: e.reason(),
        }
    }

    pub(crate) fn mismatch(&self, reason: String) -> AdapterError {
        AdapterError::Mismatch {
            system: SYSTEM.into(),
            table: self.options.database_id.clone(),
            reason,
        }
    }

    /// How requests are retried: `Retry-After` when given (at most
    /// [`MAX_RETRY_AFTER`]), else `retry_base_ms · 2^attempt` capped at
    /// [`MAX_BACKOFF`], scaled by a jitter factor in [0.5, 1].
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.options.max_retries,
            backoff: Backoff::Halved {
                base: Duration::from_millis(self.options.retry_base_ms),
                cap: MAX_BACKOFF,
            },
            retry_after: RetryAfter::Replaces {
                cap: MAX_RETRY_AFTER,
            },
        }
    }

    /// One request, throttled and retried. `safe`: whether a 5xx or a lost
    /// connection may be retried (reads and queries). After the last retry,
    /// the last attempt's error.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
        safe: bool,
    ) -> Result<Json, CallError> {
        let url = format!("{}{path}", self.options.base_url.trim_end_matches('/'));
        let what = format!("notion {method} {path}");
        retry(&self.retry_policy(), &what, |_| {
            self.attempt(&method, &url, body, safe)
        })
        .await
        .map_err(Failed::into_error)
    }

    /// Sends a request once, within the budget, and says whether it may be
    /// sent again.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Json>,
        safe: bool,
    ) -> Outcome<Json, CallError> {
        self.budget.until_ready().await;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.options.token)
            .header("Notion-Version", NOTION_VERSION);
        if let Some(body) = body {
            request = request.json(body);
        }
        // No usable answer: the request may or may not have been served, so
        // it is sent again only when that is safe.
        let lost = |failure: CallError| {
            if TRANSIENT.transport(safe) {
                Outcome::Retry {
                    error: failure,
                    retry_after: None,
                }
            } else {
                Outcome::Fail(failure)
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("no answer within {:?}", self.options.timeout)
                } else {
                    // The address once, not reqwest's full URL per error.
                    format!(
                        "could not reach {} ({})",
                        self.options.base_url,
                        e.without_url()
                    )
                };
                return lost(CallError::Transport(what));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match response.text().await {
            Ok(text) if (200..300).contains(&status) => match serde_json::from_str(&text) {
                Ok(json) => Outcome::Done(json),
                Err(e) => Outcome::Fail(CallError::Transport(format!(
                    "the answer is not JSON ({e})"
                ))),
            },
            Ok(text) => {
                let error = CallError::Api(parse_error(status, &text));
                if TRANSIENT.status(status, safe) {
                    Outcome::Retry {
                        error,
                        retry_after: retry_after.filter(|_| honours_retry_after(status)),
                    }
                } else {
                    Outcome::Fail(error)
                }
            }
            // The request was served: sending it again could do it twice.
            Err(e) => lost(CallError::Transport(format!(
                "reading the answer failed ({})",
                e.without_url()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotionOptions;
    use chittysync::TableSpec;
    use chittysync_http::jitter_unit;

    /// The retry policy of an adapter with `retry_base_ms` = `base_ms`.
    fn policy(base_ms: u64) -> RetryPolicy {
        let mut options = NotionOptions::new("secret", "db");
        options.retry_base_ms = base_ms;
        let spec =
            TableSpec::from_schema("db", "id", &chittysync::Schema::new(), &Default::default());
        NotionAdapter::new(spec, options).unwrap().retry_policy()
    }

    #[test]
    fn backoff_honours_retry_after_then_doubles_with_jitter_up_to_a_minute() {
        let p = policy(1000);
        let s = Duration::from_secs;
        assert_eq!(p.wait(3, Some(s(7)), 0.9), s(7));
        assert_eq!(p.wait(0, Some(s(86_400)), 0.9), MAX_RETRY_AFTER);
        assert!(honours_retry_after(503) && honours_retry_after(529));
        assert!(!honours_retry_after(500));
        assert_eq!(p.wait(0, Some(Duration::ZERO), 0.9), Duration::ZERO);
        assert_eq!(p.wait(0, None, 1.0), Duration::from_millis(1000));
        assert_eq!(p.wait(0, None, 0.0), Duration::from_millis(500));
        assert_eq!(p.wait(2, None, 1.0), Duration::from_millis(4000));
        assert_eq!(p.wait(30, None, 1.0), MAX_BACKOFF);
        assert_eq!(p.max_retries, 5);
        for _ in 0..100 {
            let d = policy(10).wait(1, None, jitter_unit()).as_millis();
            assert!((10..=20).contains(&d), "{d}");
        }
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [409, 429, 529] {
            assert!(TRANSIENT.status(s, false), "{s} on any method");
        }
        for s in [500, 502, 503, 504] {
            assert!(TRANSIENT.status(s, true), "{s} on reads");
            assert!(!TRANSIENT.status(s, false), "{s} not on writes");
        }
        for s in [400, 401, 403, 404, 501] {
            assert!(!TRANSIENT.status(s, true), "{s}");
        }
    }

    #[test]
    fn error_bodies_are_parsed_and_explained_without_secrets() {
        let e = parse_error(
            400,
            r#"{"object":"error","status":400,"code":"validation_error","message":"body failed validation"}"#,
        );
        assert_eq!(e.code, "validation_error");
        assert_eq!(e.message, "body failed validation");
        let row = CallError::Api(e).row_error("creating a page");
        assert!(!row.retryable);
        assert!(row.message.contains("body failed validation") && row.message.contains("400"));
        let unauthorized = CallError::Api(parse_error(401, "not json")).reason();
        assert!(unauthorized.contains("integration token"), "{unauthorized}");
        assert!(unauthorized.contains("not json"));
        assert!(
            CallError::Api(parse_error(503, ""))
                .row_error("x")
                .retryable
        );
        let options = NotionOptions::new("secret_abc123", "db");
        assert!(!format!("{options:?}").contains("secret_abc123"));
    }
}
