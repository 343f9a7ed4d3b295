//! The generic webhook: Herald's own documented JSON (docs/webhooks.md, schema in
//! docs/generic-webhook.schema.json), so anything that can run `curl` can report a build.
//!
//! Authenticated with `X-Herald-Token: <secret>` or, better, `X-Herald-Signature-256: sha256=<hex HMAC>`;
//! deduplicated on `X-Herald-Delivery`, else on the body's hash.

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, PullRequest, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{herald_status, non_empty, parse, seconds_between, unknown, Normalized, PayloadError};

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
