//! Analytics endpoints: the dashboard overview, project statistics and time series, build analytics, the
//! build listing with cursor pagination and its streamed export, notification metrics.
//!
//! Every answer is read from the read models ([`projections::analytics`]), never from the log, and cached in
//! [`crate::read_cache`] keyed by the route and its parameters as given (so "up to now" stays one key while it
//! is cached, and is computed afresh after the TTL or a change notice).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use projections::analytics::{
    self, AnalyticsQuery, BuildFilter, BuildListItem, Cursor, Interval, Range, SeriesError,
    SeriesQuery,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{PathId, Query};
use crate::read_cache::CacheKey;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(statistics))
        .routes(routes!(timeseries))
        .routes(routes!(build_analytics))
        .routes(routes!(list_builds))
        .routes(routes!(export_builds))
        .routes(routes!(notification_metrics))
}

const BUILDS: &[&str] = &["build_runs", "projects"];
const NOTIFICATIONS: &[&str] = &["notifications"];
const OVERVIEW: &[&str] = &["build_runs", "projects", "notifications", "series_health"];

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A cached JSON answer.
fn json_response(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn to_json(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(internal)
}

fn parse_tz(raw: Option<&str>) -> Result<Tz, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Tz::UTC),
        Some(name) => name.parse().map_err(|_| {
            ApiError::Invalid(format!(
                "tz: unknown time zone {name:?}; use an IANA name such as Europe/Berlin"
            ))
        }),
    }
}

/// An RFC 3339 instant, or a date (local midnight in `tz`; as the end of a range, the date is included).
fn parse_instant(name: &str, raw: &str, tz: Tz, end: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let date = if end { date + Duration::days(1) } else { date };
        return Ok(analytics::local_midnight(tz, date));
    }
    Err(ApiError::Invalid(format!(
        "{name}: {raw:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"
    )))
}

/// `from` and `to` as given, `to` defaulting to now and `from` to `window` before `to`.
fn resolve_range(
    from: Option<&str>,
    to: Option<&str>,
    tz: Tz,
    window: Duration,
) -> Result<Range, ApiError> {
    let to = match to {
        Some(raw) => parse_instant("to", raw, tz, true)?,
        None => Utc::now(),
    };
    let from = match from {
        Some(raw) => parse_instant("from", raw, tz, false)?,
        None => to - window,
    };
    if from >= to {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    Ok(Range { from, to })
}

/// The request's time zone and range, the range defaulting to `window` before now.
fn zone_and_range(
    tz: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    window: Duration,
) -> Result<(Tz, Range), ApiError> {
    let tz = parse_tz(tz)?;
    Ok((tz, resolve_range(from, to, tz, window)?))
}

/// Time parameters shared by the analytics routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TimeParams {
    /// Start (inclusive): an RFC 3339 time, or a date read in `tz`. Defaults to a window before `to`.
    from: Option<String>,
    /// End (exclusive): an RFC 3339 time, or a date read in `tz` (then included). Defaults to now.
    to: Option<String>,
    /// An IANA time zone for dates, days, weeks and hours of day. Defaults to UTC.
    tz: Option<String>,
}

impl TimeParams {
    fn key(&self) -> String {
        format!(
            "from={}&to={}&tz={}",
            self.from.as_deref().unwrap_or(""),
            self.to.as_deref().unwrap_or(""),
            self.tz.as_deref().unwrap_or("")
        )
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct OverviewParams {
    /// The time zone "today" and "this week" are read in. Defaults to UTC.
    tz: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/dashboard/overview", tag = "analytics",
    operation_id = "dashboard_overview",
    security(("bearer" = []), ("api_key" = [])),
    params(OverviewParams),
    responses(
        (status = 200, description = "every project's state, broken ones first, and today's totals",
            body = analytics::Overview),
        (status = 304, description = "unchanged since the ETag given in If-None-Match"),
        (status = 422, description = "unknown time zone")))]
async fn overview(
    State(state): State<AppState>,
    Query(params): Query<OverviewParams>,
) -> Result<Response, ApiError> {
    let tz = parse_tz(params.tz.as_deref())?;
    let key = CacheKey {
        project: None,
        reads: OVERVIEW,
        query: format!("overview?tz={}", tz.name()),
    };
    let pool = state.pool.clone();
    let bytes = state
        .read_cache
        .get_or_compute(&state.pool, key, async move {
            let overview = analytics::overview(&pool, tz, Utc::now())
                .await
                .map_err(internal)?;
            to_json(&overview)
        })
        .await?;
    Ok(json_response(bytes))
}

/// A project's statistics per workflow and branch.
#[derive(Serialize, ToSchema)]
struct ProjectStatistics {
    project_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    series: Vec<analytics::SeriesStatistics>,
}

/// The 404 of a project the read models do not know (checked on a cache miss: a cached answer was about a
/// project that existed).
async fn known_project(pool: &sqlx::PgPool, project: Uuid) -> Result<(), ApiError> {
    projections::queries::project(pool, project)
        .await
        .map_err(internal)?
        .map(|_| ())
        .ok_or(ApiError::NotFound("project"))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/statistics", tag = "analytics",
    operation_id = "project_statistics",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), TimeParams),
    responses(
        (status = 200, description = "per workflow and branch: success rate, durations, MTTR, streaks, queue \
            and run time, over runs completed in the range (default: the last 30 days)",
            body = ProjectStatistics),
        (status = 404, description = "no such project"),
        (status = 422, description = "invalid time, range or time zone")))]
