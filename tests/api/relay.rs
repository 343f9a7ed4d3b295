//! The relay: stopped, webhooks are still accepted and nothing is lost; started again, every event reaches
//! Kafka exactly once and in per-aggregate order, also when the backlog takes many batches, each read while
//! the one before it is being published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald::Role;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use sqlx::Connection;

use crate::helpers::{fixture, fixture_with, spawn_app_with, wait_until, Bus, TestApp};

#[tokio::test]
async fn with_the_relay_stopped_nothing_is_lost_and_every_event_reaches_kafka_once_in_order() {
    let app = spawn_app_with(Bus::Kafka, &[Role::Api, Role::Projections]).await;
    let project = app.create_project("relay down").await;
    for run in 0..5_i64 {
        for (event, path, delivery) in [
            (
                "workflow_run",
                "workflow_run/requested.payload.json",
                "requested",
            ),
            (
                "workflow_job",
                "workflow_job/in_progress.payload.json",
                "job",
            ),
            (
                "workflow_run",
                "workflow_run/completed.payload.json",
                "completed",
            ),
        ] {
            let body = fixture_with(path, |v| {
                if let Some(r) = v.get_mut("workflow_run") {
                    r["id"] = (500 + run).into();
                }
                if let Some(j) = v.get_mut("workflow_job") {
                    j["run_id"] = (500 + run).into();
                    j["workflow_name"] = "test".into();
                }
                v["repository"]["full_name"] = "octo-org/octo-repo".into();
            });
            let response = app
                .post_github(&project, event, &body, &format!("{delivery}-{run}"))
                .await;
            assert_eq!(response.status(), 202, "accepted while the relay is down");
        }
    }
    let _ = fixture("ping/payload.json");
    let committed = app.event_count().await;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox").await,
        committed,
        "every event waits in the outbox"
    );

    // Batches of 4: the backlog takes several, and the next is read while one is in flight.
    let kafka = app.settings.kafka.clone().unwrap();
    let publisher = Arc::new(workers::KafkaPublisher::new(&kafka).unwrap());
    let relay = workers::Relay::new(app.pool.clone(), publisher).with_batch_size(4);
    let mut conn = app.pool.acquire().await.unwrap().detach();
    let moved = relay.drain(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(moved as i64, committed, "every event relayed once");
    assert!(committed > 3 * 4, "the backlog took several batches");
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);

    // The relay as it runs in Herald picks up what arrives later.
    let relay = herald::start(&app.settings, &[Role::Relay]).await.unwrap();
    let late = fixture_with("workflow_run/requested.payload.json", |v| {
        v["workflow_run"]["id"] = 600.into();
    });
    let response = app
        .post_github(&project, "workflow_run", &late, "late")
        .await;
    assert_eq!(response.status(), 202);
    let committed = app.event_count().await;
    let pool = app.pool.clone();
    wait_until("the outbox drains", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    relay.stop().await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}-audit", kafka.group_prefix))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&kafka.topic]).unwrap();
    let mut seen: Vec<(String, i64)> = Vec::new();
    while (seen.len() as i64) < committed {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("every committed event is on the topic")
            .unwrap();
        let event: domain::StoredEvent =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(
            message.key(),
            Some(event.aggregate_id.as_bytes()),
            "keyed by aggregate id"
        );
        seen.push((event.aggregate_id, event.sequence));
    }
    // Nothing more arrives: exactly once.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), consumer.recv())
            .await
            .is_err(),
        "no duplicates"
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    for (aggregate, sequence) in &seen {
        let previous = last.insert(aggregate.clone(), *sequence).unwrap_or(0);
        assert_eq!(*sequence, previous + 1, "{aggregate}: per-aggregate order");
    }
    app.drain().await;
    let finished: i64 = app
        .count("SELECT count(*) FROM build_runs WHERE status = 'completed'")
        .await;
    assert_eq!(finished, 5, "the projections consumed the same stream");
    app.finish().await;
}

/// A consumer group of the in-process bus that records what it handles, and can be made to stop at its first
/// batch until released.
struct Recording {
    group: &'static str,
    seen: std::sync::Mutex<Vec<Vec<(String, i64)>>>,
    gate: Option<tokio::sync::Semaphore>,
}

impl Recording {
    fn new(group: &'static str, gated: bool) -> Arc<Self> {
        Arc::new(Self {
            group,
            seen: std::sync::Mutex::new(Vec::new()),
            gate: gated.then(|| tokio::sync::Semaphore::new(0)),
        })
    }

    fn batches(&self) -> Vec<Vec<(String, i64)>> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<(String, i64)> {
        self.batches().concat()
    }
}

