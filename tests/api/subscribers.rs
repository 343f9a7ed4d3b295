//! `/api/v1/subscribers`: registering people, their preferences and mute, their contacts (Telegram, push, email
//! with its verification link), Telegram link codes, and who may call what.
//!
//! Email needs a mailer in the API's state, which the spawned app does not have (its settings know no SMTP
//! server): those tests serve a second API over the spawned app's database with a fake mailer that records the
//! links it was asked to send. The spawned app's relay and projections pick up what that API records.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use api::{AppState, BoxFuture, VerificationMailer};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use domain::Language;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::smtp::SmtpServer;

async fn register(app: &TestApp, body: Value) -> Uuid {
    let response = app.post_json("/api/v1/subscribers", body).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["subscriber_id"].as_str().unwrap().parse().unwrap()
}

/// The subscriber as `GET /api/v1/subscribers/{id}` shows it once the read models caught up.
async fn show(app: &TestApp, id: Uuid) -> Value {
    app.drain().await;
    let response = app.get(&format!("/api/v1/subscribers/{id}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .unwrap()
        .to_utc()
}

#[tokio::test]
async fn subscribers_are_registered_shown_listed_and_their_preferences_replaced() {
    let app = spawn_app(Bus::InProcess).await;
    let response = app
        .post_json(
            "/api/v1/subscribers",
            json!({
                "name": "  Ada Lovelace ",
                "time_zone": "Europe/Berlin",
                "language": "de",
                "quiet_hours": { "start": "22:00", "end": "07:00" },
                "digest_minutes": 30
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let ada: Uuid = created["subscriber_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/api/v1/subscribers/{ada}"));
    assert_eq!(created["name"], "Ada Lovelace");
    let berlin = json!({
        "time_zone": "Europe/Berlin",
        "language": "de",
        "quiet_hours": { "start": "22:00", "end": "07:00" },
        "digest_minutes": 30,
        "edit_in_place": false
    });
    assert_eq!(created["preferences"], berlin);

    // At once, even before the read model has it.
    let (status, early) = send(app.http.get(app.url(&location))).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["name"], "Ada Lovelace");

    let shown = show(&app, ada).await;
    assert_eq!(shown["name"], "Ada Lovelace");
    assert_eq!(shown["preferences"], berlin);
    assert_eq!(shown["muted"], false);
    assert_eq!(shown["contacts"], json!([]));
    assert!(shown["created_at"].is_string());

    let ops = register(&app, json!({ "name": "Ops team" })).await;
    let defaults = show(&app, ops).await;
    assert_eq!(
        defaults["preferences"],
        json!({ "time_zone": "UTC", "language": "en", "quiet_hours": null, "digest_minutes": null, "edit_in_place": false })
    );

    let all: Value = app.get("/api/v1/subscribers").await.json().await.unwrap();
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada Lovelace", "Ops team"]);
    let filtered: Value = app
        .get("/api/v1/subscribers?name=OPS")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["items"][0]["subscriber_id"], ops.to_string());
    let paged: Value = app
        .get("/api/v1/subscribers?limit=1&offset=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paged["items"].as_array().unwrap().len(), 1);
    assert_eq!(paged["items"][0]["name"], "Ops team");

    let preferences = |body: Value| {
        app.http
            .put(app.url(&format!("/api/v1/subscribers/{ada}/preferences")))
            .json(&body)
    };
    let (status, changed) = send(preferences(
        json!({ "time_zone": "America/New_York", "language": "en" }),
    ))
    .await;
    assert_eq!(status, 200, "{changed}");
    let new_york = json!({
        "time_zone": "America/New_York", "language": "en", "quiet_hours": null, "digest_minutes": null,
        "edit_in_place": false
    });
    assert_eq!(changed, new_york);
    assert_eq!(show(&app, ada).await["preferences"], new_york);

    // Refusals name the field and record nothing.
    let before = app.event_count().await;
    for (body, field) in [
        (
            json!({ "name": "Bob", "time_zone": "Mars/Olympus" }),
            "time_zone",
        ),
        (json!({ "name": "Bob", "language": "xx" }), "language"),
        (
            json!({ "name": "Bob", "quiet_hours": { "start": "25:00", "end": "07:00" } }),
            "quiet_hours",
        ),
        (
            json!({ "name": "Bob", "quiet_hours": { "start": "09:00", "end": "09:00" } }),
            "quiet_hours",
        ),
        (
            json!({ "name": "Bob", "digest_minutes": 0 }),
            "digest_minutes",
        ),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "Bob", "colour": "blue" }), "colour"),
    ] {
        let (status, problem) =
            send(app.http.post(app.url("/api/v1/subscribers")).json(&body)).await;
        assert_eq!(status, 422, "{body} answered {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{body}: {problem}"
        );
    }
    let (status, _) = send(preferences(
        json!({ "time_zone": "Nowhere", "language": "en" }),
    ))
    .await;
    assert_eq!(status, 422);
    let (status, _) = send(preferences(json!({ "time_zone": "UTC" }))).await;
    assert_eq!(
        status, 422,
        "language is required when replacing preferences"
    );
    assert_eq!(app.event_count().await, before);

    let unknown = Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/api/v1/subscribers/{unknown}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get("/api/v1/subscribers/not-a-uuid").await.status(),
        404
    );
    let (status, _) = send(
        app.http
            .put(app.url(&format!("/api/v1/subscribers/{unknown}/preferences")))
            .json(&json!({ "time_zone": "UTC", "language": "en" })),
    )
    .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test]
