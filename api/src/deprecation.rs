//! The deprecation path: a route that is going away is listed here with when it was deprecated, when it will
//! be removed and what replaces it; every answer from it then says so in the standard headers —
//! `Deprecation: @<unix time>` (RFC 9745), `Sunset: <HTTP date>` (RFC 8594) and
//! `Link: <successor>; rel="successor-version"` — so clients see it in their logs long before it breaks.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};

/// A route on its way out.
#[derive(Debug, Clone, Copy)]
pub struct Deprecated {
    pub method: &'static str,
    pub path: &'static str,
    /// Seconds since the epoch.
    pub deprecated_at: i64,
    pub sunset_at: i64,
    pub successor: &'static str,
}

/// No route is deprecated today.
pub const DEPRECATED: &[Deprecated] = &[];

pub async fn headers(request: Request, next: Next) -> Response {
    let found = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| find(DEPRECATED, request.method().as_str(), path.as_str()));
    let mut response = next.run(request).await;
    if let Some(deprecated) = found {
        write(deprecated, response.headers_mut());
    }
    response
}

fn find<'a>(table: &'a [Deprecated], method: &str, path: &str) -> Option<&'a Deprecated> {
    table.iter().find(|d| d.method == method && d.path == path)
}

fn write(deprecated: &Deprecated, headers: &mut HeaderMap) {
    let http_date = |secs: i64| {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    };
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", deprecated.deprecated_at)) {
        headers.insert("deprecation", v);
    }
    if let Some(v) = http_date(deprecated.sunset_at).and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert("sunset", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "<{}>; rel=\"successor-version\"",
        deprecated.successor
    )) {
        headers.append("link", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deprecated_route_says_when_it_goes_and_what_replaces_it() {
        let table = [Deprecated {
            method: "GET",
            path: "/api/v1/old",
            deprecated_at: 1_767_225_600,
            sunset_at: 1_782_864_000,
            successor: "/api/v2/new",
        }];
        assert!(find(&table, "POST", "/api/v1/old").is_none());
        let mut headers = HeaderMap::new();
        write(find(&table, "GET", "/api/v1/old").unwrap(), &mut headers);
        assert_eq!(headers["deprecation"], "@1767225600");
        assert_eq!(headers["sunset"], "Wed, 01 Jul 2026 00:00:00 GMT");
        assert_eq!(headers["link"], "</api/v2/new>; rel=\"successor-version\"");
    }

    #[test]
    fn every_deprecated_route_exists_and_sunsets_after_it_is_deprecated() {
        for d in DEPRECATED {
            assert!(crate::auth::policy::POLICY
                .iter()
                .any(|r| r.method == d.method && r.path == d.path));
            assert!(d.sunset_at > d.deprecated_at);
        }
    }
}