#[async_trait::async_trait]
impl workers::EventHandler for Recording {
    fn group(&self) -> &'static str {
        self.group
    }

    async fn handle(&self, event: &domain::StoredEvent) -> Result<(), workers::HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(vec![(event.aggregate_id.clone(), event.sequence)]);
        Ok(())
    }

    async fn handle_batch(
        &self,
        events: &[domain::StoredEvent],
    ) -> Option<Result<(), workers::HandlerError>> {
        let first = self.seen.lock().unwrap().is_empty();
        if let (true, Some(gate)) = (first, &self.gate) {
            let _ = gate.acquire().await;
        }
        let batch = events
            .iter()
            .map(|e| (e.aggregate_id.clone(), e.sequence))
            .collect();
        self.seen.lock().unwrap().push(batch);
        Some(Ok(()))
    }
}

/// An in-process Herald with its API only, and a backlog of six runs, requested and completed, in its outbox;
/// returns the app and how many events wait there.
async fn backlog() -> (TestApp, i64) {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let project = app.create_project("backlog").await;
    for run in 0..6_i64 {
        for (event, path) in [
            ("workflow_run", "workflow_run/requested.payload.json"),
            ("workflow_run", "workflow_run/completed.payload.json"),
        ] {
            let body = fixture_with(path, |v| v["workflow_run"]["id"] = (700 + run).into());
            let response = app
                .post_github(&project, event, &body, &format!("{path}-{run}"))
                .await;
            assert_eq!(response.status(), 202);
        }
    }
    let committed = app.event_count().await;
    (app, committed)
}

/// Every event of the log as (aggregate, sequence), in log order.
async fn log_order(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY global_seq")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// On the in-process bus the relay keeps several batches in flight: a consumer group still busy with the first
/// batch holds back neither the other groups nor its own later batches, which it then handles in order; each
/// batch leaves the outbox once every group has handled it.
#[tokio::test]
async fn on_the_in_process_bus_a_slow_consumer_group_holds_back_no_other() {
    let (app, committed) = backlog().await;
    assert!(committed >= 12, "a backlog of several batches of 4");

    let bus = workers::InProcessBus::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let slow = Recording::new("slow", true);
    let fast = Recording::new("fast", false);
    for group in [slow.clone(), fast.clone()] {
        bus.register(group.group).await;
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        tokio::spawn(async move {
            workers::run_consumer(workers::Stream::InProcess(bus), group, shutdown).await
        });
    }
    let relay = workers::Relay::new(app.pool.clone(), Arc::new(bus)).with_batch_size(4);
    let mut conn = app.pool.acquire().await.unwrap().detach();
    let relaying = tokio::spawn(async move {
        let moved = relay.drain(&mut conn).await;
        conn.close().await.unwrap();
        moved
    });

    let watched = fast.clone();
    wait_until(
        "the fast group gets past the first batch",
        Duration::from_secs(10),
        || {
            let watched = watched.clone();
            async move { watched.batches().len() >= 2 }
        },
    )
    .await;
    assert!(
        slow.batches().is_empty(),
        "the slow group is still at its first batch"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox").await,
        committed,
        "no batch leaves the outbox before every group has handled it"
    );

    slow.gate.as_ref().unwrap().add_permits(1);
    let moved = tokio::time::timeout(Duration::from_secs(20), relaying)
        .await
        .expect("the relay drains the outbox")
        .unwrap()
        .unwrap();
    assert_eq!(moved as i64, committed, "every event relayed once");
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    let in_log_order = log_order(&app).await;
    assert_eq!(
        fast.events(),
        in_log_order,
        "every event once, in log order"
    );
    assert_eq!(
        slow.events(),
        in_log_order,
        "the same, for the group that was held up"
    );
    shutdown.cancel();
    app.finish().await;
}

/// A consumer group member that cannot handle anything (its database is down, say).
struct Failing;

#[async_trait::async_trait]
impl workers::EventHandler for Failing {
    fn group(&self) -> &'static str {
        "flaky"
    }

    async fn handle(&self, _event: &domain::StoredEvent) -> Result<(), workers::HandlerError> {
        Err(workers::HandlerError {
            transient: true,
            message: "down".to_owned(),
        })
    }
}