async fn statistics(
    State(state): State<AppState>,
    PathId(project): PathId,
    Query(params): Query<TimeParams>,
) -> Result<Response, ApiError> {
    let (_, range) = zone_and_range(
        params.tz.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
        Duration::days(30),
    )?;
    let key = CacheKey {
        project: Some(project),
        reads: BUILDS,
        query: format!("statistics?{}", params.key()),
    };
    let pool = state.pool.clone();
    let bytes = state
        .read_cache
        .get_or_compute(&state.pool, key, async move {
            known_project(&pool, project).await?;
            let series = analytics::statistics(&pool, project, range)
                .await
                .map_err(internal)?;
            to_json(&ProjectStatistics {
                project_id: project,
                from: range.from,
                to: range.to,
                series,
            })
        })
        .await?;
    Ok(json_response(bytes))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    /// `day` (default), `week` (Monday to Sunday) or `month`, in `tz`.
    interval: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    /// Only this workflow.
    workflow: Option<String>,
    /// Only this branch.
    branch: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A project's time series.
#[derive(Serialize, ToSchema)]
struct TimeSeries {
    project_id: Uuid,
    interval: Interval,
    time_zone: String,
    buckets: Vec<analytics::Bucket>,
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn parse_format(raw: Option<&str>) -> Result<Format, ApiError> {
    match raw.unwrap_or("json") {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        other => Err(ApiError::Invalid(format!(
            "format: {other:?} is not one of json, csv"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/timeseries", tag = "analytics",
    operation_id = "project_timeseries",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), SeriesParams),
    responses(
        (status = 200, description = "one bucket per day, week or month in the time zone, empty ones included, \
            each with its change against the one before; CSV with `format=csv`", body = TimeSeries),
        (status = 404, description = "no such project"),
        (status = 422, description = "invalid interval, time, range, time zone or format, or more than 1000 \
            buckets")))]
async fn timeseries(
    State(state): State<AppState>,
    PathId(project): PathId,
    Query(params): Query<SeriesParams>,
) -> Result<Response, ApiError> {
    let tz = parse_tz(params.tz.as_deref())?;
    let interval = match params.interval.as_deref() {
        None => Interval::Day,
        Some(raw) => Interval::parse(raw).ok_or_else(|| {
            ApiError::Invalid(format!("interval: {raw:?} is not one of day, week, month"))
        })?,
    };
    let format = parse_format(params.format.as_deref())?;
    let window = match interval {
        Interval::Day => Duration::days(30),
        Interval::Week => Duration::weeks(12),
        Interval::Month => Duration::days(365),
    };
    let range = resolve_range(params.from.as_deref(), params.to.as_deref(), tz, window)?;
    let query = SeriesQuery {
        project_id: project,
        interval,
        range,
        tz,
        workflow: params.workflow.clone(),
        branch: params.branch.clone(),
    };
    if analytics::bucket_starts(&query).is_none() {
        return Err(ApiError::Invalid(SeriesError::TooManyBuckets.to_string()));
    }
    let key = CacheKey {
        project: Some(project),
        reads: BUILDS,
        query: format!(
            "timeseries?interval={}&from={}&to={}&tz={}&workflow={:?}&branch={:?}",
            interval.as_str(),
            params.from.as_deref().unwrap_or(""),
            params.to.as_deref().unwrap_or(""),
            tz.name(),
            params.workflow,
            params.branch
        ),
    };
    let pool = state.pool.clone();
    let bytes = state
        .read_cache
        .get_or_compute(&state.pool, key, async move {
            known_project(&pool, project).await?;
            let buckets = analytics::time_series(&pool, &query)
                .await
                .map_err(|e| match e {
                    SeriesError::TooManyBuckets => ApiError::Invalid(e.to_string()),
                    SeriesError::Database(e) => internal(e),
                })?;
            to_json(&TimeSeries {
                project_id: project,
                interval,
                time_zone: tz.name().to_owned(),
                buckets,
            })
        })
        .await?;
    match format {
        Format::Json => Ok(json_response(bytes)),
        Format::Csv => {
            let series: serde_json::Value = serde_json::from_slice(&bytes).map_err(internal)?;
            let csv = series_csv(&series)?;
            Ok(csv_response(csv, &format!("timeseries-{project}.csv")))
        }
    }
}

/// The time series as CSV, one row per bucket.
fn series_csv(series: &serde_json::Value) -> Result<Vec<u8>, ApiError> {
    const COLUMNS: [&str; 11] = [
        "period",
        "from",
        "runs",
        "succeeded",
        "failed",
        "success_rate",
        "duration_mean_secs",
        "duration_p50_secs",
        "duration_p95_secs",
        "success_rate_change",
        "duration_p50_change_secs",
    ];
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(COLUMNS).map_err(internal)?;
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for bucket in series["buckets"].as_array().into_iter().flatten() {
        let mut row: Vec<String> = COLUMNS[..9].iter().map(|c| cell(&bucket[*c])).collect();
        row.push(cell(&bucket["trend"]["success_rate"]));
        row.push(cell(&bucket["trend"]["duration_p50_secs"]));
        out.write_record(&row).map_err(internal)?;
    }
    out.into_inner().map_err(internal)
}

fn csv_response(body: Vec<u8>, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsParams {
    /// One project; every project when left out.
    project: Option<Uuid>,
    from: Option<String>,
    to: Option<String>,
    /// The time zone of the hours of day.
    tz: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/builds/analytics", tag = "analytics",
    operation_id = "build_analytics",
    security(("bearer" = []), ("api_key" = [])),
    params(AnalyticsParams),
    responses(
        (status = 200, description = "failure patterns (jobs, steps, hour of day, author, branch) and flaky jobs \
            and workflows over runs completed in the range (default: the last 30 days)",
            body = analytics::BuildAnalytics),
        (status = 404, description = "no such project"),
        (status = 422, description = "invalid project, time, range or time zone")))]
async fn build_analytics(
    State(state): State<AppState>,
    Query(params): Query<AnalyticsParams>,
) -> Result<Response, ApiError> {
    let (tz, range) = zone_and_range(
        params.tz.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
        Duration::days(30),
    )?;
    let key = CacheKey {
        project: params.project,
        reads: BUILDS,
        query: format!(
            "analytics?from={}&to={}&tz={}",
            params.from.as_deref().unwrap_or(""),
            params.to.as_deref().unwrap_or(""),
            tz.name()
        ),
    };
    let query = AnalyticsQuery {
        project_id: params.project,
        range,
        tz,
    };
    let pool = state.pool.clone();
    let bytes = state
        .read_cache
        .get_or_compute(&state.pool, key, async move {
            if let Some(project) = query.project_id {
                known_project(&pool, project).await?;
            }
            to_json(
                &analytics::build_analytics(&pool, &query)
                    .await
                    .map_err(internal)?,
            )
        })
        .await?;
    Ok(json_response(bytes))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct BuildParams {
    /// Only this project's builds.
    project: Option<Uuid>,
    branch: Option<String>,
    /// `queued`, `started` or `completed`.
    status: Option<String>,
    /// `succeeded`, `failed`, `cancelled`, `skipped`, `timed_out` or `action_required`.
    outcome: Option<String>,
    /// Builds Herald first heard of at or after this time (RFC 3339 or a UTC date).
    from: Option<String>,
    /// ... and before this time.
    to: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<String>,
    /// Export only: `json` (default) or `csv`.
    format: Option<String>,
}

impl BuildParams {
    fn filter(&self) -> Result<BuildFilter, ApiError> {
        const STATUSES: [&str; 3] = ["queued", "started", "completed"];
        let one_of = |name: &str, value: &Option<String>, allowed: &[&str]| match value {
            Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::Invalid(format!(
                "{name}: {v:?} is not one of {}",
                allowed.join(", ")
            ))),
            _ => Ok(value.clone()),
        };
        let instant = |name: &str, raw: &Option<String>, end: bool| {
            raw.as_deref()
                .map(|r| parse_instant(name, r, Tz::UTC, end))
                .transpose()
        };
        let filter = BuildFilter {
            project_id: self.project,
            branch: self.branch.clone(),
            status: one_of("status", &self.status, &STATUSES)?,
            outcome: match &self.outcome {
                Some(raw) => Some(
                    raw.parse::<domain::Outcome>()
                        .map_err(|_| {
                            ApiError::Invalid(format!(
                                "outcome: {raw:?} is not one of succeeded, failed, cancelled, skipped, \
                                 timed_out, action_required"
                            ))
                        })?
                        .as_str()
                        .to_owned(),
                ),
                None => None,
            },
            from: instant("from", &self.from, false)?,
            to: instant("to", &self.to, true)?,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from >= to {
                return Err(ApiError::Invalid("from must be before to".into()));
            }
        }
        Ok(filter)
    }
}

/// One page of builds, newest first.
#[derive(Serialize, ToSchema)]
struct BuildPage {
    items: Vec<BuildListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/builds", tag = "analytics",
    operation_id = "list_builds",
    security(("bearer" = []), ("api_key" = [])),
    params(BuildParams),
    responses(
        (status = 200, description = "one page of builds, newest first; pages do not shift as builds change",
            body = BuildPage),
        (status = 422, description = "invalid filter, cursor or limit")))]
async fn list_builds(
    State(state): State<AppState>,
    Query(params): Query<BuildParams>,
) -> Result<Response, ApiError> {
    if params.format.is_some() {
        return Err(ApiError::Invalid(
            "format: only the export (/api/v1/builds/export) takes a format".into(),
        ));
    }
    let filter = params.filter()?;
    let limit = match params.limit.as_deref() {
        None => 50,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| {
                ApiError::Invalid(format!("limit: {raw:?} is not a number from 1 to 200"))
            })?,
    };
    let cursor = params
        .cursor
        .as_deref()
        .map(|raw| {
            Cursor::decode(raw).ok_or_else(|| {
                ApiError::Invalid("cursor: not a cursor this listing handed out".into())
            })
        })
        .transpose()?;
    let (items, next) = analytics::list_builds(&state.pool, &filter, cursor.as_ref(), limit)
        .await
        .map_err(internal)?;
    Ok(json_response(to_json(&BuildPage {
        items,
        next_cursor: next.map(|c| c.encode()),
    })?))
}

#[utoipa::path(get, path = "/api/v1/builds/export", tag = "analytics",
    operation_id = "export_builds",
    security(("bearer" = []), ("api_key" = [])),
    params(BuildParams),
    responses(
        (status = 200, description = "every build the filter holds, newest first, streamed as a JSON array or \
            CSV (`format=csv`)"),
        (status = 422, description = "invalid filter or format")))]
