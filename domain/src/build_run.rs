//! The `BuildRun` aggregate: one attempt of one CI run, from queued to its verdict.
//!
//! It only moves forward (a late "in_progress" after "completed" records nothing), it remembers every delivery id
//! it has recorded (a redelivered webhook records nothing), and on its verdict it asks [`BuildHistory`] for the
//! previous verdict of the same workflow on the same branch, so its terminal event can say *broken*, *fixed* or
//! *still failing* and carry the failure streak.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::build::{BuildEvent, BuildScope, JobReport, RunInfo};
use crate::values::{BuildStatus, Outcome, Transition};

/// The previous run with a verdict (passed or failed) of the same workflow on the same branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousRun {
    pub build_run_id: String,
    pub outcome: Outcome,
    pub failure_streak: u32,
}

/// What `BuildRun` needs to know about other runs. Implemented by the command side over Postgres.
#[async_trait]
pub trait BuildHistory: Send + Sync {
    async fn previous_run(&self, run: &RunInfo) -> Result<Option<PreviousRun>, String>;
}

/// A history with no runs in it, for tests and tools.
pub struct NoHistory;

#[async_trait]
impl BuildHistory for NoHistory {
    async fn previous_run(&self, _: &RunInfo) -> Result<Option<PreviousRun>, String> {
        Ok(None)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BuildRunCommand {
    /// Record one normalized webhook. `delivery_id` is the provider's delivery header or a hash of the body.
    Record {
        event: BuildEvent,
        delivery_id: String,
    },
}

/// The verdict part of a terminal event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub transition: Transition,
    pub previous_outcome: Option<Outcome>,
    /// Consecutive failed runs ending with this one (0 when it did not fail).
    pub failure_streak: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    pub duration_secs: Option<i64>,
    /// Jobs of this run that failed, as far as Herald heard of them.
    pub failed_jobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BuildRunEvent {
    BuildQueued {
        delivery_id: String,
        run: RunInfo,
        queued_at: DateTime<Utc>,
    },
    BuildStarted {
        delivery_id: String,
        run: RunInfo,
        started_at: DateTime<Utc>,
    },
    JobQueued {
        delivery_id: String,
        job: JobReport,
    },
    JobStarted {
        delivery_id: String,
        job: JobReport,
    },
    JobFinished {
        delivery_id: String,
        job: JobReport,
    },
    BuildSucceeded {
        delivery_id: String,
        run: RunInfo,
        verdict: Verdict,
    },
    /// Failed or timed out (`verdict.outcome` says which).
    BuildFailed {
        delivery_id: String,
        run: RunInfo,
        verdict: Verdict,
    },
    /// Ended without a verdict: cancelled, skipped or waiting for an action (`verdict.outcome` says which).
    BuildCancelled {
        delivery_id: String,
        run: RunInfo,
        verdict: Verdict,
    },
}

impl BuildRunEvent {
    pub fn delivery_id(&self) -> &str {
        match self {
            Self::BuildQueued { delivery_id, .. }
            | Self::BuildStarted { delivery_id, .. }
            | Self::JobQueued { delivery_id, .. }
            | Self::JobStarted { delivery_id, .. }
            | Self::JobFinished { delivery_id, .. }
            | Self::BuildSucceeded { delivery_id, .. }
            | Self::BuildFailed { delivery_id, .. }
            | Self::BuildCancelled { delivery_id, .. } => delivery_id,
        }
    }

    /// The run and its verdict, when this event is a terminal one.
    pub fn verdict(&self) -> Option<(&RunInfo, &Verdict)> {
        match self {
            Self::BuildSucceeded { run, verdict, .. }
            | Self::BuildFailed { run, verdict, .. }
            | Self::BuildCancelled { run, verdict, .. } => Some((run, verdict)),
            _ => None,
        }
    }
}

impl DomainEvent for BuildRunEvent {
    fn event_type(&self) -> String {
        match self {
            Self::BuildQueued { .. } => "BuildQueued",
            Self::BuildStarted { .. } => "BuildStarted",
            Self::JobQueued { .. } => "JobQueued",
            Self::JobStarted { .. } => "JobStarted",
            Self::JobFinished { .. } => "JobFinished",
            Self::BuildSucceeded { .. } => "BuildSucceeded",
            Self::BuildFailed { .. } => "BuildFailed",
            Self::BuildCancelled { .. } => "BuildCancelled",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildRunError {
    #[error("a completed run must say how it ended")]
    MissingOutcome,
    #[error("event belongs to run {given}, not {current}")]
    WrongRun { current: String, given: String },
    #[error("build history unavailable: {0}")]
    History(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRun {
    pub run: Option<RunInfo>,
    pub status: BuildStatus,
    pub outcome: Option<Outcome>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub jobs: BTreeMap<i64, BuildStatus>,
    pub failed_jobs: Vec<String>,
    pub deliveries: BTreeSet<String>,
}

impl BuildRun {
    async fn finish(
        &self,
        run: RunInfo,
        outcome: Outcome,
        started_at: Option<DateTime<Utc>>,
        completed_at: DateTime<Utc>,
        delivery_id: String,
        history: &dyn BuildHistory,
    ) -> Result<BuildRunEvent, BuildRunError> {
        let previous = history
            .previous_run(&run)
            .await
            .map_err(BuildRunError::History)?;
        let previous_health = previous.as_ref().and_then(|p| p.outcome.health());
        let failure_streak = match (outcome.health(), &previous) {
            (Some(false), Some(p)) if p.outcome.health() == Some(false) => p.failure_streak + 1,
            (Some(false), _) => 1,
            _ => 0,
        };
        let started_at = self.started_at.or(started_at);
        let verdict = Verdict {
            outcome,
            transition: Transition::between(previous_health, outcome),
            previous_outcome: previous.map(|p| p.outcome),
            failure_streak,
            started_at,
            completed_at,
            duration_secs: started_at
                .map(|s| (completed_at - s).num_seconds())
                .filter(|d| *d >= 0),
            failed_jobs: self.failed_jobs.clone(),
        };
        Ok(match outcome.health() {
            Some(true) => BuildRunEvent::BuildSucceeded {
                delivery_id,
                run,
                verdict,
            },
            Some(false) => BuildRunEvent::BuildFailed {
                delivery_id,
                run,
                verdict,
            },
            None => BuildRunEvent::BuildCancelled {
                delivery_id,
                run,
                verdict,
            },
        })
    }
}

impl Aggregate for BuildRun {
    const TYPE: &'static str = "BuildRun";
    type Command = BuildRunCommand;
    type Event = BuildRunEvent;
    type Error = BuildRunError;
    type Services = Arc<dyn BuildHistory>;

    async fn handle(
        &mut self,
        command: Self::Command,
        history: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let BuildRunCommand::Record { event, delivery_id } = command;
        if self.deliveries.contains(&delivery_id) {
            return Ok(());
        }
        if let Some(current) = &self.run {
            let (current, given) = (current.build_run_id(), event.run.build_run_id());
            if current != given {
                return Err(BuildRunError::WrongRun { current, given });
            }
        }
        let at = event.occurred_at;
        let run = event.run;
        match event.scope {
            BuildScope::Run {
                status,
                outcome,
                started_at,
            } => {
                if status <= self.status {
                    return Ok(());
                }
                let event = match status {
                    BuildStatus::Unknown => return Ok(()),
                    BuildStatus::Queued => BuildRunEvent::BuildQueued {
                        delivery_id,
                        run,
                        queued_at: at,
                    },
                    BuildStatus::Started => BuildRunEvent::BuildStarted {
                        delivery_id,
                        run,
                        started_at: started_at.unwrap_or(at),
                    },
                    BuildStatus::Completed => {
                        let outcome = outcome.ok_or(BuildRunError::MissingOutcome)?;
                        self.finish(run, outcome, started_at, at, delivery_id, history.as_ref())
                            .await?
                    }
                };
                sink.write(event, self).await;
            }
            BuildScope::Job(job) => {
                let known = self.jobs.get(&job.job_id).copied().unwrap_or_default();
                if job.status <= known {
                    return Ok(());
                }
                if self.status == BuildStatus::Unknown {
                    let queued = BuildRunEvent::BuildQueued {
                        delivery_id: delivery_id.clone(),
                        run: run.clone(),
                        queued_at: job.started_at.unwrap_or(at),
                    };
                    sink.write(queued, self).await;
                }
                if job.status >= BuildStatus::Started && self.status < BuildStatus::Started {
                    let started = BuildRunEvent::BuildStarted {
                        delivery_id: delivery_id.clone(),
                        run,
                        started_at: job.started_at.unwrap_or(at),
                    };
                    sink.write(started, self).await;
                }
                let event = match job.status {
                    BuildStatus::Unknown => return Ok(()),
                    BuildStatus::Queued => BuildRunEvent::JobQueued { delivery_id, job },
                    BuildStatus::Started => BuildRunEvent::JobStarted { delivery_id, job },
                    BuildStatus::Completed => BuildRunEvent::JobFinished { delivery_id, job },
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.deliveries.insert(event.delivery_id().to_owned());
        match event {
            BuildRunEvent::BuildQueued { run, queued_at, .. } => {
                self.run = Some(run);
                self.status = self.status.max(BuildStatus::Queued);
                self.queued_at = Some(queued_at);
            }
            BuildRunEvent::BuildStarted {
                run, started_at, ..
            } => {
                self.run = Some(run);
                self.status = self.status.max(BuildStatus::Started);
                self.started_at = Some(started_at);
            }
            BuildRunEvent::JobQueued { job, .. }
            | BuildRunEvent::JobStarted { job, .. }
            | BuildRunEvent::JobFinished { job, .. } => {
                if job.outcome.and_then(Outcome::health) == Some(false) {
                    self.failed_jobs.push(job.name.clone());
                }
                self.jobs.insert(job.job_id, job.status);
            }
            BuildRunEvent::BuildSucceeded { run, verdict, .. }
            | BuildRunEvent::BuildFailed { run, verdict, .. }
            | BuildRunEvent::BuildCancelled { run, verdict, .. } => {
                self.run = Some(run);
                self.status = BuildStatus::Completed;
                self.outcome = Some(verdict.outcome);
                self.started_at = self.started_at.or(verdict.started_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    struct FixedHistory(Option<PreviousRun>);

    #[async_trait]
    impl BuildHistory for FixedHistory {
        async fn previous_run(&self, _: &RunInfo) -> Result<Option<PreviousRun>, String> {
            Ok(self.0.clone())
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn run() -> RunInfo {
        RunInfo {
            project_id: Uuid::nil(),
            provider: "github".into(),
            repository: "octo-org/octo-repo".into(),
            workflow: "test".into(),
            branch: Some("main".into()),
            tag: None,
            pull_request: None,
            run_key: None,
            run_id: 42,
            run_number: Some(7),
            attempt: 1,
            commit_sha: None,
            commit_message: None,
            author: None,
            url: None,
        }
    }

    fn run_event(status: BuildStatus, outcome: Option<Outcome>, secs: i64) -> BuildEvent {
        BuildEvent {
            run: run(),
            scope: BuildScope::Run {
                status,
                outcome,
                started_at: None,
            },
            occurred_at: at(secs),
        }
    }

    fn record(event: BuildEvent, delivery: &str) -> BuildRunCommand {
        BuildRunCommand::Record {
            event,
            delivery_id: delivery.into(),
        }
    }

    fn given(previous: Option<PreviousRun>) -> TestFramework<BuildRun> {
        TestFramework::with(Arc::new(FixedHistory(previous)) as Arc<dyn BuildHistory>)
    }

    fn started() -> BuildRunEvent {
        BuildRunEvent::BuildStarted {
            delivery_id: "d1".into(),
            run: run(),
            started_at: at(0),
        }
    }

    fn failed_before(streak: u32) -> Option<PreviousRun> {
        Some(PreviousRun {
            build_run_id: "previous".into(),
            outcome: Outcome::Failed,
            failure_streak: streak,
        })
    }

    #[tokio::test]
    async fn a_failure_after_a_failure_is_still_failing_with_a_longer_streak() {
        let events = given(failed_before(2))
            .given(vec![started()])
            .when_async(record(
                run_event(BuildStatus::Completed, Some(Outcome::Failed), 90),
                "d2",
            ))
            .await
            .inspect_result()
            .unwrap();
        let (_, verdict) = events[0].verdict().unwrap();
        assert_eq!(verdict.transition, Transition::StillFailing);
        assert_eq!(verdict.failure_streak, 3);
        assert_eq!(verdict.duration_secs, Some(90));
        assert!(matches!(events[0], BuildRunEvent::BuildFailed { .. }));
    }

    #[tokio::test]
    async fn a_success_after_a_failure_is_fixed() {
        let events = given(failed_before(1))
            .given_no_previous_events()
            .when_async(record(
                run_event(BuildStatus::Completed, Some(Outcome::Succeeded), 5),
                "d1",
            ))
            .await
            .inspect_result()
            .unwrap();
        let (_, verdict) = events[0].verdict().unwrap();
        assert_eq!(verdict.transition, Transition::Fixed);
        assert_eq!(verdict.previous_outcome, Some(Outcome::Failed));
        assert_eq!(verdict.failure_streak, 0);
    }

    #[tokio::test]
    async fn a_late_in_progress_after_completion_records_nothing() {
        let completed = given(None)
            .given(vec![started()])
            .when_async(record(
                run_event(BuildStatus::Completed, Some(Outcome::Cancelled), 5),
                "d2",
            ))
            .await
            .inspect_result()
            .unwrap();
        given(None)
            .given(vec![started()])
            .and(completed)
            .when_async(record(run_event(BuildStatus::Started, None, 1), "d3"))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn a_seen_delivery_records_nothing() {
        given(None)
            .given(vec![started()])
            .when_async(record(
                run_event(BuildStatus::Completed, Some(Outcome::Failed), 5),
                "d1",
            ))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn a_completion_without_outcome_is_refused() {
        given(None)
            .given_no_previous_events()
            .when_async(record(run_event(BuildStatus::Completed, None, 5), "d1"))
            .await
            .then_expect_error(BuildRunError::MissingOutcome);
    }

    #[tokio::test]
    async fn a_first_job_event_queues_and_starts_the_run() {
        let job = JobReport {
            job_id: 9,
            name: "lint".into(),
            status: BuildStatus::Started,
            outcome: None,
            runner: None,
            started_at: Some(at(3)),
            completed_at: None,
            duration_secs: None,
            failed_steps: vec![],
        };
        let events = given(None)
            .given_no_previous_events()
            .when_async(record(
                BuildEvent {
                    run: run(),
                    scope: BuildScope::Job(job.clone()),
                    occurred_at: at(3),
                },
                "j1",
            ))
            .await
            .inspect_result()
            .unwrap();
        let kinds: Vec<String> = events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(kinds, ["BuildQueued", "BuildStarted", "JobStarted"]);
    }

    #[tokio::test]
    async fn an_event_for_another_run_is_refused() {
        let mut other = run_event(BuildStatus::Completed, Some(Outcome::Failed), 5);
        other.run.attempt = 2;
        let result = given(None)
            .given(vec![started()])
            .when_async(record(other, "d9"))
            .await
            .inspect_result();
        assert!(matches!(result, Err(BuildRunError::WrongRun { .. })));
    }
}
