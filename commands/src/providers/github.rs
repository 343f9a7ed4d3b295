//! GitHub webhooks normalized into [`BuildEvent`]: Actions (`workflow_run`, `workflow_job`), checks
//! (`check_suite`, `check_run`), commit statuses (`status`), deployments (`deployment_status`) and `ping`.
//!
//! Field meanings follow GitHub's webhook documentation: the event name is the `X-GitHub-Event` header, the
//! action and the object are in the body. Only fields Herald uses are parsed; unknown fields are ignored so new
//! GitHub fields never break ingestion. Re-runs carry `run_attempt`: a new attempt of the same run, its own
//! `BuildRun`.
//!
//! A repository that sends both Actions events and check events reports each Actions run twice (as a workflow
//! run and as a check suite): subscribe GitHub to one family or the other.

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, Outcome, PullRequest, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{non_empty, parse, seconds_between, unknown, Normalized, PayloadError};

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
struct PullRequestRef {
    number: i64,
    url: Option<String>,
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
    #[serde(default)]
    pull_requests: Vec<PullRequestRef>,
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

#[derive(Deserialize)]
struct App {
    name: Option<String>,
}

#[derive(Deserialize)]
struct CheckSuitePayload {
    check_suite: CheckSuite,
    repository: Repository,
    sender: Option<Actor>,
}

#[derive(Deserialize)]
struct CheckSuite {
    id: i64,
    head_branch: Option<String>,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    app: Option<App>,
    head_commit: Option<HeadCommit>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pull_requests: Vec<PullRequestRef>,
}

#[derive(Deserialize)]
struct CheckRunPayload {
    check_run: CheckRun,
    repository: Repository,
    sender: Option<Actor>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: i64,
    name: String,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    html_url: Option<String>,
    check_suite: CheckSuite,
    app: Option<App>,
}

#[derive(Deserialize)]
struct StatusPayload {
    sha: String,
    context: String,
    state: String,
    target_url: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    branches: Vec<Branch>,
    commit: Option<StatusCommit>,
    repository: Repository,
    sender: Option<Actor>,
}

#[derive(Deserialize)]
struct Branch {
    name: String,
}

#[derive(Deserialize)]
struct StatusCommit {
    commit: Option<HeadCommit>,
}

#[derive(Deserialize)]
struct DeploymentStatusPayload {
    deployment_status: DeploymentStatus,
    deployment: Deployment,
    repository: Repository,
    sender: Option<Actor>,
}

#[derive(Deserialize)]
struct DeploymentStatus {
    state: String,
    environment: Option<String>,
    target_url: Option<String>,
    log_url: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Deployment {
    id: i64,
    sha: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    environment: Option<String>,
    created_at: Option<DateTime<Utc>>,
    creator: Option<Actor>,
}

/// GitHub's `status` of a run, job, check suite or check run. GitHub documents: requested, queued, pending,
/// waiting, in_progress, completed.
fn status(raw: Option<&str>) -> Result<BuildStatus, PayloadError> {
    Ok(match raw.unwrap_or("queued") {
        "requested" | "queued" | "pending" | "waiting" => BuildStatus::Queued,
        "in_progress" => BuildStatus::Started,
        "completed" => BuildStatus::Completed,
        other => return Err(unknown("status", other)),
    })
}

/// GitHub's `conclusion`: success, failure, neutral, cancelled, skipped, timed_out, action_required, stale,
/// startup_failure.
fn conclusion(raw: Option<&str>) -> Result<Option<Outcome>, PayloadError> {
    let Some(raw) = raw else { return Ok(None) };
    Ok(Some(match raw {
        "success" | "neutral" => Outcome::Succeeded,
        "failure" | "startup_failure" => Outcome::Failed,
        "timed_out" => Outcome::TimedOut,
        "cancelled" | "stale" => Outcome::Cancelled,
        "skipped" => Outcome::Skipped,
        "action_required" => Outcome::ActionRequired,
        other => return Err(unknown("conclusion", other)),
    }))
}

/// Normalize one GitHub delivery. `event` is the `X-GitHub-Event` header.
pub fn normalize(
    project_id: Uuid,
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    let build = |b: BuildEvent| Ok(Normalized::Build(Box::new(b)));
    match event {
        "ping" => {
            let ping: Ping = parse(event, body)?;
            Ok(Normalized::Ping {
                hook_id: ping.hook_id,
            })
        }
        "workflow_run" => build(workflow_run(project_id, parse(event, body)?, received_at)?),
        "workflow_job" => build(workflow_job(project_id, parse(event, body)?, received_at)?),
        "check_suite" => build(check_suite(project_id, parse(event, body)?, received_at)?),
        "check_run" => build(check_run(project_id, parse(event, body)?, received_at)?),
        "status" => build(commit_status(project_id, parse(event, body)?, received_at)?),
        "deployment_status" => {
            let payload: DeploymentStatusPayload = parse(event, body)?;
            match deployment_status(project_id, payload, received_at)? {
                Some(b) => build(b),
                None => Ok(Normalized::Ignored {
                    event: event.to_owned(),
                    reason:
                        "an inactive deployment status only says a newer deployment replaced it"
                            .into(),
                }),
            }
        }
        other => {
            // Still insist on JSON, so a garbled body is refused whatever the event.
            parse::<serde_json::Value>(other, body)?;
            Ok(Normalized::Ignored {
                event: other.to_owned(),
                reason: format!("Herald does not act on `{other}` events"),
            })
        }
    }
}

fn pull_request(prs: &[PullRequestRef]) -> Option<PullRequest> {
    prs.first().map(|pr| PullRequest {
        number: pr.number,
        url: pr.url.clone(),
    })
}

fn base_run(project_id: Uuid, repository: &Repository, workflow: String, run_id: i64) -> RunInfo {
    RunInfo {
        project_id,
        provider: "github".to_owned(),
        repository: repository.full_name.clone(),
        workflow,
        branch: None,
        tag: None,
        pull_request: None,
        run_id,
        run_key: None,
        run_number: None,
        attempt: 1,
        commit_sha: None,
        commit_message: None,
        author: None,
        url: None,
    }
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
            branch: non_empty(run.head_branch),
            pull_request: pull_request(&run.pull_requests),
            run_number: run.run_number,
            attempt: run.run_attempt.unwrap_or(1),
            commit_sha: run.head_sha,
            commit_message,
            author: commit_author.or(run.actor.and_then(|a| a.login)),
            url: run.html_url,
            ..base_run(project_id, &payload.repository, workflow, run.id)
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
        .as_ref()
        .map(|repo| format!("{repo}/actions/runs/{}", job.run_id));
    let occurred_at = job
        .completed_at
        .filter(|_| status == BuildStatus::Completed)
        .or(job.started_at)
        .unwrap_or(received_at);
    let workflow = non_empty(job.workflow_name).unwrap_or_else(|| "workflow".to_owned());
    Ok(BuildEvent {
        run: RunInfo {
            branch: non_empty(job.head_branch),
            attempt: job.run_attempt.unwrap_or(1),
            commit_sha: job.head_sha,
            author: payload.sender.and_then(|s| s.login),
            url,
            ..base_run(project_id, &payload.repository, workflow, job.run_id)
        },
        scope: BuildScope::Job(JobReport {
            job_id: job.id,
            name: job.name,
            status,
            outcome,
            runner: job.runner_name,
            duration_secs: seconds_between(job.started_at, job.completed_at),
            started_at: job.started_at,
            completed_at: job.completed_at,
            failed_steps,
        }),
        occurred_at,
    })
}

fn suite_run(
    project_id: Uuid,
    repository: &Repository,
    suite: &CheckSuite,
    sender: Option<Actor>,
) -> RunInfo {
    let workflow = suite
        .app
        .as_ref()
        .and_then(|a| non_empty(a.name.clone()))
        .unwrap_or_else(|| "checks".to_owned());
    let (commit_message, commit_author) = suite
        .head_commit
        .as_ref()
        .map(|c| {
            (
                c.message.clone(),
                c.author.as_ref().and_then(|a| a.name.clone()),
            )
        })
        .unwrap_or_default();
    RunInfo {
        branch: non_empty(suite.head_branch.clone()),
        pull_request: pull_request(&suite.pull_requests),
        commit_sha: suite.head_sha.clone(),
        commit_message,
        author: commit_author.or(sender.and_then(|s| s.login)),
        url: repository
            .html_url
            .as_ref()
            .zip(suite.head_sha.as_ref())
            .map(|(repo, sha)| format!("{repo}/commit/{sha}/checks")),
        ..base_run(project_id, repository, workflow, suite.id)
    }
}

fn check_suite(
    project_id: Uuid,
    payload: CheckSuitePayload,
    received_at: DateTime<Utc>,
) -> Result<BuildEvent, PayloadError> {
    let suite = &payload.check_suite;
    Ok(BuildEvent {
        scope: BuildScope::Run {
            status: status(suite.status.as_deref())?,
            outcome: conclusion(suite.conclusion.as_deref())?,
            started_at: suite.created_at,
        },
        occurred_at: suite.updated_at.unwrap_or(received_at),
        run: suite_run(project_id, &payload.repository, suite, payload.sender),
    })
}

fn check_run(
    project_id: Uuid,
    payload: CheckRunPayload,
    received_at: DateTime<Utc>,
) -> Result<BuildEvent, PayloadError> {
    let check = payload.check_run;
    let status = status(check.status.as_deref())?;
    let mut run = suite_run(
        project_id,
        &payload.repository,
        &check.check_suite,
        payload.sender,
    );
    if run.workflow == "checks" {
        if let Some(name) = check.app.and_then(|a| non_empty(a.name)) {
            run.workflow = name;
        }
    }
    run.commit_sha = run.commit_sha.or(check.head_sha);
    run.url = check.html_url.or(run.url);
    let occurred_at = check
        .completed_at
        .filter(|_| status == BuildStatus::Completed)
        .or(check.started_at)
        .unwrap_or(received_at);
    Ok(BuildEvent {
        run,
        scope: BuildScope::Job(JobReport {
            job_id: check.id,
            name: check.name,
            status,
            outcome: conclusion(check.conclusion.as_deref())?,
            runner: None,
            duration_secs: seconds_between(check.started_at, check.completed_at),
            started_at: check.started_at,
            completed_at: check.completed_at,
            failed_steps: Vec::new(),
        }),
        occurred_at,
    })
}

/// A commit status has no run: each (commit, context) is one run, ordered by time.
fn commit_status(
    project_id: Uuid,
    payload: StatusPayload,
    received_at: DateTime<Utc>,
) -> Result<BuildEvent, PayloadError> {
    let (status, outcome) = match payload.state.as_str() {
        "pending" => (BuildStatus::Started, None),
        "success" => (BuildStatus::Completed, Some(Outcome::Succeeded)),
        "failure" | "error" => (BuildStatus::Completed, Some(Outcome::Failed)),
        other => return Err(unknown("state", other)),
    };
    let at = payload
        .updated_at
        .or(payload.created_at)
        .unwrap_or(received_at);
    let (commit_message, commit_author) = payload
        .commit
        .and_then(|c| c.commit)
        .map(|c| (c.message, c.author.and_then(|a| a.name)))
        .unwrap_or_default();
    Ok(BuildEvent {
        run: RunInfo {
            branch: payload.branches.into_iter().next().map(|b| b.name),
            run_key: Some(format!("{}:{}", payload.sha, payload.context)),
            commit_sha: Some(payload.sha),
            commit_message,
            author: commit_author.or(payload.sender.and_then(|s| s.login)),
            url: payload.target_url,
            ..base_run(
                project_id,
                &payload.repository,
                payload.context,
                at.timestamp(),
            )
        },
        scope: BuildScope::Run {
            status,
            outcome,
            started_at: None,
        },
        occurred_at: at,
    })
}

/// A deployment is a run of the workflow "deploy to <environment>"; `None` for `inactive`.
fn deployment_status(
    project_id: Uuid,
    payload: DeploymentStatusPayload,
    received_at: DateTime<Utc>,
) -> Result<Option<BuildEvent>, PayloadError> {
    let (status, outcome) = match payload.deployment_status.state.as_str() {
        "pending" | "queued" | "waiting" => (BuildStatus::Queued, None),
        "in_progress" => (BuildStatus::Started, None),
        "success" => (BuildStatus::Completed, Some(Outcome::Succeeded)),
        "failure" | "error" => (BuildStatus::Completed, Some(Outcome::Failed)),
        "inactive" => return Ok(None),
        other => return Err(unknown("deployment_status.state", other)),
    };
    let deployment = payload.deployment;
    let environment = payload
        .deployment_status
        .environment
        .or(deployment.environment)
        .unwrap_or_else(|| "production".to_owned());
    let at = payload
        .deployment_status
        .updated_at
        .or(payload.deployment_status.created_at)
        .unwrap_or(received_at);
    Ok(Some(BuildEvent {
        run: RunInfo {
            branch: non_empty(deployment.git_ref),
            commit_sha: deployment.sha,
            author: deployment
                .creator
                .and_then(|c| c.login)
                .or(payload.sender.and_then(|s| s.login)),
            url: payload
                .deployment_status
                .target_url
                .or(payload.deployment_status.log_url),
            ..base_run(
                project_id,
                &payload.repository,
                format!("deploy to {environment}"),
                deployment.id,
            )
        },
        scope: BuildScope::Run {
            status,
            outcome,
            started_at: deployment.created_at,
        },
        occurred_at: at,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::*;

    fn build(event: &str, path: &str) -> BuildEvent {
        match normalize(
            Uuid::nil(),
            event,
            &fixture(&format!("github/{path}")),
            Utc::now(),
        )
        .unwrap()
        {
            Normalized::Build(b) => *b,
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
    fn a_run_for_a_pull_request_names_it() {
        let event = build(
            "workflow_run",
            "workflow_run/completed.with-pull-requests.payload.json",
        );
        assert!(event.run.pull_request.is_some());
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
        assert_eq!(job.duration_secs, Some(198));
        assert!(!job.failed_steps.is_empty());
        assert_eq!(event.run.workflow, "CodeQL");
        assert_eq!(event.run.run_id, 2202229078);
    }

    #[test]
    fn a_ping_is_recognized() {
        let ping = normalize(
            Uuid::nil(),
            "ping",
            &fixture("github/ping/payload.json"),
            Utc::now(),
        );
        assert_eq!(
            ping.unwrap(),
            Normalized::Ping {
                hook_id: Some(109948940)
            }
        );
    }

    #[test]
    fn every_documented_status_and_conclusion_maps() {
        for (raw, expected) in [
            ("requested", BuildStatus::Queued),
            ("queued", BuildStatus::Queued),
            ("pending", BuildStatus::Queued),
            ("waiting", BuildStatus::Queued),
            ("in_progress", BuildStatus::Started),
            ("completed", BuildStatus::Completed),
        ] {
            assert_eq!(status(Some(raw)).unwrap(), expected, "{raw}");
        }
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
        for event in [
            "workflow_run",
            "workflow_job",
            "ping",
            "push",
            "check_suite",
            "status",
        ] {
            assert!(normalize(Uuid::nil(), event, b"{not json", Utc::now()).is_err());
        }
        let missing = normalize(Uuid::nil(), "workflow_run", b"{}", Utc::now()).unwrap_err();
        assert!(missing.to_string().contains("workflow_run"), "{missing}");
        assert!(matches!(
            normalize(Uuid::nil(), "push", b"{}", Utc::now()).unwrap(),
            Normalized::Ignored { .. }
        ));
    }

    #[test]
    fn every_checks_status_and_deployment_fixture_normalizes() {
        let root = format!("{}/../tests/fixtures/github", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for event in [
            "check_suite",
            "check_run",
            "status",
            "deployment_status",
            "workflow_job",
            "workflow_run",
        ] {
            for entry in std::fs::read_dir(format!("{root}/{event}")).unwrap() {
                let path = entry.unwrap().path();
                let body = std::fs::read(&path).unwrap();
                let normalized = normalize(Uuid::nil(), event, &body, Utc::now())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let Normalized::Build(build) = normalized else {
                    panic!("{}: expected a build", path.display())
                };
                assert!(!build.run.repository.is_empty());
                assert!(!build.run.workflow.is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 28, "{seen} fixtures");
    }

    #[test]
    fn a_completed_check_suite_is_a_run_named_after_its_app() {
        let event = build("check_suite", "check_suite/completed.payload.json");
        assert!(matches!(
            event.scope,
            BuildScope::Run {
                status: BuildStatus::Completed,
                outcome: Some(_),
                ..
            }
        ));
        assert_ne!(event.run.workflow, "checks");
    }

    #[test]
    fn a_check_run_is_a_job_of_its_suite() {
        let event = build("check_run", "check_run/completed.payload.json");
        let BuildScope::Job(job) = &event.scope else {
            panic!("a job")
        };
        assert_eq!(job.status, BuildStatus::Completed);
        let suite = build("check_suite", "check_suite/completed.payload.json");
        assert_eq!(event.run.repository, suite.run.repository);
    }

    #[test]
    fn a_commit_status_is_a_run_per_commit_and_context() {
        let event = build("status", "status/payload.json");
        assert!(event
            .run
            .run_key
            .as_deref()
            .is_some_and(|k| k.contains(':')));
        assert_eq!(event.run.workflow, "default");
        for (state, outcome) in [
            ("success", Some(Outcome::Succeeded)),
            ("failure", Some(Outcome::Failed)),
            ("error", Some(Outcome::Failed)),
            ("pending", None),
        ] {
            let mut value: serde_json::Value =
                serde_json::from_slice(&fixture("github/status/payload.json")).unwrap();
            value["state"] = state.into();
            let Normalized::Build(b) = normalize(
                Uuid::nil(),
                "status",
                value.to_string().as_bytes(),
                Utc::now(),
            )
            .unwrap() else {
                panic!("a build")
            };
            assert!(
                matches!(b.scope, BuildScope::Run { outcome: o, .. } if o == outcome),
                "{state}"
            );
        }
    }

    #[test]
    fn deployments_are_runs_of_deploy_to_environment() {
        let event = build("deployment_status", "deployment_status/payload.json");
        assert!(
            event.run.workflow.starts_with("deploy to "),
            "{}",
            event.run.workflow
        );
        let mut value: serde_json::Value =
            serde_json::from_slice(&fixture("github/deployment_status/payload.json")).unwrap();
        value["deployment_status"]["state"] = "inactive".into();
        assert!(matches!(
            normalize(
                Uuid::nil(),
                "deployment_status",
                value.to_string().as_bytes(),
                Utc::now()
            )
            .unwrap(),
            Normalized::Ignored { .. }
        ));
        value["deployment_status"]["state"] = "exploded".into();
        assert!(normalize(
            Uuid::nil(),
            "deployment_status",
            value.to_string().as_bytes(),
            Utc::now()
        )
        .is_err());
    }
}