async fn export_builds(
    State(state): State<AppState>,
    Query(params): Query<BuildParams>,
) -> Result<Response, ApiError> {
    if params.cursor.is_some() || params.limit.is_some() {
        return Err(ApiError::Invalid(
            "the export holds every matching build; it takes no cursor or limit".into(),
        ));
    }
    let filter = params.filter()?;
    let format = parse_format(params.format.as_deref())?;
    // A task reads the rows from one database cursor into a small channel; the body takes them out as the
    // client reads. A slow client slows the reader; nothing piles up in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let pool = state.pool.clone();
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut rows = analytics::stream_builds(&pool, &filter);
        let mut first = true;
        let opening = match format {
            Format::Json => Bytes::from_static(b"["),
            Format::Csv => Bytes::from(build_csv_row(None)),
        };
        if tx.send(Ok(opening)).await.is_err() {
            return;
        }
        while let Some(row) = rows.next().await {
            let chunk = match row {
                Ok(row) => match format {
                    Format::Json => {
                        let mut bytes = if first { Vec::new() } else { b",\n".to_vec() };
                        if serde_json::to_writer(&mut bytes, &row).is_err() {
                            continue;
                        }
                        Bytes::from(bytes)
                    }
                    Format::Csv => Bytes::from(build_csv_row(Some(&row))),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "build export failed part way");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            first = false;
            if tx.send(Ok(chunk)).await.is_err() {
                return; // the client went away
            }
        }
        if format == Format::Json {
            let _ = tx.send(Ok(Bytes::from_static(b"]\n"))).await;
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let filename = match format {
        Format::Json => "builds.json",
        Format::Csv => "builds.csv",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// One CSV line of the export: the header for `None`.
fn build_csv_row(row: Option<&BuildListItem>) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    let record: Vec<String> = match row {
        None => [
            "build_run_id",
            "project_id",
            "provider",
            "repository",
            "workflow",
            "branch",
            "run_id",
            "run_number",
            "attempt",
            "commit_sha",
            "author",
            "status",
            "outcome",
            "transition",
            "queued_at",
            "started_at",
            "completed_at",
            "duration_secs",
            "first_seen_at",
            "url",
        ]
        .map(str::to_owned)
        .to_vec(),
        Some(row) => {
            let b = &row.build;
            vec![
                b.build_run_id.clone(),
                b.project_id.to_string(),
                b.provider.clone(),
                b.repository.clone(),
                b.workflow.clone(),
                text(&b.branch),
                b.run_id.to_string(),
                number(b.run_number),
                b.attempt.to_string(),
                text(&b.commit_sha),
                text(&b.author),
                b.status.clone(),
                text(&b.outcome),
                text(&b.transition),
                time(b.queued_at),
                time(b.started_at),
                time(b.completed_at),
                number(b.duration_secs),
                row.first_seen_at.to_rfc3339(),
                text(&b.url),
            ]
        }
    };
    // Writing to a Vec cannot fail.
    let _ = out.write_record(&record);
    out.into_inner().unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/notifications/metrics", tag = "analytics",
    operation_id = "notification_metrics",
    security(("bearer" = []), ("api_key" = [])),
    params(TimeParams),
    responses(
        (status = 200, description = "per channel: planned, sent, delivered, failed, dead-lettered and latency \
            percentiles of notifications planned in the range (default: the last 7 days); suppressions by reason",
            body = analytics::NotificationMetrics),
        (status = 422, description = "invalid time, range or time zone")))]
async fn notification_metrics(
    State(state): State<AppState>,
    Query(params): Query<TimeParams>,
) -> Result<Response, ApiError> {
    let (_, range) = zone_and_range(
        params.tz.as_deref(),
        params.from.as_deref(),
        params.to.as_deref(),
        Duration::days(7),
    )?;
    let key = CacheKey {
        project: None,
        reads: NOTIFICATIONS,
        query: format!("notification-metrics?{}", params.key()),
    };
    let pool = state.pool.clone();
    let bytes = state
        .read_cache
        .get_or_compute(&state.pool, key, async move {
            to_json(
                &analytics::notification_metrics(&pool, range)
                    .await
                    .map_err(internal)?,
            )
        })
        .await?;
    Ok(json_response(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_local_midnights_and_an_end_date_is_included() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let from = parse_instant("from", "2026-07-01", berlin, false).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-06-30T22:00:00+00:00");
        let to = parse_instant("to", "2026-07-01", berlin, true).unwrap();
        assert_eq!(to.to_rfc3339(), "2026-07-01T22:00:00+00:00");
        assert!(parse_instant("from", "yesterday", berlin, false).is_err());
        assert!(parse_tz(Some("Mars/Olympus")).is_err());
        assert!(resolve_range(
            Some("2026-07-02"),
            Some("2026-07-01"),
            berlin,
            Duration::days(1)
        )
        .is_err());
    }

    #[test]
    fn csv_rows_quote_what_needs_quoting() {
        let header = String::from_utf8(build_csv_row(None)).unwrap();
        assert!(header.starts_with("build_run_id,project_id,"));
        let series = serde_json::json!({"buckets": [{"period": "2026-07-01", "from": "x", "runs": 2,
            "succeeded": 1, "failed": 1, "success_rate": 0.5, "duration_mean_secs": null,
            "duration_p50_secs": 3.0, "duration_p95_secs": 4.5,
            "trend": {"runs": 1, "success_rate": -0.5, "duration_p50_secs": null}}]});
        let text = String::from_utf8(series_csv(&series).unwrap()).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("2026-07-01,x,2,1,1,0.5,,3.0,4.5,-0.5,")
        );
    }
}