async fn a_subscriber_is_muted_for_a_while_or_until_unmuted() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, json!({ "name": "Ada" })).await;
    let mute = format!("/api/v1/subscribers/{ada}/mute");

    let asked = Utc::now();
    let (status, muted) = send(
        app.http
            .post(app.url(&mute))
            .json(&json!({ "for_secs": 3600 })),
    )
    .await;
    assert_eq!(status, 200, "{muted}");
    assert_eq!(muted["muted"], true);
    let until = time(&muted["muted_until"]);
    assert!((until - (asked + TimeDelta::hours(1))).num_seconds().abs() < 60);
    let shown = show(&app, ada).await;
    assert_eq!(shown["muted"], true);
    assert_eq!(time(&shown["muted_until"]), until);

    let (status, _) = send(app.http.delete(app.url(&mute))).await;
    assert_eq!(status, 204);
    let shown = show(&app, ada).await;
    assert_eq!(shown["muted"], false);
    assert!(shown["muted_until"].is_null());

    let before = app.event_count().await;
    let past = (Utc::now() - TimeDelta::minutes(5)).to_rfc3339();
    for body in [
        json!({ "until": past }),
        json!({ "for_secs": 0 }),
        json!({ "until": (Utc::now() + TimeDelta::hours(1)).to_rfc3339(), "for_secs": 60 }),
        json!({ "until": "tomorrow" }),
        json!({ "for": 60 }),
    ] {
        let (status, problem) = send(app.http.post(app.url(&mute)).json(&body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    assert_eq!(app.event_count().await, before);

    // No body: until unmuted.
    let (status, forever) = send(app.http.post(app.url(&mute))).await;
    assert_eq!(status, 200, "{forever}");
    assert!(forever["muted_until"].is_null());
    let shown = show(&app, ada).await;
    assert_eq!(shown["muted"], true);
    assert!(shown["muted_until"].is_null());

    let until = (Utc::now() + TimeDelta::days(2)).to_rfc3339();
    let (status, later) = send(
        app.http
            .post(app.url(&mute))
            .json(&json!({ "until": until })),
    )
    .await;
    assert_eq!(status, 200);
    // Kept to the microsecond, as the read model keeps it.
    let asked_until = time(&json!(until));
    assert!((time(&later["muted_until"]) - asked_until).num_microseconds() == Some(0));
    assert_eq!(
        time(&show(&app, ada).await["muted_until"]),
        time(&later["muted_until"])
    );

    let (status, _) = send(
        app.http
            .post(app.url(&format!("/api/v1/subscribers/{}/mute", Uuid::new_v4())))
            .json(&json!({ "for_secs": 60 })),
    )
    .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test]
async fn contacts_are_added_once_disabled_enabled_and_removed() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, json!({ "name": "Ada" })).await;
    let contacts = format!("/api/v1/subscribers/{ada}/contacts");

    let (status, chat) = send(
        app.http
            .post(app.url(&contacts))
            .json(&json!({ "kind": "telegram", "chat_id": 4242 })),
    )
    .await;
    assert_eq!(status, 201, "{chat}");
    assert_eq!(chat["kind"], "telegram");
    assert_eq!(chat["verified"], true);
    let chat_id: Uuid = chat["contact_id"].as_str().unwrap().parse().unwrap();

    let before = app.event_count().await;
    let (status, problem) = send(
        app.http
            .post(app.url(&contacts))
            .json(&json!({ "kind": "telegram", "chat_id": 4242, "chat_type": "group" })),
    )
    .await;
    assert_eq!(status, 409, "the same chat twice: {problem}");
    for body in [
        json!({ "kind": "telegram", "chat_id": 0 }),
        json!({ "kind": "telegram", "chat_id": 5, "chat_type": "castle" }),
        json!({ "kind": "pigeon", "loft": "roof" }),
        json!({ "kind": "fcm", "token": "" }),
        json!({ "kind": "web_push", "endpoint": "http://push.example.com/x", "p256dh": "BN", "auth": "tB" }),
        json!({ "kind": "web_push", "endpoint": "https://push.example.com/x", "p256dh": "B N", "auth": "tB" }),
        json!({ "kind": "email", "address": "not an address" }),
        json!({ "kind": "telegram", "chat_id": 5, "colour": "blue" }),
    ] {
        let (status, problem) = send(app.http.post(app.url(&contacts)).json(&body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    assert_eq!(app.event_count().await, before);

    let fcm_token = "fcmTOKENabcdefghijklmnopqrstuvwxyz0123456789";
    let (status, fcm) = send(
        app.http
            .post(app.url(&contacts))
            .json(&json!({ "kind": "fcm", "token": fcm_token })),
    )
    .await;
    assert_eq!(status, 201, "{fcm}");
    assert_eq!(fcm["verified"], true);
    let push = json!({
        "kind": "web_push",
        "endpoint": "https://push.example.com/wpush/v2/gAAAAABk-secret-subscription",
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg"
    });
    let (status, web) = send(app.http.post(app.url(&contacts)).json(&push)).await;
    assert_eq!(status, 201, "{web}");

    let shown = show(&app, ada).await;
    let text = shown.to_string();
    for secret in [
        fcm_token,
        "gAAAAABk-secret-subscription",
        push["p256dh"].as_str().unwrap(),
        push["auth"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "the view shows {secret}: {text}");
    }
    let kinds: Vec<&str> = shown["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["telegram", "fcm", "web_push"]);
    assert_eq!(shown["contacts"][0]["chat_id"], 4242);
    assert_eq!(shown["contacts"][0]["chat_type"], "private");
    assert_eq!(shown["contacts"][1]["token_hint"], "fcmTOKEN…");
    assert_eq!(shown["contacts"][2]["push_service"], "push.example.com");
    assert_eq!(shown["contacts"][2]["token_hint"], "gAAAAABk…");

    let contact = format!("{contacts}/{chat_id}");
    let (status, _) = send(
        app.http
            .post(app.url(&format!("{contact}/disable")))
            .json(&json!({ "reason": "left the team" })),
    )
    .await;
    assert_eq!(status, 204);
    let disabled = &show(&app, ada).await["contacts"][0];
    assert_eq!(disabled["contact_id"], chat_id.to_string());
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "left the team");

    let (status, _) = send(app.http.post(app.url(&format!("{contact}/enable")))).await;
    assert_eq!(status, 204);
    let enabled = &show(&app, ada).await["contacts"][0];
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null());

    // Without a body, an operator is the reason.
    let (status, _) = send(app.http.post(app.url(&format!("{contact}/disable")))).await;
    assert_eq!(status, 204);
    assert_eq!(
        show(&app, ada).await["contacts"][0]["disabled_reason"],
        "disabled by an operator"
    );

    let (status, _) = send(app.http.delete(app.url(&contact))).await;
    assert_eq!(status, 204);
    let remaining = show(&app, ada).await;
    assert!(remaining["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["contact_id"] != chat_id.to_string()));
    assert_eq!(remaining["contacts"].as_array().unwrap().len(), 2);

    let (status, problem) = send(app.http.delete(app.url(&contact))).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["detail"], "contact not found");
    let unknown = format!("{contacts}/{}", Uuid::new_v4());
    for path in [format!("{unknown}/enable"), format!("{unknown}/disable")] {
        let (status, _) = send(app.http.post(app.url(&path))).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = send(
        app.http
            .post(app.url(&format!("/api/v1/subscribers/{}/contacts", Uuid::new_v4())))
            .json(&json!({ "kind": "telegram", "chat_id": 1 })),
    )
    .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test]
async fn an_email_contact_needs_a_configured_mailer() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, json!({ "name": "Ada" })).await;
    app.drain().await;
    let before = app.event_count().await;
    let (status, problem) = send(
        app.http
            .post(app.url(&format!("/api/v1/subscribers/{ada}/contacts")))
            .json(&json!({ "kind": "email", "address": "ada@example.com" })),
    )
    .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["detail"], "email is not configured");
    assert_eq!(app.event_count().await, before, "nothing is recorded");
    assert_eq!(show(&app, ada).await["contacts"], json!([]));
    app.finish().await;
}

/// One verification email the fake was asked to send.
#[derive(Clone, Debug)]
struct Sent {
    to: String,
    link: String,
    language: Language,
}

/// Records what it is asked to send; refuses while `failing`.
#[derive(Default)]
struct FakeMailer {
    sent: Mutex<Vec<Sent>>,
    failing: Mutex<bool>,
}

impl FakeMailer {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }
}

