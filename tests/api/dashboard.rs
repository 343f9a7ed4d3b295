//! The web dashboard's server side: logging in with an API key into a session cookie, what the cookie may and
//! may not do, a subscriber's own `/api/v1/me`, and the embedded files. The page itself is driven in a real
//! browser by `e2e.rs`.

use std::time::Duration;

use api::auth::keys::{ApiKeys, KeySpec};
use api::auth::Role;
use domain::{ChatId, ChatKind, ContactAddress, Preferences};
use reqwest::header::{HeaderMap, HeaderValue, COOKIE};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, wait_until, Bus, TestApp};

/// A key with `role` that stands for `subscriber`.
pub async fn subscriber_key(app: &TestApp, role: Role, subscriber: Option<Uuid>) -> String {
    ApiKeys::new(app.pool.clone())
        .create(&KeySpec {
            name: "dashboard test",
            role,
            projects: &[],
            subscriber_id: subscriber,
            expires_at: None,
        })
        .await
        .expect("create key")
        .key
}

/// Log in with `key`; the client then sends the session cookie (and nothing else) with every request.
async fn log_in(app: &TestApp, key: &str) -> (reqwest::Client, Value) {
    let response = app
        .anonymous
        .post(app.url("/api/v1/session"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains(key),
        "the cookie holds a session, not the key"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&session).unwrap());
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    (client, response.json().await.unwrap())
}

