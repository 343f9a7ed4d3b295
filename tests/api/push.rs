//! The push clients against fake FCM and Web Push services: what arrives, what a refusal means for Herald,
//! and that credentials are fetched and signed no more often than needed. No database, no broker.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use workers::push::{
    generate_vapid_key, FcmClient, FcmConfig, PushMessage, WebPushClient, WebPushConfig,
    WebPushTarget,
};

use crate::push_fakes::{FakeFcm, FakeWebPush, FcmReply, WebPushReply};

const DEVICE: &str = "fcm-registration-token-of-a-phone";
const NOTIFICATION_ID: &str = "6f1c2d3e4a5b46c7a8b9c0d1e2f3a4b5";

fn message() -> PushMessage {
    PushMessage {
        title: "herald/main: build failed".into(),
        body: "Build #42 failed in \"test\" after 3m 12s".into(),
        link: Some("https://ci.example.com/herald/runs/42".into()),
        data: BTreeMap::from([
            (
                "project_id".to_owned(),
                "0b6c2a9e-5d1f-4f7e-8a3b-1c2d3e4f5a6b".to_owned(),
            ),
            ("build_run_id".to_owned(), "github:42".to_owned()),
            ("outcome".to_owned(), "failure".to_owned()),
        ]),
        collapse_key: NOTIFICATION_ID.into(),
        ttl: Duration::from_secs(24 * 3600),
    }
}

fn fcm_client(fcm: &FakeFcm) -> FcmClient {
    FcmClient::new(FcmConfig {
        service_account: fcm.service_account(),
        api_url: fcm.url.clone(),
        timeout: Duration::from_millis(500),
    })
    .expect("the test service account is valid")
}

fn web_push_client() -> WebPushClient {
    let (pem, _) = generate_vapid_key().unwrap();
    WebPushClient::new(WebPushConfig {
        vapid_private_key_pem: pem,
        subject: "mailto:ops@herald.example".into(),
        timeout: Duration::from_millis(500),
    })
    .expect("a generated VAPID key loads")
}

// ---------------------------------------------------------------------------------------------------------
// FCM
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_fcm_message_arrives_with_title_body_link_data_and_collapse_key() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);

    let name = client
        .send(DEVICE, &message())
        .await
        .expect("FCM accepts it");

    assert_eq!(name, "projects/herald-test/messages/1");
    let sent = fcm.messages();
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert_eq!(m["token"], DEVICE);
    assert_eq!(
        m["notification"],
        json!({"title": "herald/main: build failed", "body": "Build #42 failed in \"test\" after 3m 12s"})
    );
    assert_eq!(m["data"]["outcome"], "failure");
    assert_eq!(m["data"]["build_run_id"], "github:42");
    assert_eq!(m["data"]["link"], "https://ci.example.com/herald/runs/42");
    assert_eq!(m["android"]["collapse_key"], NOTIFICATION_ID);
    assert_eq!(m["android"]["notification"]["tag"], NOTIFICATION_ID);
    assert_eq!(m["android"]["ttl"], "86400s");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], NOTIFICATION_ID);
    assert_eq!(m["webpush"]["headers"]["TTL"], "86400");
    assert_eq!(
        m["webpush"]["fcm_options"]["link"],
        "https://ci.example.com/herald/runs/42"
    );
    assert!(
        fcm.token_refusals().is_empty(),
        "{:?}",
        fcm.token_refusals()
    );
}

#[tokio::test]
async fn the_oauth_token_is_fetched_once_and_shared_by_concurrent_and_later_sends() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);

    let message = message();
    let first_wave = futures::future::join_all((0..8).map(|_| client.send(DEVICE, &message))).await;
    for _ in 0..3 {
        client.send(DEVICE, &message).await.unwrap();
    }

    assert!(first_wave.iter().all(Result::is_ok), "{first_wave:?}");
    assert_eq!(fcm.messages().len(), 11);
    assert_eq!(fcm.token_requests(), 1);
}

