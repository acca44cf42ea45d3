//! Errors as RFC 9457 problem details (`application/problem+json`): a
//! status, a short title, a detail that says what failed and what to do,
//! and for a value that breaks the schema, the field, value and rule.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chittysync::{LookupError, StoreError, TokenError, WriteError};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: a [`ProblemDetails`] (boxed, so results stay small).
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemDetails>);

/// A problem: what went wrong, for a program and for a person.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemDetails {
    /// What kind of problem (a URI; `about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What failed and what to do.
    pub detail: String,
    /// The field a value was refused for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The refused value, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The schema rule the value breaks (`required`, `unique`, `type`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `status` with `kind` (a short slug) and `detail`.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Problem(Box::new(ProblemDetails {
            kind: format!("urn:chittysync:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            value: None,
            rule: None,
            retry_after: None,
        }))
    }

    /// What the answer will say.
    pub fn details(&self) -> &ProblemDetails {
        &self.0
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401: no token, or one that is not valid.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: the token may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: no such thing (or one the token may not see).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 429: too many requests; try again after `seconds`.
    pub fn too_many_requests(seconds: u64) -> Self {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("this token sent too many requests; try again in {seconds} s"),
        );
        p.0.retry_after = Some(seconds);
        p
    }

    /// 500: a failure of the service, not of the request.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    fn with_field(mut self, field: &str, value: String, rule: &str) -> Self {
        self.0.field = Some(field.to_owned());
        self.0.value = Some(value);
        self.0.rule = Some(rule.to_owned());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.0.retry_after;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, axum::Json(*self.0)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chittysync\""),
            );
        }
        response
    }
}

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Self {
        let detail = e.to_string();
        match e {
            WriteError::Invalid(v) => {
                let rule = v.rule.name();
                let value = v.value.clone();
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-value", detail)
                    .with_field(&v.field, value, rule)
            }
            WriteError::Schema(_) | WriteError::BadRecordId { .. } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
            }
            WriteError::NotFound { .. } | WriteError::Deleted { .. } => Problem::not_found(detail),
            WriteError::NotPermitted { .. }
            | WriteError::NotOwner { .. }
            | WriteError::LastAdmin { .. } => Problem::forbidden(detail),
            WriteError::Stale { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!("{detail} (its ETag changed)"),
            ),
            WriteError::Store(s) => s.into(),
            other => Problem::internal(other.to_string()),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "the replica store failed");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            "the service could not read or write its replica; try again later",
        )
    }
}

impl From<LookupError> for Problem {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Store(s) => s.into(),
            other => Problem::not_found(other.to_string()),
        }
    }
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Unknown | TokenError::Expired { .. } => {
                Problem::unauthorized(e.to_string())
            }
            TokenError::Store(s) => s.into(),
            other => Problem::internal(other.to_string()),
        }
    }
}

/// Query parameters, with a malformed query answered as a problem (axum's
/// own answer is plain text).
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                Problem::bad_request(format!("the query string is malformed: {}", e.body_text()))
            })
    }
}
