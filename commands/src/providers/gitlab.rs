//! GitLab CI webhooks: `Pipeline Hook` (a run) and `Job Hook` (a job of a run), as GitLab's webhook events
//! documentation describes them. Authenticated by the `X-Gitlab-Token` header (the project's secret).
//!
//! GitLab has no named workflows: every pipeline of a project is the workflow `pipeline`, told apart by branch.
//! Pipeline ids grow over time, so they order runs. GitLab timestamps come as RFC 3339 or as
//! `2016-08-12 15:23:28 UTC`; both are read.

use chrono::{DateTime, NaiveDateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, JobReport, Outcome, PullRequest, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{non_empty, parse, unknown, Normalized, PayloadError};

/// The only workflow name GitLab runs get.
const WORKFLOW: &str = "pipeline";

#[derive(Deserialize)]
struct Project {
    path_with_namespace: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct User {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct CommitAuthor {
    name: Option<String>,
}

#[derive(Deserialize)]
struct PipelineCommit {
    message: Option<String>,
    author: Option<CommitAuthor>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: Option<i64>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct PipelinePayload {
    object_attributes: PipelineAttributes,
    project: Project,
    user: Option<User>,
    commit: Option<PipelineCommit>,
    merge_request: Option<MergeRequest>,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    id: i64,
    iid: Option<i64>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    tag: bool,
    sha: Option<String>,
    status: String,
    created_at: Option<String>,
    finished_at: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct JobPayload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    tag: bool,
    sha: Option<String>,
    build_id: i64,
    build_name: String,
    build_status: String,
    build_created_at: Option<String>,
    build_started_at: Option<String>,
    build_finished_at: Option<String>,
    build_duration: Option<f64>,
    build_failure_reason: Option<String>,
    pipeline_id: i64,
    project_name: Option<String>,
    project: Option<Project>,
    repository: Option<Repository>,
    user: Option<User>,
    commit: Option<JobCommit>,
    runner: Option<Runner>,
}

#[derive(Deserialize)]
struct Repository {
    homepage: Option<String>,
}

#[derive(Deserialize)]
struct JobCommit {
    message: Option<String>,
    author_name: Option<String>,
}

#[derive(Deserialize)]
struct Runner {
    description: Option<String>,
}

/// A GitLab timestamp: RFC 3339, or `YYYY-MM-DD HH:MM:SS UTC` (older payloads).
pub(crate) fn timestamp(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let raw = raw?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    let naive = raw.strip_suffix(" UTC")?;
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// GitLab's statuses for pipelines and jobs: created, waiting_for_resource, preparing, pending, running, success,
/// failed, canceled, canceling, skipped, manual, scheduled.
fn status(field: &'static str, raw: &str) -> Result<(BuildStatus, Option<Outcome>), PayloadError> {
    Ok(match raw {
        "created"
        | "waiting_for_resource"
        | "preparing"
        | "pending"
        | "scheduled"
        | "waiting_for_callback" => (BuildStatus::Queued, None),
        "running" | "canceling" => (BuildStatus::Started, None),
        "success" => (BuildStatus::Completed, Some(Outcome::Succeeded)),
        "failed" => (BuildStatus::Completed, Some(Outcome::Failed)),
        "canceled" => (BuildStatus::Completed, Some(Outcome::Cancelled)),
        "skipped" => (BuildStatus::Completed, Some(Outcome::Skipped)),
        "manual" => (BuildStatus::Completed, Some(Outcome::ActionRequired)),
        other => return Err(unknown(field, other)),
    })
}

/// `group/project` from a project URL such as `https://gitlab.com/group/project`.
fn path_from_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (_, path) = rest.split_once('/')?;
    non_empty(Some(path.trim_end_matches('/').to_owned()))
}

fn branch_and_tag(git_ref: Option<String>, tag: bool) -> (Option<String>, Option<String>) {
    let git_ref = non_empty(git_ref);
    if tag {
        (None, git_ref)
    } else {
        (git_ref, None)
    }
}

pub fn normalize(
    project_id: Uuid,
    event: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    match event {
        "Pipeline Hook" => pipeline(project_id, parse(event, body)?, received_at),
        "Job Hook" | "Build Hook" => job(project_id, parse(event, body)?, received_at),
        other => {
            parse::<serde_json::Value>(other, body)?;
            Ok(Normalized::Ignored {
                event: other.to_owned(),
                reason: format!("Herald does not act on `{other}` events"),
            })
        }
    }
}

fn pipeline(
    project_id: Uuid,
    payload: PipelinePayload,
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    let attributes = payload.object_attributes;
    let (status, outcome) = status("object_attributes.status", &attributes.status)?;
    let repository = non_empty(payload.project.path_with_namespace)
        .or(payload.project.web_url.as_deref().and_then(path_from_url))
        .ok_or(PayloadError::Invalid {
            field: "project.path_with_namespace",
            reason: "missing".into(),
        })?;
    let (branch, tag) = branch_and_tag(attributes.git_ref, attributes.tag);
    let (commit_message, commit_author) = payload
        .commit
        .map(|c| (c.message, c.author.and_then(|a| a.name)))
        .unwrap_or_default();
    let url = attributes.url.or_else(|| {
        payload
            .project
            .web_url
            .map(|web| format!("{web}/-/pipelines/{}", attributes.id))
    });
    let finished_at = timestamp(attributes.finished_at.as_deref());
    let created_at = timestamp(attributes.created_at.as_deref());
    let occurred_at = match status {
        BuildStatus::Completed => finished_at.unwrap_or(received_at),
        _ => received_at,
    };
    Ok(Normalized::Build(Box::new(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "gitlab".to_owned(),
            repository,
            workflow: WORKFLOW.to_owned(),
            branch,
            tag,
            pull_request: payload.merge_request.and_then(|mr| {
                Some(PullRequest {
                    number: mr.iid?,
                    url: mr.url,
                })
            }),
            run_id: attributes.id,
            run_key: None,
            run_number: attributes.iid,
            attempt: 1,
            commit_sha: attributes.sha,
            commit_message,
            author: commit_author.or(payload.user.and_then(|u| u.name.or(u.username))),
            url,
        },
        scope: BuildScope::Run {
            status,
            outcome,
            started_at: created_at,
        },
        occurred_at,
    })))
}

fn job(
    project_id: Uuid,
    payload: JobPayload,
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    let (status, outcome) = status("build_status", &payload.build_status)?;
    let web_url = payload
        .project
        .as_ref()
        .and_then(|p| p.web_url.clone())
        .or(payload.repository.and_then(|r| r.homepage));
    let repository = payload
        .project
        .and_then(|p| non_empty(p.path_with_namespace))
        .or(web_url.as_deref().and_then(path_from_url))
        .or(non_empty(payload.project_name))
        .ok_or(PayloadError::Invalid {
            field: "project.path_with_namespace",
            reason: "missing".into(),
        })?;
    let (branch, tag) = branch_and_tag(payload.git_ref, payload.tag);
    let started_at = timestamp(payload.build_started_at.as_deref());
    let completed_at = timestamp(payload.build_finished_at.as_deref());
    let failed_steps = match (outcome, payload.build_failure_reason) {
        (Some(Outcome::Failed), Some(reason)) if reason != "unknown_failure" => vec![reason],
        _ => Vec::new(),
    };
    let (commit_message, commit_author) = payload
        .commit
        .map(|c| (c.message, c.author_name))
        .unwrap_or_default();
    let occurred_at = match status {
        BuildStatus::Completed => completed_at,
        BuildStatus::Started => started_at,
        _ => timestamp(payload.build_created_at.as_deref()),
    }
    .unwrap_or(received_at);
    Ok(Normalized::Build(Box::new(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "gitlab".to_owned(),
            repository,
            workflow: WORKFLOW.to_owned(),
            branch,
            tag,
            pull_request: None,
            run_id: payload.pipeline_id,
            run_key: None,
            run_number: None,
            attempt: 1,
            commit_sha: payload.sha,
            commit_message,
            author: commit_author.or(payload.user.and_then(|u| u.name.or(u.username))),
            url: web_url.map(|web| format!("{web}/-/pipelines/{}", payload.pipeline_id)),
        },
        scope: BuildScope::Job(JobReport {
            job_id: payload.build_id,
            name: payload.build_name,
            status,
            outcome,
            runner: payload.runner.and_then(|r| r.description),
            started_at,
            completed_at,
            duration_secs: payload.build_duration.map(|d| d.round() as i64),
            failed_steps,
        }),
        occurred_at,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_timestamps_in_both_forms_are_read() {
        let expected: DateTime<Utc> = "2016-08-12T15:23:28Z".parse().unwrap();
        assert_eq!(timestamp(Some("2016-08-12 15:23:28 UTC")), Some(expected));
        assert_eq!(timestamp(Some("2016-08-12T15:23:28Z")), Some(expected));
        assert_eq!(timestamp(Some("2016-08-12 17:23:28 +0200")), Some(expected));
        assert_eq!(timestamp(Some("yesterday")), None);
        assert_eq!(timestamp(None), None);
    }

    #[test]
    fn every_documented_status_maps() {
        for (raw, expected) in [
            ("created", BuildStatus::Queued),
            ("waiting_for_resource", BuildStatus::Queued),
            ("preparing", BuildStatus::Queued),
            ("pending", BuildStatus::Queued),
            ("scheduled", BuildStatus::Queued),
            ("running", BuildStatus::Started),
            ("canceling", BuildStatus::Started),
            ("success", BuildStatus::Completed),
            ("failed", BuildStatus::Completed),
            ("canceled", BuildStatus::Completed),
            ("skipped", BuildStatus::Completed),
            ("manual", BuildStatus::Completed),
        ] {
            assert_eq!(status("status", raw).unwrap().0, expected, "{raw}");
        }
        assert_eq!(
            status("s", "manual").unwrap().1,
            Some(Outcome::ActionRequired)
        );
        assert!(status("s", "exploded").is_err());
    }

    #[test]
    fn project_paths_come_from_urls() {
        assert_eq!(
            path_from_url("https://gitlab.example/group/sub/project/").as_deref(),
            Some("group/sub/project")
        );
        assert_eq!(path_from_url("https://gitlab.example"), None);
    }

    fn build(event: &str, path: &str) -> BuildEvent {
        let body = super::super::test_support::fixture(&format!("gitlab/{path}"));
        match normalize(Uuid::nil(), event, &body, Utc::now()).unwrap() {
            Normalized::Build(b) => *b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_documented_pipeline_hook_is_a_run() {
        let event = build("Pipeline Hook", "pipeline.payload.json");
        assert_eq!(event.run.provider, "gitlab");
        assert_eq!(event.run.workflow, "pipeline");
        assert!(!event.run.repository.is_empty());
        assert!(event.run.branch.is_some() || event.run.tag.is_some());
        assert!(matches!(event.scope, BuildScope::Run { .. }));
    }

    #[test]
    fn the_documented_job_hook_is_a_job_of_its_pipeline() {
        let event = build("Job Hook", "job.payload.json");
        let BuildScope::Job(job) = &event.scope else {
            panic!("a job")
        };
        assert!(!job.name.is_empty());
        let body = super::super::test_support::fixture("gitlab/job.payload.json");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event.run.run_id, value["pipeline_id"].as_i64().unwrap());
    }

    #[test]
    fn other_gitlab_events_are_ignored_but_must_be_json() {
        assert!(matches!(
            normalize(Uuid::nil(), "Push Hook", b"{}", Utc::now()).unwrap(),
            Normalized::Ignored { .. }
        ));
        assert!(normalize(Uuid::nil(), "Push Hook", b"{", Utc::now()).is_err());
    }
}
