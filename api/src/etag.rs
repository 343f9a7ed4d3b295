//! `ETag` and `If-None-Match` on every successful `GET` answer whose body is already whole in memory.
//!
//! The tag is a hash of the body, so it changes exactly when the answer does, whichever read model it came
//! from, and needs no version bookkeeping in the handlers. Dashboards polling an unchanged overview get `304`
//! with no body. Streamed answers (exports, live streams) have no whole body to hash and are left alone.

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Bodies above this are not hashed (no read answer is this large; it only bounds the buffering).
const MAX_TAGGED_BYTES: u64 = 4 * 1024 * 1024;

pub async fn tag(request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK || response.headers().contains_key(header::ETAG) {
        return response;
    }
    let whole = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_TAGGED_BYTES);
    if !whole {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED_BYTES as usize).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let digest = Sha256::digest(&bytes);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    let Ok(value) = HeaderValue::from_str(&etag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.insert(header::ETAG, value);
    if if_none_match.is_some_and(|v| matches(&v, &etag)) {
        let mut not_modified = Response::from_parts(parts, Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        not_modified.headers_mut().remove(header::CONTENT_LENGTH);
        return not_modified;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// `If-None-Match` holds `*` or a list of tags, possibly weak (`W/"…"`, compared weakly as RFC 9110 says).
fn matches(header: &HeaderValue, etag: &str) -> bool {
    let Ok(text) = header.to_str() else {
        return false;
    };
    text.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = "\"abc\"";
        assert!(matches(&HeaderValue::from_static("\"abc\""), tag));
        assert!(matches(&HeaderValue::from_static("\"x\", W/\"abc\""), tag));
        assert!(matches(&HeaderValue::from_static("*"), tag));
        assert!(!matches(&HeaderValue::from_static("\"abd\""), tag));
    }
}
