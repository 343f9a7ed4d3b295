//! Token-bucket rate limits (governor), one bucket per client address and one per caller, with the standard
//! `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` headers on every answer and `Retry-After` on a
//! 429. Webhooks have their own, larger buckets: a CI system posts in bursts when a pipeline fans out. A refused
//! webhook is refused before anything is recorded, and the CI system retries it, so nothing accepted is lost.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::ApiError;

/// How much traffic one address or caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub api: Rate,
    pub webhooks: Rate,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            api: Rate::new(20, 100).expect("non-zero"),
            webhooks: Rate::new(200, 1_000).expect("non-zero"),
            trust_forwarded_for: false,
        }
    }
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Api,
    Webhook,
}

/// The rate limiters of one API process.
#[derive(Clone)]
pub struct Limits {
    api: Arc<Keyed>,
    webhooks: Arc<Keyed>,
    pub trust_forwarded_for: bool,
    checks: Arc<AtomicU64>,
}

/// What the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset_seconds: u64,
}

impl RateHeaders {
    /// Of two buckets, the one closer to refusing is the one to report.
    pub fn tighter(self, other: RateHeaders) -> RateHeaders {
        if other.remaining < self.remaining {
            other
        } else {
            self
        }
    }

    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_seconds));
    }
}

fn limiter(rate: Rate) -> Arc<Keyed> {
    let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
    Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>())
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            api: limiter(settings.api),
            webhooks: limiter(settings.webhooks),
            trust_forwarded_for: settings.trust_forwarded_for,
            checks: Arc::default(),
        }
    }

    /// Take one token from `key`'s bucket: the headers to send, or the 429 to send instead.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, bucket: Bucket, key: &str) -> Result<RateHeaders, Response> {
        let limiter = match bucket {
            Bucket::Api => &self.api,
            Bucket::Webhook => &self.webhooks,
        };
        // Forget idle buckets now and then, so a scan from many addresses cannot grow memory without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let quota = snapshot.quota();
                let limit = quota.burst_size().get();
                let remaining = snapshot.remaining_burst_capacity();
                let per_token = quota.replenish_interval();
                let reset = per_token * (limit - remaining);
                Ok(RateHeaders {
                    limit,
                    remaining,
                    reset_seconds: reset.as_secs_f64().ceil() as u64,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let headers = RateHeaders {
                    limit: not_until.quota().burst_size().get(),
                    remaining: 0,
                    reset_seconds: seconds,
                };
                let mut response =
                    ApiError::TooManyRequests(format!("rate limit exceeded; retry in {seconds} s"))
                        .into_response();
                headers.write(response.headers_mut());
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
                Err(response)
            }
        }
    }
}

/// The address a request came from: the peer, or the first `X-Forwarded-For` hop when trusted.
pub fn client_address(request: &Request, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let limits = Limits::new(&LimitSettings {
            api: Rate::new(1, 2).unwrap(),
            ..LimitSettings::default()
        });
        let first = limits.check(Bucket::Api, "k").unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        let second = limits.check(Bucket::Api, "k").unwrap();
        assert_eq!(second.remaining, 0);
        let refused = limits.check(Bucket::Api, "k").unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(refused.headers()["ratelimit-remaining"], "0");
        // Another caller has its own bucket; webhooks have theirs.
        assert!(limits.check(Bucket::Api, "other").is_ok());
        assert!(limits.check(Bucket::Webhook, "k").is_ok());
    }
}