#[tokio::test]
async fn an_expiring_oauth_token_is_refreshed_before_it_expires() {
    let fcm = FakeFcm::start().await;
    // Herald renews a minute early: this token is good for one more second.
    fcm.set_token_lifetime(61);
    let client = fcm_client(&fcm);

    client.send(DEVICE, &message()).await.unwrap();
    client.send(DEVICE, &message()).await.unwrap();
    assert_eq!(fcm.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.send(DEVICE, &message()).await.unwrap();

    assert_eq!(fcm.token_requests(), 2);
    assert_eq!(fcm.messages().len(), 3);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_message_sent_again() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);
    client.send(DEVICE, &message()).await.unwrap();

    fcm.revoke_tokens();
    let name = client.send(DEVICE, &message()).await;

    assert_eq!(name.as_deref(), Ok("projects/herald-test/messages/2"));
    assert_eq!(fcm.token_requests(), 2);
    assert_eq!(fcm.send_attempts(), 3);
}

#[tokio::test]
async fn a_second_401_in_a_row_is_a_permanent_failure_not_a_loop() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);
    fcm.script(FcmReply::Unauthenticated);
    fcm.script(FcmReply::Unauthenticated);

    let refusal = client.send(DEVICE, &message()).await.unwrap_err();

    assert_eq!(refusal.failure.code, Some(401));
    assert!(!refusal.failure.retryable);
    assert!(!refusal.token_gone);
    assert_eq!(fcm.send_attempts(), 2);
    assert_eq!(fcm.token_requests(), 2);
}

#[tokio::test]
async fn an_unregistered_token_is_gone_for_good() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);
    fcm.unregister(DEVICE);

    let refusal = client.send(DEVICE, &message()).await.unwrap_err();

    assert!(refusal.token_gone);
    assert!(!refusal.failure.retryable);
    assert_eq!(refusal.failure.code, Some(404));
    assert!(
        refusal.failure.description.contains("UNREGISTERED"),
        "{}",
        refusal.failure.description
    );
    assert!(fcm.messages().is_empty());
    // Another device of the same project is unaffected.
    client.send("another-phone", &message()).await.unwrap();
}

#[tokio::test]
async fn fcm_errors_mean_what_fcm_documents() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);
    // (status, errorCode, Retry-After, retryable, gone)
    let cases = [
        (429, "QUOTA_EXCEEDED", Some(30), true, false),
        (503, "UNAVAILABLE", None, true, false),
        (500, "INTERNAL", Some(5), true, false),
        (400, "INVALID_ARGUMENT", None, false, false),
        (403, "SENDER_ID_MISMATCH", None, false, true),
        (401, "THIRD_PARTY_AUTH_ERROR", None, false, false),
    ];
    for (status, code, retry_after, retryable, gone) in cases {
        fcm.fail_next(status, code, retry_after);

        let refusal = client.send(DEVICE, &message()).await.unwrap_err();

        assert_eq!(refusal.failure.code, Some(i64::from(status)), "{code}");
        assert_eq!(refusal.failure.retryable, retryable, "{code}");
        assert_eq!(refusal.token_gone, gone, "{code}");
        assert_eq!(refusal.failure.retry_after_secs, retry_after, "{code}");
        assert!(
            refusal.failure.description.contains(code),
            "{}",
            refusal.failure.description
        );
    }
    assert_eq!(
        fcm.send_attempts(),
        cases.len(),
        "THIRD_PARTY_AUTH_ERROR is not a stale token"
    );
    assert_eq!(fcm.token_requests(), 1);
}

