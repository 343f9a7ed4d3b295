//! Analytics over the read models: the dashboard overview, per-project statistics, time series with trends,
//! failure patterns and flaky jobs, notification metrics, and the build listing.
//!
//! Why queries and not rollup tables: every figure here is an aggregate of `build_runs` (one row per run
//! attempt) or `notifications`, read through indexes on `(project_id, completed_at)`. Pre-aggregated daily
//! tables would be faster to scan but could not answer exact percentiles, nor a day in a time zone other than
//! the one they were rolled up in. The queries keep to one project and one time range each, so they touch the
//! rows of that range only; the API caches their answers and drops them when the projection says the rows
//! changed. docs/analytics.md has the measured latencies on a million runs.
//!
//! Vocabulary, the same everywhere: a run *succeeded* or *failed* (`failed` and `timed_out`); cancelled,
//! skipped and action-required runs say nothing about health and are left out of success rates and streaks.
//! A *series* is one workflow on one branch; runs in a series are ordered by completion time.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// SQL: the run failed.
const FAILED: &str = "outcome IN ('failed', 'timed_out')";
/// A run still "running" after this long lost its final webhook; the overview stops counting it.
pub const RUNNING_STALE_AFTER_HOURS: i64 = 24;
/// A series whose last judged run is older than this no longer decides whether its project is red.
pub const SERIES_ACTIVE_DAYS: i64 = 30;

/// A time range, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Succeeded over succeeded-or-failed; `None` with neither.
fn rate(succeeded: i64, failed: i64) -> Option<f64> {
    let judged = succeeded + failed;
    (judged > 0).then(|| succeeded as f64 / judged as f64)
}

/// Local midnight of `date` in `tz`, as an instant. Where midnight does not exist (a DST gap), the first
/// instant after it.
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut at = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&at).earliest() {
            return t.with_timezone(&Utc);
        }
        at += Duration::minutes(30);
    }
    // No zone has a gap of two hours at midnight; fall back to reading the date as UTC.
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

/// The local date an instant falls on in `tz`.
pub fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

// ---------------------------------------------------------------------------------------------------------------
// Overview

/// The dashboard's first screen.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// The time zone "today" and "this week" were read in.
    pub time_zone: String,
    pub today_from: DateTime<Utc>,
    /// Monday 00:00 of this week, in the time zone.
    pub week_from: DateTime<Utc>,
    pub totals: OverviewTotals,
    /// Broken projects first (longest broken first), then running, then the rest by name.
    pub projects: Vec<ProjectOverview>,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct OverviewTotals {
    pub projects: i64,
    pub broken: i64,
    pub running: i64,
    pub builds_today: i64,
    pub builds_this_week: i64,
    /// Notifications delivered since local midnight.
    pub notifications_sent_today: i64,
    /// Notifications that ended undelivered (dead-lettered) since local midnight.
    pub notifications_failed_today: i64,
}

/// One project's tile.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProjectOverview {
    pub project_id: Uuid,
    pub name: String,
    /// `red` (a series is failing), `running` (a run is in progress), `green`, or `unknown` (no verdict yet).
    pub state: String,
    /// When the longest-broken failing series first failed.
    pub broken_since: Option<DateTime<Utc>>,
    /// The failing series, as `workflow@branch`.
    pub broken_series: Vec<String>,
    pub running: i64,
    pub last_build_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub builds_today: i64,
    pub builds_this_week: i64,
    /// This week's runs.
    pub success_rate: Option<f64>,
    pub duration_p50_secs: Option<f64>,
    pub duration_p95_secs: Option<f64>,
}

