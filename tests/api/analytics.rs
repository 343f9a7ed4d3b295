//! Analytics: a generated history of builds goes in through the generic webhook; the figures the API answers
//! are compared with the same figures computed here, independently, from what was sent.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use herald::Role;
use serde_json::{json, Value};

use crate::helpers::*;

/// One generated run, as the test sent it.
#[derive(Debug, Clone)]
struct Run {
    workflow: &'static str,
    branch: &'static str,
    run_id: i64,
    attempt: i32,
    commit: String,
    author: &'static str,
    queued: DateTime<Utc>,
    started: DateTime<Utc>,
    completed: DateTime<Utc>,
    outcome: &'static str,
    /// (job id, name, status, failed steps)
    jobs: Vec<(i64, &'static str, &'static str, Vec<&'static str>)>,
}

impl Run {
    fn duration(&self) -> f64 {
        (self.completed - self.started).num_seconds() as f64
    }
    fn failed(&self) -> bool {
        matches!(self.outcome, "failed" | "timed_out")
    }
    fn judged(&self) -> bool {
        self.outcome == "succeeded" || self.failed()
    }
}

/// A small deterministic generator (the test must see the same history every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// About 90 runs from 2026-10-20 to 2026-11-07, across the US daylight-saving change on 2026-11-01, with
/// re-runs that pass on the same commit after a failure.
fn history() -> Vec<Run> {
    let mut rng = Lcg(7);
    let mut runs = Vec::new();
    let start = Utc.with_ymd_and_hms(2026, 10, 20, 3, 0, 0).unwrap();
    let mut at = start;
    let mut run_id = 1000;
    while at < Utc.with_ymd_and_hms(2026, 11, 7, 0, 0, 0).unwrap() {
        run_id += 1;
        let workflow = ["ci", "deploy"][rng.next(2) as usize];
        let branch = ["main", "dev"][rng.next(2) as usize];
        let outcome = match rng.next(10) {
            0..=5 => "succeeded",
            6..=7 => "failed",
            8 => "timed_out",
            _ => "cancelled",
        };
        let queued = at;
        let started = queued + Span::seconds(5 + rng.next(120) as i64);
        let completed = started + Span::seconds(60 + rng.next(900) as i64);
        let failing_step = ["compile", "test"][rng.next(2) as usize];
        let build_job = if outcome == "succeeded" {
            (1, "build", "succeeded", vec![])
        } else if outcome == "cancelled" {
            (1, "build", "cancelled", vec![])
        } else {
            (1, "build", "failed", vec![failing_step])
        };
        let run = Run {
            workflow,
            branch,
            run_id,
            attempt: 1,
            commit: format!("c{run_id:06x}"),
            author: ["ada", "brian", "chen"][rng.next(3) as usize],
            queued,
            started,
            completed,
            outcome,
            jobs: vec![build_job, (2, "lint", "succeeded", vec![])],
        };
        // After a failure, half the time the same run is re-run on the same commit and passes: flaky.
        let rerun = run.failed() && rng.next(2) == 0;
        runs.push(run.clone());
        if rerun {
            let queued = completed + Span::minutes(3);
            runs.push(Run {
                attempt: 2,
                queued,
                started: queued + Span::seconds(10),
                completed: queued + Span::seconds(10 + 300),
                outcome: "succeeded",
                jobs: vec![
                    (1, "build", "succeeded", vec![]),
                    (2, "lint", "succeeded", vec![]),
                ],
                ..run
            });
        }
        at += Span::minutes(277 + rng.next(60) as i64);
    }
    runs
}

async fn post_run(app: &TestApp, project: &CreatedProject, run: &Run) {
    let base = json!({
        "repository": "acme/shop", "workflow": run.workflow, "run_id": run.run_id, "attempt": run.attempt,
        "branch": run.branch, "commit_sha": run.commit, "author": run.author,
    });
    let mut reports = Vec::new();
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    reports.push(with(json!({"status": "queued", "occurred_at": run.queued})));
    reports.push(with(
        json!({"status": "started", "started_at": run.started, "occurred_at": run.started}),
    ));
    for (id, name, status, steps) in &run.jobs {
        reports.push(with(
            json!({"status": "started", "occurred_at": run.completed, "job": {
            "id": id, "name": name, "status": status, "failed_steps": steps,
            "started_at": run.started, "completed_at": run.completed}}),
        ));
    }
    reports.push(with(
        json!({"status": run.outcome, "started_at": run.started,
        "occurred_at": run.completed}),
    ));
    for report in reports {
        let response = app
            .post_webhook(
                "generic",
                project.id,
                "",
                &[("x-herald-token", project.secret.as_str())],
                report.to_string().as_bytes(),
            )
            .await;
        assert_eq!(response.status(), 202, "{report}");
    }
}

/// `percentile_cont`: linear interpolation between the closest ranks.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let position = p * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    Some(sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower as f64))
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn close(actual: &Value, expected: Option<f64>, what: &str) {
    match expected {
        None => assert!(actual.is_null(), "{what}: expected nothing, got {actual}"),
        Some(e) => {
            let a = actual
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected {e}, got {actual}"));
            assert!((a - e).abs() < 1e-6, "{what}: expected {e}, got {a}");
        }
    }
}

/// Streak figures of one series, walking its judged runs in completion order.
struct Streaks {
    longest: i64,
    current: i64,
    broken_since: Option<DateTime<Utc>>,
    repairs: Vec<f64>,
}

fn streaks(runs: &[&Run]) -> Streaks {
    let mut judged: Vec<&&Run> = runs.iter().filter(|r| r.judged()).collect();
    judged.sort_by_key(|r| r.completed);
    let (mut longest, mut current, mut since, mut repairs) = (0, 0, None, Vec::new());
    for run in judged {
        if run.failed() {
            if current == 0 {
                since = Some(run.completed);
            }
            current += 1;
            longest = longest.max(current);
        } else {
            if let Some(broken) = since.take() {
                repairs.push((run.completed - broken).num_seconds() as f64);
            }
            current = 0;
        }
    }
    Streaks {
        longest,
        current,
        broken_since: since,
        repairs,
    }
}

async fn seeded() -> (TestApp, CreatedProject, Vec<Run>) {
    // A long TTL: whatever the tests see change, the change notice made them see.
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.http.cache_ttl = Duration::from_secs(600);
    })
    .await;
    let project = app.create_project("shop").await;
    let runs = history();
    for run in &runs {
        post_run(&app, &project, run).await;
    }
    app.drain().await;
    (app, project, runs)
}

