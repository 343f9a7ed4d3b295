//! Bad input at the HTTP edge is refused cleanly and changes nothing: bodies over the limit, invalid UTF-8,
//! JSON nested past any sane depth, and clients that send their request slower than the request timeout
//! (slowloris) — which must not hold a connection open for ever.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_configured, Bus, TestApp};

/// The request timeout of these tests: short, so the slow clients are cut off quickly.
const TIMEOUT: Duration = Duration::from_secs(1);

async fn app() -> TestApp {
    spawn_app_configured(Bus::InProcess, &[], |settings| {
        settings.http.request_timeout = TIMEOUT;
    })
    .await
}

/// POST `body` as JSON to `path`; the answer's status and problem document.
async fn post(app: &TestApp, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn oversize_invalid_and_deeply_nested_bodies_are_refused_and_record_nothing() {
    // The default request timeout: on a loaded machine, uploading 5 MiB can take longer than the 1 s of the
    // slow-client tests, which made this test answer 408 instead of 413 now and then.
    let app = spawn_app_configured(Bus::InProcess, &[], |_| {}).await;
    let before = app.event_count().await;

    let huge = format!(r#"{{"name":"{}"}}"#, "a".repeat(api::MAX_BODY_BYTES + 1));
    let (status, problem) = post(&app, "/api/v1/projects", huge.into_bytes()).await;
    assert_eq!(status, 413, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("larger than"));

    let (status, problem) = post(
        &app,
        "/api/v1/projects",
        b"{\"name\":\"\xff\xfe\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{problem}");

    // 100,000 levels: the parser gives up at its recursion limit instead of overflowing the stack.
    let nested = format!(
        r#"{{"chat_id":1,"branches":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, problem) = post(&app, "/api/v1/subscriptions", nested.into_bytes()).await;
    assert!([400, 422].contains(&status), "{status}: {problem}");

    assert_eq!(app.event_count().await, before, "nothing was recorded");
    let health = app.anonymous.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "and Herald is still up");
    app.finish().await;
}

/// Read from `stream` until it is closed; how long that took, or `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0_u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), received)),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = app().await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: herald\r\nX-Slow: ")
        .await
        .unwrap();
    // Meanwhile everybody else is served.
    let health = app.anonymous.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (after, _) = closed_within(&mut slow, Duration::from_secs(10))
        .await
        .expect("the half-sent request's connection is closed");
    assert!(
        after < TIMEOUT * 4,
        "closed after {after:?}, the request timeout is {TIMEOUT:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408_and_changes_nothing() {
    let app = app().await;
    let key = crate::helpers::create_key(&app.pool, api::auth::Role::Admin, &[]).await;
    let before = app.event_count().await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (after, answer) = closed_within(&mut slow, Duration::from_secs(10))
        .await
        .expect("the connection is answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A problem document, as every other refusal.
    assert!(
        answer.contains("application/problem+json") && answer.contains("request-timeout"),
        "{answer}"
    );
    assert!(after < TIMEOUT * 4, "answered after {after:?}");
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

/// JSON can carry U+0000, but Postgres `text` and `jsonb` cannot: such a webhook used to fail with a 500, which a CI
/// system retries for ever. It is the caller's input, so the answer is a 422 that names the field.
#[tokio::test]
async fn a_nul_character_in_anything_herald_would_store_is_refused_and_records_nothing() {
    let app = spawn_app_configured(Bus::InProcess, &herald::Role::ALL, |_| {}).await;
    let project = app.create_project("nul").await;
    app.drain().await;
    let before = app.event_count().await;

    // The same completed run, with `message` as its commit message.
    let post_run = async |message: &str, delivery: &str| {
        let body = crate::helpers::fixture_with("workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["head_commit"]["message"] = message.into();
        });
        app.post_github(&project, "workflow_run", &body, delivery)
            .await
    };
    let response = post_run("fix\u{0}the build", "nul-1").await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("run.commit_message") && detail.contains("NUL"),
        "{problem}"
    );

    // A field the run is looked up by (its branch, for the previous verdict) is refused the same way.
    let body = serde_json::json!({ "repository": "acme/api", "workflow": "deploy", "run_id": 9,
                                   "status": "failed", "branch": "ma\u{0}in" });
    let response = app
        .post_webhook(
            "generic",
            project.id,
            "",
            &[("x-herald-token", project.secret.as_str())],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("run.branch"),
        "{problem}"
    );

    let template = app
        .http
        .put(app.url("/api/v1/templates/build_finished.telegram.en"))
        .json(&serde_json::json!({ "parts": { "text": "a\u{0}b" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(template.status(), 422);
    // Not every input becomes an event: an API key's name goes straight to its table.
    let keys = app.count("SELECT count(*) FROM api_keys").await;
    let key = app
        .http
        .post(app.url("/api/v1/keys"))
        .json(&serde_json::json!({ "name": "ci\u{0}", "role": "reader" }))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 422);
    let problem: Value = key.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("NUL"),
        "{problem}"
    );
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, keys);
    assert_eq!(app.event_count().await, before, "nothing was recorded");

    // The refusal is in the delivery log, and the same run without the character is taken and projected.
    let deliveries: Value = app
        .get(&format!("/api/v1/projects/{}/deliveries", project.id))
        .await
        .json()
        .await
        .unwrap();
    let refused = &deliveries["items"][0];
    assert_eq!(refused["http_status"], 422, "{deliveries}");
    assert_eq!(post_run("fix the build", "nul-2").await.status(), 202);
    app.drain().await;
    assert_eq!(app.count("SELECT count(*) FROM build_runs").await, 1);
    app.finish().await;
}
