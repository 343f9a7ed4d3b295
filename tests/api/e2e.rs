//! The dashboard in a real browser: this test starts Herald (fresh database, fake Telegram), prepares a green
//! project, a dead letter and the keys of four roles, then runs `tests/e2e/dashboard.mjs`, which drives headless
//! Chromium through Playwright: log in, watch the project turn red when a failing webhook arrives, open its
//! page and chart, redrive the dead letter as operator, be refused as reader, read the trail as auditor, manage
//! a subscriber's own subscriptions, and take screenshots of every page at desktop and phone width.
//!
//! `scripts/test.sh` installs Chromium (Debian's package) and Playwright's `playwright-core` and sets
//! `HERALD_TEST_CHROMIUM`; the screenshots land in `target/e2e-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use api::auth::Role;
use serde_json::Value;

use crate::dashboard::{subscriber_key, subscriber_with_chat};
use crate::helpers::{fixture_with, spawn_app, wait_until, Bus, Reply};

/// The whole browser run may take this long (it bounds its own steps well below).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let chromium = std::env::var("HERALD_TEST_CHROMIUM").expect(
        "HERALD_TEST_CHROMIUM names the Chromium to drive; scripts/test.sh installs Debian's and sets it",
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in tests/e2e: scripts/test.sh runs `npm ci` there"
    );

    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("web-shop").await;
    // Two weeks of history, every fourth day red, so the charts and sparklines have something to draw.
    for day in 1..=14 {
        let conclusion = if day % 4 == 0 { "failure" } else { "success" };
        let run = recent_run(100 + day, day * 24 * 60, conclusion);
        let posted = app
            .post_github(
                &project,
                "workflow_run",
                &run,
                &format!("e2e-history-{day}"),
            )
            .await;
        assert_eq!(posted.status(), 202);
    }
    let pool = app.pool.clone();
    wait_until("the history is projected", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM build_runs")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 14
        }
    })
    .await;
    // A green project whose one notification Telegram refused for good: a dead letter to redrive.
    app.telegram.script([Reply::Blocked]);
    app.subscribe(project.id, 41, None).await;
    // The fixtures are from 2020; the overview judges only series active in the last 30 days.
    let green = recent_run(1, 2, "success");
    let passed = app
        .post_github(&project, "workflow_run", &green, "e2e-green")
        .await;
    assert_eq!(passed.status(), 202);
    app.wait_for_notifications("dead_lettered", 1).await;
    let dead: Value = app.get("/api/v1/dlq").await.json().await.unwrap();
    let dead_build = dead["items"][0]["build_run_id"]
        .as_str()
        .expect("the dead letter names its build")
        .to_owned();

    let (subscriber, _) = subscriber_with_chat(&app, 7100).await;
    let keys = [
        (
            "HERALD_OPERATOR_KEY",
            subscriber_key(&app, Role::Operator, None).await,
        ),
        (
            "HERALD_READER_KEY",
            subscriber_key(&app, Role::Reader, None).await,
        ),
        (
            "HERALD_AUDITOR_KEY",
            subscriber_key(&app, Role::Auditor, None).await,
        ),
        (
            "HERALD_SUBSCRIBER_KEY",
            subscriber_key(&app, Role::Reader, Some(subscriber)).await,
        ),
    ];

    let failing = recent_run(2, 1, "failure");
    let scratch = std::env::temp_dir().join(format!("herald-e2e-{}", app.database));
    std::fs::create_dir_all(&scratch).unwrap();
    let failing_path = scratch.join("failing.json");
    std::fs::write(&failing_path, &failing).unwrap();
    let screenshots = root.join("target/e2e-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();

    let log = |name: &str| std::fs::File::create(scratch.join(name)).unwrap();
    let mut command = std::process::Command::new("node");
    command
        .arg(e2e.join("dashboard.mjs"))
        .env("HERALD_URL", app.url(""))
        .env("HERALD_PROJECT_ID", project.id.to_string())
        .env("HERALD_PROJECT_NAME", "web-shop")
        .env("HERALD_PROJECT_SECRET", &project.secret)
        .env("HERALD_FAILING_PAYLOAD", &failing_path)
        .env("HERALD_DEAD_LETTER_BUILD", &dead_build)
        .env("HERALD_CHROMIUM", &chromium)
        .env("HERALD_E2E_SCREENSHOTS", &screenshots)
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"));
    for (name, key) in &keys {
        command.env(name, key);
    }
    let mut browser = command
        .spawn()
        .expect("node runs (Node.js 18 or newer is needed)");
    // Herald runs on this test's runtime, so wait without blocking it.
    let deadline = tokio::time::Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = browser.try_wait().unwrap() {
            break Some(status);
        }
        if tokio::time::Instant::now() > deadline {
            browser.kill().ok();
            browser.wait().ok();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(scratch.join("stdout.log")).unwrap_or_default();
    let stderr = std::fs::read_to_string(scratch.join("stderr.log")).unwrap_or_default();
    println!("{stdout}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser run failed ({status:?}; None: it took longer than {BROWSER_TIMEOUT:?}):\n{stdout}\n{stderr}"
    );

    // What the browser did is in the log: the redrive and the failing run it posted.
    let redriven = app
        .count("SELECT count(*) FROM events WHERE event_type = 'NotificationRedriven'")
        .await;
    assert_eq!(
        redriven, 1,
        "the operator's click redrove the dead letter once"
    );
    let failed = app
        .count("SELECT count(*) FROM build_runs WHERE outcome = 'failed' AND run_id = 990002")
        .await;
    assert_eq!(
        failed, 1,
        "the failing webhook the page watched is recorded"
    );
    for page in [
        "login",
        "overview",
        "project",
        "notifications",
        "subscriptions",
    ] {
        for width in ["desktop", "phone"] {
            let shot = screenshots.join(format!("{page}-{width}.png"));
            let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1_000, "{} was saved", shot.display());
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    app.finish().await;
}

/// GitHub's "workflow run completed" for run `number`, which started `minutes_ago` minutes ago and took a minute.
fn recent_run(number: i64, minutes_ago: i64, conclusion: &str) -> Vec<u8> {
    let started = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    let finished = started + chrono::Duration::minutes(1);
    fixture_with("workflow_run/completed.payload.json", |v| {
        let run = &mut v["workflow_run"];
        run["id"] = (990_000 + number).into();
        run["run_number"] = number.into();
        run["conclusion"] = conclusion.into();
        run["created_at"] = started.to_rfc3339().into();
        run["run_started_at"] = started.to_rfc3339().into();
        run["updated_at"] = finished.to_rfc3339().into();
    })
}
