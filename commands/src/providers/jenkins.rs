//! Jenkins, through the Notification plugin's JSON: one delivery per phase (QUEUED, STARTED, COMPLETED,
//! FINALIZED) of a build. The plugin cannot sign or add headers, so the project's secret travels as `?token=` in
//! the webhook URL (or an `X-Herald-Token` header from a proxy).
//!
//! The Jenkins job is the workflow, the build number is the run; COMPLETED and FINALIZED both carry the result,
//! and the second one changes nothing.

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildScope, BuildStatus, Outcome, RunInfo};
use serde::Deserialize;
use uuid::Uuid;

use super::{non_empty, parse, unknown, Normalized, PayloadError};

#[derive(Deserialize)]
struct Notification {
    name: String,
    build: Build,
}

#[derive(Deserialize)]
struct Build {
    full_url: Option<String>,
    number: i64,
    phase: String,
    status: Option<String>,
    /// Milliseconds since the epoch when the build was scheduled (newer plugin versions).
    timestamp: Option<i64>,
    scm: Option<Scm>,
}

#[derive(Deserialize)]
struct Scm {
    url: Option<String>,
    branch: Option<String>,
    commit: Option<String>,
}

/// `hudson.model.Result`: SUCCESS, UNSTABLE (tests failed), FAILURE, NOT_BUILT, ABORTED.
fn result(raw: &str) -> Result<Outcome, PayloadError> {
    Ok(match raw {
        "SUCCESS" => Outcome::Succeeded,
        "UNSTABLE" | "FAILURE" => Outcome::Failed,
        "ABORTED" => Outcome::Cancelled,
        "NOT_BUILT" => Outcome::Skipped,
        other => return Err(unknown("build.status", other)),
    })
}

/// `owner/name` from a git remote (`https://host/owner/name.git`, `git@host:owner/name.git`).
fn repository_from_remote(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let path = match trimmed.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1.to_owned(),
        None => trimmed.split_once(':')?.1.to_owned(),
    };
    non_empty(Some(path))
}

pub fn normalize(
    project_id: Uuid,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Normalized, PayloadError> {
    let notification: Notification = parse("jenkins build", body)?;
    let build = notification.build;
    let (status, outcome) = match build.phase.as_str() {
        "QUEUED" => (BuildStatus::Queued, None),
        "STARTED" => (BuildStatus::Started, None),
        "COMPLETED" | "FINALIZED" => {
            let raw = build.status.as_deref().ok_or(PayloadError::Invalid {
                field: "build.status",
                reason: format!("required in phase {}", build.phase),
            })?;
            (BuildStatus::Completed, Some(result(raw)?))
        }
        "NONE" => {
            return Ok(Normalized::Ignored {
                event: "jenkins NONE".into(),
                reason: "a manual notification step carries no build phase".into(),
            })
        }
        other => return Err(unknown("build.phase", other)),
    };
    let scm = build.scm.unwrap_or(Scm {
        url: None,
        branch: None,
        commit: None,
    });
    let repository = scm
        .url
        .as_deref()
        .and_then(repository_from_remote)
        .unwrap_or_else(|| notification.name.clone());
    let branch = non_empty(scm.branch).map(|b| {
        b.trim_start_matches("origin/")
            .trim_start_matches("refs/heads/")
            .to_owned()
    });
    let scheduled_at = build.timestamp.and_then(DateTime::from_timestamp_millis);
    Ok(Normalized::Build(Box::new(BuildEvent {
        run: RunInfo {
            project_id,
            provider: "jenkins".to_owned(),
            repository,
            workflow: notification.name,
            branch,
            tag: None,
            pull_request: None,
            run_id: build.number,
            run_key: None,
            run_number: Some(build.number),
            attempt: 1,
            commit_sha: non_empty(scm.commit),
            commit_message: None,
            author: None,
            url: build.full_url,
        },
        scope: BuildScope::Run {
            status,
            outcome,
            started_at: (status == BuildStatus::Started)
                .then_some(scheduled_at.unwrap_or(received_at)),
        },
        occurred_at: received_at,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::*;

    fn run(path: &str) -> BuildEvent {
        match normalize(
            Uuid::nil(),
            &fixture(&format!("jenkins/{path}")),
            Utc::now(),
        )
        .unwrap()
        {
            Normalized::Build(b) => *b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_phase_of_the_plugin_maps() {
        for (path, status, outcome) in [
            ("queued.payload.json", BuildStatus::Queued, None),
            ("started.payload.json", BuildStatus::Started, None),
            (
                "completed.payload.json",
                BuildStatus::Completed,
                Some(Outcome::Succeeded),
            ),
            (
                "finalized.payload.json",
                BuildStatus::Completed,
                Some(Outcome::Succeeded),
            ),
        ] {
            let event = run(path);
            assert!(
                matches!(event.scope, BuildScope::Run { status: s, outcome: o, .. } if s == status && o == outcome),
                "{path}: {:?}",
                event.scope
            );
            assert_eq!(event.run.repository, "evgeny-goldin/asgard");
            assert_eq!(event.run.workflow, "asgard");
            assert_eq!(event.run.branch.as_deref(), Some("master"));
            assert_eq!(event.run.run_id, 18);
        }
    }

    #[test]
    fn every_documented_result_maps() {
        for (raw, outcome) in [
            ("SUCCESS", Outcome::Succeeded),
            ("UNSTABLE", Outcome::Failed),
            ("FAILURE", Outcome::Failed),
            ("ABORTED", Outcome::Cancelled),
            ("NOT_BUILT", Outcome::Skipped),
        ] {
            assert_eq!(result(raw).unwrap(), outcome);
        }
        assert!(result("MAYBE").is_err());
    }

    #[test]
    fn remotes_of_every_shape_name_the_repository() {
        assert_eq!(
            repository_from_remote("https://github.com/o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(
            repository_from_remote("git@gitlab.com:g/s/r.git").as_deref(),
            Some("g/s/r")
        );
        assert_eq!(repository_from_remote("nonsense"), None);
    }

    #[test]
    fn a_completed_build_without_a_result_is_refused() {
        let body = br#"{"name":"x","build":{"number":1,"phase":"COMPLETED"}}"#;
        let error = normalize(Uuid::nil(), body, Utc::now()).unwrap_err();
        assert!(error.to_string().contains("build.status"), "{error}");
    }
}