/// A consumer stopped in the middle of a batch, with later batches queued behind it: the consumer that takes
/// over the group must not handle those before the stopped batch, which the relay publishes again from the
/// outbox. It sees every event once, in log order.
#[tokio::test]
async fn a_consumer_that_takes_over_a_group_sees_the_batches_in_order() {
    let (app, committed) = backlog().await;

    let bus = workers::InProcessBus::new();
    let stopping = tokio_util::sync::CancellationToken::new();
    let failing = tokio::spawn(workers::run_consumer(
        workers::Stream::InProcess(bus.clone()),
        Arc::new(Failing),
        stopping.clone(),
    ));
    let relay = workers::Relay::new(app.pool.clone(), Arc::new(bus.clone())).with_batch_size(4);
    let mut conn = app.pool.acquire().await.unwrap().detach();
    let first = tokio::spawn(async move {
        let moved = relay.drain(&mut conn).await;
        (relay, conn, moved)
    });
    // Let the relay hand the next batches over behind the one that fails.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopping.cancel();
    failing.await.unwrap().unwrap();
    let (relay, mut conn, moved) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the relay notices the group stopped")
        .unwrap();
    assert!(moved.is_err(), "nothing was handled: {moved:?}");
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, committed);

    let taking_over = Recording::new("flaky", false);
    let running = tokio_util::sync::CancellationToken::new();
    tokio::spawn(workers::run_consumer(
        workers::Stream::InProcess(bus),
        taking_over.clone(),
        running.clone(),
    ));
    let moved = tokio::time::timeout(Duration::from_secs(20), relay.drain(&mut conn))
        .await
        .expect("the relay drains the outbox")
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(moved as i64, committed);
    let in_log_order = log_order(&app).await;
    assert_eq!(
        taking_over.events(),
        in_log_order,
        "every event once, in log order"
    );
    running.cancel();
    app.finish().await;
}

/// The outbox is a queue in a table: the relay has what it deleted vacuumed, rather than leaving the dead rows to
/// autovacuum's visit once a minute (the reads that pass over them slow down meanwhile).
#[tokio::test]
async fn the_relay_has_the_outbox_vacuumed_after_deleting_rows() {
    let (app, committed) = backlog().await;
    let vacuums = async || -> i64 {
        sqlx::query_scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let before = vacuums().await;

    let bus = workers::InProcessBus::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let consumer = Recording::new("consumer", false);
    bus.register(consumer.group).await;
    tokio::spawn({
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        async move { workers::run_consumer(workers::Stream::InProcess(bus), consumer, shutdown).await }
    });
    let relay = workers::Relay::new(app.pool.clone(), Arc::new(bus))
        .with_batch_size(4)
        .with_vacuum_every(8, Duration::ZERO);
    let mut conn = app.pool.acquire().await.unwrap().detach();
    let moved = relay.drain(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(moved as i64, committed);

    wait_until(
        "the outbox is vacuumed",
        Duration::from_secs(10),
        || async { vacuums().await > before },
    )
    .await;
    app.finish().await;
}

/// Where the leading relay runs in the committing process, a commit wakes it directly and sends no notice
/// through Postgres; where it does not lead (another process's relay does), every commit still sends one.
#[tokio::test]
async fn commits_wake_a_relay_leading_in_their_process_and_notify_any_other() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener
        .listen(commands::outbox_signal::CHANNEL)
        .await
        .unwrap();
    let commands = commands::Commands::new(app.pool.clone());
    let local = commands.local_relay();
    let create = |name: &'static str| {
        let commands = &commands;
        async move {
            commands
                .create_project(
                    domain::ProjectName::parse(name).unwrap(),
                    &Default::default(),
                )
                .await
                .unwrap()
        }
    };

    // Whether each arrives within `wait`: a notice through Postgres, a direct wake-up.
    let notice = async |listener: &mut sqlx::postgres::PgListener, wait: u64| {
        tokio::time::timeout(Duration::from_millis(wait), listener.recv())
            .await
            .is_ok_and(|n| n.is_ok())
    };
    let woken = async |wait: u64| {
        tokio::time::timeout(Duration::from_millis(wait), local.woken())
            .await
            .is_ok()
    };

    create("elsewhere").await;
    assert!(
        notice(&mut listener, 5_000).await,
        "with no relay leading here, the commit sends a notice"
    );
    assert!(
        !woken(200).await,
        "nor does it wake a relay here that does not lead"
    );

    local.set_leading(true);
    create("here").await;
    assert!(
        woken(5_000).await,
        "the commit wakes the relay leading in its process"
    );
    assert!(
        !notice(&mut listener, 500).await,
        "and sends no notice through Postgres"
    );

    local.set_leading(false);
    create("elsewhere-again").await;
    assert!(
        notice(&mut listener, 5_000).await,
        "once it stops leading, commits send notices again"
    );
    app.finish().await;
}
