//! Live updates: `GET /api/v1/stream` (Server-Sent Events) and `GET /api/v1/stream/ws` (WebSocket), both
//! reading the `live_feed` read model.
//!
//! - **Resume without gap or duplicate.** Every message carries its feed number as its id. A client that
//!   reconnects with `Last-Event-ID: N` (SSE does so by itself) or `?last_event_id=N` gets every change after N
//!   and nothing before; the feed is numbered in commit order (see `projections::live_feed`), so nothing can
//!   appear behind a number already sent. Without an id, a client starts at the newest change.
//! - **Resume from before the feed's window.** The feed keeps a window (a day by default). A client whose id
//!   is older than the oldest change kept (on connecting, or later, having fallen that far behind) first gets
//!   one `reset` message, whose id is just before that change: what it shows may be stale, so it should
//!   reload, and it then gets everything kept. Resuming after the `reset` starts there and is not told again.
//! - **Back-pressure.** A stream reads the next page from the feed only when the client has taken the last:
//!   the SSE body is pulled by the connection as it drains, the WebSocket awaits each send. A slow client falls
//!   behind in the feed, which is in Postgres; nothing queues up in Herald's memory. A WebSocket client that
//!   takes longer than [`SEND_TIMEOUT`] to accept one message is disconnected (it can resume).
//! - **Wake-ups.** A stream waits for the change notice the projection sends on commit, with a poll every
//!   [`POLL`] in case a notice was lost.
//! - **Heartbeats.** An SSE comment, or a WebSocket ping, every `HERALD_STREAM_HEARTBEAT_SECS`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt as _, Stream, StreamExt as _};
use projections::live_feed::{self, FeedEntry};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::watch;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::Query;
use crate::{ApiError, AppState};

/// How many feed entries one read takes.
const PAGE: i64 = 200;
/// How often a waiting stream looks at the feed without a notice.
const POLL: Duration = Duration::from_secs(5);
/// A WebSocket client that does not take a message within this long is disconnected.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sse))
        .routes(routes!(websocket))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    /// Comma-separated project ids; every project when left out.
    projects: Option<String>,
    /// Resume after this feed number (SSE clients send `Last-Event-ID` instead).
    last_event_id: Option<String>,
}

impl StreamParams {
    fn projects(&self) -> Result<Vec<Uuid>, ApiError> {
        self.projects
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::Invalid(format!("projects: {s:?} is not a project id")))
            })
            .collect()
    }

    /// Where to start: after the id the client last saw, or at the head of the feed.
    async fn start(&self, headers: &HeaderMap, pool: &PgPool) -> Result<i64, ApiError> {
        let given = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.last_event_id.clone());
        match given {
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::Invalid(format!("last event id {raw:?} is not a feed number"))
                }),
            None => live_feed::head(pool)
                .await
                .map_err(|e| ApiError::Internal(e.to_string())),
        }
    }
}

/// The message telling a client that changes after its id are no longer kept. Its id is the one before the
/// oldest change kept, so a client that reconnects after it resumes there.
fn reset_entry(oldest: i64) -> FeedEntry {
    FeedEntry {
        feed_seq: oldest - 1,
        project_id: Uuid::nil(),
        kind: "reset".into(),
        payload: serde_json::json!({
            "oldest": oldest,
            "reason": "changes after the last event id are no longer kept; reload the state shown",
        }),
    }
}

