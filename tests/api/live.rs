//! Live updates over SSE and WebSocket: per-project filters, auth, heartbeats, and resuming after a reconnect
//! with nothing missed and nothing twice.

use std::time::Duration;

use futures::StreamExt as _;
use herald::Role;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// One SSE frame: its id, event name and data, or a comment (a heartbeat).
#[derive(Debug, Clone)]
enum Frame {
    Event { id: i64, event: String, data: Value },
    Comment(String),
}

/// Reads frames off an SSE response as they arrive.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<i64>) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when nothing comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_frame(&raw));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event within `wait`, skipping heartbeats.
    async fn next_event(&mut self, wait: Duration) -> Option<(i64, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Frame::Event { id, event, data } => {
                    assert_eq!(event, "build");
                    return Some((id, data));
                }
                Frame::Comment(_) => continue,
            }
        }
    }
}

fn parse_frame(raw: &str) -> Frame {
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    for line in raw.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Frame::Comment(comment.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    Frame::Event {
        id: id.expect("an event has an id"),
        event,
        data: serde_json::from_str(&data).unwrap(),
    }
}

async fn report(app: &TestApp, project: &CreatedProject, run: i64, status: &str) {
    let body = json!({"repository": "acme/live", "workflow": "ci", "run_id": run, "branch": "main",
                      "status": status});
    let response = app
        .post_webhook(
            "generic",
            project.id,
            "",
            &[("x-herald-token", project.secret.as_str())],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 202);
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sse_follows_one_project_and_resumes_after_a_reconnect_without_gap_or_duplicate() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.http.heartbeat = Duration::from_millis(300);
    })
    .await;
    let watched = app.create_project("watched").await;
    let other = app.create_project("other").await;
    app.drain().await;
    let url = app.url(&format!("/api/v1/stream?projects={}", watched.id));

    // Without credentials: refused.
    let anonymous = app.anonymous.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let mut stream = SseReader::open(&app.http, &url, None).await;
    report(&app, &other, 1, "started").await;
    report(&app, &watched, 1, "started").await;
    report(&app, &watched, 1, "failed").await;
    let (first, started) = stream.next_event(WAIT).await.expect("started");
    let (second, failed) = stream.next_event(WAIT).await.expect("failed");
    assert_eq!(started["status"], "started");
    assert_eq!(failed["status"], "completed");
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["transition"], "broken");
    assert!(second > first);
    for event in [&started, &failed] {
        assert_eq!(event["project_id"], watched.id.to_string(), "filtered");
    }
    // Heartbeats keep the connection alive while nothing happens.
    let heartbeat = match stream.next(WAIT).await.expect("a heartbeat") {
        Frame::Comment(text) => text,
        Frame::Event { data, .. } => panic!("no more events expected, got {data}"),
    };
    assert_eq!(heartbeat, "heartbeat");
    drop(stream);

    // While disconnected, two changes happen; the reconnect gets exactly those, in order.
    report(&app, &watched, 2, "queued").await;
    report(&app, &watched, 2, "succeeded").await;
    app.drain().await;
    let mut resumed = SseReader::open(&app.http, &url, Some(second)).await;
    let (third, queued) = resumed.next_event(WAIT).await.expect("queued");
    let (fourth, fixed) = resumed.next_event(WAIT).await.expect("succeeded");
    assert!(third > second && fourth > third);
    assert_eq!(queued["status"], "queued");
    assert_eq!(fixed["transition"], "fixed");
    assert!(
        resumed
            .next_event(Duration::from_millis(700))
            .await
            .is_none(),
        "nothing twice"
    );

    // A client that asks for nothing old starts at the newest change.
    let mut fresh = SseReader::open(&app.http, &url, None).await;
    report(&app, &watched, 3, "started").await;
    let (_, newest) = fresh.next_event(WAIT).await.expect("the newest change");
    // Run 3 (ids end in `:<run>:<attempt>`), not run 2's changes from before the connection.
    assert!(
        newest["build_run_id"].as_str().unwrap().ends_with(":3:1"),
        "{newest}"
    );

    // A bad id is named.
    let bad = app
        .http
        .get(&url)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    app.finish().await;
}

