//! `herald bench rebuild`: rebuild every read model from N generated events, beside the same-run baseline of a
//! plain `COPY (SELECT ... FROM events) TO STDOUT` of the same table — the least any rebuild must do is read the
//! log once. Prints a table and writes JSON with events/s, the ratio to the baseline, and peak RSS.
//!
//! It runs in a scratch database on the same server as `DATABASE_URL`, created and dropped here.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use domain::{BuildRunEvent, ProjectEvent, ProjectName, RunInfo, Transition, Verdict};
use futures::StreamExt;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Serialize)]
pub struct RebuildBench {
    pub scenario: &'static str,
    pub events: u64,
    pub baseline_copy_seconds: f64,
    pub baseline_events_per_second: f64,
    pub rebuild_seconds: f64,
    pub rebuild_events_per_second: f64,
    /// Rebuild time over baseline time: how many times longer than just reading the log.
    pub ratio_to_baseline: f64,
    pub peak_rss_mib_copy: f64,
    pub peak_rss_mib_rebuild: f64,
}

/// Peak resident memory of this process since the last reset, in MiB (Linux).
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Start measuring the peak anew (Linux: writing 5 to clear_refs resets VmHWM).
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

fn row<E: cqrs_es::DomainEvent>(
    aggregate_type: &'static str,
    aggregate_id: &str,
    sequence: i64,
    event: &E,
    recorded_at: DateTime<Utc>,
) -> anyhow::Result<Row> {
    Ok(Row {
        aggregate_type,
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        event_type: event.event_type(),
        payload: serde_json::to_value(event)?,
        recorded_at,
    })
}

async fn insert(conn: &mut PgConnection, rows: &[Row]) -> anyhow::Result<()> {
    let version: Vec<&str> = rows
        .iter()
        .map(|r| domain::upcast::current_version(&r.event_type))
        .collect();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                             recorded_at)
         SELECT t, i, s, e, v, p::json, '{}'::json, r
           FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[],
                       $7::timestamptz[]) AS x(t, i, s, e, v, p, r)",
    )
    .bind(rows.iter().map(|r| r.aggregate_type).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.aggregate_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
    .bind(version)
    .bind(rows.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// N events: 20 projects, then runs of three events each (queued, started, verdict), 1 in 5 failing, a run a
/// minute up to now: a log that grew over months, as a million events would (333,000 runs are 231 days), each
/// event recorded when its run happened. So read models with a window (the live feed keeps a day) hold what
/// they would hold in production, not the whole log.
pub(crate) async fn generate(pool: &PgPool, events: u64) -> anyhow::Result<u64> {
    let mut conn = pool.acquire().await?;
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_to_outbox")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_index_build_verdicts")
        .execute(&mut *conn)
        .await?;
    let runs = i64::try_from(events.saturating_sub(20) / 3 + 1).context("too many events")?;
    let start = Utc::now() - Duration::minutes(runs + 2);
    let projects: Vec<Uuid> = (0..20)
        .map(|i| Uuid::from_u128(0x6865_7261_6c64_0000 + i))
        .collect();
    let mut batch = Vec::with_capacity(6000);
    for project in &projects {
        let created = ProjectEvent::ProjectCreated {
            project_id: *project,
            name: ProjectName::parse(&format!("bench-{project}"))
                .map_err(|e| anyhow::anyhow!(e))?,
            secret_version: 1,
            secret_fingerprint: "bench".into(),
            created_at: start,
        };
        batch.push(row("Project", &project.to_string(), 1, &created, start)?);
    }
    let mut written = batch.len() as u64;
    let mut run_id = 0_i64;
    while written < events {
        run_id += 1;
        let project_id = projects[(run_id as usize) % projects.len()];
        let at = start + Duration::seconds(run_id * 60);
        let run = RunInfo {
            project_id,
            provider: "github".into(),
            repository: format!("bench/repo-{}", run_id % 20),
            workflow: ["ci", "deploy", "nightly"][(run_id % 3) as usize].into(),
            branch: Some(["main", "dev"][(run_id % 2) as usize].into()),
            tag: None,
            pull_request: None,
            run_id,
            run_key: None,
            run_number: Some(run_id),
            attempt: 1,
            commit_sha: Some(format!("{run_id:040x}")),
            commit_message: Some("bench: a commit".into()),
            author: Some("bench".into()),
            url: None,
        };
        let id = run.build_run_id();
        let failed = run_id % 5 == 0;
        let verdict = Verdict {
            outcome: if failed {
                domain::Outcome::Failed
            } else {
                domain::Outcome::Succeeded
            },
            transition: if failed {
                Transition::Broken
            } else {
                Transition::Passing
            },
            previous_outcome: None,
            failure_streak: u32::from(failed),
            started_at: Some(at),
            completed_at: at + Duration::seconds(90),
            duration_secs: Some(90),
            failed_jobs: vec![],
        };
        let delivery = |n: u8| format!("bench-{run_id}-{n}");
        let lifecycle = [
            BuildRunEvent::BuildQueued {
                delivery_id: delivery(1),
                run: run.clone(),
                queued_at: at,
            },
            BuildRunEvent::BuildStarted {
                delivery_id: delivery(2),
                run: run.clone(),
                started_at: at,
            },
            if failed {
                BuildRunEvent::BuildFailed {
                    delivery_id: delivery(3),
                    run,
                    verdict,
                }
            } else {
                BuildRunEvent::BuildSucceeded {
                    delivery_id: delivery(3),
                    run,
                    verdict,
                }
            },
        ];
        for (sequence, event) in lifecycle.iter().enumerate() {
            batch.push(row("BuildRun", &id, sequence as i64 + 1, event, at)?);
        }
        written += 3;
        if batch.len() >= 6000 {
            insert(&mut conn, &batch).await?;
            batch.clear();
        }
    }
    insert(&mut conn, &batch).await?;
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_to_outbox")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_index_build_verdicts")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ANALYZE events").execute(&mut *conn).await?;
    Ok(written)
}