/// A change from the dashboard: the session cookie and the CSRF header the page sends with every change.
async fn change(
    browser: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = browser.request(method, url).header("x-herald-csrf", "1");
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// A subscriber with one Telegram contact, registered through the command side.
pub async fn subscriber_with_chat(app: &TestApp, chat: i64) -> (Uuid, Uuid) {
    let commands = commands::Commands::new(app.pool.clone());
    let none = commands::Metadata::new();
    let subscriber = commands
        .register_subscriber("Ann", Preferences::default(), &none)
        .await
        .unwrap();
    let contact = Uuid::new_v4();
    let address = ContactAddress::Telegram {
        chat_id: ChatId::parse(chat).unwrap(),
        chat_type: ChatKind::Private,
        topic_id: None,
    };
    commands
        .add_contact(subscriber, contact, address, None, &none)
        .await
        .unwrap();
    (subscriber, contact)
}

#[tokio::test]
async fn a_session_stands_for_its_key_until_logout_and_changes_nothing_without_the_csrf_header() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let wrong = app
        .anonymous
        .post(app.url("/api/v1/session"))
        .json(&json!({ "key": "hrld_00000000_nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let not_a_key = app
        .anonymous
        .post(app.url("/api/v1/session"))
        .json(&json!({ "key": "password123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_key.status(), 401);

    let project = app.create_project("session").await;
    let key = subscriber_key(&app, Role::Operator, None).await;
    let (browser, session) = log_in(&app, &key).await;
    assert_eq!(session["role"], "operator");
    assert_eq!(session["subscriber_id"], Value::Null);
    let me: Value = browser
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "operator");
    assert_eq!(me["id"], session["id"]);

    // A page elsewhere can make the browser send the cookie, but not the header: refused, nothing created.
    let events_before = app.count("SELECT count(*) FROM events").await;
    let forged = browser
        .post(app.url("/api/v1/subscriptions"))
        .json(&json!({ "chat_id": 5, "project_id": project.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        app.count("SELECT count(*) FROM events").await,
        events_before
    );
    let genuine = change(
        &browser,
        Method::POST,
        app.url("/api/v1/subscriptions"),
        Some(json!({ "chat_id": 5, "project_id": project.id })),
    )
    .await;
    assert_eq!(genuine.status(), 201);

    // The session's role is the key's: an operator may not administer.
    let keys = browser.get(app.url("/api/v1/keys")).send().await.unwrap();
    assert_eq!(keys.status(), 403);

    let logout = browser
        .delete(app.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = browser.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(after.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let key = subscriber_key(&app, Role::Reader, None).await;
    let (browser, session) = log_in(&app, &key).await;
    assert_eq!(
        browser
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let key_id: Uuid =
        sqlx::query_scalar("SELECT key_id FROM api_keys WHERE 'key:hrld_' || prefix = $1")
            .bind(session["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let revoked = app
        .http
        .delete(app.url(&format!("/api/v1/keys/{key_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = browser
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // And the key cannot start a new one.
    let again = app
        .anonymous
        .post(app.url("/api/v1/session"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    app.finish().await;
}

#[tokio::test]
async fn a_subscriber_manages_its_own_subscriptions_and_nobody_elses() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("mine").await;
    let (ann, ann_chat) = subscriber_with_chat(&app, 7001).await;
    let (bob, bob_chat) = subscriber_with_chat(&app, 7002).await;
    let key = subscriber_key(&app, Role::Reader, Some(ann)).await;
    let (browser, session) = log_in(&app, &key).await;
    assert_eq!(session["subscriber_id"], ann.to_string());

    let me: Value = browser
        .get(app.url("/api/v1/me/subscriber"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subscriber_id"], ann.to_string());

    // Subscribing someone else's contact, or a bare chat, is not what /me is for.
    for body in [
        json!({ "contact_id": bob_chat, "project_id": project.id }),
        json!({ "subscriber_id": bob, "contact_id": bob_chat, "project_id": project.id }),
        json!({ "chat_id": 99, "project_id": project.id }),
    ] {
        let refused = change(
            &browser,
            Method::POST,
            app.url("/api/v1/me/subscriptions"),
            Some(body.clone()),
        )
        .await;
        assert!(
            [404, 422].contains(&refused.status().as_u16()),
            "{body} answered {}",
            refused.status()
        );
    }
    let created = change(
        &browser,
        Method::POST,
        app.url("/api/v1/me/subscriptions"),
        Some(json!({ "contact_id": ann_chat, "project_id": project.id, "outcomes": ["failed"] })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["subscriber_id"], ann.to_string());
    let mine: Uuid = created["subscription_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Bob's subscription, made by an operator.
    let theirs = app
        .post_json(
            "/api/v1/subscriptions",
            json!({ "subscriber_id": bob, "contact_id": bob_chat, "project_id": project.id }),
        )
        .await;
    assert_eq!(theirs.status(), 201);
    let theirs: Value = theirs.json().await.unwrap();
    let theirs = theirs["subscription_id"].as_str().unwrap().to_owned();

    let pool = app.pool.clone();
    wait_until(
        "both subscriptions are projected",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM subscriptions WHERE active")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == 2
            }
        },
    )
    .await;
    let listed: Value = browser
        .get(app.url("/api/v1/me/subscriptions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscription_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.to_string()]);

    let not_mine = change(
        &browser,
        Method::DELETE,
        app.url(&format!("/api/v1/me/subscriptions/{theirs}")),
        None,
    )
    .await;
    assert_eq!(not_mine.status(), 404);
    let still: Value = app
        .get(&format!("/api/v1/subscriptions/{theirs}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["active"], true, "Bob's subscription is untouched");

    let removed = change(
        &browser,
        Method::DELETE,
        app.url(&format!("/api/v1/me/subscriptions/{mine}")),
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);

    let preferences = change(
        &browser,
        Method::PUT,
        app.url("/api/v1/me/preferences"),
        Some(json!({ "time_zone": "Europe/Berlin", "language": "de", "digest_minutes": 30 })),
    )
    .await;
    assert_eq!(preferences.status(), 200);
    let bad = change(
        &browser,
        Method::PUT,
        app.url("/api/v1/me/preferences"),
        Some(json!({ "time_zone": "Mars/Olympus", "language": "de" })),
    )
    .await;
    assert_eq!(bad.status(), 422);
    let ann_now = commands::Commands::new(app.pool.clone())
        .subscriber(ann)
        .await
        .unwrap();
    assert_eq!(ann_now.preferences.time_zone.as_str(), "Europe/Berlin");
    let bob_now = commands::Commands::new(app.pool.clone())
        .subscriber(bob)
        .await
        .unwrap();
    assert_eq!(bob_now.preferences.time_zone.as_str(), "UTC");

    let code = change(
        &browser,
        Method::POST,
        app.url("/api/v1/me/link-codes"),
        None,
    )
    .await;
    assert_eq!(code.status(), 201);
    let code: Value = code.json().await.unwrap();
    assert!(code["code"].as_str().is_some_and(|c| c.len() > 8));

    // A key that stands for no subscriber has no /me subscriber.
    let plain = subscriber_key(&app, Role::Reader, None).await;
    let (stranger, _) = log_in(&app, &plain).await;
    let none = stranger
        .get(app.url("/api/v1/me/subscriber"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    app.finish().await;
}

#[tokio::test]
async fn a_key_for_an_unknown_subscriber_is_refused() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let response = app
        .post_json(
            "/api/v1/keys",
            json!({ "name": "ghost", "role": "reader", "subscriber_id": Uuid::new_v4() }),
        )
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 1);
    app.finish().await;
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui/");

    let page = app.anonymous.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(html.contains("/ui/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let again = app
        .anonymous
        .get(app.url("/ui/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let script = app
        .anonymous
        .get(app.url("/ui/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for missing in ["/ui/nope.js", "/ui/..%2FCargo.toml", "/ui/build.rs"] {
        let response = app.anonymous.get(app.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }
    app.finish().await;
}