#[tokio::test]
async fn a_hung_fcm_is_a_retryable_failure_without_a_code() {
    let fcm = FakeFcm::start().await;
    let client = fcm_client(&fcm);
    fcm.script(FcmReply::Hang);

    let refusal = client.send(DEVICE, &message()).await.unwrap_err();

    assert_eq!(refusal.failure.code, None);
    assert!(refusal.failure.retryable);
    assert!(!refusal.token_gone);
    assert!(
        refusal.failure.description.contains("timed out"),
        "{}",
        refusal.failure.description
    );
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_retryable_and_leaks_no_secret() {
    let fcm = FakeFcm::start().await;
    let mut account = fcm.service_account();
    account.token_uri = "http://127.0.0.1:9/token".into();
    let client = FcmClient::new(FcmConfig {
        service_account: account,
        api_url: fcm.url.clone(),
        timeout: Duration::from_millis(500),
    })
    .unwrap();

    let refusal = client.send(DEVICE, &message()).await.unwrap_err();

    assert_eq!(refusal.failure.code, None);
    assert!(refusal.failure.retryable);
    assert!(!refusal.failure.description.contains("PRIVATE KEY"));
    assert_eq!(fcm.send_attempts(), 0);
}

// ---------------------------------------------------------------------------------------------------------
// Web Push
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_web_push_decrypts_to_exactly_the_json_sent_with_ttl_topic_and_vapid() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription_for(&client.public_key());

    let location = client.send(&browser, &message()).await.expect("accepted");

    assert_eq!(location, Some(format!("{}/messages/1", service.url)));
    let received = service.received();
    assert_eq!(received.len(), 1, "refusals: {:?}", service.refusals());
    let push = &received[0];
    assert_eq!(
        push.payload,
        json!({
            "title": "herald/main: build failed",
            "body": "Build #42 failed in \"test\" after 3m 12s",
            "link": "https://ci.example.com/herald/runs/42",
            "data": {
                "build_run_id": "github:42",
                "outcome": "failure",
                "project_id": "0b6c2a9e-5d1f-4f7e-8a3b-1c2d3e4f5a6b",
            },
            "tag": NOTIFICATION_ID,
        })
    );
    assert!(browser.endpoint.ends_with(&push.subscription));
    assert_eq!(push.ttl, Some(86400));
    assert_eq!(push.topic.as_deref(), Some(NOTIFICATION_ID));
    assert_eq!(push.urgency.as_deref(), Some("high"));
    assert_eq!(push.jwt_claims["aud"], service.url.as_str());
    assert_eq!(push.jwt_claims["sub"], "mailto:ops@herald.example");
}

#[tokio::test]
async fn a_message_without_a_link_still_arrives() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    let mut no_link = message();
    no_link.link = None;
    no_link.collapse_key = "a collapse key that is not a topic".into();

    client.send(&browser, &no_link).await.unwrap();

    let push = &service.received()[0];
    assert_eq!(push.payload["link"], serde_json::Value::Null);
    assert_eq!(push.payload["tag"], "a collapse key that is not a topic");
    assert_eq!(push.topic.as_ref().map(String::len), Some(32));
}

#[tokio::test]
async fn keys_with_base64_padding_as_some_browsers_send_them_work() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    let padded = WebPushTarget {
        auth: format!("{}==", browser.auth),
        p256dh: format!("{}=", browser.p256dh),
        ..browser
    };

    client.send(&padded, &message()).await.unwrap();

    assert_eq!(service.received().len(), 1);
}

#[tokio::test]
async fn the_vapid_jwt_is_signed_once_per_push_service_origin() {
    let one = FakeWebPush::start().await;
    let two = FakeWebPush::start().await;
    let client = web_push_client();
    let (a, b, c) = (one.subscription(), one.subscription(), two.subscription());

    client.send(&a, &message()).await.unwrap();
    client.send(&b, &message()).await.unwrap();
    client.send(&a, &message()).await.unwrap();
    client.send(&c, &message()).await.unwrap();

    let at_one: Vec<_> = one.received().into_iter().map(|p| p.jwt).collect();
    assert_eq!(at_one.len(), 3);
    assert!(
        at_one.iter().all(|jwt| *jwt == at_one[0]),
        "one JWT for one origin"
    );
    let at_two = &two.received()[0];
    assert_ne!(at_two.jwt, at_one[0]);
    assert_eq!(at_two.jwt_claims["aud"], two.url.as_str());
}

