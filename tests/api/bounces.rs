//! Bounces and complaints: SendGrid's Event Webhook and raw RFC 3464 / RFC 5965 reports disable the email
//! contacts they name, exactly once, and nothing else.

use commands::{Commands, Metadata};
use domain::ContactAddress;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

async fn register(app: &TestApp, name: &str) -> Uuid {
    let response = app
        .post_json("/api/v1/subscribers", json!({ "name": name }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["subscriber_id"].as_str().unwrap().parse().unwrap()
}

/// A verified email contact, added the way the API adds one (a verification token, then its link followed).
async fn add_email(app: &TestApp, subscriber_id: Uuid, address: &str) -> Uuid {
    let commands = Commands::new(app.pool.clone());
    let contact_id = Uuid::new_v4();
    let (token, hash) = Commands::verification_token(subscriber_id, contact_id);
    let address = ContactAddress::Email {
        address: domain::email_address(address).unwrap(),
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
        .verify_contact(&token, &Metadata::new())
        .await
        .unwrap();
    contact_id
}

/// The contact as `GET /api/v1/subscribers/{id}` shows it, once the read model caught up.
async fn contact(app: &TestApp, subscriber_id: Uuid, contact_id: Uuid) -> Value {
    app.drain().await;
    let body: Value = app
        .get(&format!("/api/v1/subscribers/{subscriber_id}"))
        .await
        .json()
        .await
        .unwrap();
    body["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contact_id"] == contact_id.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("contact {contact_id} in {body}"))
}

async fn post(app: &TestApp, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sendgrid_batch() -> Vec<u8> {
    json!([
        {"email": "ada@example.com", "timestamp": 1_704_190_501, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
         "event": "bounce", "category": ["herald"], "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
         "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "reason": "500 unknown recipient",
         "status": "5.1.1", "type": "bounce", "bounce_classification": "Invalid Address"},
        {"email": "bob@example.com", "timestamp": 1_704_190_502, "event": "bounce", "sg_event_id": "b1",
         "reason": "451 4.7.1 Please try again later", "status": "4.7.1", "type": "blocked",
         "bounce_classification": "Reputation"},
        {"email": "CY@example.com", "timestamp": 1_704_190_503, "event": "spamreport", "sg_event_id": "c1",
         "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"},
        {"email": "dee@example.com", "timestamp": 1_704_190_504, "event": "delivered", "sg_event_id": "d1",
         "response": "250 OK", "ip": "168.1.1.1", "tls": 1},
    ])
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_sendgrid_batch_disables_exactly_the_bounced_and_complaining_addresses_once() {
    let app = spawn_app(Bus::InProcess).await;
    let ada = register(&app, "Ada").await;
    let ada_mail = add_email(&app, ada, "Ada@Example.com").await;
    let bob = register(&app, "Bob").await;
    let bob_mail = add_email(&app, bob, "bob@example.com").await;
    let cy = register(&app, "Cy").await;
    let cy_mail = add_email(&app, cy, "cy@example.com").await;
    let dee = register(&app, "Dee").await;
    let dee_mail = add_email(&app, dee, "dee@example.com").await;
    app.drain().await;

    let (status, answer) = post(
        &app,
        "/api/v1/email/events",
        "application/json",
        &sendgrid_batch(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ignored"], 2);
    let disabled = answer["disabled"].as_array().unwrap();
    assert_eq!(disabled.len(), 2, "{answer}");
    assert_eq!(disabled[0]["subscriber_id"], ada.to_string());
    assert_eq!(disabled[0]["contact_id"], ada_mail.to_string());
    assert_eq!(disabled[0]["address"], "ada@example.com");
    assert_eq!(disabled[1]["contact_id"], cy_mail.to_string());

    let shown = contact(&app, ada, ada_mail).await;
    assert_eq!(shown["enabled"], false);
    assert_eq!(
        shown["disabled_reason"],
        "email_bounced: 5.1.1 500 unknown recipient"
    );
    let shown = contact(&app, cy, cy_mail).await;
    assert_eq!(shown["enabled"], false);
    assert_eq!(shown["disabled_reason"], "email_complaint: spam report");
    assert_eq!(contact(&app, bob, bob_mail).await["enabled"], true);
    assert_eq!(contact(&app, dee, dee_mail).await["enabled"], true);

    // SendGrid retries a batch it thinks failed: the second time changes nothing.
    let events = app.event_count().await;
    let (status, again) = post(
        &app,
        "/api/v1/email/events",
        "application/json",
        &sendgrid_batch(),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, json!({ "disabled": [], "ignored": 4 }));
    assert_eq!(app.event_count().await, events);

    // The owner turns the address back on (it was fixed) with the usual endpoint.
    let enabled = app
        .http
        .post(app.url(&format!(
            "/api/v1/subscribers/{ada}/contacts/{ada_mail}/enable"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 204);
    let shown = contact(&app, ada, ada_mail).await;
    assert_eq!(shown["enabled"], true);
    assert_eq!(shown["disabled_reason"], Value::Null);
    app.finish().await;
}

/// A bounce as Postfix writes it (`bounce(8)`): an explanation, the delivery status with one failed and one
/// delayed recipient, and the headers of the returned message.
const POSTFIX_DSN: &str = "Return-Path: <>\r
Received: by mx.herald.example (Postfix)\r
\tid 4F1C2A0B3D; Tue,  2 Jan 2024 10:15:01 +0000 (UTC)\r
Date: Tue,  2 Jan 2024 10:15:01 +0000 (UTC)\r
From: MAILER-DAEMON@mx.herald.example (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: herald@herald.example\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"4F1C2A0B3D.1704190501/mx.herald.example\"\r
Content-Transfer-Encoding: 7bit\r
Message-Id: <20240102101501.5E6F7A0B3E@mx.herald.example>\r
\r
This is a MIME-encapsulated message.\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mx.herald.example.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients. It's attached below.\r
\r
                   The mail system\r
\r
<nobody@example.org>: host mail.example.org[203.0.113.7] said: 550 5.1.1\r
    <nobody@example.org>: Recipient address rejected: User unknown in virtual\r
    mailbox table (in reply to RCPT TO command)\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.herald.example\r
X-Postfix-Queue-ID: 4F1C2A0B3D\r
X-Postfix-Sender: rfc822; herald@herald.example\r
Arrival-Date: Tue,  2 Jan 2024 10:15:00 +0000 (UTC)\r
\r
Final-Recipient: rfc822; nobody@example.org\r
Original-Recipient: rfc822;nobody@example.org\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mail.example.org\r
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address\r
    rejected: User unknown in virtual mailbox table\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Undelivered Message\r
Content-Type: message/rfc822\r
\r
Return-Path: <herald@herald.example>\r
From: Herald <herald@herald.example>\r
To: nobody@example.org\r
Subject: [acme/api] Build #42 failed on main\r
Message-ID: <abc@herald.example>\r
\r
main is red: job test failed.\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example--\r
";

/// Postfix's warning that a message is still queued (`delay_warning_time`).
const POSTFIX_DELAYED: &str = "From: MAILER-DAEMON@mx.herald.example (Mail Delivery System)\r
Subject: Delayed Mail (still being retried)\r
To: herald@herald.example\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"D1.1704190501/mx.herald.example\"\r
\r
--D1.1704190501/mx.herald.example\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mx.herald.example.\r
\r
####################################################################\r
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r
####################################################################\r
\r
--D1.1704190501/mx.herald.example\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.herald.example\r
\r
Final-Recipient: rfc822; nobody@example.org\r
Action: delayed\r
Status: 4.4.1\r
Diagnostic-Code: X-Postfix; connect to mail.example.org[203.0.113.7]:25:\r
    Connection timed out\r
Will-Retry-Until: Tue, 7 Jan 2024 10:15:00 +0000 (UTC)\r
\r
--D1.1704190501/mx.herald.example--\r
";

/// An abuse report from a mailbox provider's feedback loop (RFC 5965, section B.1's shape).
const ARF_COMPLAINT: &str = "From: <abusedesk@example.net>\r
Date: Thu, 8 Mar 2024 14:00:00 EDT\r
Subject: FW: [acme/api] Build #42 failed on main\r
To: <abuse@herald.example>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=feedback-report;\r
     boundary=\"part1_13d.2e68ed54_boundary\"\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: text/plain; charset=\"US-ASCII\"\r
Content-Transfer-Encoding: 7bit\r
\r
This is an email abuse report for an email message received from IP\r
192.0.2.1 on Thu, 8 Mar 2024 14:00:00 EDT.\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: message/feedback-report\r
\r
Feedback-Type: abuse\r
User-Agent: SomeGenerator/1.0\r
Version: 1\r
Original-Mail-From: <herald@herald.example>\r
Original-Rcpt-To: <angry@example.net>\r
Arrival-Date: Thu, 8 Mar 2024 14:00:00 EDT\r
Source-IP: 192.0.2.1\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: message/rfc822\r
Content-Disposition: inline\r
\r
From: <herald@herald.example>\r
To: <angry@example.net>\r
Subject: [acme/api] Build #42 failed on main\r
\r
main is red.\r
\r
--part1_13d.2e68ed54_boundary--\r
";

#[tokio::test]
async fn a_postfix_bounce_disables_its_failed_recipient_and_a_delay_changes_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let ann = register(&app, "Ann").await;
    let nobody = add_email(&app, ann, "nobody@example.org").await;
    let other = add_email(&app, ann, "ann@example.org").await;
    app.drain().await;

    let events = app.event_count().await;
    let (status, answer) = post(
        &app,
        "/api/v1/email/dsn",
        "message/rfc822",
        POSTFIX_DELAYED.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "disabled": [], "ignored": 1 }));
    assert_eq!(app.event_count().await, events);
    assert_eq!(contact(&app, ann, nobody).await["enabled"], true);

    let (status, answer) = post(
        &app,
        "/api/v1/email/dsn",
        "message/rfc822",
        POSTFIX_DSN.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disabled"][0]["contact_id"], nobody.to_string());
    assert_eq!(answer["disabled"].as_array().unwrap().len(), 1);
    let shown = contact(&app, ann, nobody).await;
    assert_eq!(shown["enabled"], false);
    assert_eq!(
        shown["disabled_reason"],
        "email_bounced: 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual \
         mailbox table"
    );
    assert_eq!(contact(&app, ann, other).await["enabled"], true);

    // Piped twice (a retried pipe): nothing new.
    let events = app.event_count().await;
    let (status, answer) = post(
        &app,
        "/api/v1/email/dsn",
        "text/plain",
        POSTFIX_DSN.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "disabled": [], "ignored": 1 }));
    assert_eq!(app.event_count().await, events);
    app.finish().await;
}

#[tokio::test]
async fn an_abuse_complaint_disables_the_complaining_address() {
    let app = spawn_app(Bus::InProcess).await;
    let ann = register(&app, "Ann").await;
    let angry = add_email(&app, ann, "angry@example.net").await;
    app.drain().await;

    let (status, answer) = post(
        &app,
        "/api/v1/email/dsn",
        "message/rfc822",
        ARF_COMPLAINT.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disabled"][0]["contact_id"], angry.to_string());
    assert_eq!(answer["disabled"][0]["reason"], "email_complaint: abuse");
    let shown = contact(&app, ann, angry).await;
    assert_eq!(shown["enabled"], false);
    assert_eq!(shown["disabled_reason"], "email_complaint: abuse");
    app.finish().await;
}

#[tokio::test]
async fn garbage_is_refused_and_changes_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let ann = register(&app, "Ann").await;
    let mail = add_email(&app, ann, "ada@example.com").await;
    app.drain().await;
    let events = app.event_count().await;

    let cases: [(&str, &str, &[u8], u16); 7] = [
        ("/api/v1/email/events", "application/json", b"not json", 400),
        ("/api/v1/email/events", "application/json", b"", 400),
        (
            "/api/v1/email/events",
            "application/json",
            br#"{"email":"ada@example.com","event":"bounce","type":"bounce"}"#,
            422,
        ),
        (
            "/api/v1/email/events",
            "application/json",
            br#"[{"email":"ada@example.com","event":"bounce","type":"bounce"},{"event":"spamreport"}]"#,
            422,
        ),
        ("/api/v1/email/dsn", "message/rfc822", b"", 422),
        (
            "/api/v1/email/dsn",
            "message/rfc822",
            b"Subject: out of office\r\n\r\nI am away until Monday.\r\n",
            422,
        ),
        ("/api/v1/email/dsn", "application/octet-stream", &[0xff, 0xfe, 0x00, 0x01], 422),
    ];
    for (path, content_type, body, expected) in cases {
        let (status, problem) = post(&app, path, content_type, body).await;
        assert_eq!(status, expected, "{path} {body:?}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:herald:problem:")),
            "{problem}"
        );
    }
    let (_, problem) = post(
        &app,
        "/api/v1/email/dsn",
        "message/rfc822",
        b"Subject: hi\r\n\r\nhello\r\n",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("expected a multipart/report"),
        "{problem}"
    );
    assert_eq!(app.event_count().await, events);
    assert_eq!(contact(&app, ann, mail).await["enabled"], true);
    app.finish().await;
}

#[tokio::test]
async fn mail_systems_authenticate_with_a_key_as_the_basic_password() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let body = br#"[{"email":"x@example.com","event":"delivered"}]"#.to_vec();
    let send = |request: reqwest::RequestBuilder| {
        let body = body.clone();
        async move {
            request
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let url = app.url("/api/v1/email/events");
    let operator = create_key(&app.pool, api::auth::Role::Operator, &[]).await;
    let reader = create_key(&app.pool, api::auth::Role::Reader, &[]).await;

    assert_eq!(send(app.anonymous.post(&url)).await, 401);
    assert_eq!(
        send(
            app.anonymous
                .post(&url)
                .basic_auth("sendgrid", Some(&operator))
        )
        .await,
        200
    );
    assert_eq!(
        send(app.anonymous.post(&url).basic_auth("", Some(&operator))).await,
        200
    );
    assert_eq!(
        send(app.anonymous.post(&url).bearer_auth(&operator)).await,
        200
    );
    assert_eq!(
        send(
            app.anonymous
                .post(&url)
                .basic_auth("sendgrid", Some("hrld_not_a_real_key"))
        )
        .await,
        401
    );
    assert_eq!(
        send(
            app.anonymous
                .post(&url)
                .basic_auth("sendgrid", None::<&str>)
        )
        .await,
        401
    );
    assert_eq!(
        send(
            app.anonymous
                .post(&url)
                .header("authorization", "Basic %%%not-base64")
        )
        .await,
        401
    );
    assert_eq!(
        send(
            app.anonymous
                .post(&url)
                .basic_auth("sendgrid", Some(&reader))
        )
        .await,
        403
    );
    let dsn = app.url("/api/v1/email/dsn");
    assert_eq!(
        app.anonymous
            .post(&dsn)
            .basic_auth("postfix", Some(&operator))
            .body(POSTFIX_DELAYED)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.finish().await;
}
