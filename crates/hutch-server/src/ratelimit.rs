//! Per-tenant rate limits on the `/v1` routes, and the headers that report them.
//!
//! Each class of route has its own limit, kept per tenant (the token's `sub`, never the
//! client's address) with the GCRA of the `governor` crate:
//!
//! - [`RouteClass::Lifecycle`]: `POST`/`GET /v1/sessions` and `GET`/`PATCH`/`DELETE
//!   /v1/sessions/{id}`;
//! - [`RouteClass::Session`]: everything proxied into a session, `/v1/sessions/{id}/…`.
//!
//! A limit is written `N/s`, `N/m` or `N/h` (N requests per second, minute or hour, spread
//! evenly), optionally followed by `,burst=B`: up to B requests at once after a quiet spell
//! (B defaults to N). `off` disables the class's limit. See [`RateLimit`].
//!
//! The middleware authenticates the request (so the limit is keyed by a verified tenant, and
//! a request with a bad token costs no tenant anything), charges one request, and then either
//! runs the handler or answers 429 `rate_limited` with `Retry-After`. Every response of a
//! limited class carries `RateLimit-Limit` (the burst), `RateLimit-Remaining` (requests
//! that may follow at once) and `RateLimit-Reset` (seconds until the whole burst is
//! available again, rounded up), and the same three as `X-RateLimit-*`. `/health` is not
//! limited.
//!
//! Memory: a tenant's state is one entry in a concurrent map, and
//! [`RateLimiters::retain_recent`] (run every [`RETAIN_INTERVAL`]) drops every tenant whose
//! bucket is full again, which is indistinguishable from never having been seen. The map
//! therefore holds only tenants active within the last burst's refill time.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::AppState;
use crate::error::ApiError;

/// How often idle tenants are dropped from the limiters' maps.
pub(crate) const RETAIN_INTERVAL: Duration = Duration::from_secs(60);

/// `NonZeroU32` from a constant (`MIN` for 0, which no caller passes).
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Default limit of [`RouteClass::Lifecycle`] routes per tenant: `500/s,burst=1000`.
pub const DEFAULT_RATE_LIFECYCLE: RateLimit = RateLimit::Every {
    count: nonzero(500),
    period: Period::Second,
    burst: nonzero(1000),
};

/// Default limit of [`RouteClass::Session`] routes per tenant: `2000/s,burst=4000`.
pub const DEFAULT_RATE_SESSION: RateLimit = RateLimit::Every {
    count: nonzero(2000),
    period: Period::Second,
    burst: nonzero(4000),
};

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Per second (`s`).
    Second,
    /// Per minute (`m`).
    Minute,
    /// Per hour (`h`).
    Hour,
}

impl Period {
    /// The unit as written in a limit.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "m",
            Period::Hour => "h",
        }
    }
}

/// A per-tenant limit on one class of routes, as configured: `N/s`, `N/m` or `N/h`, with an
/// optional `,burst=B`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No limit, and no rate-limit headers.
    Off,
    /// `count` requests per `period`, spread evenly, with bursts of up to `burst`.
    Every {
        /// Requests per period.
        count: NonZeroU32,
        /// The period.
        period: Period,
        /// Most requests at once after a quiet spell.
        burst: NonZeroU32,
    },
}

/// Why a rate limit could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {input:?}: {reason}; write N/s, N/m or N/h with an optional ,burst=B (for example 20/s,burst=40), or off"
)]
pub struct RateLimitParseError {
    /// What was given.
    input: String,
    /// What is wrong with it.
    reason: &'static str,
}

/// A positive integer written with ASCII digits only (no sign, no spaces).
fn positive(text: &str) -> Option<NonZeroU32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().and_then(NonZeroU32::new)
}

