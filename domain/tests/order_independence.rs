//! Property: whatever order a run's webhooks arrive in, and however often each is redelivered, the run ends in
//! the same state, and once it has its verdict it never goes back to running.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::DateTime;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use herald_domain::{
    BuildEvent, BuildHistory, BuildRun, BuildRunCommand, BuildScope, BuildStatus, JobReport,
    NoHistory, Outcome, RunInfo,
};
use proptest::prelude::*;
use uuid::Uuid;

fn run() -> RunInfo {
    RunInfo {
        project_id: Uuid::nil(),
        provider: "github".into(),
        repository: "o/r".into(),
        workflow: "ci".into(),
        branch: Some("main".into()),
        tag: None,
        pull_request: None,
        run_id: 1,
        run_key: None,
        run_number: None,
        attempt: 1,
        commit_sha: None,
        commit_message: None,
        author: None,
        url: None,
    }
}

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn run_scope(status: BuildStatus, outcome: Option<Outcome>) -> BuildScope {
    BuildScope::Run {
        status,
        outcome,
        started_at: None,
    }
}

/// The deliveries of one run, in the order the CI system sent them.
fn deliveries(outcome: Outcome, jobs: &[(i64, Outcome)]) -> Vec<BuildRunCommand> {
    let mut scopes = vec![
        run_scope(BuildStatus::Queued, None),
        run_scope(BuildStatus::Started, None),
    ];
    for (job_id, job_outcome) in jobs {
        for (status, o) in [
            (BuildStatus::Queued, None),
            (BuildStatus::Started, None),
            (BuildStatus::Completed, Some(*job_outcome)),
        ] {
            scopes.push(BuildScope::Job(JobReport {
                job_id: *job_id,
                name: format!("job-{job_id}"),
                status,
                outcome: o,
                runner: None,
                started_at: None,
                completed_at: None,
                duration_secs: None,
                failed_steps: vec![],
            }));
        }
    }
    scopes.push(run_scope(BuildStatus::Completed, Some(outcome)));
    scopes
        .into_iter()
        .enumerate()
        .map(|(i, scope)| BuildRunCommand::Record {
            event: BuildEvent {
                run: run(),
                scope,
                occurred_at: at(i as i64),
            },
            delivery_id: format!("d{i}"),
        })
        .collect()
}

type Observable = (
    BuildStatus,
    Option<Outcome>,
    BTreeMap<i64, BuildStatus>,
    BTreeSet<String>,
);

/// What a user would compare: where the run stands, how it ended, where each job stands, which jobs failed.
fn observable(run: &BuildRun) -> Observable {
    (
        run.status,
        run.outcome,
        run.jobs.clone(),
        run.failed_jobs.iter().cloned().collect(),
    )
}

fn apply_all(commands: &[BuildRunCommand]) -> BuildRun {
    let history: Arc<dyn BuildHistory> = Arc::new(NoHistory);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut aggregate = BuildRun::default();
        let mut completed = false;
        for command in commands {
            let sink = EventSink::default();
            aggregate
                .handle(command.clone(), &history, &sink)
                .await
                .unwrap();
            if completed {
                assert_eq!(
                    aggregate.status,
                    BuildStatus::Completed,
                    "a finished run went back"
                );
            }
            completed |= aggregate.status == BuildStatus::Completed;
        }
        aggregate
    })
}

fn outcomes() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Succeeded),
        Just(Outcome::Failed),
        Just(Outcome::Cancelled),
        Just(Outcome::TimedOut),
        Just(Outcome::Skipped),
    ]
}

/// A run's deliveries with some sent more than once, in an arbitrary order.
fn shuffled_deliveries() -> impl Strategy<Value = (Vec<BuildRunCommand>, Vec<BuildRunCommand>)> {
    (outcomes(), proptest::collection::vec(outcomes(), 0..4))
        .prop_flat_map(|(outcome, jobs)| {
            let jobs: Vec<(i64, Outcome)> = jobs
                .into_iter()
                .enumerate()
                .map(|(i, o)| (i as i64 + 1, o))
                .collect();
            let in_order = deliveries(outcome, &jobs);
            let n = in_order.len();
            (Just(in_order), proptest::collection::vec(1..=3_usize, n))
        })
        .prop_flat_map(|(in_order, copies)| {
            let mut sent = Vec::new();
            for (command, times) in in_order.iter().zip(copies) {
                for _ in 0..times {
                    sent.push(command.clone());
                }
            }
            (Just(in_order), Just(sent).prop_shuffle())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_order_with_any_redeliveries_ends_in_the_same_state(
        (in_order, shuffled) in shuffled_deliveries()
    ) {
        let expected = observable(&apply_all(&in_order));
        prop_assert_eq!(expected.0, BuildStatus::Completed);
        prop_assert_eq!(observable(&apply_all(&shuffled)), expected);
    }
}
