//! Herald's SMTP client against a real SMTP server (aiosmtpd): what arrives, and how refusals are classified.

use std::time::Duration;

use workers::email::{EmailConfig, Mailer, OutgoingEmail};

use crate::smtp::{free_port, SmtpServer};

fn mailer(url: String) -> Mailer {
    Mailer::new(EmailConfig {
        url,
        from: "Herald <herald@example.com>".to_owned(),
        timeout: Duration::from_secs(5),
    })
    .expect("a valid email configuration")
}

fn email(to: &str, subject: &str) -> OutgoingEmail {
    OutgoingEmail {
        to: to.to_owned(),
        subject: subject.to_owned(),
        text: "main is red: job test failed.\nhttps://ci.example.com/builds/42\n".to_owned(),
        html: None,
        list_unsubscribe: None,
    }
}

#[tokio::test]
async fn a_multipart_message_arrives_with_its_headers() {
    let server = SmtpServer::start().await;
    let mailer = mailer(server.url());
    let unsubscribe = "https://herald.example.com/api/v1/unsubscribe/3f2a?token=abc";
    let sent = OutgoingEmail {
        html: Some("<p>main is <b>red</b>: job <code>test</code> failed.</p>\n".to_owned()),
        list_unsubscribe: Some(unsubscribe.to_owned()),
        ..email(
            "  Ann.Smith@Example.COM ",
            "[herald/api] Build #42 failed on main",
        )
    };

    let message_id = mailer.send(&sent).await.expect("sent");

    let received = server.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.subject, "[herald/api] Build #42 failed on main");
    assert_eq!(mail.to, "Ann.Smith@example.com");
    assert_eq!(mail.from, "Herald <herald@example.com>");
    assert_eq!(mail.text.replace("\r\n", "\n"), sent.text);
    assert_eq!(
        mail.html.as_deref().map(|h| h.replace("\r\n", "\n")),
        sent.html
    );
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@example.com>"),
        "{message_id}"
    );
    assert_eq!(mail.header("Message-ID"), Some(message_id.as_str()));
    assert_eq!(
        mail.header("List-Unsubscribe"),
        Some(format!("<{unsubscribe}>").as_str())
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let content_type = mail.header("Content-Type").expect("a Content-Type");
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    // The envelope recipient is the normalized address too (aiosmtpd records it).
    assert_eq!(mail.header("X-RcptTo"), Some("Ann.Smith@example.com"));
}