impl FromStr for RateLimit {
    type Err = RateLimitParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| RateLimitParseError {
            input: input.to_owned(),
            reason,
        };
        if input == "off" {
            return Ok(RateLimit::Off);
        }
        let (rate, burst) = match input.split_once(',') {
            Some((rate, option)) => {
                let value = option
                    .strip_prefix("burst=")
                    .ok_or_else(|| error("the only option is burst=B"))?;
                let burst = positive(value).ok_or_else(|| {
                    error("the burst must be a whole number from 1 to 4294967295")
                })?;
                (rate, Some(burst))
            }
            None => (input, None),
        };
        let (count, unit) = rate
            .split_once('/')
            .ok_or_else(|| error("the rate needs a unit: /s, /m or /h"))?;
        let count = positive(count)
            .ok_or_else(|| error("the count must be a whole number from 1 to 4294967295"))?;
        let period = match unit {
            "s" => Period::Second,
            "m" => Period::Minute,
            "h" => Period::Hour,
            _ => return Err(error("the unit must be s, m or h")),
        };
        Ok(RateLimit::Every {
            count,
            period,
            burst: burst.unwrap_or(count),
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Off => f.write_str("off"),
            RateLimit::Every {
                count,
                period,
                burst,
            } => write!(f, "{count}/{},burst={burst}", period.as_str()),
        }
    }
}

impl RateLimit {
    /// This limit's share on one of `replicas` servers sharing a store: the count and the
    /// burst divided by `replicas` (rounded down, at least 1), so that the servers together
    /// allow at most the configured rate (or, when the count is below `replicas`, one request
    /// per period and server).
    pub(crate) fn share(self, replicas: u32) -> RateLimit {
        let divide =
            |n: NonZeroU32| NonZeroU32::new(n.get() / replicas.max(1)).unwrap_or(NonZeroU32::MIN);
        match self {
            RateLimit::Off => RateLimit::Off,
            RateLimit::Every {
                count,
                period,
                burst,
            } => RateLimit::Every {
                count: divide(count),
                period,
                burst: divide(burst),
            },
        }
    }

    /// The governor quota, or `None` for [`RateLimit::Off`].
    fn quota(self) -> Option<Quota> {
        match self {
            RateLimit::Off => None,
            RateLimit::Every {
                count,
                period,
                burst,
            } => {
                let quota = match period {
                    Period::Second => Quota::per_second(count),
                    Period::Minute => Quota::per_minute(count),
                    Period::Hour => Quota::per_hour(count),
                };
                Some(quota.allow_burst(burst))
            }
        }
    }
}

/// The classes of routes, each with its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteClass {
    /// Creating, listing, reading, changing and deleting sessions.
    Lifecycle,
    /// Everything proxied into a session.
    Session,
}

impl RouteClass {
    /// The class's name, as the error details give it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteClass::Lifecycle => "lifecycle",
            RouteClass::Session => "session",
        }
    }
}

/// A keyed GCRA limiter that reports its state.
type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One class's limiter, keyed by tenant.
struct TenantLimiter {
    limiter: Keyed,
    clock: DefaultClock,
    /// The burst size: the `RateLimit-Limit`.
    burst: u32,
    /// Time for one request's worth of capacity to come back.
    interval: Duration,
}

impl TenantLimiter {
    fn new(quota: Quota) -> Self {
        let clock = DefaultClock::default();
        TenantLimiter {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            burst: quota.burst_size().get(),
            interval: quota.replenish_interval(),
        }
    }

    /// Charges one request to `tenant`.
    fn check(&self, tenant: &str) -> Outcome {
        match self.limiter.check_key(&tenant.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity().min(self.burst);
                Outcome {
                    limit: self.burst,
                    remaining,
                    reset_secs: ceil_secs(self.interval.saturating_mul(self.burst - remaining)),
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let full =
                    wait.saturating_add(self.interval.saturating_mul(self.burst.saturating_sub(1)));
                Outcome {
                    limit: self.burst,
                    remaining: 0,
                    reset_secs: ceil_secs(full),
                    retry_after_secs: Some(ceil_secs(wait).max(1)),
                }
            }
        }
    }
}