/// The overview, with "today" and "this week" read in `tz` at `now`. Which series fail comes from the
/// `series_health` projection (one row per series); the week's figures from this week's runs.
pub async fn overview(pool: &PgPool, tz: Tz, now: DateTime<Utc>) -> Result<Overview, sqlx::Error> {
    let today = local_date(tz, now);
    let today_from = local_midnight(tz, today);
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let week_from = local_midnight(tz, monday);
    let active_from = now - Duration::days(SERIES_ACTIVE_DAYS);
    let stale_from = now - Duration::hours(RUNNING_STALE_AFTER_HOURS);
    let mut projects: Vec<ProjectOverview> = sqlx::query_as(&format!(
        "WITH week AS (
             SELECT project_id, count(*) AS builds_this_week,
                    count(*) FILTER (WHERE completed_at >= $1) AS builds_today,
                    count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE {FAILED}) AS failed,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_secs) AS p50,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_secs) AS p95
               FROM build_runs WHERE completed_at >= $2 AND completed_at < $5 GROUP BY project_id),
         running AS (
             SELECT project_id, count(*) AS running FROM build_runs
              WHERE status <> 'completed' AND updated_at >= $4 GROUP BY project_id),
         broken AS (
             SELECT project_id, workflow || '@' || branch AS series, failing_since AS since
               FROM series_health WHERE failing_since IS NOT NULL AND last_completed_at >= $3)
         SELECT p.project_id, p.name,
                CASE WHEN EXISTS (SELECT 1 FROM broken b WHERE b.project_id = p.project_id) THEN 'red'
                     WHEN COALESCE(r.running, 0) > 0 THEN 'running'
                     WHEN p.last_outcome IS NULL THEN 'unknown'
                     ELSE 'green' END AS state,
                (SELECT min(b.since) FROM broken b WHERE b.project_id = p.project_id) AS broken_since,
                COALESCE((SELECT array_agg(b.series ORDER BY b.series) FROM broken b
                           WHERE b.project_id = p.project_id), '{{}}') AS broken_series,
                COALESCE(r.running, 0) AS running, p.last_build_at, p.last_outcome,
                COALESCE(w.builds_today, 0) AS builds_today, COALESCE(w.builds_this_week, 0) AS builds_this_week,
                CASE WHEN COALESCE(w.succeeded, 0) + COALESCE(w.failed, 0) > 0
                     THEN w.succeeded::float8 / (w.succeeded + w.failed) END AS success_rate,
                w.p50 AS duration_p50_secs, w.p95 AS duration_p95_secs
           FROM projects p
           LEFT JOIN week w ON w.project_id = p.project_id
           LEFT JOIN running r ON r.project_id = p.project_id
          WHERE NOT p.archived"
    ))
    .bind(today_from)
    .bind(week_from)
    .bind(active_from)
    .bind(stale_from)
    .bind(now)
    .fetch_all(pool)
    .await?;
    projects.sort_by(|a, b| {
        let rank = |p: &ProjectOverview| match p.state.as_str() {
            "red" => 0,
            "running" => 1,
            _ => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then(a.broken_since.cmp(&b.broken_since))
            .then_with(|| a.name.cmp(&b.name))
    });
    let (sent, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'delivered' AND delivered_at >= $1),
                count(*) FILTER (WHERE status = 'dead_lettered' AND updated_at >= $1)
           FROM notifications WHERE planned_at >= $1 - interval '7 days'",
    )
    .bind(today_from)
    .fetch_one(pool)
    .await?;
    let totals = OverviewTotals {
        projects: projects.len() as i64,
        broken: projects.iter().filter(|p| p.state == "red").count() as i64,
        running: projects.iter().filter(|p| p.running > 0).count() as i64,
        builds_today: projects.iter().map(|p| p.builds_today).sum(),
        builds_this_week: projects.iter().map(|p| p.builds_this_week).sum(),
        notifications_sent_today: sent,
        notifications_failed_today: failed,
    };
    Ok(Overview {
        time_zone: tz.name().to_owned(),
        today_from,
        week_from,
        totals,
        projects,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Project statistics

/// One series' figures over a range.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SeriesStatistics {
    pub workflow: String,
    pub branch: Option<String>,
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Cancelled, skipped and action-required runs.
    pub other: i64,
    pub success_rate: Option<f64>,
    pub duration_mean_secs: Option<f64>,
    pub duration_p50_secs: Option<f64>,
    pub duration_p95_secs: Option<f64>,
    /// Mean time from queued to started, where the provider reported both.
    pub queue_mean_secs: Option<f64>,
    /// Mean time from started to completed.
    pub run_mean_secs: Option<f64>,
    /// Mean time from the first failure of a broken stretch to the success that ended it.
    pub mttr_secs: Option<f64>,
    /// How many broken stretches were fixed in the range.
    pub recoveries: i64,
    /// Consecutive failures at the end of the range (0 when the last judged run succeeded).
    pub current_failure_streak: i64,
    pub longest_failure_streak: i64,
    /// The first failure of the current streak.
    pub broken_since: Option<DateTime<Utc>>,
}

/// A project's statistics per workflow and branch, over runs completed in `range`.
pub async fn statistics(
    pool: &PgPool,
    project_id: Uuid,
    range: Range,
) -> Result<Vec<SeriesStatistics>, sqlx::Error> {
    // Streaks by "gaps and islands": numbering each run by the successes up to and including it puts every
    // stretch of failures in the group of the success before it; the success that ends the stretch opens the
    // next group, so `lead(fixed_at)` is the fix of a group's failures.
    sqlx::query_as(&format!(
        "WITH runs AS (
             SELECT workflow, branch, outcome, completed_at, build_run_id, duration_secs,
                    EXTRACT(EPOCH FROM started_at - queued_at)::float8 AS queue_secs,
                    EXTRACT(EPOCH FROM completed_at - started_at)::float8 AS run_secs
               FROM build_runs WHERE project_id = $1 AND completed_at >= $2 AND completed_at < $3),
         totals AS (
             SELECT workflow, branch, count(*) AS runs,
                    count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE {FAILED}) AS failed,
                    avg(duration_secs)::float8 AS duration_mean_secs,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_secs) AS duration_p50_secs,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_secs) AS duration_p95_secs,
                    avg(queue_secs) FILTER (WHERE queue_secs >= 0) AS queue_mean_secs,
                    avg(run_secs) FILTER (WHERE run_secs >= 0) AS run_mean_secs
               FROM runs GROUP BY workflow, branch),
         judged AS (
             SELECT workflow, branch, completed_at, outcome = 'succeeded' AS ok,
                    count(*) FILTER (WHERE outcome = 'succeeded') OVER (
                        PARTITION BY workflow, branch ORDER BY completed_at, build_run_id
                        ROWS UNBOUNDED PRECEDING) AS grp
               FROM runs WHERE outcome IN ('succeeded', 'failed', 'timed_out')),
         groups AS (
             SELECT workflow, branch, grp, count(*) FILTER (WHERE NOT ok) AS failures,
                    min(completed_at) FILTER (WHERE NOT ok) AS broken_at,
                    min(completed_at) FILTER (WHERE ok) AS fixed_at
               FROM judged GROUP BY workflow, branch, grp),
         spans AS (
             SELECT workflow, branch, failures, broken_at,
                    lead(fixed_at) OVER (PARTITION BY workflow, branch ORDER BY grp) AS next_fixed,
                    grp = max(grp) OVER (PARTITION BY workflow, branch) AS last
               FROM groups),
         streaks AS (
             SELECT workflow, branch, max(failures) AS longest,
                    COALESCE(max(failures) FILTER (WHERE last), 0) AS current,
                    max(broken_at) FILTER (WHERE last AND failures > 0) AS broken_since,
                    avg(EXTRACT(EPOCH FROM next_fixed - broken_at)::float8)
                        FILTER (WHERE failures > 0 AND next_fixed IS NOT NULL) AS mttr_secs,
                    count(*) FILTER (WHERE failures > 0 AND next_fixed IS NOT NULL) AS recoveries
               FROM spans GROUP BY workflow, branch)
         SELECT t.workflow, t.branch, t.runs, t.succeeded, t.failed, t.runs - t.succeeded - t.failed AS other,
                CASE WHEN t.succeeded + t.failed > 0 THEN t.succeeded::float8 / (t.succeeded + t.failed) END
                    AS success_rate,
                t.duration_mean_secs, t.duration_p50_secs, t.duration_p95_secs, t.queue_mean_secs,
                t.run_mean_secs, s.mttr_secs, COALESCE(s.recoveries, 0) AS recoveries,
                COALESCE(s.current, 0) AS current_failure_streak, COALESCE(s.longest, 0) AS longest_failure_streak,
                s.broken_since
           FROM totals t LEFT JOIN streaks s
             ON s.workflow = t.workflow AND s.branch IS NOT DISTINCT FROM t.branch
          ORDER BY t.workflow, t.branch NULLS FIRST"
    ))
    .bind(project_id)
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await
}

