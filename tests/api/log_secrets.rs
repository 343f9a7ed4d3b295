//! No secret reaches a log line. Every log record of this test's process is captured at DEBUG, Herald's own and
//! its libraries' alike. Meanwhile Herald handles the secrets a deployment has: the Telegram bot token (in every
//! Bot API URL), a project's webhook secret (which signs, and wrongly signs, deliveries), API keys (good, wrong
//! and revoked), a dashboard session token, the JWT secret, and a JWT. Then the captured text is searched for
//! each of them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::helpers::{create_key, fixture, spawn_app, Bus, Reply, BOT_TOKEN, JWT_SECRET};

/// Everything the subscriber writes, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Each test is its own process under nextest, so this subscriber sees this test alone.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other subscriber in this process");

    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("logged").await;
    // A delivery that fails once (Telegram answers 500 and the token-bearing URL is retried), then succeeds.
    app.telegram.script([Reply::ServerError]);
    app.subscribe(project.id, 77, None).await;
    let body = fixture("workflow_run/completed.payload.json");
    assert_eq!(
        app.post_github(&project, "workflow_run", &body, "logged-1")
            .await
            .status(),
        202
    );
    let forged = app
        .post_github_signed(
            project.id,
            "workflow_run",
            &body,
            "logged-2",
            Some("sha256=00"),
        )
        .await;
    assert_eq!(forged.status(), 401);
    app.wait_for_messages(1).await;

    let key = create_key(&app.pool, api::auth::Role::Reader, &[]).await;
    let wrong_key = format!("{}ffff", &key[..key.len() - 4]);
    for credential in [&key, &wrong_key] {
        crate::helpers::client_with(credential)
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap();
    }
    let login = app
        .anonymous
        .post(app.url("/api/v1/session"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, token)| token.to_owned())
        .unwrap();
    app.anonymous
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("herald_session={session}"))
        .send()
        .await
        .unwrap();
    let jwt = app
        .settings
        .jwt
        .mint(&api::auth::jwt::Claims {
            sub: "log-test".into(),
            role: api::auth::Role::Reader,
            projects: vec![],
            exp: chrono::Utc::now().timestamp() + 60,
        })
        .unwrap();
    crate::helpers::client_with(&jwt)
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    app.drain().await;
    app.finish().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The capture holds Herald's own lines and its libraries' (the HTTP client that calls the Bot API).
    for source in ["herald_workers::relay", "delivery{", "hyper_util::client"] {
        assert!(logs.contains(source), "no log line from {source}:\n{logs}");
    }
    let bot_secret = BOT_TOKEN.split_once(':').unwrap().1;
    for (what, secret) in [
        ("the bot token", bot_secret),
        ("the webhook secret", project.secret.as_str()),
        ("an API key", key.as_str()),
        ("a wrong API key", wrong_key.as_str()),
        ("a session token", session.as_str()),
        ("the JWT secret", JWT_SECRET),
        ("a JWT", jwt.as_str()),
    ] {
        if let Some(line) = logs.lines().find(|line| line.contains(secret)) {
            panic!("{what} is in a log line: {line}");
        }
    }
}