/// A duration in whole seconds, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The limiter's decision on one request, and what the headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The burst size.
    pub(crate) limit: u32,
    /// Requests that may follow at once.
    pub(crate) remaining: u32,
    /// Seconds until the whole burst is available again, rounded up.
    pub(crate) reset_secs: u64,
    /// `Some` when the request is refused: seconds until one more is allowed (at least 1).
    pub(crate) retry_after_secs: Option<u64>,
}

/// `RateLimit-*` headers and their `X-RateLimit-*` twins.
const HEADERS: [(HeaderName, HeaderName); 3] = [
    (
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-limit"),
    ),
    (
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-remaining"),
    ),
    (
        HeaderName::from_static("ratelimit-reset"),
        HeaderName::from_static("x-ratelimit-reset"),
    ),
];

/// The rate-limit headers as the OpenAPI document names and describes them, in the order of
/// [`HEADERS`]; each is also sent as `X-` followed by its name.
pub(crate) const DOCUMENTED_HEADERS: [(&str, &str); 3] = [
    (
        "RateLimit-Limit",
        "The most requests of this route's class the tenant may send at once (the burst). \
         Sent by every route that needs a token unless its class's limit is `off`, and \
         repeated as `X-RateLimit-Limit`.",
    ),
    (
        "RateLimit-Remaining",
        "How many more requests of this route's class the tenant may send at once; repeated \
         as `X-RateLimit-Remaining`.",
    ),
    (
        "RateLimit-Reset",
        "Seconds until the whole burst is available again, rounded up; repeated as \
         `X-RateLimit-Reset`.",
    ),
];

impl Outcome {
    /// Sets the rate-limit headers (and `Retry-After` on a refusal), replacing any the
    /// response had.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        let values = [
            u64::from(self.limit),
            u64::from(self.remaining),
            self.reset_secs,
        ];
        for ((name, x_name), value) in HEADERS.into_iter().zip(values) {
            let value = HeaderValue::from(value);
            headers.insert(name, value.clone());
            headers.insert(x_name, value);
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

/// The limiters of both route classes.
pub(crate) struct RateLimiters {
    /// The limits as configured (for the whole service).
    lifecycle: RateLimit,
    session: RateLimit,
    /// The limiters in force: the configured limits shared among the live replicas.
    shares: RwLock<Arc<Shares>>,
}

/// The limiters of one share of the configured limits.
struct Shares {
    /// Among how many servers the limits are shared.
    replicas: u32,
    lifecycle: Option<TenantLimiter>,
    session: Option<TenantLimiter>,
}

impl Shares {
    fn new(lifecycle: RateLimit, session: RateLimit, replicas: u32) -> Shares {
        Shares {
            replicas,
            lifecycle: lifecycle.share(replicas).quota().map(TenantLimiter::new),
            session: session.share(replicas).quota().map(TenantLimiter::new),
        }
    }
}

impl fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shares = self.shares();
        f.debug_struct("RateLimiters")
            .field("replicas", &shares.replicas)
            .field("lifecycle", &shares.lifecycle.as_ref().map(|l| l.burst))
            .field("session", &shares.session.as_ref().map(|l| l.burst))
            .finish()
    }
}

impl RateLimiters {
    /// Limiters for the two classes; [`RateLimit::Off`] leaves a class unlimited.
    pub(crate) fn new(lifecycle: RateLimit, session: RateLimit) -> Self {
        RateLimiters {
            lifecycle,
            session,
            shares: RwLock::new(Arc::new(Shares::new(lifecycle, session, 1))),
        }
    }