// ---------------------------------------------------------------------------------------------------------------
// Time series

/// The width of a time-series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    /// Monday to Sunday.
    Week,
    Month,
}

impl Interval {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The first local date of the bucket `date` falls in.
    pub fn start_of(self, date: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => date,
            Self::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The first local date of the next bucket.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => start + Duration::days(1),
            Self::Week => start + Duration::days(7),
            Self::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(start + Duration::days(31)),
        }
    }

    /// The first local date of the previous bucket.
    pub fn previous(self, start: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => start - Duration::days(1),
            Self::Week => start - Duration::days(7),
            Self::Month => start
                .checked_sub_months(chrono::Months::new(1))
                .unwrap_or(start - Duration::days(28)),
        }
    }
}

/// Which runs a time series counts.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub project_id: Uuid,
    pub interval: Interval,
    pub range: Range,
    pub tz: Tz,
    pub workflow: Option<String>,
    pub branch: Option<String>,
}

/// The most buckets one time series may have.
pub const MAX_BUCKETS: usize = 1000;

/// One bucket of a time series, with its change against the bucket before.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    /// The bucket's first local date.
    pub period: NaiveDate,
    /// Its first instant (local midnight).
    pub from: DateTime<Utc>,
    pub runs: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub success_rate: Option<f64>,
    pub duration_mean_secs: Option<f64>,
    pub duration_p50_secs: Option<f64>,
    pub duration_p95_secs: Option<f64>,
    pub trend: Trend,
}

