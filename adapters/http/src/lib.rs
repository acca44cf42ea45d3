//! What ChittySync's web-API adapters (Notion, Google Sheets) share about
//! talking HTTP: when to retry, how long to wait, how to spread waits so
//! many clients do not retry in step, and how many requests to send.
//!
//! Nothing here knows a vendor or sends a request. An adapter sends one
//! attempt itself and says what came of it as an [`Outcome`]; [`retry`]
//! repeats it within a [`RetryPolicy`]:
//!
//! - **Which failures are transient** — [`Transient`]: the statuses retried
//!   on any request (429, and whatever else says "not carried out"), those
//!   retried only on a request safe to repeat (5xx), and
//!   [`Transient::transport`] for timeouts and connection errors (safe
//!   requests only: the request may have landed).
//! - **How long to wait** — [`RetryPolicy::wait`]: exponential backoff with
//!   jitter ([`Backoff`]), and the server's `Retry-After` (seconds or an
//!   HTTP date, [`parse_retry_after`]) honoured as the policy says
//!   ([`RetryAfter`]), always capped.
//! - **How often** — at most [`RetryPolicy::max_retries`] retries; then
//!   [`Failed::Exhausted`], whose [`Failed::exhausted_reason`] is the error
//!   text for that case. [`Retries`] is the same budget for a caller that
//!   drives its own loop.
//! - **How fast** — [`RequestBudget`], a client-side request budget
//!   (governor), per second or per minute.
//!
//! ```
//! use std::time::Duration;
//! use chittysync_http::{Backoff, Outcome, RetryAfter, RetryPolicy, retry};
//!
//! # tokio_test(async {
//! let policy = RetryPolicy {
//!     max_retries: 3,
//!     backoff: Backoff::Halved { base: Duration::ZERO, cap: Duration::ZERO },
//!     retry_after: RetryAfter::Replaces { cap: Duration::ZERO },
//! };
//! let answer = retry(&policy, "ping", |attempt| async move {
//!     if attempt < 2 {
//!         Outcome::Retry { error: "busy".to_owned(), retry_after: None }
//!     } else {
//!         Outcome::Done("pong")
//!     }
//! })
//! .await;
//! assert_eq!(answer.unwrap(), "pong");
//! # });
//! # fn tokio_test(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A random number in [0, 1), for jittering retry waits.
pub fn jitter_unit() -> f64 {
    let r = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
    (r >> 11) as f64 / (1u64 << 53) as f64
}

/// Which failures may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transient {
    /// Statuses retried on any request: the server says it did not carry
    /// the request out (429, and e.g. Notion's 409 and 529).
    pub always: &'static [u16],
    /// Statuses retried only on requests safe to repeat (the request may
    /// have been carried out); `None` means every 5xx.
    pub when_repeatable: Option<&'static [u16]>,
}

impl Transient {
    /// 429 on any request; any 5xx on a request safe to repeat.
    pub const DEFAULT: Transient = Transient {
        always: &[429],
        when_repeatable: None,
    };

    /// Whether a request answered with `status` may be sent again;
    /// `repeatable`: whether sending it twice does no harm.
    pub fn status(&self, status: u16, repeatable: bool) -> bool {
        if self.always.contains(&status) {
            return true;
        }
        repeatable
            && match self.when_repeatable {
                Some(list) => list.contains(&status),
                None => (500..600).contains(&status),
            }
    }

    /// Whether a request that got no usable answer (timeout, connection
    /// error, a body that could not be read) may be sent again: only when
    /// repeating it does no harm, since it may have landed.
    pub fn transport(&self, repeatable: bool) -> bool {
        repeatable
    }
}

/// How the wait before a retry grows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    /// `base · 2^n`, capped at `cap`, then scaled by a jitter factor in
    /// [0.5, 1] (so never below half the step).
    Halved {
        /// The first retry's full wait.
        base: Duration,
        /// The longest wait.
        cap: Duration,
    },
    /// `min(2^n + jitter, max_units)` units of `unit`, jitter in [0, 1)
    /// (Google's advice).
    AddedUnit {
        /// The unit of wait.
        unit: Duration,
        /// The most units waited.
        max_units: f64,
    },
}

impl Backoff {
    /// The wait before retry `attempt` (0-based) with the jitter `unit` in
    /// [0, 1).
    pub fn wait(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        match *self {
            Backoff::Halved { base, cap } => {
                let base_ms = base.as_millis().min(u128::from(u64::MAX)) as u64;
                let cap_ms = cap.as_millis().min(u128::from(u64::MAX)) as u64;
                let full = base_ms.saturating_mul(1u64 << attempt.min(20)).min(cap_ms);
                Duration::from_millis((full as f64 * (0.5 + 0.5 * jitter)) as u64)
            }
            Backoff::AddedUnit { unit, max_units } => {
                let units = (2f64.powi(attempt.min(16) as i32) + jitter).min(max_units);
                unit.mul_f64(units)
            }
        }
    }
}

