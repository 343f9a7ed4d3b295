//! The HTTP server loop: accept, serve each connection with hyper, stop gracefully.
//!
//! `axum::serve` would do, except that it sets no deadline on reading a request's headers: a client that sends
//! half a request line and then nothing holds its connection (and a task) forever, and a few thousand such
//! clients exhaust the process (slowloris). Here every connection gets hyper's header-read timeout; the body
//! and the handler are bounded by the API's own request timeout (a 408 answer), and live streams end on
//! shutdown by themselves.

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long open connections get to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `shutdown` is cancelled. A client must send its request headers within
/// `header_timeout`, or its connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    // HTTP/1.1 only, as before with axum's defaults (Herald sits behind a proxy where HTTP/2 matters).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Every connection's task holds a clone of `open`; `closed` yields `None` once the last one has ended.
    let (open, mut closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Handlers see the client's address the way `into_make_service_with_connect_info` would give it.
        let service = app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            },
        );
        // With upgrades: the WebSocket live stream is one.
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let open = open.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // On shutdown, a connection finishes the request in flight and closes.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, client = %remote, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    if tokio::time::timeout(DRAIN, closed.recv()).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown began; leaving them");
    }
}