#[tokio::test]
async fn a_plain_message_has_no_html_and_umlauts_arrive_intact() {
    let server = SmtpServer::start().await;
    let mailer = mailer(server.url());
    let subject = "Build fehlgeschlagen: Größenprüfung für »Über-Dienst« – schön kaputt ✗";
    let sent = OutgoingEmail {
        text: "Jörg, die Prüfung ist fehlgeschlagen. Grüße, Herald\n".to_owned(),
        ..email("joerg@example.de", subject)
    };

    let first = mailer.send(&sent).await.expect("sent");
    // A second message reuses the pooled connection.
    let second = mailer
        .send(&email("joerg@example.de", "zweite Nachricht"))
        .await
        .expect("sent");
    assert_ne!(first, second);

    let received = server.wait_for(2).await;
    let mail = received
        .iter()
        .find(|m| m.header("Message-ID") == Some(first.as_str()))
        .expect("the first message");
    assert_eq!(mail.subject, subject);
    // Line breaks aside: a single-part body gains a blank line or two at its end on the way.
    assert_eq!(
        mail.text.replace("\r\n", "\n").trim_end(),
        sent.text.trim_end()
    );
    assert_eq!(mail.html, None);
    let content_type = mail.header("Content-Type").expect("a Content-Type");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(mail.header("List-Unsubscribe"), None);
    assert!(received.iter().any(|m| m.subject == "zweite Nachricht"));
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_failure_with_the_smtp_code() {
    let server = SmtpServer::start().await;
    let mailer = mailer(server.url());

    let failure = mailer
        .send(&email("refused@example.com", "nobody reads this"))
        .await
        .expect_err("refused");
    assert_eq!(failure.code, Some(550));
    assert!(!failure.retryable, "{failure:?}");
    assert!(
        failure.description.contains("No such mailbox"),
        "{failure:?}"
    );

    // The mailer still works afterwards.
    mailer
        .send(&email("ann@example.com", "still here"))
        .await
        .expect("sent");
    let received = server.wait_for(1).await;
    assert_eq!(received.len(), 1, "only the accepted message is stored");
    assert_eq!(received[0].subject, "still here");
}

#[tokio::test]
async fn a_transient_refusal_is_retryable() {
    let server = SmtpServer::start().await;
    let mailer = mailer(server.url());

    let failure = mailer
        .send(&email("greylisted@example.com", "later"))
        .await
        .expect_err("greylisted");
    assert_eq!(failure.code, Some(451));
    assert!(failure.retryable, "{failure:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_the_password_stays_out_of_the_description() {
    let port = free_port();
    let mailer = mailer(format!("smtp://herald:s3cret-Pa55@127.0.0.1:{port}"));

    let failure = mailer
        .send(&email("ann@example.com", "nobody listens"))
        .await
        .expect_err("connection refused");
    assert!(failure.retryable, "{failure:?}");
    assert_eq!(failure.code, None);
    assert!(!failure.description.is_empty());
    assert!(!failure.description.contains("s3cret-Pa55"), "{failure:?}");
}

#[tokio::test]
async fn a_bad_recipient_fails_permanently_before_connecting() {
    // Nothing listens here: the address is refused before any connection is tried.
    let mailer = mailer(format!("smtp://127.0.0.1:{}", free_port()));

    let failure = mailer
        .send(&email("Ann <ann@example.com>", "never sent"))
        .await
        .expect_err("refused");
    assert!(!failure.retryable, "{failure:?}");
    assert_eq!(failure.code, None);
}

/// The whole verification flow through Herald: an email contact is added only once its mail went out, nothing
/// else is planned for it until its link comes back, and the link works once.
#[tokio::test]
async fn an_email_address_is_verified_by_the_link_herald_mails_to_it() {
    use crate::helpers::{spawn_app_configured, Bus};
    use serde_json::{json, Value};

    let server = SmtpServer::start().await;
    let url = server.url();
    let app = spawn_app_configured(Bus::InProcess, &herald::Role::ALL, move |s| {
        s.email = Some(EmailConfig {
            url,
            from: "Herald <herald@example.com>".to_owned(),
            timeout: Duration::from_secs(5),
        });
    })
    .await;
    let created: Value = app
        .post_json(
            "/api/v1/subscribers",
            json!({"name": "Mailbox owner", "language": "de"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let subscriber = created["subscriber_id"].as_str().unwrap().to_owned();
    let contacts = format!("/api/v1/subscribers/{subscriber}/contacts");
    let added = app
        .post_json(
            &contacts,
            json!({"kind": "email", "address": "Owner@Example.COM"}),
        )
        .await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["verified"], false);

    let mail = server.wait_for(1).await.remove(0);
    assert_eq!(mail.to, "Owner@example.com");
    assert!(
        mail.subject.contains("Bestätige"),
        "in the subscriber's language: {}",
        mail.subject
    );
    let link = mail
        .text
        .split_whitespace()
        .find(|w| w.contains("/api/v1/contacts/verify?token="))
        .expect("the mail carries the link")
        .to_owned();
    let path = &link[link.find("/api/v1/").unwrap()..];

    // The same address again is a conflict, and sends no second mail.
    let again = app
        .post_json(
            &contacts,
            json!({"kind": "email", "address": "owner@example.com"}),
        )
        .await;
    assert_eq!(again.status(), 409);

    let verified = app.anonymous.get(app.url(path)).send().await.unwrap();
    assert_eq!(verified.status(), 200);
    let twice = app.anonymous.get(app.url(path)).send().await.unwrap();
    assert_eq!(twice.status(), 200, "following the link twice is fine");
    // The token's last character changed (to one it is not: a token ending in "x" once made this flaky).
    let swap = if path.ends_with('x') { 'y' } else { 'x' };
    let forged = app
        .anonymous
        .get(app.url(&format!("{}{swap}", &path[..path.len() - 1])))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 410);
    let pool = app.pool.clone();
    crate::helpers::wait_until("the contact is verified", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT verified FROM contacts WHERE kind = 'email'")
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    assert_eq!(server.wait_for(1).await.len(), 1, "one mail in all");
    app.finish().await;
}
