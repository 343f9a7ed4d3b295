//! `/api/v1/templates`: the 12 built-in templates, saving versions (validated first, conflicts refused, the
//! same text recorded once), resetting to the built-in, previews with sample data and with a real build run,
//! rendering with the version just saved, who may change them, and rebuilding their read models.

use std::collections::BTreeMap;

use commands::template::BuildContext;
use commands::templates::{Language, TemplateChannel, TemplateKind, Templates};
use serde_json::{json, Value};

use crate::helpers::*;

const TELEGRAM_EN: &str = "/api/v1/templates/build_finished.telegram.en";

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    send(app.http.get(app.url(path))).await
}

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    send(app.http.put(app.url(path)).json(&body)).await
}

async fn template_events(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Template'")
        .await
}

#[tokio::test]
async fn the_list_shows_the_twelve_builtins_and_unknown_ids_are_not_found() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let (status, list) = get(&app, "/api/v1/templates").await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    for item in items {
        assert_eq!(item["source"], "builtin");
        assert_eq!(item["version"], 0);
        assert_eq!(item["updated_at"], Value::Null);
        let id = item["template_id"].as_str().unwrap();
        assert_eq!(item["reference"], format!("builtin/{id}@1"));
    }
    assert!(items
        .iter()
        .any(|i| i["template_id"] == "build_started.push.de"));

    let (status, detail) = get(&app, TELEGRAM_EN).await;
    assert_eq!(status, 200);
    assert!(detail["parts"]["text"]
        .as_str()
        .unwrap()
        .starts_with("{{emoji}} <b>{{repository}}</b>"));
    let variables: Vec<&str> = detail["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"failure_streak") && variables.contains(&"build_run_id"));
    assert!(detail["variables"][0]["description"]
        .as_str()
        .unwrap()
        .contains("🔴"));
    let (_, started) = get(&app, "/api/v1/templates/build_started.email.de").await;
    assert_eq!(started["part_names"], json!(["subject", "text", "html"]));
    assert!(!started["variables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "duration"));

    for unknown in [
        "/api/v1/templates/build_finished.telegram.fr",
        "/api/v1/templates/build_failed.telegram.en",
        "/api/v1/templates/nope",
        "/api/v1/templates/build_finished.telegram.en/versions/1",
        "/api/v1/templates/build_finished.telegram.en/versions/one",
    ] {
        let (status, body) = get(&app, unknown).await;
        assert_eq!(status, 404, "{unknown}: {body}");
    }
    app.finish().await;
}

#[tokio::test]
async fn a_saved_version_is_shown_listed_and_used_by_the_next_render() {
    let app = spawn_app(Bus::InProcess).await;
    let text = "{{emoji}} {{repository}} {{headline}} ({{branch}})";
    let (status, saved) = put(
        &app,
        TELEGRAM_EN,
        json!({ "parts": { "text": text }, "expected_version": 0 }),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["recorded"], true);

    // The renderer reads the read model: a new message uses the new text as soon as it is projected, with no
    // restart and no cache to clear.
    app.drain().await;
    let templates = Templates::new(app.pool.clone());
    let context = BuildContext::sample(TemplateKind::BuildFinished, Language::En);
    let rendered = templates
        .render(
            TemplateKind::BuildFinished,
            TemplateChannel::Telegram,
            Language::En,
            &context,
        )
        .await
        .unwrap();
    assert_eq!(rendered.template, "build_finished.telegram.en@1");
    assert_eq!(
        rendered.text,
        "🔴 octo-org/checkout-service is broken (main)"
    );
    // Other ids are untouched.
    let german = templates
        .render(
            TemplateKind::BuildFinished,
            TemplateChannel::Telegram,
            Language::De,
            &BuildContext::sample(TemplateKind::BuildFinished, Language::De),
        )
        .await
        .unwrap();
    assert_eq!(german.template, "builtin/build_finished.telegram.de@1");

    let (_, detail) = get(&app, TELEGRAM_EN).await;
    assert_eq!(detail["version"], 1);
    assert_eq!(detail["source"], "custom");
    assert_eq!(detail["parts"], json!({ "text": text }));
    assert!(detail["saved_by"].as_str().unwrap().starts_with("key:"));

    let (_, versions) = get(&app, &format!("{TELEGRAM_EN}/versions")).await;
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["version"], 0);
    assert_eq!(items[0]["source"], "builtin");
    assert_eq!(items[1]["version"], 1);
    assert_eq!(items[1]["parts"]["text"], text);
    let (status, one) = get(&app, &format!("{TELEGRAM_EN}/versions/1")).await;
    assert_eq!(status, 200);
    assert_eq!(one["reference"], "build_finished.telegram.en@1");

    // A second save takes effect at once too: the cache is keyed by version.
    let (_, saved) = put(
        &app,
        TELEGRAM_EN,
        json!({ "parts": { "text": "v2 {{repository}}" }, "expected_version": 1 }),
    )
    .await;
    assert_eq!(saved["version"], 2);
    app.drain().await;
    let rendered = templates
        .render(
            TemplateKind::BuildFinished,
            TemplateChannel::Telegram,
            Language::En,
            &context,
        )
        .await
        .unwrap();
    assert_eq!(rendered.template, "build_finished.telegram.en@2");
    assert_eq!(rendered.text, "v2 octo-org/checkout-service");

    let (_, list) = get(&app, "/api/v1/templates").await;
    let entry = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["template_id"] == "build_finished.telegram.en")
        .unwrap()
        .clone();
    assert_eq!(entry["version"], 2);
    assert_eq!(entry["source"], "custom");
    assert!(entry["updated_at"].is_string());
    app.finish().await;
}