/// How a server's `Retry-After` bears on the wait.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RetryAfter {
    /// It replaces the backoff, up to `cap`.
    Replaces {
        /// The longest wait asked for that is honoured.
        cap: Duration,
    },
    /// The wait is at least the backoff, and at least what was asked up to
    /// `cap`.
    AtLeast {
        /// The longest wait asked for that is honoured.
        cap: Duration,
    },
}

/// How often and how long to retry one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; then the request fails.
    pub max_retries: u32,
    /// The wait when the server names none.
    pub backoff: Backoff,
    /// What a `Retry-After` does to the wait.
    pub retry_after: RetryAfter,
}

impl RetryPolicy {
    /// The wait before retry `attempt` (0-based), given the server's
    /// `Retry-After` if any and a jitter `unit` in [0, 1).
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        match (self.retry_after, retry_after) {
            (RetryAfter::Replaces { cap }, Some(asked)) => asked.min(cap),
            (RetryAfter::AtLeast { cap }, Some(asked)) => {
                asked.min(cap).max(self.backoff.wait(attempt, jitter))
            }
            (_, None) => self.backoff.wait(attempt, jitter),
        }
    }
}

/// The format of an HTTP date (IMF-fixdate, RFC 9110 §5.6.7).
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// A `Retry-After` header's wait: whole seconds, or an HTTP date (the wait
/// until then from `now`, zero when it is past). `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::PrimitiveDateTime::parse(value, HTTP_DATE)
        .ok()?
        .assume_utc();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.unix_timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What came of one attempt of a request.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// It succeeded.
    Done(T),
    /// It failed in a way that may pass: send it again after a wait
    /// (`retry_after`: the server's `Retry-After`, when it is honoured).
    Retry {
        /// Why it failed.
        error: E,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
    },
    /// It failed for good.
    Fail(E),
}

/// Why a retried request failed.
#[derive(Debug, PartialEq)]
pub enum Failed<E> {
    /// An attempt failed in a way retrying cannot fix.
    Final(E),
    /// Every attempt failed in a way that may pass; `error` is the last.
    Exhausted {
        /// The last attempt's error.
        error: E,
        /// How many attempts were made.
        attempts: u32,
    },
}

impl<E> Failed<E> {
    /// The error, however it came about.
    pub fn into_error(self) -> E {
        match self {
            Failed::Final(error) | Failed::Exhausted { error, .. } => error,
        }
    }
}

impl<E: fmt::Display> Failed<E> {
    /// The error's text; after exhausted retries, followed by how many
    /// attempts were made: `"… (after 6 attempts)"`.
    pub fn exhausted_reason(&self) -> String {
        match self {
            Failed::Final(error) => error.to_string(),
            Failed::Exhausted { error, attempts } => exhausted_reason(error, *attempts),
        }
    }
}

/// The text of a failure after `attempts` attempts: `"{reason} (after N
/// attempts)"`.
pub fn exhausted_reason(reason: impl fmt::Display, attempts: u32) -> String {
    format!("{reason} (after {attempts} attempts)")
}

/// The retries of one request, for a caller that drives its own loop
/// (one that re-reads state between attempts, or reports an exhausted
/// budget its own way). [`retry`] is this loop for the common case.
#[derive(Debug)]
pub struct Retries<'a> {
    policy: &'a RetryPolicy,
    what: &'a str,
    attempt: u32,
}

impl<'a> Retries<'a> {
    /// No retries yet of the request `what` names (in the debug log of
    /// each retry, with the error's text: neither may hold a secret).
    pub fn new(policy: &'a RetryPolicy, what: &'a str) -> Self {
        Retries {
            policy,
            what,
            attempt: 0,
        }
    }

    /// The number of the attempt under way (0 first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts have been made, counting the one under way.
    pub fn attempts(&self) -> u32 {
        self.attempt + 1
    }

    /// After an attempt that failed with `error` in a way that may pass:
    /// when a retry is left, waits [`RetryPolicy::wait`] (with fresh
    /// jitter) and returns `true`; else returns `false` at once.
    pub async fn wait<E>(&mut self, error: &E, retry_after: Option<Duration>) -> bool
    where
        E: fmt::Display + ?Sized,
    {
        if self.attempt >= self.policy.max_retries {
            return false;
        }
        let wait = self.policy.wait(self.attempt, retry_after, jitter_unit());
        tracing::debug!(
            request = self.what,
            attempt = self.attempt,
            wait_ms = wait.as_millis() as u64,
            reason = %error,
            "request retried"
        );
        tokio::time::sleep(wait).await;
        self.attempt += 1;
        true
    }

