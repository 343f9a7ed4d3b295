//! Email, FCM and Web Push end to end: a failed run planned for a subscriber's contact arrives at a real SMTP
//! server or a fake push service that behaves like the real one, and a push service saying the token is gone
//! disables the contact.

use std::time::Duration;

use domain::{ContactAddress, Preferences};
use herald::Role;
use uuid::Uuid;

use crate::helpers::{spawn_app_configured, wait_until, Bus, TestApp};
use crate::push_fakes::{FakeFcm, FakeWebPush};
use crate::smtp::SmtpServer;

/// The id of the one delivered notification, as the provider should have seen it (32 hex digits).
async fn delivered_id(app: &TestApp) -> String {
    app.wait_for_notifications("delivered", 1).await;
    let id: Uuid =
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE status = 'delivered'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    id.simple().to_string()
}

#[tokio::test]
async fn a_failure_arrives_by_email_with_text_html_and_a_one_click_unsubscribe() {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.email = Some(workers::email::EmailConfig {
            url: smtp.url(),
            from: "Herald <herald@herald.test>".into(),
            timeout: Duration::from_secs(5),
        });
    })
    .await;
    let project = app.create_project("mailed").await;
    let address = ContactAddress::Email {
        address: "dev@example.com".into(),
    };
    app.contact_subscription(project.id, address, Preferences::default(), &["failed"])
        .await;
    app.fail_run(&project, 1).await;
    let mail = smtp.wait_for(1).await.remove(0);
    let id = delivered_id(&app).await;
    assert_eq!(mail.to, "dev@example.com");
    assert!(
        mail.subject.contains("failed") || mail.subject.contains("broken"),
        "{}",
        mail.subject
    );
    assert!(
        !mail.text.contains("<b>"),
        "the text part is plain: {}",
        mail.text
    );
    assert!(
        mail.html.as_deref().is_some_and(|h| h.contains("</")),
        "{:?}",
        mail.html
    );
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{id}@herald.test>").as_str())
    );
    let unsubscribe = mail.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<http://herald.test/api/v1/unsubscribe/"),
        "{unsubscribe}"
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_failure_arrives_by_fcm_and_an_unregistered_token_disables_the_contact() {
    let fcm = FakeFcm::start().await;
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.fcm = Some(workers::push::FcmConfig {
            service_account: fcm.service_account(),
            api_url: fcm.url.clone(),
            timeout: Duration::from_secs(5),
        });
    })
    .await;
    let project = app.create_project("pushed").await;
    let address = ContactAddress::Fcm {
        token: "device-token-1".into(),
    };
    let (subscriber, contact) = app
        .contact_subscription(project.id, address, Preferences::default(), &["failed"])
        .await;
    app.fail_run(&project, 1).await;
    let id = delivered_id(&app).await;
    let messages = fcm.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["token"], "device-token-1");
    assert_eq!(message["android"]["collapse_key"], id.as_str());
    assert!(message["notification"]["title"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(
        message["data"]["notification_id"]
            .as_str()
            .map(|s| s.replace('-', "")),
        Some(id)
    );

    fcm.unregister("device-token-1");
    app.fail_run(&project, 2).await;
    let pool = app.pool.clone();
    wait_until("the contact is disabled", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT enabled AND disabled_reason LIKE 'push_token_gone%' FROM contacts WHERE contact_id = $1",
            )
            .bind(contact)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    app.wait_for_notifications("dead_lettered", 1).await;
    // The next failure is not even planned for the disabled contact.
    app.fail_run(&project, 3).await;
    app.drain().await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM notifications WHERE status = 'suppressed' AND subscription_id IN
           (SELECT subscription_id FROM subscriptions WHERE subscriber_id = $1)",
    )
    .bind(subscriber)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(reasons, ["contact_disabled"]);
    app.finish().await;
}

#[tokio::test]
async fn a_failure_arrives_by_web_push_encrypted_for_the_browser() {
    let push = FakeWebPush::start().await;
    let (pem, _) = workers::push::generate_vapid_key().unwrap();
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.web_push = Some(workers::push::WebPushConfig {
            vapid_private_key_pem: pem,
            subject: "mailto:ops@herald.test".into(),
            timeout: Duration::from_secs(5),
        });
    })
    .await;
    let project = app.create_project("browser").await;
    let target = push.subscription();
    let address = ContactAddress::WebPush {
        endpoint: target.endpoint.clone(),
        p256dh: target.p256dh.clone(),
        auth: target.auth.clone(),
    };
    app.contact_subscription(project.id, address, Preferences::default(), &["failed"])
        .await;
    app.fail_run(&project, 1).await;
    let id = delivered_id(&app).await;
    let received = push.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].topic.as_deref(),
        Some(id.as_str()),
        "resends replace, not repeat"
    );
    assert_eq!(received[0].payload["tag"], id.as_str());
    let payload = &received[0].payload;
    assert!(
        payload["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{payload}"
    );
    assert!(
        payload["body"]
            .as_str()
            .is_some_and(|b| !b.is_empty() && !b.contains("<b>")),
        "plain text: {payload}"
    );
    app.finish().await;
}

#[tokio::test]
async fn without_a_provider_email_and_push_contacts_are_suppressed_as_unavailable() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |_| {}).await;
    let project = app.create_project("nowhere").await;
    let address = ContactAddress::Fcm { token: "t".into() };
    app.contact_subscription(project.id, address, Preferences::default(), &["failed"])
        .await;
    app.fail_run(&project, 1).await;
    app.drain().await;
    assert_eq!(
        app.count("SELECT count(*) FROM notifications WHERE reason = 'channel_unavailable'")
            .await,
        1
    );
    app.finish().await;
}
