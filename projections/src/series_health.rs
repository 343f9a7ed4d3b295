//! `series_health`: per workflow and branch, the newest judged run and, while it fails, when the failing began.
//! What the dashboard overview reads to say which projects are red and since when.
//!
//! The state follows the newest run by completion time: a verdict older than the one stored (a late webhook)
//! leaves it as it is. Two verdicts completed in the same instant are ordered by build run id (byte order), so
//! the row does not depend on which arrived first: the stream delivers different runs in any order, and a
//! rebuild reads them in log order; both must end in the same row (the fault-injection suite compares them).
//! Cancelled, skipped and action-required runs say nothing about health and are skipped.
//!
//! A batch is folded in memory: its series are read once, every verdict is laid over them in log order, and
//! each series is written back once.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{BuildRunEvent, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{decode, micros, Projection, ProjectionError};

pub struct SeriesHealthProjection;

/// (project, workflow, branch or '').
type SeriesKey = (Uuid, String, String);

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct SeriesRow {
    last_completed_at: DateTime<Utc>,
    last_outcome: String,
    last_build_run_id: String,
    failing_since: Option<DateTime<Utc>>,
}

/// One health verdict: a run that passed or failed.
struct Judged<'a> {
    completed_at: DateTime<Utc>,
    outcome: &'a str,
    build_run_id: &'a str,
    passed: bool,
}

/// The series after one verdict.
fn fold(stored: Option<SeriesRow>, judged: &Judged<'_>) -> SeriesRow {
    let newest = SeriesRow {
        last_completed_at: judged.completed_at,
        last_outcome: judged.outcome.to_owned(),
        last_build_run_id: judged.build_run_id.to_owned(),
        failing_since: (!judged.passed).then_some(judged.completed_at),
    };
    let Some(old) = stored else {
        return newest;
    };
    let older = (judged.completed_at, judged.build_run_id.as_bytes())
        < (old.last_completed_at, old.last_build_run_id.as_bytes());
    if older {
        return old;
    }
    SeriesRow {
        failing_since: if judged.passed {
            None
        } else {
            old.failing_since.or(Some(judged.completed_at))
        },
        ..newest
    }
}

async fn load(
    tx: &mut PgConnection,
    keys: &[&SeriesKey],
) -> Result<HashMap<SeriesKey, SeriesRow>, sqlx::Error> {
    // Planned for the keys given, every time: a plan cached while the table was small reads all of it (why:
    // LOAD_MANY in commands/src/event_log.rs).
    let rows: Vec<StoredSeries> = sqlx::query_as(
        "SELECT s.project_id, s.workflow, s.branch, s.last_completed_at, s.last_outcome, s.last_build_run_id,
                s.failing_since
           FROM series_health s
           JOIN UNNEST($1::uuid[], $2::text[], $3::text[]) AS k(p, w, b)
             ON s.project_id = k.p AND s.workflow = k.w AND s.branch = k.b",
    )
    .persistent(false)
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|s| ((s.project_id, s.workflow, s.branch), s.row))
        .collect())
}

/// A stored series with its key.
#[derive(sqlx::FromRow)]
struct StoredSeries {
    project_id: Uuid,
    workflow: String,
    branch: String,
    #[sqlx(flatten)]
    row: SeriesRow,
}

async fn store(
    tx: &mut PgConnection,
    rows: &[(&SeriesKey, &SeriesRow)],
) -> Result<(), sqlx::Error> {
    let statement = format!(
        "WITH stored AS (
         INSERT INTO series_health (project_id, workflow, branch, last_completed_at, last_outcome,
                                    last_build_run_id, failing_since)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                              $7::timestamptz[])
         ON CONFLICT (project_id, workflow, branch) DO UPDATE SET
             last_completed_at = EXCLUDED.last_completed_at, last_outcome = EXCLUDED.last_outcome,
             last_build_run_id = EXCLUDED.last_build_run_id, failing_since = EXCLUDED.failing_since
         RETURNING project_id)
         {}",
        crate::changes::notify_stored("series_health")
    );
    sqlx::query(&statement)
        .bind(rows.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.1.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.2.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, r)| r.last_completed_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, r)| r.last_outcome.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, r)| r.last_build_run_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, r)| r.failing_since)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Projection for SeriesHealthProjection {
    fn name(&self) -> &'static str {
        "series_health"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "BuildRun"
    }

    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut verdicts = Vec::new();
        for event in events {
            let build: BuildRunEvent = decode(event)?;
            let Some((run, verdict)) = build.verdict() else {
                continue;
            };
            let Some(passed) = verdict.outcome.health() else {
                continue;
            };
            let key = (
                run.project_id,
                run.workflow.clone(),
                run.branch.clone().unwrap_or_default(),
            );
            verdicts.push((
                key,
                micros(verdict.completed_at),
                verdict.outcome.as_str(),
                passed,
                event.aggregate_id.as_str(),
            ));
        }
        if verdicts.is_empty() {
            return Ok(());
        }
        let mut keys: Vec<&SeriesKey> = verdicts.iter().map(|v| &v.0).collect();
        keys.sort();
        keys.dedup();
        let mut series = load(tx, &keys).await?;
        for (key, completed_at, outcome, passed, build_run_id) in &verdicts {
            let judged = Judged {
                completed_at: *completed_at,
                outcome,
                build_run_id,
                passed: *passed,
            };
            let folded = fold(series.remove(key), &judged);
            series.insert(key.clone(), folded);
        }
        let rows: Vec<(&SeriesKey, &SeriesRow)> = keys
            .iter()
            .filter_map(|key| series.get(*key).map(|row| (*key, row)))
            .collect();
        store(tx, &rows).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, 0, second)
            .single()
            .expect("a valid time")
    }

    fn judged(second: u32, run: &str, passed: bool) -> Judged<'_> {
        Judged {
            completed_at: at(second),
            outcome: if passed { "success" } else { "failure" },
            build_run_id: run,
            passed,
        }
    }

    fn replay(verdicts: &[Judged<'_>]) -> Option<SeriesRow> {
        verdicts
            .iter()
            .fold(None, |row, judged| Some(fold(row, judged)))
    }

    #[test]
    fn a_failing_streak_starts_at_its_first_failure_and_ends_with_a_pass() {
        let failing = replay(&[
            judged(1, "a", true),
            judged(2, "b", false),
            judged(3, "c", false),
        ])
        .expect("a row");
        assert_eq!(failing.failing_since, Some(at(2)));
        assert_eq!(failing.last_build_run_id, "c");
        let fixed = replay(&[judged(2, "b", false), judged(4, "d", true)]).expect("a row");
        assert_eq!(fixed.failing_since, None);
        assert_eq!(fixed.last_outcome, "success");
    }

    #[test]
    fn a_late_older_verdict_changes_nothing() {
        let row = replay(&[judged(5, "new", true), judged(3, "old", false)]).expect("a row");
        assert_eq!(row.last_build_run_id, "new");
        assert_eq!(row.failing_since, None);
    }

    #[test]
    fn verdicts_of_the_same_instant_end_in_the_same_row_whichever_came_first() {
        let one = replay(&[judged(7, "B", false), judged(7, "a", true)]);
        let other = replay(&[judged(7, "a", true), judged(7, "B", false)]);
        assert_eq!(one, other);
        // Byte order: "B" sorts before "a", so "a" is the newer.
        assert_eq!(one.map(|r| r.last_build_run_id), Some("a".to_owned()));
    }
}
