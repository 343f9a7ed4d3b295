//! The generic webhook: Herald's own documented JSON (docs/webhooks.md, schema in
//! docs/generic-webhook.schema.json), so anything that can run `curl` can report a build.
//!
//! Authenticated with `X-Herald-Token: <secret>` or, better, `X-Herald-Signature-256: sha256=<hex HMAC>`;
//! best, with `X-Herald-Timestamp: <unix seconds>` too, when the HMAC covers `<timestamp>.<body>` and a request
//! more than [`REPLAY_WINDOW`](super::REPLAY_WINDOW) from Herald's clock is refused: a captured request cannot
//! be replayed later. Deduplicated on `X-Herald-Delivery`, else on the body's hash.

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, PullRequest, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    herald_status, non_empty, parse, seconds_between, unknown, verify_hmac_header, AuthError,
    Normalized, PayloadError, WebhookRequest, REPLAY_WINDOW,
};

/// Check `X-Herald-Signature-256` over `<X-Herald-Timestamp>.<body>`, then the timestamp's age. The signature
/// first: an unauthenticated caller learns nothing about Herald's clock.
pub(crate) fn verify_timestamped(secret: &str, request: &WebhookRequest) -> Result<(), AuthError> {
    const HEADER: &str = "X-Herald-Timestamp";
    let raw = request
        .header("x-herald-timestamp")
        .ok_or(AuthError::Missing(HEADER))?;
    let timestamp: i64 = raw
        .trim()
        .parse()
        .map_err(|_| AuthError::Malformed(HEADER))?;
    verify_hmac_header(
        secret,
        &signed_message(timestamp, request.body),
        request.header("x-herald-signature-256"),
        "X-Herald-Signature-256",
        "sha256=",
    )?;
    let sent = DateTime::from_timestamp(timestamp, 0).ok_or(AuthError::Malformed(HEADER))?;
    if (request.received_at - sent).abs() > REPLAY_WINDOW {
        return Err(AuthError::Stale(timestamp));
    }
    Ok(())
}

fn signed_message(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    message
}