/// One client's position in the feed.
struct Cursor {
    pool: PgPool,
    projects: Vec<Uuid>,
    after: i64,
    changes: watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Cursor {
    /// The next entries, waiting until there are some; `None` once the process shuts down.
    async fn next_page(&mut self) -> Option<Vec<FeedEntry>> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            // Mark the current signal seen before reading, so a notice that lands during the read wakes us.
            self.changes.borrow_and_update();
            match live_feed::page_after(&self.pool, self.after, &self.projects, PAGE).await {
                Ok((oldest, entries)) => {
                    let mut page = Vec::with_capacity(entries.len() + 1);
                    // Changes after `after` were pruned: say so before what is kept.
                    if let Some(oldest) = oldest.filter(|oldest| self.after < oldest - 1) {
                        page.push(reset_entry(oldest));
                        self.after = oldest - 1;
                    }
                    if let Some(last) = entries.last() {
                        self.after = last.feed_seq;
                    }
                    page.extend(entries);
                    if !page.is_empty() {
                        return Some(page);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the live feed failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::timeout(POLL, self.changes.changed()) => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }
}

fn sse_event(entry: &FeedEntry) -> Event {
    Event::default()
        .id(entry.feed_seq.to_string())
        .event(entry.kind.as_str())
        .data(entry.payload.to_string())
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "live",
    operation_id = "live_stream",
    security(("bearer" = []), ("api_key" = [])),
    params(StreamParams),
    responses(
        (status = 200, description = "Server-Sent Events: one `build` event per change of a build, with the \
            feed number as its id; heartbeats as comments. A client resuming from before the oldest change kept \
            first gets one `reset` event (reload what you show)", content_type = "text/event-stream"),
        (status = 422, description = "invalid project id or last event id")))]
async fn sse(
    State(state): State<AppState>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let cursor = open(&state, &params, &headers).await?;
    let events = futures::stream::unfold(cursor, |mut cursor| async move {
        let page = cursor.next_page().await?;
        Some((page, cursor))
    })
    .flat_map(|page| {
        futures::stream::iter(page.iter().map(|e| Ok(sse_event(e))).collect::<Vec<_>>())
    });
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(state.http.heartbeat)
            .text("heartbeat"),
    ))
}

async fn open(
    state: &AppState,
    params: &StreamParams,
    headers: &HeaderMap,
) -> Result<Cursor, ApiError> {
    let projects = params.projects()?;
    // Subscribe before reading the start, so a change committed in between still wakes the stream.
    let changes = state.read_cache.feed_changes(&state.pool);
    let after = params.start(headers, &state.pool).await?;
    metrics::counter!("herald_live_streams_opened_total").increment(1);
    Ok(Cursor {
        pool: state.pool.clone(),
        projects,
        after,
        changes,
        shutdown: state.shutdown.clone(),
    })
}

#[utoipa::path(get, path = "/api/v1/stream/ws", tag = "live",
    operation_id = "live_websocket",
    security(("bearer" = []), ("api_key" = [])),
    params(StreamParams),
    responses(
        (status = 101, description = "WebSocket: one text message per change, \
            `{\"id\": N, \"event\": \"build\", \"data\": {...}}`; pings as heartbeats; `\"event\": \"reset\"` first \
            when resuming from before the oldest change kept"),
        (status = 422, description = "invalid project id or last event id")))]
async fn websocket(
    State(state): State<AppState>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let cursor = open(&state, &params, &headers).await?;
    let heartbeat = state.http.heartbeat;
    Ok(upgrade
        .on_upgrade(move |socket| serve_socket(socket, cursor, heartbeat))
        .into_response())
}

async fn serve_socket(socket: WebSocket, mut cursor: Cursor, heartbeat: Duration) {
    let (mut sink, mut incoming) = socket.split();
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.reset();
    loop {
        tokio::select! {
            page = cursor.next_page() => {
                let Some(page) = page else {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                };
                for entry in page {
                    let text = serde_json::json!({
                        "id": entry.feed_seq,
                        "event": entry.kind,
                        "data": entry.payload,
                    })
                    .to_string();
                    if !send(&mut sink, Message::Text(text.into())).await {
                        return;
                    }
                }
            }
            _ = ticks.tick() => {
                if !send(&mut sink, Message::Ping(Vec::new().into())).await {
                    return;
                }
            }
            message = incoming.next() => match message {
                // The client says nothing Herald needs to hear; it may close.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Send one message; `false` when the client is gone or too slow to take it.
async fn send(sink: &mut SplitSink<WebSocket, Message>, message: Message) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            metrics::counter!("herald_live_streams_dropped_slow_total").increment(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_lists_are_read_and_bad_ids_named() {
        let a = Uuid::new_v4();
        let params = StreamParams {
            projects: Some(format!(" {a}, ,")),
            last_event_id: None,
        };
        assert_eq!(params.projects().unwrap(), vec![a]);
        let bad = StreamParams {
            projects: Some("nope".into()),
            last_event_id: None,
        };
        assert!(bad.projects().unwrap_err().to_string().contains("nope"));
    }
}