/// The change against the previous bucket; absent where either side has nothing to compare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Trend {
    pub runs: i64,
    pub success_rate: Option<f64>,
    pub duration_p50_secs: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    period: NaiveDate,
    runs: i64,
    succeeded: i64,
    failed: i64,
    duration_mean_secs: Option<f64>,
    duration_p50_secs: Option<f64>,
    duration_p95_secs: Option<f64>,
}

/// The local dates the buckets of `query` start on (the one before the range first, for its trend); `None`
/// when there would be more than [`MAX_BUCKETS`].
pub fn bucket_starts(query: &SeriesQuery) -> Option<Vec<NaiveDate>> {
    let first = query
        .interval
        .start_of(local_date(query.tz, query.range.from));
    let mut starts = vec![query.interval.previous(first)];
    let mut at = first;
    while local_midnight(query.tz, at) < query.range.to {
        if starts.len() > MAX_BUCKETS {
            return None;
        }
        starts.push(at);
        at = query.interval.next(at);
    }
    Some(starts)
}

/// Every bucket from the one holding `range.from` to the one holding the end, empty ones included. The runs
/// counted are those completed from the first bucket's local midnight up to `range.to`.
pub async fn time_series(pool: &PgPool, query: &SeriesQuery) -> Result<Vec<Bucket>, SeriesError> {
    let starts = bucket_starts(query).ok_or(SeriesError::TooManyBuckets)?;
    let from = local_midnight(query.tz, starts[0]);
    let rows: Vec<BucketRow> = sqlx::query_as(&format!(
        "SELECT date_trunc($1, completed_at AT TIME ZONE $2)::date AS period, count(*) AS runs,
                count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                count(*) FILTER (WHERE {FAILED}) AS failed,
                avg(duration_secs)::float8 AS duration_mean_secs,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_secs) AS duration_p50_secs,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_secs) AS duration_p95_secs
           FROM build_runs
          WHERE project_id = $3 AND completed_at >= $4 AND completed_at < $5
            AND ($6::text IS NULL OR workflow = $6) AND ($7::text IS NULL OR branch = $7)
          GROUP BY 1 ORDER BY 1"
    ))
    .bind(query.interval.as_str())
    .bind(query.tz.name())
    .bind(query.project_id)
    .bind(from)
    .bind(query.range.to)
    .bind(&query.workflow)
    .bind(&query.branch)
    .fetch_all(pool)
    .await?;
    let by_period: std::collections::HashMap<NaiveDate, BucketRow> =
        rows.into_iter().map(|r| (r.period, r)).collect();
    let mut buckets = Vec::with_capacity(starts.len());
    let mut previous: Option<Bucket> = None;
    for period in starts {
        let row = by_period.get(&period);
        let succeeded = row.map_or(0, |r| r.succeeded);
        let failed = row.map_or(0, |r| r.failed);
        let mut bucket = Bucket {
            period,
            from: local_midnight(query.tz, period),
            runs: row.map_or(0, |r| r.runs),
            succeeded,
            failed,
            success_rate: rate(succeeded, failed),
            duration_mean_secs: row.and_then(|r| r.duration_mean_secs),
            duration_p50_secs: row.and_then(|r| r.duration_p50_secs),
            duration_p95_secs: row.and_then(|r| r.duration_p95_secs),
            trend: Trend::default(),
        };
        if let Some(before) = &previous {
            bucket.trend = Trend {
                runs: bucket.runs - before.runs,
                success_rate: bucket
                    .success_rate
                    .zip(before.success_rate)
                    .map(|(a, b)| a - b),
                duration_p50_secs: bucket
                    .duration_p50_secs
                    .zip(before.duration_p50_secs)
                    .map(|(a, b)| a - b),
            };
            buckets.push(bucket.clone());
        }
        previous = Some(bucket);
    }
    Ok(buckets)
}

