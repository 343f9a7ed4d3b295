//! One-click unsubscribe (RFC 8058): the signed link in every email asks on GET and unsubscribes on POST, and a
//! link that was not made by this Herald names nothing.

use commands::unsubscribe::{signing_key, token, unsubscribe_url, verify};
use commands::{Commands, Metadata};
use domain::ContactAddress;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// A subscriber with a verified email address, subscribed to failures of `project` on main.
async fn email_subscription(app: &TestApp, project: Uuid) -> Uuid {
    let response = app
        .post_json("/api/v1/subscribers", json!({ "name": "Ann" }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let subscriber_id: Uuid = body["subscriber_id"].as_str().unwrap().parse().unwrap();
    let commands = Commands::new(app.pool.clone());
    let contact_id = Uuid::new_v4();
    let (verification, hash) = Commands::verification_token(subscriber_id, contact_id);
    let address = ContactAddress::Email {
        address: "ann@example.com".into(),
    };
    commands
        .add_contact(
            subscriber_id,
            contact_id,
            address,
            Some(hash),
            &Metadata::new(),
        )
        .await
        .unwrap();
    commands
        .verify_contact(&verification, &Metadata::new())
        .await
        .unwrap();
    let response = app
        .post_json(
            "/api/v1/subscriptions",
            json!({ "subscriber_id": subscriber_id, "contact_id": contact_id, "project_id": project,
                    "branches": ["main"], "outcomes": ["failed", "fixed"] }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let subscription_id = body["subscription_id"].as_str().unwrap().parse().unwrap();
    app.drain().await;
    subscription_id
}

async fn subscription(app: &TestApp, id: Uuid) -> Value {
    app.drain().await;
    app.get(&format!("/api/v1/subscriptions/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// The path of an unsubscribe link (its host is the configured public URL, not the test server).
fn path_of(app: &TestApp, link: &str) -> String {
    link.strip_prefix(app.settings.public_url.trim_end_matches('/'))
        .unwrap_or_else(|| panic!("{link} is not under the public URL"))
        .to_owned()
}

#[tokio::test]
async fn a_token_round_trips_and_a_tampered_one_names_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("acme/api").await;
    let id = email_subscription(&app, project.id).await;

    // Two processes starting at once agree on the key, and it stays the same.
    let (a, b) = tokio::join!(signing_key(&app.pool), signing_key(&app.pool));
    let key = a.unwrap();
    assert_eq!(key, b.unwrap());
    assert_eq!(signing_key(&app.pool).await.unwrap(), key);
    let good = token(&key, id);
    assert_eq!(verify(&key, &good), Some(id));
    let link = unsubscribe_url(&app.settings.public_url, &good);
    assert_eq!(
        link,
        format!("http://herald.test/api/v1/unsubscribe/{good}")
    );

    let events = app.event_count().await;
    let mut tampered = good.clone().into_bytes();
    tampered[30] = if tampered[30] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    let forged = token(&[9; 32], id);
    for bad in [tampered.as_str(), forged.as_str(), "nonsense", "%00"] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let response = app
                .anonymous
                .request(
                    method.clone(),
                    app.url(&format!("/api/v1/unsubscribe/{bad}")),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 404, "{method} {bad}");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["detail"], "unsubscribe link not found");
        }
    }
    assert_eq!(app.event_count().await, events);
    assert_eq!(subscription(&app, id).await["active"], true);
    app.finish().await;
}

#[tokio::test]
async fn following_the_link_only_asks_and_the_one_click_post_unsubscribes() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("acme/api").await;
    let id = email_subscription(&app, project.id).await;
    let key = signing_key(&app.pool).await.unwrap();
    let path = path_of(
        &app,
        &unsubscribe_url(&app.settings.public_url, &token(&key, id)),
    );

    // A mail scanner (or the person) opens the link: a question, nothing more.
    let events = app.event_count().await;
    let page = app.anonymous.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Unsubscribe from build notifications for acme/api on main: failed, fixed?"),
        "{html}"
    );
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains("name=\"List-Unsubscribe\" value=\"One-Click\""));
    assert_eq!(app.event_count().await, events);
    assert_eq!(subscription(&app, id).await["active"], true);

    // The mail client's one-click POST.
    let done = app
        .anonymous
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Unsubscribed"));
    let shown = subscription(&app, id).await;
    assert_eq!(shown["active"], false, "{shown}");
    assert!(shown["removed_at"].is_string(), "{shown}");

    // Clicked again (or the page's button after the mail client's POST): the same answer, nothing new.
    let events = app.event_count().await;
    let again = app.anonymous.post(app.url(&path)).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(app.event_count().await, events);
    let page = app.anonymous.get(app.url(&path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Already unsubscribed"), "{html}");
    assert!(!html.contains("<form"), "{html}");
    app.finish().await;
}