impl VerificationMailer for FakeMailer {
    fn send_verification(
        &self,
        to: &str,
        link: &str,
        language: Language,
    ) -> BoxFuture<'_, Result<(), String>> {
        let sent = Sent {
            to: to.to_owned(),
            link: link.to_owned(),
            language,
        };
        Box::pin(async move {
            if *self.failing.lock().unwrap() {
                return Err("451 4.3.0 mail server busy".to_owned());
            }
            self.sent.lock().unwrap().push(sent);
            Ok(())
        })
    }
}

/// A second API over `app`'s database, its state changed by `edit`; returns its base URL.
async fn serve_api(app: &TestApp, edit: impl FnOnce(AppState) -> AppState) -> String {
    let commands = Arc::new(commands::Commands::new(app.pool.clone()));
    let state = AppState::new(
        commands,
        app.pool.clone(),
        app.settings.public_url.clone(),
        Vec::new(),
    )
    .with_limits(&app.settings.limits);
    let router = api::router(edit(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

/// The path and query of a link in a mail (its host is the configured public URL, not the test server).
fn path_of(link: &str, public_url: &str) -> String {
    link.strip_prefix(public_url)
        .unwrap_or_else(|| panic!("{link} is not under {public_url}"))
        .to_owned()
}

#[tokio::test]
async fn an_email_address_is_verified_by_the_link_it_was_sent() {
    let app = spawn_app(Bus::InProcess).await;
    let mailer = Arc::new(FakeMailer::default());
    let with_mail = serve_api(&app, |state| state.with_mailer(mailer.clone())).await;
    let ada = register(&app, json!({ "name": "Ada", "language": "de" })).await;
    let contacts = format!("{with_mail}/api/v1/subscribers/{ada}/contacts");
    let email = json!({ "kind": "email", "address": " Ada@Example.COM " });

    // The mail server refuses: nothing is recorded, and the same request later succeeds.
    mailer.fail(true);
    let before = app.event_count().await;
    let (status, problem) = send(app.http.post(&contacts).json(&email)).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["type"], "urn:herald:problem:bad-gateway");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("mail server busy"));
    assert!(problem["trace_id"].is_string());
    assert_eq!(app.event_count().await, before);
    mailer.fail(false);

    let (status, added) = send(app.http.post(&contacts).json(&email)).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["kind"], "email");
    assert_eq!(added["verified"], false);
    let contact_id = added["contact_id"].as_str().unwrap().to_owned();
    let sent = mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "Ada@example.com");
    assert_eq!(sent[0].language, Language::De);
    let public_url = app.settings.public_url.clone();
    assert!(
        sent[0]
            .link
            .starts_with(&format!("{public_url}/api/v1/contacts/verify?token=")),
        "{}",
        sent[0].link
    );
    let shown = show(&app, ada).await;
    assert_eq!(shown["contacts"][0]["email"], "Ada@example.com");
    assert_eq!(shown["contacts"][0]["verified"], false);
    assert!(
        !shown.to_string().contains("sha256") && !shown.to_string().contains("verification"),
        "no verification hash is shown: {shown}"
    );

    // The same address in another case is the same place: 409 before any mail goes out.
    let (status, _) = send(
        app.http
            .post(&contacts)
            .json(&json!({ "kind": "email", "address": "ada@example.com" })),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(mailer.sent().len(), 1);

    // A token with the right ids and a wrong secret is refused.
    let first = path_of(&sent[0].link, &public_url);
    let forged = format!(
        "{}{}",
        &first[..first.len() - 1],
        if first.ends_with('A') { 'B' } else { 'A' }
    );
    let (status, problem) = send(app.anonymous.get(app.url(&forged))).await;
    assert_eq!(status, 410, "{problem}");

    // Where no mailer is configured no new link can go out.
    let (status, problem) = send(app.http.post(app.url(&format!(
        "/api/v1/subscribers/{ada}/contacts/{contact_id}/verification"
    ))))
    .await;
    assert_eq!(status, 503, "{problem}");

    // A new link replaces the first one.
    let resend = format!("{contacts}/{contact_id}/verification");
    let (status, renewed) = send(app.http.post(&resend)).await;
    assert_eq!(status, 202, "{renewed}");
    assert!(time(&renewed["expires_at"]) > Utc::now() + TimeDelta::hours(23));
    let sent = mailer.sent();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[1].link, sent[0].link);
    let (status, _) = send(app.anonymous.get(app.url(&first))).await;
    assert_eq!(status, 410, "the replaced link no longer works");

    // The person follows the new link: no credentials, a small page, and the address is verified.
    let link = path_of(&sent[1].link, &public_url);
    let response = app.anonymous.get(app.url(&link)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("Adresse bestätigt"), "{page}");
    assert_eq!(show(&app, ada).await["contacts"][0]["verified"], true);

    // Following it again is fine; a verified address gets no new link; garbage is refused.
    let (status, _) = send(app.anonymous.get(app.url(&link))).await;
    assert_eq!(status, 200);
    let (status, _) = send(app.http.post(&resend)).await;
    assert_eq!(status, 409);
    assert_eq!(mailer.sent().len(), 2);
    let (status, problem) = send(
        app.anonymous
            .get(app.url("/api/v1/contacts/verify?token=nonsense")),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(
        problem["type"], "urn:herald:problem:gone",
        "a problem, not a page: {problem}"
    );

    // A chat never needs verifying.
    let (status, chat) = send(
        app.http
            .post(&contacts)
            .json(&json!({ "kind": "telegram", "chat_id": 77 })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(app.http.post(format!(
        "{contacts}/{}/verification",
        chat["contact_id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(status, 409);
    app.finish().await;
}

#[tokio::test]
async fn a_link_code_fits_a_telegram_deep_link() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, json!({ "name": "Ada" })).await;
    let (status, issued) = send(
        app.http
            .post(app.url(&format!("/api/v1/subscribers/{ada}/link-codes"))),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let code = issued["code"].as_str().unwrap();
    assert!(!code.is_empty() && code.len() <= 64, "{code}");
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let expires = time(&issued["expires_at"]);
    assert!(expires > Utc::now() + TimeDelta::minutes(10));
    assert!(expires <= Utc::now() + TimeDelta::minutes(16));
    // Herald asked the (fake) Telegram for its bot's name at start.
    assert_eq!(
        issued["deep_link"],
        format!("https://t.me/herald_test_bot?start={code}")
    );

    // An API that does not know its bot's name hands out the bare code.
    let without_bot = serve_api(&app, |state| state).await;
    let (status, issued) = send(
        app.http
            .post(format!("{without_bot}/api/v1/subscribers/{ada}/link-codes")),
    )
    .await;
    assert_eq!(status, 201);
    assert!(issued["deep_link"].is_null(), "{issued}");
    assert!(issued["code"].as_str().unwrap().len() <= 64);
    let with_bot = serve_api(&app, |state| state.with_bot_username("@other_bot")).await;
    let (status, issued) = send(
        app.http
            .post(format!("{with_bot}/api/v1/subscribers/{ada}/link-codes")),
    )
    .await;
    assert_eq!(status, 201);
    let code = issued["code"].as_str().unwrap();
    assert_eq!(
        issued["deep_link"],
        format!("https://t.me/other_bot?start={code}")
    );

    let (status, _) = send(app.http.post(app.url(&format!(
        "/api/v1/subscribers/{}/link-codes",
        Uuid::new_v4()
    ))))
    .await;
    assert_eq!(status, 404);
    app.finish().await;
}

#[tokio::test]
async fn readers_read_operators_change_and_anyone_follows_a_verification_link() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, json!({ "name": "Ada" })).await;
    app.drain().await;
    let reader = client_with(&create_key(&app.pool, api::auth::Role::Reader, &[]).await);
    let operator = client_with(&create_key(&app.pool, api::auth::Role::Operator, &[]).await);
    let auditor = client_with(&create_key(&app.pool, api::auth::Role::Auditor, &[]).await);

    let list = app.url("/api/v1/subscribers");
    let one = app.url(&format!("/api/v1/subscribers/{ada}"));
    for url in [&list, &one] {
        let (status, _) = send(reader.get(url)).await;
        assert_eq!(status, 200, "a reader reads {url}");
        let (status, _) = send(auditor.get(url)).await;
        assert_eq!(status, 403, "an auditor does not read {url}");
        let (status, problem) = send(app.anonymous.get(url)).await;
        assert_eq!(status, 401, "{problem}");
    }
    let before = app.event_count().await;
    let (status, _) = send(reader.post(&list).json(&json!({ "name": "Eve" }))).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        reader
            .post(app.url(&format!("/api/v1/subscribers/{ada}/contacts")))
            .json(&json!({ "kind": "telegram", "chat_id": 5 })),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        reader
            .put(app.url(&format!("/api/v1/subscribers/{ada}/preferences")))
            .json(&json!({ "time_zone": "UTC", "language": "de" })),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        app.anonymous
            .post(app.url(&format!("/api/v1/subscribers/{ada}/link-codes"))),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(app.event_count().await, before);

    let (status, _) = send(
        operator
            .post(app.url(&format!("/api/v1/subscribers/{ada}/mute")))
            .json(&json!({ "for_secs": 60 })),
    )
    .await;
    assert_eq!(status, 200, "operators change subscribers");

    // The verification link needs no credentials (and a stale one does not get in its way).
    let (status, problem) = send(
        app.anonymous
            .get(app.url("/api/v1/contacts/verify?token=nonsense")),
    )
    .await;
    assert_eq!(status, 410, "{problem}");
    let (status, _) =
        send(client_with("hrld_stale_key").get(app.url("/api/v1/contacts/verify?token=nonsense")))
            .await;
    assert_eq!(status, 410);
    app.finish().await;
}

#[tokio::test]
async fn an_email_contact_is_verified_through_a_real_mail_server() {
    let server = SmtpServer::start().await;
    let url = server.url();
    let app = spawn_app_configured(Bus::InProcess, &herald::Role::ALL, |settings| {
        settings.email = Some(workers::email::EmailConfig {
            url,
            from: "Herald <herald@example.com>".to_owned(),
            timeout: std::time::Duration::from_secs(5),
        });
    })
    .await;
    let ann = register(&app, json!({ "name": "Ann" })).await;
    let contacts = format!("/api/v1/subscribers/{ann}/contacts");

    // The server turns the address away: 502, nothing recorded.
    let before = app.event_count().await;
    let (status, problem) = send(
        app.http
            .post(app.url(&contacts))
            .json(&json!({ "kind": "email", "address": "refused@example.com" })),
    )
    .await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(app.event_count().await, before);

    let (status, added) = send(
        app.http
            .post(app.url(&contacts))
            .json(&json!({ "kind": "email", "address": "ann@Example.com" })),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["verified"], false);
    let mail = server.wait_for(1).await.remove(0);
    assert_eq!(mail.to, "ann@example.com");
    let public_url = app.settings.public_url.clone();
    let prefix = format!("{public_url}/api/v1/contacts/verify?token=");
    let start = mail
        .text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no verification link in {:?}", mail.text));
    let link: String = mail.text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let response = app
        .anonymous
        .get(app.url(&path_of(&link, &public_url)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("Address verified"));
    let shown = show(&app, ann).await;
    assert_eq!(shown["contacts"][0]["email"], "ann@example.com");
    assert_eq!(shown["contacts"][0]["verified"], true);
    app.finish().await;
}
