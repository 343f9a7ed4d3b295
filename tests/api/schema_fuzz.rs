//! Schemathesis against the OpenAPI document Herald serves: thousands of generated requests to every operation
//! (its coverage, fuzzing and stateful phases), checked for two things a client relies on: no answer is a
//! server error, and every answer matches the schema the document gives for it.
//!
//! `scripts/test.sh` installs schemathesis into `.herald/venv` and sets `HERALD_TEST_SCHEMATHESIS`. The seed is
//! fixed, so a failure can be repeated with the command the output prints.

use std::time::Duration;

use crate::helpers::{create_key, spawn_app_configured, Bus};

/// Generated examples per operation and phase: enough to reach every operation's validation, small enough to
/// run in about a minute.
const EXAMPLES: &str = "8";
const SEED: &str = "20261124";

#[tokio::test]
async fn generated_requests_find_no_server_error_and_no_answer_outside_the_schema() {
    let schemathesis = std::env::var("HERALD_TEST_SCHEMATHESIS").expect(
        "HERALD_TEST_SCHEMATHESIS names the schemathesis command; scripts/test.sh installs it into .herald/venv",
    );
    let app = spawn_app_configured(Bus::InProcess, &[], |settings| {
        // Thousands of requests in a minute from one address: the rate limits are not what is tested here.
        let plenty = api::limits::Rate::new(100_000, 100_000).expect("non-zero");
        settings.limits.api = plenty;
        settings.limits.webhooks = plenty;
    })
    .await;
    // Something for the generated ids to find besides 404s.
    app.create_project("fuzzed").await;
    let key = create_key(&app.pool, api::auth::Role::Admin, &[]).await;
    let scratch = std::env::temp_dir().join(format!("herald-schemathesis-{}", app.database));
    std::fs::create_dir_all(&scratch).unwrap();
    let run = |attempt: u32| {
        let output = scratch.join(format!("output-{attempt}.log"));
        let log = std::fs::File::create(&output).unwrap();
        let child = std::process::Command::new(&schemathesis)
            .current_dir(&scratch)
            .args(["run", app.url("/api/v1/openapi.json").as_str()])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            // One worker: schemathesis's own caches have crashed under two (a KeyError inside the tool).
            .args(["--max-examples", EXAMPLES, "--seed", SEED, "--workers", "1"])
            // Raw RFC 5322 bounce reports: schemathesis cannot generate `message/rfc822` bodies.
            .args(["--exclude-path", "/api/v1/email/dsn"])
            // Both ways of presenting the key, so no generated credential header replaces it.
            .args(["-H", format!("Authorization: Bearer {key}").as_str()])
            .args(["-H", format!("X-Api-Key: {key}").as_str()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("schemathesis runs");
        (child, output)
    };
    let mut attempt = 0;
    let (status, output) = loop {
        attempt += 1;
        let (mut child, output) = run(attempt);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "schemathesis did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let output = std::fs::read_to_string(output).unwrap_or_default();
        // A crash inside the tool ("Runtime Error") is not a finding about Herald: run it once more. A failed
        // check ("❌") never is retried.
        let tool_crashed = output.contains("Runtime Error") && !output.contains('❌');
        if status.success() || !tool_crashed || attempt == 2 {
            break (status, output);
        }
    };
    let summary = output.split("SUMMARY").last().unwrap_or(&output).to_owned();
    println!("{summary}");
    assert!(status.success(), "schemathesis found problems:\n{output}");
    let count = |label: &str| {
        summary
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().split('/').next()?.parse::<u32>().ok())
    };
    let selected = count("Selected:").expect("schemathesis prints how many operations it selected");
    assert!(
        selected > 50,
        "the document lists every operation: {summary}"
    );
    assert_eq!(
        count("Tested:"),
        Some(selected),
        "every selected operation was tested:\n{summary}"
    );
    std::fs::remove_dir_all(&scratch).ok();
    app.finish().await;
}