#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("the range holds more than {MAX_BUCKETS} buckets; choose a wider interval or a shorter range")]
    TooManyBuckets,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

// ---------------------------------------------------------------------------------------------------------------
// Build analytics

/// Which runs the build analytics look at.
#[derive(Debug, Clone)]
pub struct AnalyticsQuery {
    /// One project, or every project.
    pub project_id: Option<Uuid>,
    pub range: Range,
    /// For the hour of day.
    pub tz: Tz,
}

/// Where failures come from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuildAnalytics {
    pub runs: i64,
    pub failed: i64,
    /// Jobs by how often they failed, most first.
    pub failing_jobs: Vec<FailingJob>,
    /// Steps by how often they failed, most first.
    pub failing_steps: Vec<FailingStep>,
    /// 24 entries, one per local hour of completion.
    pub by_hour: Vec<Breakdown>,
    pub by_author: Vec<Breakdown>,
    pub by_branch: Vec<Breakdown>,
    /// Jobs that failed and then passed on the same commit.
    pub flaky_jobs: Vec<FlakyJob>,
    /// Workflows whose runs failed and then passed on the same commit.
    pub flaky_workflows: Vec<FlakyWorkflow>,
}

/// How many entries a ranked list holds.
pub const TOP: i64 = 20;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailingJob {
    pub workflow: String,
    pub job: String,
    pub runs: i64,
    pub failures: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailingStep {
    pub workflow: String,
    pub job: String,
    pub step: String,
    pub failures: i64,
}

/// Runs and failures for one value of a dimension (an hour, an author, a branch).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Breakdown {
    pub key: String,
    pub runs: i64,
    pub failures: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FlakyJob {
    pub workflow: String,
    pub job: String,
    /// Commits on which the job failed before it passed.
    pub commits: i64,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FlakyWorkflow {
    pub project_id: Uuid,
    pub workflow: String,
    pub commits: i64,
    pub last_seen: DateTime<Utc>,
}

/// A query over the runs of an [`AnalyticsQuery`]: its range and project bound as `$1`, `$2` and `$3`.
fn scoped<'q, O>(
    sql: &'q str,
    query: &AnalyticsQuery,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(sql)
        .bind(query.range.from)
        .bind(query.range.to)
        .bind(query.project_id)
}

pub async fn build_analytics(
    pool: &PgPool,
    query: &AnalyticsQuery,
) -> Result<BuildAnalytics, sqlx::Error> {
    // Every query below reads the same runs: completed in the range, of the project when one is given.
    let runs = "SELECT * FROM build_runs
                 WHERE completed_at >= $1 AND completed_at < $2 AND ($3::uuid IS NULL OR project_id = $3)";
    let (total, failed): (i64, i64) = scoped(
        &format!("SELECT count(*), count(*) FILTER (WHERE {FAILED}) FROM ({runs}) r"),
        query,
    )
    .fetch_one(pool)
    .await?;
    let jobs = format!(
        "SELECT r.workflow, r.commit_sha, r.completed_at, j.value->>'name' AS job,
                j.value->>'outcome' AS outcome, j.value->'failed_steps' AS failed_steps
           FROM ({runs}) r CROSS JOIN LATERAL jsonb_each(r.jobs) j
          WHERE j.value->>'outcome' IS NOT NULL"
    );
    let failing_jobs: Vec<FailingJob> = scoped(
        &format!(
            "SELECT workflow, job, count(*) AS runs,
                count(*) FILTER (WHERE outcome IN ('failed', 'timed_out')) AS failures
           FROM ({jobs}) j GROUP BY workflow, job
         HAVING count(*) FILTER (WHERE outcome IN ('failed', 'timed_out')) > 0
          ORDER BY failures DESC, workflow, job LIMIT {TOP}"
        ),
        query,
    )
    .fetch_all(pool)
    .await?;
    let failing_steps: Vec<FailingStep> = scoped(&format!(
        "SELECT workflow, job, step, count(*) AS failures
           FROM ({jobs}) j CROSS JOIN LATERAL jsonb_array_elements_text(
                    CASE WHEN jsonb_typeof(j.failed_steps) = 'array' THEN j.failed_steps ELSE '[]' END) step
          WHERE outcome IN ('failed', 'timed_out')
          GROUP BY workflow, job, step ORDER BY failures DESC, workflow, job, step LIMIT {TOP}"
    ), query)
    .fetch_all(pool)
    .await?;
    let hours: Vec<Breakdown> = scoped(
        &format!(
        "SELECT EXTRACT(HOUR FROM completed_at AT TIME ZONE $4)::int::text AS key, count(*) AS runs,
                count(*) FILTER (WHERE {FAILED}) AS failures
           FROM ({runs}) r GROUP BY 1"
    ),
        query,
    )
    .bind(query.tz.name())
    .fetch_all(pool)
    .await?;
    let by_hour = (0..24)
        .map(|hour| {
            let key = hour.to_string();
            hours
                .iter()
                .find(|b| b.key == key)
                .cloned()
                .unwrap_or(Breakdown {
                    key,
                    runs: 0,
                    failures: 0,
                })
        })
        .collect();
    let breakdown = |column: &str| {
        format!(
            "SELECT COALESCE({column}, '') AS key, count(*) AS runs, count(*) FILTER (WHERE {FAILED}) AS failures
               FROM ({runs}) r GROUP BY 1 HAVING count(*) FILTER (WHERE {FAILED}) > 0
              ORDER BY failures DESC, key LIMIT {TOP}"
        )
    };
    let by_author: Vec<Breakdown> = scoped(&breakdown("author"), query).fetch_all(pool).await?;
    let by_branch: Vec<Breakdown> = scoped(&breakdown("branch"), query).fetch_all(pool).await?;
    // Flaky: on one commit, a failure completed before a success. Nothing about the code changed between the
    // two, so the failure said nothing about the code.
    let flaky_jobs: Vec<FlakyJob> = scoped(&format!(
        "WITH per_commit AS (
             SELECT workflow, job, commit_sha,
                    min(completed_at) FILTER (WHERE outcome IN ('failed', 'timed_out')) AS first_failure,
                    max(completed_at) FILTER (WHERE outcome = 'succeeded') AS last_success
               FROM ({jobs}) j WHERE commit_sha IS NOT NULL GROUP BY workflow, job, commit_sha)
         SELECT workflow, job, count(*) AS commits, max(last_success) AS last_seen
           FROM per_commit WHERE first_failure < last_success
          GROUP BY workflow, job ORDER BY commits DESC, workflow, job LIMIT {TOP}"
    ), query)
    .fetch_all(pool)
    .await?;
    let flaky_workflows: Vec<FlakyWorkflow> = scoped(&format!(
        "WITH per_commit AS (
             SELECT project_id, workflow, commit_sha,
                    min(completed_at) FILTER (WHERE {FAILED}) AS first_failure,
                    max(completed_at) FILTER (WHERE outcome = 'succeeded') AS last_success
               FROM ({runs}) r WHERE commit_sha IS NOT NULL GROUP BY project_id, workflow, commit_sha)
         SELECT project_id, workflow, count(*) AS commits, max(last_success) AS last_seen
           FROM per_commit WHERE first_failure < last_success
          GROUP BY project_id, workflow ORDER BY commits DESC, workflow, project_id LIMIT {TOP}"
    ), query)
    .fetch_all(pool)
    .await?;
    Ok(BuildAnalytics {
        runs: total,
        failed,
        failing_jobs,
        failing_steps,
        by_hour,
        by_author,
        by_branch,
        flaky_jobs,
        flaky_workflows,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Notification metrics

/// One channel's notifications planned in a range.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ChannelMetrics {
    pub channel: String,
    pub planned: i64,
    /// At least one attempt made.
    pub sent: i64,
    pub delivered: i64,
    /// Sent and not delivered: retrying, dead-lettered or discarded.
    pub failed: i64,
    pub dead_lettered: i64,
    /// Planning to delivery, delivered ones only.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SuppressionCount {
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationMetrics {
    pub channels: Vec<ChannelMetrics>,
    /// Notifications not sent, by the planner's reason.
    pub suppressed: Vec<SuppressionCount>,
}

pub async fn notification_metrics(
    pool: &PgPool,
    range: Range,
) -> Result<NotificationMetrics, sqlx::Error> {
    let channels = sqlx::query_as(
        "SELECT channel, count(*) AS planned,
                count(*) FILTER (WHERE attempts > 0) AS sent,
                count(*) FILTER (WHERE status = 'delivered') AS delivered,
                count(*) FILTER (WHERE attempts > 0 AND status IN ('retrying', 'dead_lettered', 'discarded'))
                    AS failed,
                count(*) FILTER (WHERE status = 'dead_lettered') AS dead_lettered,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms
           FROM notifications
          WHERE planned_at >= $1 AND planned_at < $2 AND channel IS NOT NULL AND status <> 'suppressed'
          GROUP BY channel ORDER BY channel",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await?;
    let suppressed = sqlx::query_as(
        "SELECT COALESCE(reason, '') AS reason, count(*) AS count FROM notifications
          WHERE planned_at >= $1 AND planned_at < $2 AND status = 'suppressed'
          GROUP BY 1 ORDER BY count DESC, reason",
    )
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await?;
    Ok(NotificationMetrics {
        channels,
        suppressed,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// The build listing

/// Which builds a listing or an export holds.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub project_id: Option<Uuid>,
    pub branch: Option<String>,
    /// `queued`, `started` or `completed`.
    pub status: Option<String>,
    /// `succeeded`, `failed`, ...
    pub outcome: Option<String>,
    /// On when Herald first heard of the run.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Where a page ends: the last row's first-seen time and id. Rows are listed newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub first_seen_at: DateTime<Utc>,
    pub build_run_id: String,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.first_seen_at.timestamp_micros(),
            self.build_run_id
        ))
    }

    pub fn decode(raw: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, id) = text.split_once('|')?;
        Some(Self {
            first_seen_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            build_run_id: id.to_owned(),
        })
    }
}

/// The listing's SQL: the filter as `$1..$6`, the cursor as `$7, $8`.
fn builds_sql(tail: &str) -> String {
    format!(
        "SELECT * FROM build_runs
          WHERE ($1::uuid IS NULL OR project_id = $1) AND ($2::text IS NULL OR branch = $2)
            AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR outcome = $4)
            AND ($5::timestamptz IS NULL OR first_seen_at >= $5) AND ($6::timestamptz IS NULL OR first_seen_at < $6)
            AND ($7::timestamptz IS NULL OR (first_seen_at, build_run_id) < ($7, $8))
          ORDER BY first_seen_at DESC, build_run_id DESC {tail}"
    )
}

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q BuildFilter,
    after: Option<&'q Cursor>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.project_id)
        .bind(&filter.branch)
        .bind(&filter.status)
        .bind(&filter.outcome)
        .bind(filter.from)
        .bind(filter.to)
        .bind(after.map(|c| c.first_seen_at))
        .bind(after.map(|c| c.build_run_id.as_str()))
}

/// One page of builds, newest first, and the cursor of the next page when there is one.
pub async fn list_builds(
    pool: &PgPool,
    filter: &BuildFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<BuildListItem>, Option<Cursor>), sqlx::Error> {
    let sql = builds_sql("LIMIT $9");
    let mut rows: Vec<BuildListItem> = bind_filter(sqlx::query_as(&sql), filter, after)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor {
            first_seen_at: r.first_seen_at,
            build_run_id: r.build.build_run_id.clone(),
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// Every build the filter holds, newest first, as a stream of rows read from one cursor: an export of a
/// million rows holds one row in memory at a time.
pub fn stream_builds<'a>(
    pool: &'a PgPool,
    filter: &'a BuildFilter,
) -> futures::stream::BoxStream<'a, Result<BuildListItem, sqlx::Error>> {
    let sql: &'static str = EXPORT_SQL.get_or_init(|| builds_sql(""));
    bind_filter(sqlx::query_as(sql), filter, None).fetch(pool)
}

static EXPORT_SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A row of the listing: the build and when Herald first heard of it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BuildListItem {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub build: crate::queries::BuildRunView,
    pub first_seen_at: DateTime<Utc>,
}