/// Run `work` against a scratch database `<name>_<pid>` on the server of `database_url`, created here and
/// dropped afterwards whatever `work` returned.
/// Settings for a Herald the benchmark starts in its own process: API on a free port, and no rate limits (the
/// load comes from one address, which the per-client limits would refuse as abusive).
/// A started Herald with one project to post webhooks for: how every benchmark that drives webhooks begins.
pub(crate) struct BenchHerald {
    pub running: crate::Running,
    pub pool: PgPool,
    pub commands: commands::Commands,
    pub project: Uuid,
    /// The project's webhook secret, to sign with.
    pub secret: String,
}

/// Start Herald with `roles` and create the project `bench`.
pub(crate) async fn start_with_project(
    settings: &crate::Settings,
    roles: &[crate::Role],
) -> anyhow::Result<BenchHerald> {
    let running = crate::start(settings, roles).await?;
    let pool = crate::connect(&settings.database_url).await?;
    let commands = commands::Commands::new(pool.clone());
    let (project, secret) = commands
        .create_project(ProjectName::parse("bench")?, &Default::default())
        .await?;
    Ok(BenchHerald {
        running,
        pool,
        commands,
        project,
        secret,
    })
}

pub(crate) fn unlimited_settings(options: &PgConnectOptions) -> anyhow::Result<crate::Settings> {
    use sqlx::ConnectOptions as _;
    let mut settings = crate::Settings::new(options.to_url_lossy().to_string());
    settings.listen = "127.0.0.1:0".parse()?;
    let unlimited = api::limits::Rate::new(1_000_000, 1_000_000).context("rate")?;
    settings.limits.api = unlimited;
    settings.limits.webhooks = unlimited;
    Ok(settings)
}

/// How long the benchmarks' clients keep an idle connection: less than Herald's request timeout (30 s by
/// default), after which Herald closes an idle keep-alive connection. A client that keeps it longer (reqwest's
/// default is 90 s) now and then sends a request on a connection the server is closing at that moment, and gets
/// a connection error instead of an answer: the usual HTTP/1.1 keep-alive race, seen as 4 failed requests in
/// 54,000 in `herald bench load` before this was set.
pub(crate) const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(20);