/// (template, parts, error, part, line, variable)
type InvalidCase = (
    &'static str,
    Value,
    &'static str,
    &'static str,
    Option<u64>,
    Option<&'static str>,
);

#[tokio::test]
async fn invalid_templates_are_refused_naming_the_part_line_and_variable() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    // (template, parts, error, part, line, variable)
    let cases: Vec<InvalidCase> = vec![
        (
            "build_finished.telegram.en",
            json!({ "text": "first line\n{{#if url}}\nnever closed" }),
            "syntax",
            "text",
            None,
            None,
        ),
        (
            "build_finished.telegram.en",
            json!({ "text": "{{emoji}}\n\n{{#if url}}{{repo}}{{/if}}" }),
            "unknown_variable",
            "text",
            Some(3),
            Some("repo"),
        ),
        (
            "build_started.push.en",
            json!({ "title": "{{headline}}", "body": "ok\n{{failed_jobs}}" }),
            "unknown_variable",
            "body",
            Some(2),
            Some("failed_jobs"),
        ),
        (
            "build_finished.email.de",
            json!({ "subject": "{{upper repository}}", "text": "x", "html": "<p>x</p>" }),
            "unknown_helper",
            "subject",
            Some(1),
            Some("upper"),
        ),
        (
            "build_finished.telegram.en",
            json!({ "text": "x", "html": "<p>x</p>" }),
            "parts",
            "html",
            None,
            None,
        ),
        (
            "build_finished.email.en",
            json!({ "subject": "x", "text": "x" }),
            "parts",
            "html",
            None,
            None,
        ),
        (
            "build_finished.email.en",
            json!({ "subject": "x", "text": "x", "html": "<p>{{{commit_message}}}</p>" }),
            "not_allowed",
            "html",
            Some(1),
            None,
        ),
    ];
    for (id, parts, error, part, line, variable) in cases {
        let (status, body) = put(
            &app,
            &format!("/api/v1/templates/{id}"),
            json!({ "parts": parts }),
        )
        .await;
        assert_eq!(status, 422, "{id} {parts}: {body}");
        assert_eq!(body["type"], "urn:herald:problem:invalid");
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["part"], part, "{body}");
        if let Some(line) = line {
            assert_eq!(body["line"], line, "{body}");
        } else if error == "syntax" {
            assert!(body["line"].as_u64().is_some(), "{body}");
        }
        if let Some(variable) = variable {
            assert_eq!(body["variable"], variable, "{body}");
            assert!(body["detail"].as_str().unwrap().contains(variable));
        }
        // A preview of the same draft is refused the same way.
        let (status, preview) = send(
            app.http
                .post(app.url(&format!("/api/v1/templates/{id}/preview")))
                .json(&json!({ "parts": parts })),
        )
        .await;
        assert_eq!(status, 422, "{preview}");
        assert_eq!(preview["part"], body["part"]);
    }
    // Not even one event: an invalid template never enters the log.
    assert_eq!(template_events(&app).await, 0);
    let (status, _) = put(&app, TELEGRAM_EN, json!({ "parts": "text" })).await;
    assert_eq!(status, 422);
    app.finish().await;
}

