//! The one shape every CI provider's webhook is normalized into before it reaches the `BuildRun` aggregate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{BuildStatus, Outcome};

/// What identifies and describes one attempt of one CI run. Every run-level event carries it whole, so that
/// consumers copy fields instead of reassembling history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub project_id: Uuid,
    /// `github`, `gitlab`, ...
    pub provider: String,
    /// `owner/name` as the provider spells it.
    pub repository: String,
    pub workflow: String,
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
    /// The provider's number for the run, stable across re-run attempts and increasing over time: Herald orders
    /// runs by it to find "the previous run" of a workflow on a branch.
    pub run_id: i64,
    /// The provider's own identity of the run, where `run_id` alone does not tell runs apart (CircleCI: several
    /// workflows share one pipeline number; commit statuses have no run at all). Added in event version 1.0
    /// as an optional field, so events written without it still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_key: Option<String>,
    /// The provider's human-facing run number, where it has one.
    pub run_number: Option<i64>,
    /// Re-runs are new attempts of the same run, each its own `BuildRun`.
    pub attempt: i32,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    pub author: Option<String>,
    pub url: Option<String>,
}

impl RunInfo {
    /// The `BuildRun` aggregate id: provider + repository + run id + attempt, scoped to the project so two
    /// projects fed by the same repository keep separate histories.
    pub fn build_run_id(&self) -> String {
        match &self.run_key {
            Some(key) => format!(
                "{}:{}:{}:{}:{}",
                self.project_id, self.provider, self.repository, key, self.attempt
            ),
            None => format!(
                "{}:{}:{}:{}:{}",
                self.project_id, self.provider, self.repository, self.run_id, self.attempt
            ),
        }
    }
}

/// The pull or merge request a run belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A job inside a run, as far as the provider told us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub job_id: i64,
    pub name: String,
    pub status: BuildStatus,
    pub outcome: Option<Outcome>,
    pub runner: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// As the provider reports it, or derived from the start and completion times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<i64>,
    /// Names of the steps that failed, in order.
    pub failed_steps: Vec<String>,
}

/// Whether the event speaks about the whole run or about one of its jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum BuildScope {
    Run {
        status: BuildStatus,
        outcome: Option<Outcome>,
        /// When the run started, if the provider says so on this event.
        started_at: Option<DateTime<Utc>>,
    },
    Job(JobReport),
}

/// One normalized webhook about a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEvent {
    pub run: RunInfo,
    pub scope: BuildScope,
    /// When the provider says this happened (falls back to when Herald received it).
    pub occurred_at: DateTime<Utc>,
}
