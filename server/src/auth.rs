//! Bearer tokens: who is calling, what they may see, and how often.
//!
//! No token, an unknown one or an expired one: 401. A registry the token may
//! not use answers exactly like one that does not exist (404), so a token
//! cannot learn which registries a replica holds. A reader's write: 403.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chittysync::{Registry, Role, TokenSession};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::{AppState, Problem, blocking};

/// Requests per token per minute.
pub(crate) type Limiter = DefaultKeyedRateLimiter<String>;

pub(crate) fn limiter(per_minute: u32) -> Limiter {
    let per_minute = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
    RateLimiter::keyed(Quota::per_minute(per_minute))
}

/// The token a request came with, authenticated and within its rate.
pub(crate) struct Caller(pub(crate) TokenSession);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                Problem::unauthorized("this needs a token: send `Authorization: Bearer <token>`")
            })?
            .to_str()
            .map_err(|_| Problem::unauthorized("the Authorization header is not text"))?;
        let secret = match header.split_once(' ') {
            Some((scheme, secret)) if scheme.eq_ignore_ascii_case("bearer") => {
                secret.trim().to_owned()
            }
            _ => {
                return Err(Problem::unauthorized(
                    "the Authorization header must be `Bearer <token>`",
                ));
            }
        };
        let replica = state.replica.clone();
        let session =
            blocking(move || replica.authenticate_token(&secret).map_err(Problem::from)).await?;
        if let Err(not_until) = state.limiter.check_key(&session.token.name) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Problem::too_many_requests(wait.as_secs().max(1)));
        }
        Ok(Caller(session))
    }
}

impl Caller {
    /// The registry `name` (or id) if the token may use it; otherwise the
    /// same 404 as for a registry that does not exist.
    pub(crate) fn registry(&self, state: &AppState, name: &str) -> Result<Registry, Problem> {
        let hidden = || {
            Problem::not_found(format!(
                "no registry named '{name}' is shared with this token"
            ))
        };
        let registry = state.replica.registry(name).map_err(|e| match e {
            chittysync::LookupError::Store(s) => Problem::from(s),
            _ => hidden(),
        })?;
        if self.0.token.covers(&registry.id()) {
            Ok(registry)
        } else {
            Err(hidden())
        }
    }

    /// Fails with 403 unless the token may write.
    pub(crate) fn require_writer(&self, registry: &Registry) -> Result<(), Problem> {
        if self.0.token.role >= Role::Writer {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "token '{}' may only read registry '{}'; ask an admin for a writer token",
                self.0.token.name,
                registry.name()
            )))
        }
    }

    /// The message recorded in changes made through this token.
    pub(crate) fn message(&self, what: &str) -> String {
        format!(
            "{what} through the HTTP API with token {}",
            self.0.token.name
        )
    }
}