#[tokio::test]
async fn the_websocket_stream_sends_changes_pings_and_resumes() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.http.heartbeat = Duration::from_millis(300);
    })
    .await;
    let project = app.create_project("ws").await;
    app.drain().await;
    let reader_key = create_key(&app.pool, api::auth::Role::Reader, &[]).await;
    let connect = |after: Option<i64>| {
        let mut url = format!("ws://{}/api/v1/stream/ws?projects={}", app.addr, project.id);
        if let Some(after) = after {
            url.push_str(&format!("&last_event_id={after}"));
        }
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {reader_key}").parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request)
    };
    let (mut socket, _) = connect(None).await.expect("a reader may watch");
    report(&app, &project, 1, "started").await;
    let mut pinged = false;
    let first = loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            Message::Ping(_) => pinged = true,
            _ => {}
        }
    };
    assert_eq!(first["event"], "build");
    assert_eq!(first["data"]["status"], "started");
    let first_id = first["id"].as_i64().unwrap();
    while !pinged {
        if let Message::Ping(_) = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            pinged = true;
        }
    }
    socket.close(None).await.unwrap();

    report(&app, &project, 1, "succeeded").await;
    app.drain().await;
    let (mut again, _) = connect(Some(first_id)).await.unwrap();
    let next = loop {
        match tokio::time::timeout(WAIT, again.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(next["data"]["status"], "completed");
    assert!(next["id"].as_i64().unwrap() > first_id);

    // Without credentials, no upgrade.
    let anonymous = format!("ws://{}/api/v1/stream/ws", app.addr);
    assert!(tokio_tungstenite::connect_async(anonymous).await.is_err());
    app.finish().await;
}

/// Append a run's queued, started and failed events to the log as if recorded `age` ago (a webhook is always
/// recorded now; an old log is what a long-running Herald has).
async fn append_old_run(
    app: &TestApp,
    project: &CreatedProject,
    run_id: i64,
    age: chrono::Duration,
) {
    let at = chrono::Utc::now() - age;
    let run = domain::RunInfo {
        project_id: project.id,
        provider: "generic".into(),
        repository: "acme/live".into(),
        workflow: "ci".into(),
        branch: Some("main".into()),
        tag: None,
        pull_request: None,
        run_id,
        run_key: None,
        run_number: Some(run_id),
        attempt: 1,
        commit_sha: None,
        commit_message: None,
        author: None,
        url: None,
    };
    let verdict = domain::Verdict {
        outcome: domain::Outcome::Failed,
        transition: domain::Transition::Broken,
        previous_outcome: None,
        failure_streak: 1,
        started_at: Some(at),
        completed_at: at,
        duration_secs: Some(0),
        failed_jobs: vec![],
    };
    let events = [
        (
            "BuildQueued",
            json!({"BuildQueued": {"delivery_id": "old-1", "run": run, "queued_at": at}}),
        ),
        (
            "BuildStarted",
            json!({"BuildStarted": {"delivery_id": "old-2", "run": run, "started_at": at}}),
        ),
        (
            "BuildFailed",
            json!({"BuildFailed": {"delivery_id": "old-3", "run": run, "verdict": verdict}}),
        ),
    ];
    for (sequence, (event_type, payload)) in events.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                                 metadata, recorded_at)
             VALUES ('BuildRun', $1, $2, $3, '1.0', $4, '{}', $5)",
        )
        .bind(run.build_run_id())
        .bind(sequence as i64 + 1)
        .bind(event_type)
        .bind(payload)
        .bind(at)
        .execute(&app.pool)
        .await
        .unwrap();
    }
}

/// Every feed row, numbers included, in order.
async fn feed(pool: &sqlx::PgPool) -> Vec<(i64, i64, String)> {
    sqlx::query_as(
        "SELECT feed_seq, global_seq, payload->>'status' FROM live_feed ORDER BY feed_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_feed_keeps_its_window_numbers_as_if_it_kept_everything_and_tells_a_late_client_to_reload(
) {
    // The default window, a day: the window is one value per process, and tests that share a process (as under
    // coverage) would set it for each other.
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("window").await;
    let prune = || projections::live_feed::prune(&app.pool, chrono::Utc::now());

    // Three days old: the live stream still writes every change it is given (a client following it must miss
    // nothing), and the pruner takes them away, all but the newest, which the numbering counts from.
    append_old_run(&app, &project, 1, chrono::Duration::days(3)).await;
    app.drain().await;
    let numbers = |feed: &[(i64, i64, String)]| feed.iter().map(|row| row.0).collect::<Vec<_>>();
    assert_eq!(numbers(&feed(&app.pool).await), [1, 2, 3]);
    assert_eq!(prune().await.unwrap(), 2);
    assert_eq!(numbers(&feed(&app.pool).await), [3]);

    report(&app, &project, 2, "started").await;
    report(&app, &project, 2, "succeeded").await;
    app.drain().await;
    assert_eq!(prune().await.unwrap(), 1);
    let live = feed(&app.pool).await;
    let statuses: Vec<&str> = live.iter().map(|(.., status)| status.as_str()).collect();
    assert_eq!(numbers(&live), [4, 5], "{live:?}");
    assert_eq!(statuses, ["started", "completed"]);

    // A rebuild from the whole log leaves the old run out but counts it, so the same changes have the same
    // numbers: a client's number means the same change before and after.
    rebuild_now(&app.pool, "live_feed", Some(2)).await;
    assert_eq!(feed(&app.pool).await, live);

    // A client that last saw a change the feed no longer keeps is told to reload, then gets what is kept.
    let url = app.url(&format!("/api/v1/stream?projects={}", project.id));
    let mut late = SseReader::open(&app.http, &url, Some(1)).await;
    match late.next(WAIT).await.expect("a reset") {
        Frame::Event { id, event, data } => {
            assert_eq!(event, "reset");
            assert_eq!(
                id, 3,
                "resuming after the reset starts at the oldest change kept"
            );
            assert_eq!(data["oldest"], 4);
        }
        Frame::Comment(text) => panic!("expected the reset, got a comment {text:?}"),
    }
    assert_eq!(late.next_event(WAIT).await.expect("kept").0, 4);
    assert_eq!(late.next_event(WAIT).await.expect("kept").0, 5);
    // One that resumes at the reset's id, or inside the window, is not told.
    let mut after_reset = SseReader::open(&app.http, &url, Some(3)).await;
    assert_eq!(after_reset.next_event(WAIT).await.expect("kept").0, 4);
    let mut current = SseReader::open(&app.http, &url, Some(4)).await;
    assert_eq!(current.next_event(WAIT).await.expect("the newest").0, 5);
    app.finish().await;
}