    /// Starts over with the whole retry budget (after progress: a part of
    /// the work went through).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Sends a request until it succeeds, fails for good, or has been retried
/// [`RetryPolicy::max_retries`] times, waiting [`RetryPolicy::wait`] (with
/// fresh jitter) between attempts. `send` makes one attempt; it is given
/// the attempt's number (0 first) and does any per-attempt work itself
/// (waiting for the request budget, re-reading what the request depends
/// on). (A closure returning a future, not an async closure: the futures
/// of async closures are not yet known to be `Send`, which the adapters'
/// futures must be.) `what` names the request in the debug log of each
/// retry, with the error's text: neither may hold a secret.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut send: F,
) -> Result<T, Failed<E>>
where
    E: fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Outcome<T, E>>,
{
    let mut retries = Retries::new(policy, what);
    loop {
        match send(retries.attempt()).await {
            Outcome::Done(value) => return Ok(value),
            Outcome::Fail(error) => return Err(Failed::Final(error)),
            Outcome::Retry { error, retry_after } => {
                if !retries.wait(&error, retry_after).await {
                    return Err(Failed::Exhausted {
                        error,
                        attempts: retries.attempts(),
                    });
                }
            }
        }
    }
}

/// A client-side budget of requests (a governor rate limiter).
#[derive(Debug)]
pub struct RequestBudget {
    limiter: DefaultDirectRateLimiter,
}

