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
    /// The provider's id of the run; stable across re-run attempts.
    pub run_id: i64,
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
        format!(
            "{}:{}:{}:{}:{}",
            self.project_id, self.provider, self.repository, self.run_id, self.attempt
        )
    }
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