#[tokio::test]
async fn statistics_time_series_and_analytics_match_an_independent_count() {
    let (app, project, runs) = seeded().await;
    let (from, to) = ("2026-10-22T00:00:00Z", "2026-11-06T12:00:00Z");
    let range = |r: &&Run| {
        r.completed >= from.parse::<DateTime<Utc>>().unwrap()
            && r.completed < to.parse::<DateTime<Utc>>().unwrap()
    };
    let in_range: Vec<&Run> = runs.iter().filter(range).collect();

    // Statistics per workflow and branch.
    let response = app
        .get(&format!(
            "/api/v1/projects/{}/statistics?from={from}&to={to}",
            project.id
        ))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut series: BTreeMap<(&str, &str), Vec<&Run>> = BTreeMap::new();
    for run in &in_range {
        series
            .entry((run.workflow, run.branch))
            .or_default()
            .push(run);
    }
    let answered = body["series"].as_array().unwrap();
    assert_eq!(answered.len(), series.len(), "{body}");
    for ((workflow, branch), runs) in &series {
        let row = answered
            .iter()
            .find(|s| s["workflow"] == *workflow && s["branch"] == *branch)
            .unwrap_or_else(|| panic!("no series {workflow}@{branch} in {body}"));
        let what = format!("{workflow}@{branch}");
        let succeeded = runs.iter().filter(|r| r.outcome == "succeeded").count() as i64;
        let failed = runs.iter().filter(|r| r.failed()).count() as i64;
        assert_eq!(row["runs"], runs.len() as i64, "{what}");
        assert_eq!(row["succeeded"], succeeded, "{what}");
        assert_eq!(row["failed"], failed, "{what}");
        close(
            &row["success_rate"],
            Some(succeeded as f64 / (succeeded + failed) as f64),
            &what,
        );
        let durations: Vec<f64> = runs.iter().map(|r| r.duration()).collect();
        close(&row["duration_mean_secs"], mean(&durations), &what);
        close(
            &row["duration_p50_secs"],
            percentile(&durations, 0.5),
            &what,
        );
        close(
            &row["duration_p95_secs"],
            percentile(&durations, 0.95),
            &what,
        );
        let queues: Vec<f64> = runs
            .iter()
            .map(|r| (r.started - r.queued).num_seconds() as f64)
            .collect();
        close(&row["queue_mean_secs"], mean(&queues), &what);
        let streak = streaks(runs);
        assert_eq!(row["longest_failure_streak"], streak.longest, "{what}");
        assert_eq!(row["current_failure_streak"], streak.current, "{what}");
        assert_eq!(row["recoveries"], streak.repairs.len() as i64, "{what}");
        close(&row["mttr_secs"], mean(&streak.repairs), &what);
        let since = row["broken_since"]
            .as_str()
            .map(|s| s.parse::<DateTime<Utc>>().unwrap());
        assert_eq!(since, streak.broken_since, "{what}");
    }

    // Daily time series in New York, across the night the clocks go back (2026-11-01 has 25 hours).
    let tz: Tz = "America/New_York".parse().unwrap();
    let response = app
        .get(&format!(
            "/api/v1/projects/{}/timeseries?interval=day&from=2026-10-25&to=2026-11-05&tz=America/New_York",
            project.id
        ))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let buckets = body["buckets"].as_array().unwrap();
    let first = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
    assert_eq!(buckets.len(), 12, "{body}");
    let day_of = |r: &Run| r.completed.with_timezone(&tz).date_naive();
    let day_figures = |day: NaiveDate| {
        let runs: Vec<&Run> = runs.iter().filter(|r| day_of(r) == day).collect();
        let ok = runs.iter().filter(|r| r.outcome == "succeeded").count() as i64;
        let bad = runs.iter().filter(|r| r.failed()).count() as i64;
        let durations: Vec<f64> = runs.iter().map(|r| r.duration()).collect();
        let rate = (ok + bad > 0).then(|| ok as f64 / (ok + bad) as f64);
        (
            runs.len() as i64,
            ok,
            bad,
            rate,
            percentile(&durations, 0.5),
        )
    };
    for (i, bucket) in buckets.iter().enumerate() {
        let day = first + Span::days(i as i64);
        let what = format!("day {day}");
        assert_eq!(bucket["period"], day.to_string(), "{what}");
        let midnight = tz
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            bucket["from"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap(),
            midnight,
            "{what}"
        );
        let (n, ok, bad, rate, p50) = day_figures(day);
        assert_eq!(bucket["runs"], n, "{what}");
        assert_eq!(bucket["succeeded"], ok, "{what}");
        assert_eq!(bucket["failed"], bad, "{what}");
        close(&bucket["success_rate"], rate, &what);
        close(&bucket["duration_p50_secs"], p50, &what);
        let (before_n, _, _, before_rate, _) = day_figures(day - Span::days(1));
        assert_eq!(bucket["trend"]["runs"], n - before_n, "{what}");
        close(
            &bucket["trend"]["success_rate"],
            rate.zip(before_rate).map(|(a, b)| a - b),
            &what,
        );
    }

    // Weekly, Monday to Sunday in New York.
    let body: Value = app
        .get(&format!(
            "/api/v1/projects/{}/timeseries?interval=week&from=2026-10-19&to=2026-11-08&tz=America/New_York",
            project.id
        ))
        .await
        .json()
        .await
        .unwrap();
    let weeks = body["buckets"].as_array().unwrap();
    assert_eq!(
        weeks
            .iter()
            .map(|w| w["period"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["2026-10-19", "2026-10-26", "2026-11-02"]
    );
    for week in weeks {
        let monday: NaiveDate = week["period"].as_str().unwrap().parse().unwrap();
        let n = runs
            .iter()
            .filter(|r| day_of(r) >= monday && day_of(r) < monday + Span::days(7))
            .count() as i64;
        assert_eq!(week["runs"], n, "week of {monday}");
    }

    // The same series as CSV: a header and one line per bucket, with the same counts.
    let csv = app
        .get(&format!(
            "/api/v1/projects/{}/timeseries?interval=day&from=2026-10-25&to=2026-11-05&tz=America/New_York&format=csv",
            project.id
        ))
        .await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13);
    assert!(lines[0].starts_with("period,from,runs,succeeded,failed,"));
    let (n, ..) = day_figures(first);
    assert!(lines[1].starts_with("2026-10-25,"), "{}", lines[1]);
    assert_eq!(lines[1].split(',').nth(2), Some(n.to_string().as_str()));

    // Failure patterns and flaky jobs.
    let body: Value = app
        .get(&format!(
            "/api/v1/builds/analytics?project={}&from={from}&to={to}&tz=America/New_York",
            project.id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["runs"], in_range.len() as i64);
    let failed: Vec<&&Run> = in_range.iter().filter(|r| r.failed()).collect();
    assert_eq!(body["failed"], failed.len() as i64);
    let build_failures = in_range
        .iter()
        .filter(|r| r.jobs.iter().any(|j| j.1 == "build" && j.2 == "failed"))
        .count() as i64;
    let build_job_failures: i64 = body["failing_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["job"] == "build")
        .map(|j| j["failures"].as_i64().unwrap())
        .sum();
    assert_eq!(build_job_failures, build_failures, "{body}");
    assert!(
        body["failing_jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["job"] != "lint"),
        "lint never failed: {body}"
    );
    let steps: i64 = body["failing_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["failures"].as_i64().unwrap())
        .sum();
    assert_eq!(steps, build_failures);
    // Hours of day in New York: every failure is in exactly one.
    let hours = body["by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    for (hour, entry) in hours.iter().enumerate() {
        let expected = failed
            .iter()
            .filter(|r| chrono::Timelike::hour(&r.completed.with_timezone(&tz)) as usize == hour)
            .count() as i64;
        assert_eq!(entry["failures"], expected, "hour {hour}");
    }
    for author in body["by_author"].as_array().unwrap() {
        let name = author["key"].as_str().unwrap();
        let expected = failed.iter().filter(|r| r.author == name).count() as i64;
        assert_eq!(author["failures"], expected, "author {name}");
    }
    // Flaky: commits where a failed run (or its build job) was followed by a passing re-run.
    let flaky_commits: HashSet<(&str, &str)> = in_range
        .iter()
        .filter(|r| r.attempt == 2)
        .filter(|r| {
            in_range
                .iter()
                .any(|f| f.commit == r.commit && f.attempt == 1 && f.failed())
        })
        .map(|r| (r.workflow, r.commit.as_str()))
        .collect();
    assert!(!flaky_commits.is_empty(), "the history has re-runs");
    let flaky_runs: i64 = body["flaky_workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["commits"].as_i64().unwrap())
        .sum();
    assert_eq!(flaky_runs, flaky_commits.len() as i64, "{body}");
    let flaky_build = body["flaky_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["job"] == "build")
        .map(|j| j["commits"].as_i64().unwrap())
        .sum::<i64>();
    assert_eq!(flaky_build, flaky_commits.len() as i64, "{body}");
    app.finish().await;
}

#[tokio::test]
async fn the_build_listing_pages_with_cursors_and_exports_stream_everything() {
    let (app, project, runs) = seeded().await;
    let other = app.create_project("other").await;
    post_run(&app, &other, &runs[0]).await;
    app.drain().await;

    // Walking every page gives each build of the project once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/builds?project={}&limit=7", project.id);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|b| {
            (
                b["first_seen_at"]
                    .as_str()
                    .unwrap()
                    .parse::<DateTime<Utc>>()
                    .unwrap(),
                b["build_run_id"].as_str().unwrap().to_owned(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), runs.len());
    let unique: HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), runs.len(), "no build twice");
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first, "newest first, then by id");

    // Filters: failed builds of one branch.
    let failed_dev: Value = app
        .get(&format!(
            "/api/v1/builds?project={}&branch=dev&outcome=failed&limit=200",
            project.id
        ))
        .await
        .json()
        .await
        .unwrap();
    let expected = runs
        .iter()
        .filter(|r| r.branch == "dev" && r.outcome == "failed")
        .count();
    assert_eq!(failed_dev["items"].as_array().unwrap().len(), expected);

    // Bad input is named and changes nothing.
    for (query, word) in [
        ("status=done", "status"),
        ("outcome=meh", "outcome"),
        ("limit=0", "limit"),
        ("cursor=bm9wZQ", "cursor"),
        ("from=yesterday", "from"),
    ] {
        let response = app.get(&format!("/api/v1/builds?{query}")).await;
        assert_eq!(response.status(), 422, "{query}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(word),
            "{query}: {problem}"
        );
    }

    // The export streams every matching build, as CSV or as one JSON array.
    let csv = app
        .get(&format!(
            "/api/v1/builds/export?project={}&format=csv",
            project.id
        ))
        .await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers().get("content-length").is_none(), "streamed");
    let text = csv.text().await.unwrap();
    let mut reader = csv_reader(&text);
    assert_eq!(reader.len(), runs.len() + 1);
    assert_eq!(reader.remove(0)[0], "build_run_id");
    assert!(reader.iter().all(|row| row[1] == project.id.to_string()));
    let json: Value = app.get("/api/v1/builds/export").await.json().await.unwrap();
    assert_eq!(json.as_array().unwrap().len(), runs.len() + 1);
    app.finish().await;
}

/// CSV rows, with quoted fields read as CSV reads them (enough for the export's fields).
fn csv_reader(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            line.split(',')
                .map(|f| f.trim_matches('"').to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_overview_turns_red_at_once_and_answers_304_while_unchanged() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.http.cache_ttl = Duration::from_secs(600);
    })
    .await;
    let shop = app.create_project("shop").await;
    let blog = app.create_project("blog").await;
    // Whole microseconds: what Postgres keeps.
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let green = Run {
        workflow: "ci",
        branch: "main",
        run_id: 1,
        attempt: 1,
        commit: "a1".into(),
        author: "ada",
        queued: now - Span::minutes(30),
        started: now - Span::minutes(29),
        completed: now - Span::minutes(20),
        outcome: "succeeded",
        jobs: vec![],
    };
    post_run(&app, &shop, &green).await;
    post_run(
        &app,
        &blog,
        &Run {
            run_id: 7,
            ..green.clone()
        },
    )
    .await;
    app.drain().await;

    let overview = app.get("/api/v1/dashboard/overview").await;
    assert_eq!(overview.status(), 200);
    let etag = overview.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = overview.json().await.unwrap();
    assert_eq!(body["totals"]["broken"], 0);
    assert!(body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "green"));

    // Unchanged: 304 without a body.
    let again = app
        .http
        .get(app.url("/api/v1/dashboard/overview"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    // A failure on blog: the cached overview is dropped by the change notice, not by its 10-minute TTL.
    let broken = Run {
        run_id: 8,
        commit: "b2".into(),
        outcome: "failed",
        completed: now - Span::minutes(5),
        ..green.clone()
    };
    post_run(&app, &blog, &broken).await;
    let red = overview_when(&app, "blog turns red", |body| {
        body["projects"][0]["state"] == "red"
    })
    .await;
    let first = &red["projects"][0];
    assert_eq!(first["name"], "blog", "broken projects first: {red}");
    assert_eq!(first["broken_series"], json!(["ci@main"]));
    assert_eq!(
        first["broken_since"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        broken.completed
    );
    assert_eq!(red["totals"]["broken"], 1);
    let old = app
        .http
        .get(app.url("/api/v1/dashboard/overview"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 200, "a changed overview has a new tag");

    // A run in progress on shop shows as running.
    let response = app
        .post_webhook(
            "generic",
            shop.id,
            "",
            &[("x-herald-token", shop.secret.as_str())],
            json!({"repository": "acme/shop", "workflow": "ci", "run_id": 2, "branch": "main",
                   "status": "started"})
            .to_string()
            .as_bytes(),
        )
        .await;
    assert_eq!(response.status(), 202);
    overview_when(&app, "shop shows running", |body| {
        body["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "shop" && p["state"] == "running" && p["running"] == 1)
    })
    .await;

    let response = app.get("/api/v1/dashboard/overview?tz=Mars/Olympus").await;
    assert_eq!(response.status(), 422);
    app.finish().await;
}

/// Poll the overview until `done` holds for it; that answer.
async fn overview_when(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = app
            .get("/api/v1/dashboard/overview")
            .await
            .json()
            .await
            .unwrap();
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_analytics_requests_are_named() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("p").await;
    app.drain().await;
    let id = project.id;
    for (path, word) in [
        (
            format!("/api/v1/projects/{id}/timeseries?interval=hour"),
            "interval",
        ),
        (format!("/api/v1/projects/{id}/timeseries?tz=Nowhere"), "tz"),
        (
            format!("/api/v1/projects/{id}/timeseries?format=xml"),
            "format",
        ),
        (
            format!("/api/v1/projects/{id}/timeseries?from=2020-01-01&to=2026-01-01"),
            "buckets",
        ),
        (
            format!("/api/v1/projects/{id}/statistics?from=2026-02-01&to=2026-01-01"),
            "before",
        ),
        ("/api/v1/notifications/metrics?to=never".to_owned(), "to"),
        (
            "/api/v1/builds/export?limit=5".to_owned(),
            "cursor or limit",
        ),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 422, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(word),
            "{path}: {problem}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        app.get(&format!("/api/v1/projects/{unknown}/statistics"))
            .await
            .status(),
        404
    );
    app.finish().await;
}

#[tokio::test]
async fn notification_metrics_count_deliveries_per_channel() {
    // A long TTL: the second answer below is fresh only if the notifications' change notice dropped the first.
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.http.cache_ttl = Duration::from_secs(600);
    })
    .await;
    let project = app.create_project("metrics").await;
    app.subscribe(project.id, 501, None).await;
    app.subscribe(project.id, 502, None).await;
    app.fail_run(&project, 1).await;
    app.wait_for_notifications("delivered", 2).await;
    app.drain().await;
    let telegram = wait_for_metrics(&app, |telegram| telegram["delivered"] == 2).await;
    assert_eq!(telegram["planned"], 2);
    assert_eq!(telegram["sent"], 2);
    assert_eq!(telegram["delivered"], 2);
    assert_eq!(telegram["failed"], 0);
    assert_eq!(telegram["dead_lettered"], 0);
    let latencies: Vec<i64> = sqlx::query_scalar(
        "SELECT latency_ms FROM notifications WHERE status = 'delivered' ORDER BY latency_ms",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(latencies.len(), 2);
    let p50 = (latencies[0] + latencies[1]) as f64 / 2.0;
    close(&telegram["latency_p50_ms"], Some(p50), "latency");
    assert!(latencies[0] >= 0);

    app.fail_run(&project, 2).await;
    app.wait_for_notifications("delivered", 4).await;
    app.drain().await;
    let after = wait_for_metrics(&app, |telegram| telegram["delivered"] == 4).await;
    assert_eq!(after["planned"], 4, "{after}");
    app.finish().await;
}

/// The Telegram line of the notification metrics, once `ready` holds for it (the cache drops its answer when
/// the change notice arrives, a moment after the commit).
async fn wait_for_metrics(app: &TestApp, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = app
            .get("/api/v1/notifications/metrics")
            .await
            .json()
            .await
            .unwrap();
        let telegram = body["channels"]
            .as_array()
            .and_then(|channels| channels.iter().find(|c| c["channel"] == "telegram"))
            .cloned()
            .unwrap_or_else(|| panic!("{body}"));
        if ready(&telegram) {
            return telegram;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cached metrics never showed the new deliveries: {telegram}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