#[tokio::test]
async fn a_stale_expected_version_conflicts_and_the_same_parts_record_one_version() {
    let app = spawn_app(Bus::InProcess).await;
    let parts = json!({ "title": "{{emoji}} {{repository}}", "body": "{{headline}}" });
    let path = "/api/v1/templates/build_finished.push.en";
    for _ in 0..2 {
        let (status, body) = put(&app, path, json!({ "parts": parts })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 1);
    }
    assert_eq!(template_events(&app).await, 1);
    let (status, again) = put(&app, path, json!({ "parts": parts, "expected_version": 1 })).await;
    assert_eq!((status, again["recorded"].clone()), (200, json!(false)));

    let (status, conflict) = put(
        &app,
        path,
        json!({ "parts": { "title": "other", "body": "other" }, "expected_version": 0 }),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert!(conflict["detail"]
        .as_str()
        .unwrap()
        .contains("version 1, not 0"));
    assert_eq!(template_events(&app).await, 1);
    app.drain().await;
    let (_, versions) = get(&app, &format!("{path}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn a_reset_goes_back_to_the_builtin_text_as_a_new_version() {
    let app = spawn_app(Bus::InProcess).await;
    let (_, builtin) = get(&app, TELEGRAM_EN).await;
    let (status, body) = send(app.http.delete(app.url(TELEGRAM_EN))).await;
    assert_eq!((status, body["recorded"].clone()), (200, json!(false)));

    put(&app, TELEGRAM_EN, json!({ "parts": { "text": "custom" } })).await;
    let (status, reset) = send(app.http.delete(app.url(TELEGRAM_EN))).await;
    assert_eq!(status, 200);
    assert_eq!(reset["version"], 2);
    assert_eq!(reset["recorded"], true);
    app.drain().await;

    let (_, detail) = get(&app, TELEGRAM_EN).await;
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["source"], "builtin");
    assert_eq!(detail["parts"], builtin["parts"]);
    assert_eq!(detail["reference"], "builtin/build_finished.telegram.en@1");
    let (_, versions) = get(&app, &format!("{TELEGRAM_EN}/versions")).await;
    let sources: Vec<&str> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["builtin", "custom", "builtin"]);

    let rendered = Templates::new(app.pool.clone())
        .render(
            TemplateKind::BuildFinished,
            TemplateChannel::Telegram,
            Language::En,
            &BuildContext::sample(TemplateKind::BuildFinished, Language::En),
        )
        .await
        .unwrap();
    assert_eq!(rendered.template, "builtin/build_finished.telegram.en@1");
    assert!(rendered.text.contains("Outcome: <b>failed</b>"));
    app.finish().await;
}

#[tokio::test]
async fn a_preview_shows_sample_or_real_values_escaped_for_the_channel() {
    let app = spawn_app(Bus::InProcess).await;
    let preview = |id: &str, body: Value| {
        send(
            app.http
                .post(app.url(&format!("/api/v1/templates/{id}/preview")))
                .json(&body),
        )
    };

    // Sample data: a failing run whose commit message has markup characters in it.
    let (status, telegram) = preview("build_finished.telegram.en", json!({})).await;
    assert_eq!(status, 200, "{telegram}");
    assert_eq!(telegram["data"], "sample");
    assert_eq!(telegram["template"], "builtin/build_finished.telegram.en@1");
    let text = telegram["text"].as_str().unwrap();
    assert!(
        text.starts_with("🔴 <b>octo-org/checkout-service</b>: CI is broken"),
        "{text}"
    );
    assert!(text.contains("Handle &lt;empty&gt; carts &amp; &quot;guest&quot; checkouts"));
    assert!(telegram.get("subject").is_none());

    let (_, email) = preview("build_finished.email.de", json!({})).await;
    assert_eq!(
        email["subject"],
        "🔴 octo-org/checkout-service: CI ist kaputt auf main"
    );
    assert!(email["text"]
        .as_str()
        .unwrap()
        .contains("Handle <empty> carts & \"guest\" checkouts"));
    assert!(email["html"]
        .as_str()
        .unwrap()
        .contains("Handle &lt;empty&gt; carts &amp; &quot;guest&quot; checkouts"));

    let (_, push) = preview(
        "build_started.push.en",
        json!({ "parts": { "title": "{{emoji}} {{workflow}} {{headline}}", "body": "{{commit_message}}" } }),
    )
    .await;
    assert_eq!(push["template"], "build_started.push.en@draft");
    assert_eq!(push["subject"], "🔄 CI started");
    assert_eq!(push["text"], "Handle <empty> carts & \"guest\" checkouts");

    // A real run: post a failing GitHub run, preview with its data.
    let project = app.create_project("preview").await;
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "failure".into();
        v["workflow_run"]["head_commit"]["message"] = "Fix <b> & \"that\"".into();
        v["workflow_run"]["display_title"] = "Fix <b> & \"that\"".into();
    });
    let response = app
        .post_github(&project, "workflow_run", &body, "preview-1")
        .await;
    assert_eq!(response.status(), 202);
    let recorded: Value = response.json().await.unwrap();
    let build_run_id = recorded["build_run_id"].as_str().unwrap().to_owned();
    let (status, real) = preview(
        "build_finished.telegram.en",
        json!({ "build_run_id": build_run_id, "parts": { "text": "{{repository}} {{outcome}} {{commit_message}} {{build_run_id}}" } }),
    )
    .await;
    assert_eq!(status, 200, "{real}");
    assert_eq!(real["data"], build_run_id);
    assert_eq!(
        real["text"],
        format!(
            "octo-org/octo-repo failed Fix &lt;b&gt; &amp; &quot;that&quot; {}",
            build_run_id.replace('"', "&quot;")
        )
    );
    let (status, started) = preview(
        "build_started.telegram.de",
        json!({ "build_run_id": build_run_id }),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started["text"]
        .as_str()
        .unwrap()
        .starts_with("🔄 <b>octo-org/octo-repo</b>"));

    let (status, _) = preview(
        "build_finished.telegram.en",
        json!({ "build_run_id": "github:nobody/nothing:1:1" }),
    )
    .await;
    assert_eq!(status, 404);
    // Nothing a preview does is recorded.
    assert_eq!(template_events(&app).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn readers_see_and_preview_templates_but_only_admins_change_them() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    for role in [api::auth::Role::Reader, api::auth::Role::Operator] {
        let client = client_with(&create_key(&app.pool, role, &[]).await);
        let (status, _) = send(client.get(app.url(TELEGRAM_EN))).await;
        assert_eq!(status, 200);
        let (status, _) = send(
            client
                .post(app.url(&format!("{TELEGRAM_EN}/preview")))
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(
            client
                .put(app.url(TELEGRAM_EN))
                .json(&json!({ "parts": { "text": "x" } })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = send(client.delete(app.url(TELEGRAM_EN))).await;
        assert_eq!(status, 403);
    }
    assert_eq!(template_events(&app).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_projection_rebuild_reproduces_the_template_tables() {
    let app = spawn_app(Bus::InProcess).await;
    put(&app, TELEGRAM_EN, json!({ "parts": { "text": "one" } })).await;
    put(&app, TELEGRAM_EN, json!({ "parts": { "text": "two" } })).await;
    send(app.http.delete(app.url(TELEGRAM_EN))).await;
    put(
        &app,
        "/api/v1/templates/build_started.push.de",
        json!({ "parts": { "title": "{{headline}}", "body": "{{branch}}" } }),
    )
    .await;
    app.drain().await;
    let tables = |models: Vec<String>| -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for row in models.iter().filter(|r| r.starts_with("template")) {
            *count.entry(row.clone()).or_insert(0) += 1;
        }
        count
    };
    let before = tables(read_models(&app.pool).await);
    assert_eq!(
        before
            .keys()
            .filter(|r| r.starts_with("templates:"))
            .count(),
        2
    );
    assert_eq!(
        before
            .keys()
            .filter(|r| r.starts_with("template_versions:"))
            .count(),
        4
    );
    rebuild_now(&app.pool, "templates", None).await;
    rebuild_now(&app.pool, "all", Some(2)).await;
    assert_eq!(tables(read_models(&app.pool).await), before);
    app.finish().await;
}