    /// The limiters in force.
    fn shares(&self) -> Arc<Shares> {
        Arc::clone(&self.shares.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Shares the configured limits among `replicas` live servers (see [`RateLimit::share`]).
    /// When the number changes, the limiters start afresh: every tenant's bucket is full.
    pub(crate) fn set_replicas(&self, replicas: u32) {
        let replicas = replicas.max(1);
        let mut shares = self.shares.write().unwrap_or_else(PoisonError::into_inner);
        if shares.replicas != replicas {
            tracing::info!(replicas, "rate limits shared among {replicas} replicas");
            *shares = Arc::new(Shares::new(self.lifecycle, self.session, replicas));
        }
    }

    /// Charges one request of `class` to `tenant`; `None` when the class is unlimited.
    pub(crate) fn check(&self, class: RouteClass, tenant: &str) -> Option<Outcome> {
        let shares = self.shares();
        let limiter = match class {
            RouteClass::Lifecycle => shares.lifecycle.as_ref(),
            RouteClass::Session => shares.session.as_ref(),
        };
        limiter.map(|l| l.check(tenant))
    }

    /// Drops the tenants whose buckets are full again, and frees the room they took.
    pub(crate) fn retain_recent(&self) {
        let shares = self.shares();
        for limiter in [&shares.lifecycle, &shares.session].into_iter().flatten() {
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
    }

    /// How many tenants the limiters hold (both classes summed).
    #[cfg(test)]
    pub(crate) fn tenants(&self) -> usize {
        let shares = self.shares();
        [&shares.lifecycle, &shares.session]
            .into_iter()
            .flatten()
            .map(|l| l.limiter.len())
            .sum()
    }
}

/// Middleware of the lifecycle routes.
pub(crate) async fn limit_lifecycle(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    limit(&state, RouteClass::Lifecycle, req, next).await
}

/// Middleware of the proxied routes.
pub(crate) async fn limit_session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    limit(&state, RouteClass::Session, req, next).await
}

/// Authenticates, charges the tenant, and runs the handler (with the caller in the request's
/// extensions) or refuses with 429; then adds the rate-limit headers.
async fn limit(state: &AppState, class: RouteClass, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let caller = match state.verifier.check(header) {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    let outcome = state.limits.check(class, &caller.tenant);
    let mut response = match outcome.and_then(|o| o.retry_after_secs) {
        Some(retry_after_secs) => {
            tracing::debug!(tenant = %caller.tenant, class = class.as_str(), "rate limited");
            ApiError::RateLimited {
                class: class.as_str(),
                retry_after_secs,
            }
            .into_response()
        }
        None => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    };
    if let Some(outcome) = outcome {
        outcome.write_headers(response.headers_mut());
    }
    response
}

/// Drops idle tenants from `limits` every `interval`.
pub(crate) async fn retain_forever(limits: std::sync::Arc<RateLimiters>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        limits.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_strictly() {
        let every = |count, period, burst| RateLimit::Every {
            count: nonzero(count),
            period,
            burst: nonzero(burst),
        };
        for (text, want) in [
            ("20/s,burst=40", every(20, Period::Second, 40)),
            ("20/s", every(20, Period::Second, 20)),
            ("600/m", every(600, Period::Minute, 600)),
            ("1/h,burst=5", every(1, Period::Hour, 5)),
            ("3/s,burst=1", every(3, Period::Second, 1)),
        ] {
            assert_eq!(text.parse::<RateLimit>(), Ok(want), "{text}");
        }
        assert_eq!("off".parse::<RateLimit>(), Ok(RateLimit::Off));
        for bad in [
            "",
            "20",
            "20/",
            "/s",
            "0/s",
            "-1/s",
            "+5/s",
            " 5/s",
            "5/s ",
            "5 /s",
            "5/sec",
            "5/d",
            "5/S",
            "1.5/s",
            "5/s,",
            "5/s,burst=",
            "5/s,burst=0",
            "5/s,burst=x",
            "5/s,rate=4",
            "5/s,burst=4,burst=5",
            "4294967296/s",
            "OFF",
            "none",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn limits_print_as_they_parse() {
        for limit in [DEFAULT_RATE_LIFECYCLE, DEFAULT_RATE_SESSION, RateLimit::Off] {
            assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
        }
        assert_eq!(DEFAULT_RATE_LIFECYCLE.to_string(), "500/s,burst=1000");
        assert_eq!(DEFAULT_RATE_SESSION.to_string(), "2000/s,burst=4000");
    }

    #[test]
    fn outcomes_count_down_then_refuse() {
        let limits = RateLimiters::new("1/h,burst=3".parse().unwrap(), "off".parse().unwrap());
        assert_eq!(limits.check(RouteClass::Session, "a"), None);
        let remaining: Vec<u32> = (0..3)
            .map(|_| {
                let outcome = limits.check(RouteClass::Lifecycle, "a").unwrap();
                assert_eq!(outcome.limit, 3);
                assert_eq!(outcome.retry_after_secs, None);
                outcome.remaining
            })
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = limits.check(RouteClass::Lifecycle, "a").unwrap();
        assert_eq!(refused.remaining, 0);
        let retry = refused.retry_after_secs.unwrap();
        assert!((3590..=3600).contains(&retry), "{retry}");
        assert!((3 * 3600 - 20..=3 * 3600).contains(&refused.reset_secs));
        // Another tenant is untouched.
        assert_eq!(
            limits.check(RouteClass::Lifecycle, "b").unwrap().remaining,
            2
        );
    }

    /// Shared among 3 replicas, each allows a third of the count and the burst (at least 1),
    /// and the limiter in force follows the number of replicas.
    #[test]
    fn limits_are_shared_among_live_replicas() {
        let limit: RateLimit = "100/s,burst=30".parse().unwrap();
        assert_eq!(limit.share(3), "33/s,burst=10".parse().unwrap());
        assert_eq!(limit.share(0), limit);
        let small: RateLimit = "2/m".parse().unwrap();
        assert_eq!(small.share(5), "1/m".parse().unwrap());
        assert_eq!(RateLimit::Off.share(2), RateLimit::Off);
        let limits = RateLimiters::new(limit, RateLimit::Off);
        assert_eq!(limits.check(RouteClass::Lifecycle, "t").unwrap().limit, 30);
        limits.set_replicas(3);
        let outcomes: Vec<_> = (0..11)
            .map(|_| limits.check(RouteClass::Lifecycle, "t").unwrap())
            .collect();
        assert_eq!(outcomes[0].limit, 10);
        assert!(outcomes[..10].iter().all(|o| o.retry_after_secs.is_none()));
        assert!(outcomes[10].retry_after_secs.is_some());
        limits.set_replicas(1);
        assert_eq!(limits.check(RouteClass::Lifecycle, "t").unwrap().limit, 30);
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        let limits = RateLimiters::new("1000/s,burst=2".parse().unwrap(), RateLimit::Off);
        for i in 0..100 {
            limits.check(RouteClass::Lifecycle, &format!("tenant-{i}"));
        }
        assert_eq!(limits.tenants(), 100);
        // Each bucket refills in 1 ms.
        std::thread::sleep(Duration::from_millis(20));
        limits.retain_recent();
        assert_eq!(limits.tenants(), 0);
    }

    #[test]
    fn the_documented_headers_are_the_sent_ones() {
        for ((name, x_name), (documented, _)) in HEADERS.iter().zip(DOCUMENTED_HEADERS) {
            assert_eq!(name.as_str(), documented.to_ascii_lowercase());
            assert_eq!(x_name.as_str(), format!("x-{name}"));
        }
    }

    #[test]
    fn headers_come_in_both_spellings() {
        let mut headers = HeaderMap::new();
        Outcome {
            limit: 10,
            remaining: 0,
            reset_secs: 7,
            retry_after_secs: Some(2),
        }
        .write_headers(&mut headers);
        for (name, value) in [
            ("ratelimit-limit", "10"),
            ("x-ratelimit-limit", "10"),
            ("ratelimit-remaining", "0"),
            ("x-ratelimit-remaining", "0"),
            ("ratelimit-reset", "7"),
            ("x-ratelimit-reset", "7"),
            ("retry-after", "2"),
        ] {
            assert_eq!(headers[name], value, "{name}");
        }
    }
}
