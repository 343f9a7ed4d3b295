//! Per-request telemetry: a trace id for every request (continued from an incoming `traceparent`, else new),
//! a span that every log line of the request carries, the `traceparent` response header, and the HTTP metrics
//! (`herald_http_requests_total`, `herald_http_request_duration_seconds`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Outermost layer: open the trace the rest of the request runs in.
pub async fn trace(request: Request, next: Next) -> Response {
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(commands::trace::parse_traceparent)
        .unwrap_or_else(commands::trace::new_trace_id);
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let header = HeaderValue::from_str(&commands::trace::traceparent(&trace_id)).ok();
    let mut response = commands::trace::scope(trace_id, next.run(request).instrument(span)).await;
    if let Some(header) = header {
        response.headers_mut().insert("traceparent", header);
    }
    response
}

/// Around every matched route: count it and time it, labelled by the route pattern (never the raw path, whose
/// ids would make every request its own time series).
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("herald_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("herald_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}