/// A new reader API key, and an HTTP client that sends it with every request: the dashboard's users.
pub(crate) async fn reader_client(
    pool: &PgPool,
    connections: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    let key = api::auth::keys::ApiKeys::new(pool.clone())
        .create(&api::auth::keys::KeySpec {
            name: "bench",
            role: api::auth::Role::Reader,
            projects: &[],
            subscriber_id: None,
            expires_at: None,
        })
        .await?
        .key;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(CLIENT_IDLE)
        .timeout(timeout)
        .build()?)
}

pub(crate) async fn in_scratch_database<T>(
    database_url: &str,
    name: &str,
    work: impl AsyncFnOnce(PgConnectOptions) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a postgres:// URL")?;
    let scratch = format!("{name}_{}", std::process::id());
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {scratch}"))
        .execute(&mut admin)
        .await?;
    let result = work(options.database(&scratch)).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

pub async fn rebuild(database_url: &str, events: u64) -> anyhow::Result<RebuildBench> {
    in_scratch_database(database_url, "herald_bench", async |options| {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        commands::migrate(&pool).await?;
        eprintln!("generating {events} events…");
        let events = generate(&pool, events).await?;

        eprintln!("baseline: COPY of the events table…");
        reset_peak_rss();
        let started = Instant::now();
        let mut conn = pool.acquire().await?;
        let mut bytes = 0_usize;
        let mut copy = conn
            .copy_out_raw("COPY (SELECT * FROM events ORDER BY global_seq) TO STDOUT")
            .await?;
        while let Some(chunk) = copy.next().await {
            bytes += chunk?.len();
        }
        drop(copy);
        drop(conn);
        let copy_seconds = started.elapsed().as_secs_f64();
        let peak_copy = peak_rss_mib();
        eprintln!("copied {bytes} bytes");

        eprintln!("rebuilding every read model…");
        reset_peak_rss();
        let started = Instant::now();
        let mut quiet = |_: u64, _: u64| {};
        projections::rebuild::run(
            &pool,
            projections::rebuild::Rebuild {
                target: projections::rebuild::Target::All,
                snapshot: None,
                progress: &mut quiet,
                stop_after: None,
                batch_size: None,
            },
        )
        .await?;
        let rebuild_seconds = started.elapsed().as_secs_f64();
        let peak_rebuild = peak_rss_mib();
        let finished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM build_runs WHERE status = 'completed'")
                .fetch_one(&pool)
                .await?;
        anyhow::ensure!(
            finished as u64 == (events - 20) / 3,
            "the rebuild missed runs: {finished}"
        );
        pool.close().await;
        Ok::<_, anyhow::Error>(RebuildBench {
            scenario: "rebuild",
            events,
            baseline_copy_seconds: copy_seconds,
            baseline_events_per_second: events as f64 / copy_seconds,
            rebuild_seconds,
            rebuild_events_per_second: events as f64 / rebuild_seconds,
            ratio_to_baseline: rebuild_seconds / copy_seconds,
            peak_rss_mib_copy: peak_copy,
            peak_rss_mib_rebuild: peak_rebuild,
        })
    })
    .await
}

pub fn print(bench: &RebuildBench) {
    println!("scenario  events     baseline COPY        rebuild              ratio   peak RSS (copy / rebuild)");
    println!(
        "{:<8}  {:<9}  {:>7.2}s {:>9.0}/s  {:>7.2}s {:>9.0}/s  {:>5.1}x  {:.0} MiB / {:.0} MiB",
        bench.scenario,
        bench.events,
        bench.baseline_copy_seconds,
        bench.baseline_events_per_second,
        bench.rebuild_seconds,
        bench.rebuild_events_per_second,
        bench.ratio_to_baseline,
        bench.peak_rss_mib_copy,
        bench.peak_rss_mib_rebuild
    );
}
