//! GitHub Actions webhooks (`workflow_run`, `workflow_job`, `ping`) normalized into [`BuildEvent`].
//!
//! Field meanings follow GitHub's webhook documentation: the event name is the `X-GitHub-Event` header, the
//! action and the object are in the body. Only fields Herald uses are parsed; unknown fields are ignored so new
//! GitHub fields never break ingestion.

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, Outcome, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

/// What a GitHub delivery means to Herald.
#[derive(Debug, Clone, PartialEq)]
pub enum GithubWebhook {
    Ping {
        hook_id: Option<i64>,
    },
    Build(Box<BuildEvent>),
    /// An event Herald does not act on (yet); accepted and recorded nowhere.
    Ignored {
        event: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON for a `{event}` event: {source}")]
    Json {
        event: String,
        source: serde_json::Error,
    },
    #[error("`{0}` is not a build status Herald knows")]
    UnknownStatus(String),
    #[error("`{0}` is not a conclusion Herald knows")]
    UnknownConclusion(String),
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Ping {
    hook_id: Option<i64>,
}

#[derive(Deserialize)]
struct NamedWorkflow {
    name: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
}

#[derive(Deserialize)]
struct HeadCommit {
    message: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Actor {
    login: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRunPayload {
    workflow_run: WorkflowRun,
    workflow: Option<NamedWorkflow>,
    repository: Repository,
}

#[derive(Deserialize)]
struct WorkflowRun {
    id: i64,
    name: Option<String>,
    path: Option<String>,
    run_number: Option<i64>,
    run_attempt: Option<i32>,
    head_branch: Option<String>,
    head_sha: Option<String>,
    head_commit: Option<HeadCommit>,
    actor: Option<Actor>,
    status: Option<String>,
    conclusion: Option<String>,
    html_url: Option<String>,
    run_started_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct WorkflowJobPayload {
    workflow_job: WorkflowJob,
    repository: Repository,
    sender: Option<Actor>,
}

#[derive(Deserialize)]
struct Step {
    name: String,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowJob {
    id: i64,
    run_id: i64,
    run_attempt: Option<i32>,
    name: String,
    workflow_name: Option<String>,
    head_branch: Option<String>,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    runner_name: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    steps: Vec<Step>,
}

/// Map GitHub's `status` onto Herald's. GitHub documents: requested, in_progress, completed, queued, pending,
/// waiting (and `action_required`/`neutral`/... only as check-run statuses, treated as queued).
fn status(raw: Option<&str>) -> Result<BuildStatus, PayloadError> {
    Ok(match raw.unwrap_or("queued") {
        "requested" | "queued" | "pending" | "waiting" => BuildStatus::Queued,
        "in_progress" => BuildStatus::Started,
        "completed" => BuildStatus::Completed,
        other => return Err(PayloadError::UnknownStatus(other.to_owned())),
    })
}

/// Map GitHub's `conclusion` onto Herald's outcomes.
fn conclusion(raw: Option<&str>) -> Result<Option<Outcome>, PayloadError> {
    let Some(raw) = raw else { return Ok(None) };
    Ok(Some(match raw {
        "success" | "neutral" => Outcome::Succeeded,
        "failure" | "startup_failure" => Outcome::Failed,
        "timed_out" => Outcome::TimedOut,
        "cancelled" | "stale" => Outcome::Cancelled,
        "skipped" => Outcome::Skipped,
        "action_required" => Outcome::ActionRequired,
        other => return Err(PayloadError::UnknownConclusion(other.to_owned())),
    }))
}

fn parse<T: serde::de::DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|source| PayloadError::Json {
        event: event.to_owned(),
        source,
    })
}

/// Normalize one GitHub delivery. `event` is the `X-GitHub-Event` header.
pub fn normalize(
    project_id: Uuid,
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<GithubWebhook, PayloadError> {
    match event {
        "ping" => {
            let ping: Ping = parse(event, body)?;
            Ok(GithubWebhook::Ping {
                hook_id: ping.hook_id,
            })
        }
        "workflow_run" => {
            let payload: WorkflowRunPayload = parse(event, body)?;
            Ok(GithubWebhook::Build(Box::new(workflow_run(
                project_id,
                payload,
                received_at,
            )?)))
        }
        "workflow_job" => {
            let payload: WorkflowJobPayload = parse(event, body)?;
            Ok(GithubWebhook::Build(Box::new(workflow_job(
                project_id,
                payload,
                received_at,
            )?)))
        }
        other => {
            // Still insist on JSON, so a garbled body is refused whatever the event.
            parse::<serde_json::Value>(other, body)?;
            Ok(GithubWebhook::Ignored {
                event: other.to_owned(),
            })
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn workflow_run(
    project_id: Uuid,
    payload: WorkflowRunPayload,
    received_at: DateTime<Utc>,
) -> Result<BuildEvent, PayloadError> {
    let run = payload.workflow_run;
    let (workflow_name, workflow_path) = payload
        .workflow
        .map(|w| (w.name, w.path))
        .unwrap_or_default();
    let workflow = non_empty(run.name)
        .or(non_empty(workflow_name))
        .or(non_empty(run.path))
        .or(non_empty(workflow_path))
        .unwrap_or_else(|| "workflow".to_owned());
    let status = status(run.status.as_deref())?;
    let outcome = conclusion(run.conclusion.as_deref())?;
    let (commit_message, commit_author) = run
        .head_commit
        .map(|c| (c.message, c.author.and_then(|a| a.name)))
        .unwrap_or_default();
    Ok(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "github".to_owned(),
            repository: payload.repository.full_name,
            workflow,
            branch: non_empty(run.head_branch),
            run_id: run.id,
            run_number: run.run_number,
            attempt: run.run_attempt.unwrap_or(1),
            commit_sha: run.head_sha,
            commit_message,
            author: commit_author.or(run.actor.and_then(|a| a.login)),
            url: run.html_url,
        },
        scope: BuildScope::Run {
            status,
            outcome,
            started_at: run.run_started_at,
        },
        occurred_at: run.updated_at.unwrap_or(received_at),
    })
}

fn workflow_job(
    project_id: Uuid,
    payload: WorkflowJobPayload,
    received_at: DateTime<Utc>,
) -> Result<BuildEvent, PayloadError> {
    let job = payload.workflow_job;
    let status = status(job.status.as_deref())?;
    let outcome = conclusion(job.conclusion.as_deref())?;
    let failed_steps = job
        .steps
        .into_iter()
        .filter(|s| matches!(s.conclusion.as_deref(), Some("failure" | "timed_out")))
        .map(|s| s.name)
        .collect();
    let url = payload
        .repository
        .html_url
        .map(|repo| format!("{repo}/actions/runs/{}", job.run_id));
    let occurred_at = job
        .completed_at
        .filter(|_| status == BuildStatus::Completed)
        .or(job.started_at)
        .unwrap_or(received_at);
    Ok(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "github".to_owned(),
            repository: payload.repository.full_name,
            workflow: non_empty(job.workflow_name).unwrap_or_else(|| "workflow".to_owned()),
            branch: non_empty(job.head_branch),
            run_id: job.run_id,
            run_number: None,
            attempt: job.run_attempt.unwrap_or(1),
            commit_sha: job.head_sha,
            commit_message: None,
            author: payload.sender.and_then(|s| s.login),
            url,
        },
        scope: BuildScope::Job(JobReport {
            job_id: job.id,
            name: job.name,
            status,
            outcome,
            runner: job.runner_name,
            started_at: job.started_at,
            completed_at: job.completed_at,
            failed_steps,
        }),
        occurred_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/github/");
        std::fs::read(format!("{root}{path}")).expect("fixture exists")
    }

    fn build(event: &str, path: &str) -> BuildEvent {
        match normalize(Uuid::nil(), event, &fixture(path), Utc::now()).unwrap() {
            GithubWebhook::Build(b) => *b,
            other => panic!("expected a build, got {other:?}"),
        }
    }

    #[test]
    fn a_completed_workflow_run_names_its_workflow_branch_and_outcome() {
        let event = build("workflow_run", "workflow_run/completed.payload.json");
        assert_eq!(event.run.repository, "octo-org/octo-repo");
        assert_eq!(event.run.workflow, "test");
        assert_eq!(event.run.branch.as_deref(), Some("master"));
        assert_eq!(event.run.run_id, 289782451);
        assert_eq!(event.run.run_number, Some(163));
        assert_eq!(event.run.author.as_deref(), Some("Matthias Fax"));
        assert_eq!(
            event.scope,
            BuildScope::Run {
                status: BuildStatus::Completed,
                outcome: Some(Outcome::Succeeded),
                started_at: Some("2020-10-05T16:33:49Z".parse().unwrap()),
            }
        );
    }

    #[test]
    fn a_requested_workflow_run_is_queued() {
        let event = build("workflow_run", "workflow_run/requested.payload.json");
        assert!(matches!(
            event.scope,
            BuildScope::Run {
                status: BuildStatus::Queued,
                outcome: None,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_job_lists_its_failed_steps() {
        let event = build(
            "workflow_job",
            "workflow_job/completed.failure.with-organization.payload.json",
        );
        let BuildScope::Job(job) = event.scope else {
            panic!("expected a job")
        };
        assert_eq!(job.name, "linters");
        assert_eq!(job.outcome, Some(Outcome::Failed));
        assert!(!job.failed_steps.is_empty());
        assert_eq!(event.run.workflow, "CodeQL");
        assert_eq!(event.run.run_id, 2202229078);
    }

    #[test]
    fn a_ping_is_recognized() {
        let ping = normalize(
            Uuid::nil(),
            "ping",
            &fixture("ping/payload.json"),
            Utc::now(),
        );
        assert_eq!(
            ping.unwrap(),
            GithubWebhook::Ping {
                hook_id: Some(109948940)
            }
        );
    }

    #[test]
    fn every_documented_conclusion_maps() {
        for (raw, outcome) in [
            ("success", Outcome::Succeeded),
            ("neutral", Outcome::Succeeded),
            ("failure", Outcome::Failed),
            ("startup_failure", Outcome::Failed),
            ("timed_out", Outcome::TimedOut),
            ("cancelled", Outcome::Cancelled),
            ("stale", Outcome::Cancelled),
            ("skipped", Outcome::Skipped),
            ("action_required", Outcome::ActionRequired),
        ] {
            assert_eq!(conclusion(Some(raw)).unwrap(), Some(outcome), "{raw}");
        }
        assert!(conclusion(Some("exploded")).is_err());
        assert!(status(Some("exploding")).is_err());
    }

    #[test]
    fn garbage_is_refused_for_any_event() {
        for event in ["workflow_run", "workflow_job", "ping", "push"] {
            assert!(normalize(Uuid::nil(), event, b"{not json", Utc::now()).is_err());
        }
        assert!(normalize(Uuid::nil(), "workflow_run", b"{}", Utc::now()).is_err());
        assert_eq!(
            normalize(Uuid::nil(), "push", b"{}", Utc::now()).unwrap(),
            GithubWebhook::Ignored {
                event: "push".into()
            }
        );
    }
}