impl RequestBudget {
    /// `per_second` requests a second, evenly spaced (no burst). `None`
    /// unless `per_second` is a positive finite number.
    pub fn per_second(per_second: f64) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / per_second);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::MIN);
        Some(RequestBudget {
            limiter: RateLimiter::direct(quota),
        })
    }

    /// `per_minute` requests a minute (at least 1), never more in any
    /// minute: a burst of a twentieth, the rest spread evenly, so a busy
    /// client keeps using 95 % of the quota (a larger burst would lower
    /// the steady rate).
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let burst = (per_minute / 20).max(1);
        let steady = (per_minute - burst).max(1);
        let period = Duration::from_secs(60) / steady;
        let quota = Quota::with_period(period.max(Duration::from_micros(1)))
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
        RequestBudget {
            limiter: RateLimiter::direct(quota),
        }
    }

    /// Waits until one more request fits the budget, and spends it.
    pub async fn until_ready(&self) {
        self.limiter.until_ready().await;
    }

    /// Spends one request if it fits the budget now; `false` (nothing
    /// spent) if it would have to wait.
    pub fn try_spend(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTION_LIKE: RetryPolicy = RetryPolicy {
        max_retries: 5,
        backoff: Backoff::Halved {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        },
        retry_after: RetryAfter::Replaces {
            cap: Duration::from_secs(60),
        },
    };

    const GOOGLE_LIKE: RetryPolicy = RetryPolicy {
        max_retries: 5,
        backoff: Backoff::AddedUnit {
            unit: Duration::from_millis(10),
            max_units: 32.0,
        },
        retry_after: RetryAfter::AtLeast {
            cap: Duration::from_millis(640),
        },
    };

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        for bad in ["", "-1", "1.5", "soon", "Sunday, 06-Nov-94 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn halved_backoff_doubles_within_half_and_full_up_to_its_cap() {
        let b = NOTION_LIKE.backoff;
        assert_eq!(b.wait(0, 1.0), Duration::from_millis(1000));
        assert_eq!(b.wait(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.wait(2, 1.0), Duration::from_millis(4000));
        assert_eq!(b.wait(30, 1.0), Duration::from_secs(60));
        assert_eq!(b.wait(u32::MAX, 0.0), Duration::from_secs(30));
        for _ in 0..100 {
            let u = jitter_unit();
            assert!((0.0..1.0).contains(&u));
            let d = b.wait(1, u);
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(2)).contains(&d),
                "{d:?}"
            );
        }
    }

    #[test]
    fn added_unit_backoff_doubles_up_to_its_most_units() {
        let b = Backoff::AddedUnit {
            unit: Duration::from_millis(100),
            max_units: 32.0,
        };
        assert_eq!(b.wait(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.wait(0, 0.5), Duration::from_millis(150));
        assert_eq!(b.wait(3, 0.0), Duration::from_millis(800));
        assert_eq!(b.wait(10, 0.9), Duration::from_millis(3200));
        assert_eq!(b.wait(u32::MAX, 0.9), Duration::from_millis(3200));
    }

    #[test]
    fn retry_after_replaces_or_floors_the_backoff_within_its_cap() {
        let s = Duration::from_secs;
        assert_eq!(NOTION_LIKE.wait(3, Some(s(7)), 0.9), s(7));
        assert_eq!(NOTION_LIKE.wait(0, Some(s(86_400)), 0.9), s(60));
        assert_eq!(
            NOTION_LIKE.wait(4, Some(Duration::ZERO), 0.9),
            Duration::ZERO
        );
        let ms = Duration::from_millis;
        assert_eq!(GOOGLE_LIKE.wait(0, Some(s(1)), 0.0), ms(640), "capped");
        assert_eq!(GOOGLE_LIKE.wait(0, Some(ms(50)), 0.0), ms(50));
        assert_eq!(
            GOOGLE_LIKE.wait(3, Some(Duration::ZERO), 0.0),
            ms(80),
            "never below the backoff"
        );
    }

    #[test]
    fn transient_statuses_depend_on_whether_repeating_is_safe() {
        let d = Transient::DEFAULT;
        assert!(d.status(429, false));
        for s in [500, 502, 503, 504, 529] {
            assert!(d.status(s, true), "{s}");
            assert!(!d.status(s, false), "{s}");
        }
        for s in [400, 401, 403, 404, 409] {
            assert!(!d.status(s, true), "{s}");
        }
        let listed = Transient {
            always: &[409, 429, 529],
            when_repeatable: Some(&[500, 502, 503, 504]),
        };
        assert!(listed.status(529, false) && listed.status(409, false));
        assert!(listed.status(502, true) && !listed.status(502, false));
        assert!(!listed.status(501, true));
        assert!(d.transport(true) && !d.transport(false));
    }

    fn instant(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            backoff: Backoff::Halved {
                base: Duration::ZERO,
                cap: Duration::ZERO,
            },
            retry_after: RetryAfter::Replaces {
                cap: Duration::ZERO,
            },
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_retry_budget_is_spent_then_the_last_error_is_reported() {
        let sent = std::cell::Cell::new(0);
        let result: Result<(), _> = block_on(retry(&instant(3), "test", |attempt| {
            assert_eq!(attempt, sent.get());
            sent.set(attempt + 1);
            async move {
                Outcome::Retry {
                    error: format!("busy #{attempt}"),
                    retry_after: Some(Duration::from_secs(3600)),
                }
            }
        }));
        assert_eq!(sent.get(), 4, "the first attempt and 3 retries");
        let failed = result.unwrap_err();
        assert_eq!(
            failed,
            Failed::Exhausted {
                error: "busy #3".into(),
                attempts: 4
            }
        );
        assert_eq!(failed.exhausted_reason(), "busy #3 (after 4 attempts)");
    }

    #[test]
    fn a_final_failure_or_success_stops_at_once() {
        let mut sent = 0;
        let result: Result<(), _> = block_on(retry(&instant(5), "test", |_| {
            sent += 1;
            async { Outcome::Fail("refused") }
        }));
        assert_eq!((sent, result), (1, Err(Failed::Final("refused"))));
        let result: Result<u32, Failed<String>> =
            block_on(retry(&instant(5), "test", |attempt| async move {
                if attempt == 2 {
                    Outcome::Done(attempt)
                } else {
                    Outcome::Retry {
                        error: "busy".into(),
                        retry_after: None,
                    }
                }
            }));
        assert_eq!(result, Ok(2));
        let none: Result<(), _> = block_on(retry(&instant(0), "test", |_| async {
            Outcome::Retry {
                error: "busy",
                retry_after: None,
            }
        }));
        assert_eq!(
            none.unwrap_err().exhausted_reason(),
            "busy (after 1 attempts)"
        );
    }

    #[test]
    fn a_driven_loop_spends_the_same_budget_and_can_start_over() {
        let policy = instant(2);
        let mut retries = Retries::new(&policy, "test");
        block_on(async {
            assert!(retries.wait(&"busy", None).await);
            assert!(retries.wait(&"busy", None).await);
            assert_eq!(retries.attempt(), 2);
            assert!(!retries.wait(&"busy", None).await, "two retries, no more");
            assert_eq!(retries.attempts(), 3);
            retries.reset();
            assert!(retries.wait(&"busy", None).await);
        });
    }

    #[test]
    fn budgets_never_exceed_their_quota() {
        let b = RequestBudget::per_minute(60);
        assert!(b.try_spend(), "a burst of 3");
        assert!(b.try_spend() && b.try_spend());
        assert!(!b.try_spend(), "then spread out");
        let b = RequestBudget::per_minute(0);
        assert!(b.try_spend() && !b.try_spend());
        assert!(RequestBudget::per_second(0.0).is_none());
        assert!(RequestBudget::per_second(f64::NAN).is_none());
        let b = RequestBudget::per_second(2.0).unwrap();
        assert!(b.try_spend() && !b.try_spend(), "no burst");
    }
}