#[tokio::test]
async fn an_expired_or_unknown_subscription_is_gone() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    client.send(&browser, &message()).await.unwrap();

    service.expire(&browser);
    let expired = client.send(&browser, &message()).await.unwrap_err();
    let unknown = WebPushTarget {
        endpoint: format!("{}/push/never-subscribed", service.url),
        ..service.subscription()
    };
    let unknown = client.send(&unknown, &message()).await.unwrap_err();

    assert_eq!(expired.failure.code, Some(410));
    assert_eq!(unknown.failure.code, Some(404));
    for refusal in [expired, unknown] {
        assert!(refusal.token_gone);
        assert!(!refusal.failure.retryable);
        assert!(
            !refusal.failure.description.contains(&service.url),
            "no endpoint in descriptions"
        );
    }
}

#[tokio::test]
async fn push_service_answers_mean_what_rfc_8030_says() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    service.script([
        WebPushReply::TooManyRequests { retry_after: 60 },
        WebPushReply::ServerError,
        WebPushReply::Gone,
        WebPushReply::NotFound,
    ]);

    let limited = client.send(&browser, &message()).await.unwrap_err();
    let broken = client.send(&browser, &message()).await.unwrap_err();
    let gone = client.send(&browser, &message()).await.unwrap_err();
    let not_found = client.send(&browser, &message()).await.unwrap_err();

    assert_eq!(limited.failure.code, Some(429));
    assert!(limited.failure.retryable);
    assert_eq!(limited.failure.retry_after_secs, Some(60));
    assert!(!limited.token_gone);
    assert_eq!(broken.failure.code, Some(500));
    assert!(broken.failure.retryable);
    assert!(!broken.token_gone);
    assert!(gone.token_gone && not_found.token_gone);
    // And afterwards it delivers again.
    client.send(&browser, &message()).await.unwrap();
}

#[tokio::test]
async fn a_hung_push_service_is_retryable_without_a_code() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    service.script([WebPushReply::Hang]);

    let refusal = client.send(&browser, &message()).await.unwrap_err();

    assert_eq!(refusal.failure.code, None);
    assert!(refusal.failure.retryable);
    assert!(!refusal.token_gone);
}

#[tokio::test]
async fn a_too_large_payload_is_refused_without_a_request() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let browser = service.subscription();
    let mut huge = message();
    huge.body = "x".repeat(4000);

    let refusal = client.send(&browser, &huge).await.unwrap_err();

    assert_eq!(refusal.failure.code, Some(413));
    assert!(!refusal.failure.retryable);
    assert!(!refusal.token_gone);
    assert_eq!(service.attempts(), 0);
}

#[tokio::test]
async fn a_push_signed_with_another_vapid_key_is_refused_but_the_subscription_kept() {
    let service = FakeWebPush::start().await;
    let ours = web_push_client();
    let theirs = web_push_client();
    let browser = service.subscription_for(&theirs.public_key());

    let refusal = ours.send(&browser, &message()).await.unwrap_err();

    assert_eq!(refusal.failure.code, Some(403));
    assert!(!refusal.failure.retryable);
    assert!(!refusal.token_gone);
    theirs.send(&browser, &message()).await.unwrap();
    assert_eq!(service.received().len(), 1);
}

#[tokio::test]
async fn a_subscription_with_unreadable_keys_is_refused_without_a_request() {
    let service = FakeWebPush::start().await;
    let client = web_push_client();
    let broken = WebPushTarget {
        p256dh: "not base64!".into(),
        ..service.subscription()
    };

    let refusal = client.send(&broken, &message()).await.unwrap_err();

    assert!(!refusal.failure.retryable);
    assert_eq!(service.attempts(), 0);
}
