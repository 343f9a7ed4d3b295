//! CircleCI outbound webhooks: `workflow-completed` (a run's verdict) and `job-completed` (a job's), signed
//! with `circleci-signature: v1=<hex HMAC-SHA256 of the body>`, deduplicated on the body's `id`.
//!
//! Several workflows share one pipeline number, so a CircleCI run is keyed by its workflow id and ordered by the
//! pipeline number. (Job events of GitLab-triggered pipelines carry no workflow; they are keyed by the pipeline.)

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, Outcome, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    non_empty, parse, seconds_between, unknown, verify_hmac_hex, AuthError, Normalized,
    PayloadError, WebhookRequest,
};

#[derive(Deserialize)]
struct Payload {
    project: Project,
    pipeline: Pipeline,
    workflow: Option<Workflow>,
    job: Option<Job>,
    happened_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Project {
    name: Option<String>,
    slug: Option<String>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: String,
    number: i64,
    vcs: Option<Vcs>,
    trigger_parameters: Option<TriggerParameters>,
}

#[derive(Deserialize)]
struct Vcs {
    target_repository_url: Option<String>,
    origin_repository_url: Option<String>,
    revision: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    commit: Option<Commit>,
}

#[derive(Deserialize)]
struct Commit {
    subject: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
}

#[derive(Deserialize)]
struct TriggerParameters {
    gitlab: Option<GitlabTrigger>,
}

#[derive(Deserialize)]
struct GitlabTrigger {
    web_url: Option<String>,
    branch: Option<String>,
    commit_title: Option<String>,
    commit_author_name: Option<String>,
    checkout_sha: Option<String>,
}

#[derive(Deserialize)]
struct Workflow {
    id: String,
    name: String,
    created_at: Option<DateTime<Utc>>,
    stopped_at: Option<DateTime<Utc>>,
    url: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct Job {
    name: String,
    number: Option<i64>,
    started_at: Option<DateTime<Utc>>,
    stopped_at: Option<DateTime<Utc>>,
    status: String,
}

#[derive(Deserialize)]
struct Envelope {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `circleci-signature` holds comma-separated versioned signatures; `v1` is the one CircleCI documents.
pub(crate) fn verify_signature(secret: &str, request: &WebhookRequest) -> Result<(), AuthError> {
    const NAME: &str = "circleci-signature";
    let header = request.header(NAME).ok_or(AuthError::Missing(NAME))?;
    let v1 = header
        .split(',')
        .find_map(|part| part.trim().strip_prefix("v1="))
        .ok_or(AuthError::Malformed(NAME))?;
    verify_hmac_hex(secret, request.body, v1).map_err(|e| match e {
        AuthError::Malformed(_) => AuthError::Malformed(NAME),
        other => other,
    })
}

pub(crate) fn event_type_of(body: &[u8]) -> String {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.kind)
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(crate) fn delivery_id_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Envelope>(body)
        .ok()?
        .id
        .filter(|id| !id.is_empty())
}

/// CircleCI statuses: success, failed, error, canceled, unauthorized (workflows); jobs lack `error`.
fn outcome(field: &'static str, raw: &str) -> Result<Outcome, PayloadError> {
    Ok(match raw {
        "success" => Outcome::Succeeded,
        "failed" | "error" | "infrastructure_fail" => Outcome::Failed,
        "timedout" => Outcome::TimedOut,
        "canceled" => Outcome::Cancelled,
        "unauthorized" => Outcome::ActionRequired,
        "not_run" => Outcome::Skipped,
        other => return Err(unknown(field, other)),
    })
}

fn path_of(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let (_, rest) = trimmed.split_once("://")?;
    non_empty(Some(rest.split_once('/')?.1.to_owned()))
}

pub fn normalize(
    project_id: Uuid,
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    if !matches!(event, "workflow-completed" | "job-completed") {
        parse::<serde_json::Value>(event, body)?;
        return Ok(Normalized::Ignored {
            event: event.to_owned(),
            reason: format!("Herald does not act on `{event}` events"),
        });
    }
    let payload: Payload = parse(event, body)?;
    let vcs = payload.pipeline.vcs;
    let gitlab = payload.pipeline.trigger_parameters.and_then(|t| t.gitlab);
    let repository = vcs
        .as_ref()
        .and_then(|v| {
            v.target_repository_url
                .as_deref()
                .or(v.origin_repository_url.as_deref())
        })
        .and_then(path_of)
        .or(gitlab
            .as_ref()
            .and_then(|g| g.web_url.as_deref())
            .and_then(path_of))
        .or(payload
            .project
            .slug
            .as_deref()
            .and_then(|s| s.split_once('/').map(|(_, rest)| rest.to_owned())))
        .or(payload.project.name)
        .ok_or(PayloadError::Invalid {
            field: "project.slug",
            reason: "missing".into(),
        })?;
    let (branch, tag, sha, subject, author) = match vcs {
        Some(v) => (
            non_empty(v.branch),
            non_empty(v.tag),
            v.revision,
            v.commit.as_ref().and_then(|c| c.subject.clone()),
            v.commit.and_then(|c| c.author).and_then(|a| a.name),
        ),
        None => match gitlab {
            Some(g) => (
                non_empty(g.branch),
                None,
                g.checkout_sha,
                g.commit_title,
                g.commit_author_name,
            ),
            None => (None, None, None, None, None),
        },
    };
    let (workflow, run_key, url) = match &payload.workflow {
        Some(w) => (w.name.clone(), w.id.clone(), w.url.clone()),
        None => ("pipeline".to_owned(), payload.pipeline.id.clone(), None),
    };
    let run = RunInfo {
        project_id,
        provider: "circleci".to_owned(),
        repository,
        workflow,
        branch,
        tag,
        pull_request: None,
        run_id: payload.pipeline.number,
        run_key: Some(run_key),
        run_number: Some(payload.pipeline.number),
        attempt: 1,
        commit_sha: sha,
        commit_message: subject,
        author,
        url,
    };
    let happened_at = payload.happened_at.unwrap_or(received_at);
    let scope = if event == "workflow-completed" {
        let workflow = payload.workflow.ok_or(PayloadError::Invalid {
            field: "workflow",
            reason: "required in workflow-completed".into(),
        })?;
        let status = workflow.status.as_deref().ok_or(PayloadError::Invalid {
            field: "workflow.status",
            reason: "required in workflow-completed".into(),
        })?;
        let _ = workflow.stopped_at;
        BuildScope::Run {
            status: BuildStatus::Completed,
            outcome: Some(outcome("workflow.status", status)?),
            started_at: workflow.created_at,
        }
    } else {
        let job = payload.job.ok_or(PayloadError::Invalid {
            field: "job",
            reason: "required in job-completed".into(),
        })?;
        let job_outcome = outcome("job.status", &job.status)?;
        BuildScope::Job(JobReport {
            job_id: job.number.unwrap_or_default(),
            name: job.name,
            status: BuildStatus::Completed,
            outcome: Some(job_outcome),
            runner: None,
            duration_secs: seconds_between(job.started_at, job.stopped_at),
            started_at: job.started_at,
            completed_at: job.stopped_at,
            failed_steps: Vec::new(),
        })
    };
    Ok(Normalized::Build(Box::new(BuildEvent {
        run,
        scope,
        occurred_at: happened_at,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{fixture, headers};
    use super::*;

    fn build(event: &str, path: &str) -> BuildEvent {
        match normalize(
            Uuid::nil(),
            event,
            &fixture(&format!("circleci/{path}")),
            Utc::now(),
        )
        .unwrap()
        {
            Normalized::Build(b) => *b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn circlecis_published_signature_vectors_verify() {
        for (body, secret, hex) in [
            (
                "hello world",
                "secret",
                "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a",
            ),
            (
                "lalala",
                "another-secret",
                "daa220016c8f29a8b214fbfc3671aeec2145cfb1e6790184ffb38b6d0425fa00",
            ),
            (
                "an-important-request-payload",
                "hunter123",
                "9be2242094a9a8c00c64306f382a7f9d691de910b4a266f67bd314ef18ac49fa",
            ),
            (
                "foo",
                "secret",
                "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4",
            ),
        ] {
            let headers = headers(&[("circleci-signature", &format!("v1={hex}"))]);
            let request = WebhookRequest {
                headers: &headers,
                body: body.as_bytes(),
                query_token: None,
                received_at: chrono::Utc::now(),
            };
            assert_eq!(verify_signature(secret, &request), Ok(()), "{body}");
            assert_eq!(
                verify_signature("wrong", &request),
                Err(AuthError::Mismatch),
                "{body}"
            );
        }
        let headers = headers(&[("circleci-signature", "v2=abcd")]);
        let request = WebhookRequest {
            headers: &headers,
            body: b"x",
            query_token: None,
            received_at: chrono::Utc::now(),
        };
        assert_eq!(
            verify_signature("s", &request),
            Err(AuthError::Malformed("circleci-signature"))
        );
    }

    #[test]
    fn a_completed_workflow_is_a_run_keyed_by_its_workflow_id() {
        let event = build("workflow-completed", "workflow-completed.payload.json");
        assert_eq!(event.run.repository, "circleci/webhook-service");
        assert_eq!(event.run.branch.as_deref(), Some("main"));
        assert_eq!(event.run.run_id, 130);
        assert_eq!(
            event.run.commit_message.as_deref(),
            Some("Description of change")
        );
        assert!(event.run.run_key.is_some());
        assert!(matches!(
            event.scope,
            BuildScope::Run {
                status: BuildStatus::Completed,
                outcome: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn gitlab_triggered_pipelines_name_their_repository_and_branch() {
        let event = build(
            "workflow-completed",
            "workflow-completed.gitlab.payload.json",
        );
        assert_eq!(event.run.repository, "circleci/hello-world");
        assert_eq!(event.run.branch.as_deref(), Some("main"));
        assert!(matches!(
            event.scope,
            BuildScope::Run {
                outcome: Some(Outcome::Failed),
                ..
            }
        ));
        let job = build("job-completed", "job-completed.gitlab.payload.json");
        assert!(matches!(job.scope, BuildScope::Job(_)));
    }

    #[test]
    fn a_completed_job_reports_its_duration() {
        let event = build("job-completed", "job-completed.payload.json");
        let BuildScope::Job(job) = event.scope else {
            panic!("a job")
        };
        assert_eq!(job.name, "test");
        assert_eq!(job.outcome, Some(Outcome::Succeeded));
        assert_eq!(job.duration_secs, Some(5));
    }

    #[test]
    fn every_documented_status_maps() {
        for (raw, expected) in [
            ("success", Outcome::Succeeded),
            ("failed", Outcome::Failed),
            ("error", Outcome::Failed),
            ("canceled", Outcome::Cancelled),
            ("unauthorized", Outcome::ActionRequired),
        ] {
            assert_eq!(outcome("status", raw).unwrap(), expected);
        }
        assert!(outcome("status", "exploded").is_err());
    }

    #[test]
    fn the_body_id_is_the_delivery_id() {
        let body = fixture("circleci/job-completed.payload.json");
        assert_eq!(
            delivery_id_of(&body).as_deref(),
            Some("8bd71c28-4969-3677-8940-3e3a61c46660")
        );
        assert_eq!(event_type_of(&body), "job-completed");
        assert_eq!(event_type_of(b"nope"), "unknown");
    }
}
