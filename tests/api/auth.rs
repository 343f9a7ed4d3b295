//! Who may call what: the whole role × endpoint matrix, API keys (created once, revoked at once), JWTs with
//! rotation, producer keys limited to their projects, and the rate limits with their headers.

use std::time::Duration;

use api::auth::jwt::{Claims, JwtKeys};
use api::auth::{Access, Role, POLICY};
use herald::Role as Process;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// A concrete path for a route pattern: the webhook goes to `project`; other ids name nothing, so no call of
/// the matrix changes what a later one sees.
fn concrete(path: &str, project: Uuid) -> String {
    path.replace("{provider}", "github")
        .replace("{project}", &project.to_string())
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{*build_run_id}", "github/none/1/1")
}

async fn call(
    app: &TestApp,
    client: &reqwest::Client,
    method: &str,
    path: &str,
    project: &CreatedProject,
) -> reqwest::Response {
    let url = app.url(&concrete(path, project.id));
    let method: reqwest::Method = method.parse().unwrap();
    let mut request = client.request(method.clone(), url);
    if path.starts_with("/api/v1/webhooks") {
        // A real, signed ping: whoever the guard lets through gets it accepted.
        let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
        request = request
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", Uuid::new_v4().to_string())
            .header(
                "x-hub-signature-256",
                commands::providers::sign(&project.secret, body),
            )
            .body(body.to_vec());
    } else if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
        // An empty document: refused by the handler (400/422), never by the guard, when the role may call.
        request = request.json(&json!({ "unknown_field": true }));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_role_reaches_exactly_the_endpoints_the_policy_gives_it() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let project = app.create_project("matrix").await;
    let mut clients = vec![(None, reqwest::Client::new())];
    for role in Role::ALL {
        let projects = if role == Role::Producer {
            vec![project.id]
        } else {
            vec![]
        };
        let key = create_key(&app.pool, role, &projects).await;
        clients.push((Some(role), client_with(&key)));
    }
    let mut checked = 0;
    for rule in POLICY {
        for (role, client) in &clients {
            let response = call(&app, client, rule.method, rule.path, &project).await;
            let status = response.status().as_u16();
            let allowed = match (role, rule.access) {
                (_, Access::Public) => true,
                (None, Access::Webhook) => true,
                (None, _) => false,
                (Some(role), access) => access.allows(*role),
            };
            let who = role.map_or("anonymous", |r| r.as_str());
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{who} should reach {} {} but got {status}: {}",
                    rule.method,
                    rule.path,
                    response.text().await.unwrap()
                );
            } else {
                assert!(
                    response.headers().contains_key("ratelimit-remaining"),
                    "a refusal still carries the rate-limit headers"
                );
                let expected = if role.is_some() { 403 } else { 401 };
                assert_eq!(
                    status, expected,
                    "{who} should be refused {} {}",
                    rule.method, rule.path
                );
                let problem: Value = response.json().await.unwrap();
                assert!(problem["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:herald:problem:"));
                assert!(problem["trace_id"].is_string());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, POLICY.len() * 6);
    // Auditors in particular: the trail and nothing else.
    let auditor = &clients
        .iter()
        .find(|(r, _)| *r == Some(Role::Auditor))
        .unwrap()
        .1;
    let trail = auditor
        .get(app.url(&format!("/api/v1/audit/projects/{}", project.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(trail.status(), 200);
    let projects = auditor
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(projects.status(), 403);
    app.finish().await;
}

#[tokio::test]
async fn every_served_route_is_in_the_openapi_document_and_the_policy() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let spec: Value = app
        .anonymous
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let list = &spec["paths"]["/api/v1/projects"]["get"];
    for code in ["200", "401", "403", "429"] {
        assert!(
            list["responses"][code].is_object(),
            "GET /api/v1/projects documents {code}"
        );
    }
    assert!(
        spec["paths"]["/health"]["get"]["responses"]["401"].is_null(),
        "health needs no credentials"
    );
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    // The document names the audit wildcard `{*build_run_id}` as `{build_run_id}` (OpenAPI has no catch-all).
    let normalize = |p: &str| p.replace("{*", "{");
    for rule in POLICY {
        // The spec, its docs page and the dashboard's files are not API operations.
        let undocumented_by_design = rule.path.starts_with("/api/v1/docs")
            || rule.path == "/api/v1/openapi.json"
            || rule.path == "/"
            || rule.path.starts_with("/ui/");
        if undocumented_by_design {
            continue;
        }
        assert!(
            documented
                .iter()
                .any(|(m, p)| m == rule.method && normalize(p) == normalize(rule.path)),
            "{} {} is served but not in the OpenAPI document",
            rule.method,
            rule.path
        );
    }
    for (method, path) in &documented {
        assert!(
            POLICY
                .iter()
                .any(|r| r.method == method && normalize(r.path) == normalize(path)),
            "{method} {path} is documented but has no access rule"
        );
    }
    let docs = app
        .anonymous
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("openapi.json"));
    assert!(
        !page.contains("https://"),
        "the docs page loads nothing from elsewhere"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_key_is_shown_once_works_until_revoked_and_never_listed() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let created = app
        .post_json(
            "/api/v1/keys",
            json!({ "name": "grafana", "role": "reader" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    let reader = client_with(&key);
    assert_eq!(
        reader
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let listed = app.get("/api/v1/keys").await.text().await.unwrap();
    assert!(listed.contains("grafana"));
    assert!(!listed.contains(&key), "a listing must never show a key");
    let stored: String = sqlx::query_scalar("SELECT hash FROM api_keys WHERE name = 'grafana'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2"),
        "keys are stored as argon2 hashes"
    );

    let id = created["key_id"].as_str().unwrap();
    let revoked = app
        .http
        .delete(app.url(&format!("/api/v1/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = reader
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let problem: Value = after.json().await.unwrap();
    assert_eq!(problem["detail"], "the API key was revoked");

    // Bad requests change nothing.
    let before: i64 = app.count("SELECT count(*) FROM api_keys").await;
    for bad in [
        json!({ "name": "", "role": "reader" }),
        json!({ "name": "x", "role": "superuser" }),
        json!({ "name": "x", "role": "producer" }),
        json!({ "name": "x", "role": "reader", "projects": [Uuid::new_v4()] }),
        json!({ "name": "x", "role": "producer", "projects": [Uuid::new_v4()] }),
    ] {
        let response = app.post_json("/api/v1/keys", bad.clone()).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, before);
    let forged = client_with("hrld_00000000_0000");
    assert_eq!(
        forged
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app.finish().await;
}

#[tokio::test]
async fn a_producer_posts_for_its_own_projects_only() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let mine = app.create_project("mine").await;
    let theirs = app.create_project("theirs").await;
    let key = create_key(&app.pool, Role::Producer, &[mine.id]).await;
    let producer = client_with(&key);
    let post = |project: &CreatedProject| {
        let body = br#"{"zen":"z","hook_id":2}"#.to_vec();
        producer
            .post(app.url(&format!("/api/v1/webhooks/github/{}", project.id)))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", Uuid::new_v4().to_string())
            .header(
                "x-hub-signature-256",
                commands::providers::sign(&project.secret, &body),
            )
            .body(body)
            .send()
    };
    assert_eq!(post(&mine).await.unwrap().status(), 202);
    let refused = post(&theirs).await.unwrap();
    assert_eq!(refused.status(), 403);
    let events_for_theirs: i64 = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{}' AND event_type = 'WebhookPinged'",
            theirs.id
        ))
        .await;
    assert_eq!(events_for_theirs, 0);
    app.finish().await;
}

#[tokio::test]
async fn jwts_are_accepted_and_rotate_without_downtime() {
    let old_secret = "old-jwt-secret-0123456789abcdef0123456789";
    let app = spawn_app_configured(Bus::InProcess, &[], |s| {
        s.jwt = JwtKeys::new(JWT_SECRET)
            .with_previous(old_secret, chrono::Utc::now() + chrono::Duration::hours(1));
    })
    .await;
    let claims = |role: Role, exp_in: i64| Claims {
        sub: "sso-user".into(),
        role,
        projects: vec![],
        exp: chrono::Utc::now().timestamp() + exp_in,
    };
    let current = JwtKeys::new(JWT_SECRET)
        .mint(&claims(Role::Reader, 60))
        .unwrap();
    let previous = JwtKeys::new(old_secret)
        .mint(&claims(Role::Reader, 60))
        .unwrap();
    let expired = JwtKeys::new(JWT_SECRET)
        .mint(&claims(Role::Reader, -600))
        .unwrap();
    let forged = JwtKeys::new("not-the-secret-0123456789abcdef0123")
        .mint(&claims(Role::Admin, 60))
        .unwrap();
    for (token, status) in [
        (&current, 200),
        (&previous, 200),
        (&expired, 401),
        (&forged, 401),
    ] {
        let response = client_with(token)
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    // A reader token is still a reader.
    let write = client_with(&current)
        .post(app.url("/api/v1/projects"))
        .json(&json!({ "name": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    app.finish().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_the_standard_headers_and_webhooks_have_their_own() {
    let app = spawn_app_configured(Bus::InProcess, &[Process::Projections], |s| {
        s.limits.api = api::limits::Rate::new(1, 3).unwrap();
        s.limits.webhooks = api::limits::Rate::new(1, 50).unwrap();
    })
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.get("/api/v1/projects").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = app.get("/api/v1/projects").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // The API bucket is spent, yet a CI system's webhook still gets in, and is recorded.
    let (id, secret) = commands::Commands::new(app.pool.clone())
        .create_project(
            domain::ProjectName::parse("limited").unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let project = CreatedProject { id, secret };
    let accepted = app
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "d-1",
        )
        .await;
    assert_eq!(accepted.status(), 202);
    assert!(accepted.headers().contains_key("ratelimit-remaining"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.get("/api/v1/projects").await.status(),
        200,
        "a token comes back after a second"
    );
    app.finish().await;
}