/// `X-Herald-Signature-256` for a body sent with `X-Herald-Timestamp: <timestamp>`.
pub fn sign_timestamped(secret: &str, timestamp: i64, body: &[u8]) -> String {
    super::sign(secret, &signed_message(timestamp, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericBuild {
    repository: String,
    workflow: String,
    run_id: i64,
    #[serde(default)]
    run_number: Option<i64>,
    #[serde(default)]
    attempt: Option<i32>,
    /// queued, started, succeeded, failed, cancelled, skipped, timed_out, action_required
    status: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    commit_sha: Option<String>,
    #[serde(default)]
    commit_message: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    pull_request: Option<GenericPullRequest>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    job: Option<GenericJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericPullRequest {
    number: i64,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericJob {
    id: i64,
    name: String,
    status: String,
    #[serde(default)]
    runner: Option<String>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    failed_steps: Vec<String>,
}

fn required(field: &'static str, value: &str) -> Result<(), PayloadError> {
    if value.trim().is_empty() {
        return Err(PayloadError::Invalid {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

pub fn normalize(
    project_id: Uuid,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    let build: GenericBuild = parse("generic build", body)?;
    required("repository", &build.repository)?;
    required("workflow", &build.workflow)?;
    let attempt = build.attempt.unwrap_or(1);
    if attempt < 1 {
        return Err(PayloadError::Invalid {
            field: "attempt",
            reason: "must be 1 or more".into(),
        });
    }
    let occurred_at = build.occurred_at.unwrap_or(received_at);
    let scope = match build.job {
        Some(job) => {
            let (status, outcome) =
                herald_status(&job.status).ok_or_else(|| unknown("job.status", &job.status))?;
            BuildScope::Job(JobReport {
                job_id: job.id,
                name: job.name,
                status,
                outcome,
                runner: job.runner,
                duration_secs: seconds_between(job.started_at, job.completed_at),
                started_at: job.started_at,
                completed_at: job.completed_at,
                failed_steps: job.failed_steps,
            })
        }
        None => {
            let (status, outcome) =
                herald_status(&build.status).ok_or_else(|| unknown("status", &build.status))?;
            BuildScope::Run {
                status,
                outcome,
                started_at: build
                    .started_at
                    .or((status == BuildStatus::Started).then_some(occurred_at)),
            }
        }
    };
    Ok(Normalized::Build(Box::new(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "generic".to_owned(),
            repository: build.repository.trim().to_owned(),
            workflow: build.workflow.trim().to_owned(),
            branch: non_empty(build.branch),
            tag: non_empty(build.tag),
            pull_request: build.pull_request.map(|pr| PullRequest {
                number: pr.number,
                url: pr.url,
            }),
            run_id: build.run_id,
            run_key: None,
            run_number: build.run_number,
            attempt,
            commit_sha: non_empty(build.commit_sha),
            commit_message: non_empty(build.commit_message),
            author: non_empty(build.author),
            url: non_empty(build.url),
        },
        scope,
        occurred_at,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Outcome;

    fn normalize_json(value: serde_json::Value) -> Result<Normalized, PayloadError> {
        normalize(Uuid::nil(), value.to_string().as_bytes(), Utc::now())
    }

    fn timestamped(
        secret: &str,
        timestamp: &str,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let signed_at = timestamp.parse().unwrap_or(0);
        let headers = super::super::test_support::headers(&[
            ("X-Herald-Timestamp", timestamp),
            (
                "X-Herald-Signature-256",
                &sign_timestamped(secret, signed_at, body),
            ),
        ]);
        super::super::Provider::Generic.authenticate(
            "s3cret",
            &WebhookRequest {
                headers: &headers,
                body,
                query_token: None,
                received_at,
            },
        )
    }

    #[test]
    fn a_timestamped_signature_is_accepted_only_within_five_minutes() {
        let now = Utc::now();
        let body = br#"{"run_id":1}"#;
        let at = |delta: i64| (now.timestamp() + delta).to_string();
        assert_eq!(timestamped("s3cret", &at(0), body, now), Ok(()));
        assert_eq!(timestamped("s3cret", &at(-299), body, now), Ok(()));
        assert_eq!(timestamped("s3cret", &at(299), body, now), Ok(()));
        let old = now.timestamp() - 301;
        assert_eq!(
            timestamped("s3cret", &old.to_string(), body, now),
            Err(AuthError::Stale(old))
        );
        // A replay cannot move the timestamp: it is signed.
        let headers = super::super::test_support::headers(&[
            ("X-Herald-Timestamp", &at(0)),
            (
                "X-Herald-Signature-256",
                &sign_timestamped("s3cret", old, body),
            ),
        ]);
        let moved = WebhookRequest {
            headers: &headers,
            body,
            query_token: None,
            received_at: now,
        };
        assert_eq!(
            super::super::Provider::Generic.authenticate("s3cret", &moved),
            Err(AuthError::Mismatch)
        );
        // The wrong secret is refused before the clock is looked at.
        assert_eq!(
            timestamped("other", &old.to_string(), body, now),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            timestamped("s3cret", "yesterday", body, now),
            Err(AuthError::Malformed("X-Herald-Timestamp"))
        );
    }

    #[test]
    fn a_minimal_report_is_a_run() {
        let normalized = normalize_json(serde_json::json!({
            "repository": "acme/api", "workflow": "deploy", "run_id": 7, "status": "failed", "branch": "main"
        }))
        .unwrap();
        let Normalized::Build(build) = normalized else {
            panic!("a build")
        };
        assert_eq!(build.run.provider, "generic");
        assert!(matches!(
            build.scope,
            BuildScope::Run {
                status: BuildStatus::Completed,
                outcome: Some(Outcome::Failed),
                ..
            }
        ));
    }

    #[test]
    fn a_job_report_is_a_job() {
        let normalized = normalize_json(serde_json::json!({
            "repository": "acme/api", "workflow": "ci", "run_id": 7, "status": "started",
            "job": {"id": 1, "name": "lint", "status": "failed", "failed_steps": ["clippy"]}
        }))
        .unwrap();
        let Normalized::Build(build) = normalized else {
            panic!("a build")
        };
        let BuildScope::Job(job) = build.scope else {
            panic!("a job")
        };
        assert_eq!(job.failed_steps, ["clippy"]);
    }

    #[test]
    fn bad_reports_name_the_field() {
        for (body, field) in [
            (
                serde_json::json!({"repository": "a", "workflow": "w", "run_id": 1, "status": "sometimes"}),
                "status",
            ),
            (
                serde_json::json!({"repository": "", "workflow": "w", "run_id": 1, "status": "queued"}),
                "repository",
            ),
            (
                serde_json::json!({"repository": "a", "workflow": "w", "status": "queued"}),
                "run_id",
            ),
            (
                serde_json::json!({"repository": "a", "workflow": "w", "run_id": 1, "status": "queued", "colour": 1}),
                "colour",
            ),
            (
                serde_json::json!({"repository": "a", "workflow": "w", "run_id": 1, "status": "queued", "attempt": 0}),
                "attempt",
            ),
        ] {
            let error = normalize_json(body).unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn the_published_schema_lists_exactly_the_statuses_herald_accepts() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/generic-webhook.schema.json"
        );
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let statuses = schema["properties"]["status"]["enum"].as_array().unwrap();
        for status in statuses {
            assert!(
                herald_status(status.as_str().unwrap()).is_some(),
                "{status}"
            );
        }
        assert_eq!(
            statuses,
            schema["properties"]["job"]["properties"]["status"]["enum"]
                .as_array()
                .unwrap()
        );
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(required, ["repository", "workflow", "run_id", "status"]);
    }
}
