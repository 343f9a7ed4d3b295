//! Fault injection: Herald as separate processes (API, relay, projections, planner, delivery) on a real Postgres
//! and a real tansu broker of the test's own, driven by a stream of signed webhooks for several projects
//! and chats, while a seeded schedule kills processes with SIGKILL (a delivery worker also in the moment after
//! Telegram took a message and before its answer was recorded), cuts the broker off (every connection dropped, none
//! accepted for a while), terminates every Postgres connection, and the fake Telegram answers 429, 502, slowly or not at all. Then the promises are checked:
//!
//! - every accepted webhook is in the log, once;
//! - every event reached Kafka, in per-aggregate order;
//! - every read model equals a fresh rebuild from the log;
//! - every planned notification ended delivered, suppressed or dead-lettered, and every one was planned;
//! - no chat got the same message twice, and every delivered notification is in its chat;
//! - the outbox and the delivery queue drained.
//!
//! The seed (`HERALD_FAULT_SEED`, random by default) fixes the webhooks, the fault schedule and the fake's fates,
//! and is printed first and in every failure. What it cannot fix is the processes' own timing, which is the
//! point. The suite runs in a short form (80 webhooks, every fault at least once); `HERALD_FAULT_WEBHOOKS`
//! makes a long one (docs/reliability.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};
use sqlx::{Connection, PgPool};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{
    admin_url, client_with, create_key, drop_database, fixture_with, fresh_database, url_of,
    ChaosRates, FakeTelegram, BOT_TOKEN,
};

/// The parts of Herald that run as their own processes here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Api,
    Relay,
    Projections,
    Planner,
    Delivery,
}

impl Part {
    const ALL: [Part; 5] = [
        Part::Api,
        Part::Relay,
        Part::Projections,
        Part::Planner,
        Part::Delivery,
    ];

    fn args(self) -> &'static [&'static str] {
        match self {
            Part::Api => &["serve"],
            Part::Relay => &["relay"],
            Part::Projections => &["worker", "projections"],
            Part::Planner => &["worker", "planner"],
            Part::Delivery => &["worker", "delivery"],
        }
    }
}

/// One fault the schedule can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    Kill(Part),
    /// Kill the delivery worker after Telegram took a message and before its answer was recorded.
    KillDeliveryMidSend,
    /// Every broker connection cut, none accepted for a while (see [`Broker`]).
    BrokerOutage,
    TerminateDatabaseConnections,
}

impl Fault {
    fn all() -> Vec<Fault> {
        let mut all: Vec<Fault> = Part::ALL.into_iter().map(Fault::Kill).collect();
        all.extend([
            Fault::KillDeliveryMidSend,
            Fault::BrokerOutage,
            Fault::TerminateDatabaseConnections,
        ]);
        all
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The tansu binary: `HERALD_TEST_TANSU` (the test script sets it), else the one cargo installed.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("HERALD_TEST_TANSU") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    cargo_home.join("bin/tansu")
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .expect("open a log file")
}

/// A tansu broker of this test's own, reached only through a TCP proxy the test controls (tansu advertises the
/// proxy's address, so every client connection goes through it). An outage cuts every open connection and
/// refuses new ones for a while: what Herald sees of a broker restart. A real restart of tansu is not used:
/// its in-memory engine forgets the log by design, and its SQLite engine (libsql) panicked under this load in
/// tansu 0.6 ("internal error: entered unreachable code" in a consumer group update, "more or less than one
/// row" in an idempotent produce), which would test tansu, not Herald.
struct Broker {
    _tansu: Child,
    proxy: u16,
    down: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Broker {
    async fn start(dir: &Path) -> Broker {
        let (port, proxy) = (free_port(), free_port());
        let binary = tansu_binary();
        let listen = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{proxy}");
        let tansu = Command::new(&binary)
            .current_dir(dir)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &listen, "--advertised-listener-url", &advertised])
            .stdout(log_file(dir, "tansu"))
            .stderr(log_file(dir, "tansu"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({}): {e}; run the suite with the README's test command, which installs it",
                    binary.display()
                )
            });
        let upstream = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&upstream).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start; see {}/tansu.log",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let broker = Broker {
            _tansu: tansu,
            proxy,
            down: Arc::default(),
            connections: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", proxy))
            .await
            .unwrap();
        let (down, connections) = (broker.down.clone(), broker.connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy)
    }

    /// Cut every connection to the broker and refuse new ones for `down_for`.
    async fn outage(&self, down_for: Duration) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        tokio::time::sleep(down_for).await;
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Herald's processes, their shared settings and the broker.
struct Cluster {
    dir: PathBuf,
    env: Vec<(String, String)>,
    parts: BTreeMap<Part, Child>,
    api_port: u16,
    broker: Broker,
    database: String,
    /// Names each start's consumer groups (see [`Cluster::spawn`]).
    starts: usize,
    unique: String,
}

impl Cluster {
    async fn start(dir: PathBuf, database: String, telegram: &FakeTelegram) -> Cluster {
        let broker = Broker::start(&dir).await;
        let unique = Uuid::new_v4().simple().to_string();
        let api_port = free_port();
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", url_of(&database)),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "6".into()),
            ("HERALD_DELIVERY_CONCURRENCY", "3".into()),
            ("HERALD_PUBLIC_URL", format!("http://127.0.0.1:{api_port}")),
            ("HERALD_KAFKA_BROKERS", broker.address()),
            ("HERALD_KAFKA_TOPIC", format!("herald-faults-{unique}")),
            ("HERALD_KAFKA_PARTITIONS", "3".into()),
            ("HERALD_TELEGRAM_API_URL", telegram.url.clone()),
            ("HERALD_TELEGRAM_BOT_TOKEN", BOT_TOKEN.into()),
            ("HERALD_TELEGRAM_TIMEOUT_SECS", "3".into()),
            ("HERALD_TELEGRAM_BOT_MODE", "off".into()),
            ("HERALD_DELIVERY_MAX_ATTEMPTS", "6".into()),
            ("HERALD_DELIVERY_BREAKER_COOLDOWN_SECS", "1".into()),
            ("HERALD_RATE_LIMIT_PER_SECOND", "100000".into()),
            ("HERALD_RATE_LIMIT_BURST", "100000".into()),
            ("HERALD_WEBHOOK_RATE_LIMIT_PER_SECOND", "100000".into()),
            ("HERALD_WEBHOOK_RATE_LIMIT_BURST", "100000".into()),
            ("HERALD_LOG", "info,sqlx=warn".into()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // `HERALD_KAFKA_DEBUG=cgrp` on the test's command line shows what the consumer groups do.
        if let Ok(debug) = std::env::var("HERALD_KAFKA_DEBUG") {
            env.push(("HERALD_KAFKA_DEBUG".into(), debug));
            env.push((
                "HERALD_LOG".into(),
                "info,sqlx=warn,librdkafka=debug".into(),
            ));
        }
        let mut cluster = Cluster {
            dir,
            env,
            parts: BTreeMap::new(),
            api_port,
            broker,
            database,
            starts: 0,
            unique,
        };
        let migrated = cluster.herald(&["migrate"]).await;
        assert!(
            migrated.success(),
            "herald migrate failed; see {}",
            cluster.dir.display()
        );
        for part in Part::ALL {
            cluster.spawn(part).await;
        }
        cluster
    }

    fn command(&self, args: &[&str], log: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdout(log_file(&self.dir, log))
            .stderr(log_file(&self.dir, log))
            .kill_on_drop(true);
        command
    }

    /// Run a one-off `herald` command to its end.
    async fn herald(&self, args: &[&str]) -> std::process::ExitStatus {
        self.command(args, args[0])
            .status()
            .await
            .expect("run herald")
    }

    async fn spawn(&mut self, part: Part) {
        let listen = if part == Part::Api {
            format!("127.0.0.1:{}", self.api_port)
        } else {
            "127.0.0.1:0".to_owned()
        };
        let name = format!("{part:?}").to_lowercase();
        // Each start joins consumer groups of its own, so a restarted worker reads the stream from its start
        // (every consumer must shrug off what it has seen). With one group per role, tansu 0.6 sometimes kept a
        // SIGKILLed member as the group's leader for good: the restarted member was answered generation 1,
        // leader the dead one, and no partitions, and heartbeats kept succeeding. Kafka evicts such a member
        // after `session.timeout.ms`. So this suite does not check that a restart resumes at the committed
        // offset (it checks the stronger property that re-reading everything changes nothing).
        self.starts += 1;
        let groups = format!("herald-faults-{}-{name}-{}", self.unique, self.starts);
        let child = self
            .command(part.args(), &name)
            .env("HERALD_LISTEN", listen)
            .env("HERALD_KAFKA_GROUP_PREFIX", groups)
            .spawn()
            .expect("start herald");
        self.parts.insert(part, child);
        if part == Part::Api {
            self.wait_for_api().await;
        }
    }

    async fn wait_for_api(&self) {
        let health = format!("http://127.0.0.1:{}/health", self.api_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&health).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the API did not come up; see {}/api.log",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    async fn kill(&mut self, part: Part) {
        if let Some(mut child) = self.parts.remove(&part) {
            let _ = child.kill().await;
        }
    }

    async fn stop_all(&mut self) {
        for part in Part::ALL {
            self.kill(part).await;
        }
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }
}

/// One webhook of the workload.
struct Webhook {
    project: usize,
    delivery: String,
    body: Vec<u8>,
}

/// What the API said about a webhook, in the end.
struct Accepted {
    project: usize,
    delivery: String,
    build_run_id: String,
}

struct Project {
    id: Uuid,
    secret: String,
    subscriptions: Vec<(Uuid, i64)>,
}

/// The sizes of a run: the short form by default, a longer one from `HERALD_FAULT_WEBHOOKS`.
struct Shape {
    webhooks: usize,
    projects: usize,
    chats: i64,
    subscriptions_per_project: usize,
}

impl Shape {
    fn from_env() -> Shape {
        let webhooks = std::env::var("HERALD_FAULT_WEBHOOKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(80);
        Shape {
            webhooks,
            projects: 4,
            chats: 24,
            subscriptions_per_project: 5,
        }
    }
}

fn workload(rng: &mut StdRng, shape: &Shape) -> Vec<Webhook> {
    (0..shape.webhooks)
        .map(|n| {
            let run = 10_000 + n as i64;
            let conclusion = ["success", "failure", "cancelled"][rng.gen_range(0..3)];
            let body = fixture_with("workflow_run/completed.payload.json", |v| {
                v["workflow_run"]["id"] = run.into();
                v["workflow_run"]["run_number"] = run.into();
                v["workflow_run"]["conclusion"] = conclusion.into();
                v["workflow_run"]["html_url"] =
                    format!("https://github.com/octo-org/octo-repo/actions/runs/{run}").into();
            });
            Webhook {
                project: rng.gen_range(0..shape.projects),
                delivery: format!("fault-{run}"),
                body,
            }
        })
        .collect()
}

/// Post one webhook until Herald answers 2xx, as GitHub redelivers: the same delivery id, again and again.
async fn deliver(
    http: &reqwest::Client,
    api: &str,
    project: &Project,
    webhook: &Webhook,
) -> Option<String> {
    let signature = commands::providers::sign(&project.secret, &webhook.body);
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let sent = http
            .post(format!("{api}/api/v1/webhooks/github/{}", project.id))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", &webhook.delivery)
            .header("x-hub-signature-256", &signature)
            .body(webhook.body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let answer: Value = r.json().await.ok()?;
                return answer["build_run_id"].as_str().map(str::to_owned);
            }
            Ok(r) if r.status().is_client_error() && r.status() != 429 && r.status() != 408 => {
                panic!("webhook {} refused: {}", webhook.delivery, r.status())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}

async fn set_up_projects(
    cluster: &Cluster,
    pool: &PgPool,
    shape: &Shape,
    rng: &mut StdRng,
) -> Vec<Project> {
    let admin = client_with(&create_key(pool, api::auth::Role::Admin, &[]).await);
    let mut projects = Vec::new();
    for n in 0..shape.projects {
        let created: Value = admin
            .post(cluster.api("/api/v1/projects"))
            .json(&json!({ "name": format!("faulty-{n}") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut chats: Vec<i64> = (1..=shape.chats).map(|c| 700_000 + c).collect();
        chats.shuffle(rng);
        let mut subscriptions = Vec::new();
        for chat in chats.into_iter().take(shape.subscriptions_per_project) {
            let answer = admin
                .post(cluster.api("/api/v1/subscriptions"))
                .json(&json!({ "project_id": created["project_id"], "chat_id": chat, "outcomes": ["all"] }))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201);
            let body: Value = answer.json().await.unwrap();
            subscriptions.push((
                body["subscription_id"].as_str().unwrap().parse().unwrap(),
                chat,
            ));
        }
        projects.push(Project {
            id: created["project_id"].as_str().unwrap().parse().unwrap(),
            secret: created["webhook_secret"].as_str().unwrap().to_owned(),
            subscriptions,
        });
    }
    // The planner reads subscriptions from their read model: start the stream once they are all in it.
    let expected = (shape.projects * shape.subscriptions_per_project) as i64;
    wait_for(
        "the subscriptions are projected",
        Duration::from_secs(30),
        || async { count(pool, "SELECT count(*) FROM subscriptions").await == expected },
    )
    .await;
    projects
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1)
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("faults: timed out waiting until {what}");
    false
}

/// Inject one fault; returns what happened, for the report.
async fn inject(
    fault: Fault,
    cluster: &mut Cluster,
    telegram: &FakeTelegram,
    rng: &mut StdRng,
) -> String {
    let down_for = Duration::from_millis(rng.gen_range(100..1000));
    match fault {
        Fault::Kill(part) => {
            cluster.kill(part).await;
            tokio::time::sleep(down_for).await;
            cluster.spawn(part).await;
            format!("killed {part:?}, down {down_for:?}")
        }
        Fault::KillDeliveryMidSend => {
            let before = telegram.hung();
            telegram.script([crate::helpers::Reply::AcceptThenHang]);
            let caught = wait_for(
                "a message is taken mid-send",
                Duration::from_secs(20),
                || async { telegram.hung() > before },
            )
            .await;
            if !caught {
                telegram.unscript();
                return "no message was in flight to kill the delivery worker under".into();
            }
            cluster.kill(Part::Delivery).await;
            tokio::time::sleep(down_for).await;
            cluster.spawn(Part::Delivery).await;
            "killed Delivery between Telegram taking a message and its answer".into()
        }
        Fault::BrokerOutage => {
            let down_for = down_for * 3;
            cluster.broker.outage(down_for).await;
            format!("cut the broker off, down {down_for:?}")
        }
        Fault::TerminateDatabaseConnections => {
            let mut admin = sqlx::PgConnection::connect(&admin_url())
                .await
                .expect("the test Postgres is reachable");
            let killed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> pg_backend_pid()) t",
            )
            .bind(&cluster.database)
            .fetch_one(&mut admin)
            .await
            .unwrap_or(0);
            format!("terminated {killed} Postgres connections")
        }
    }
}

/// Webhooks for `projects`, posted open-loop (each at its own time, in its own task, so a dead API does not hold
/// the schedule back), each retried until Herald accepts it.
fn drive(
    cluster: &Cluster,
    projects: Arc<Vec<Project>>,
    webhooks: Vec<Webhook>,
    gaps: Vec<Duration>,
) -> tokio::task::JoinHandle<(Vec<Accepted>, Vec<String>)> {
    let api = cluster.api("");
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut posts = tokio::task::JoinSet::new();
        for (webhook, gap) in webhooks.into_iter().zip(gaps) {
            tokio::time::sleep(gap).await;
            let (http, api, projects) = (http.clone(), api.clone(), projects.clone());
            posts.spawn(async move {
                let build = deliver(&http, &api, &projects[webhook.project], &webhook).await;
                (webhook, build)
            });
        }
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        while let Some(done) = posts.join_next().await {
            match done.expect("a post task") {
                (webhook, Some(build_run_id)) => accepted.push(Accepted {
                    project: webhook.project,
                    delivery: webhook.delivery,
                    build_run_id,
                }),
                (webhook, None) => refused.push(webhook.delivery),
            }
        }
        (accepted, refused)
    })
}

/// Every read-model row as sorted JSON text, but for `live_feed.feed_seq`: the live feed numbers its rows in the
/// order they arrived (what a reconnecting client resumes from), which across aggregates is the order the stream
/// delivered them, not the log's; a rebuild numbers them in log order. Everything else must be equal.
async fn read_model_state(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in projections::PROJECTIONS {
        let json: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT (to_jsonb(t) - 'feed_seq')::text AS row FROM {table} t ORDER BY row"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        rows.extend(json.into_iter().map(|j| format!("{table}: {j}")));
    }
    rows
}

const SETTLED: &str =
    "('Delivered', 'DeadLettered', 'NotificationSuppressed', 'DeadLetterDiscarded')";

/// Everything Herald still has to do: unpublished events, queued notifications, unsettled ones, events not
/// yet projected, and notifications not yet planned.
async fn remaining(pool: &PgPool, expected_notifications: i64) -> Vec<(String, i64)> {
    let unsettled = format!(
        "SELECT count(*) FROM (SELECT aggregate_id FROM events WHERE aggregate_type = 'Notification'
          GROUP BY aggregate_id HAVING NOT bool_or(event_type IN {SETTLED})) t"
    );
    let notifications = count(
        pool,
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Notification'",
    )
    .await;
    vec![
        ("unpublished events".into(), count(pool, "SELECT count(*) FROM outbox").await),
        ("queued notifications".into(), count(pool, "SELECT count(*) FROM delivery_queue").await),
        ("unsettled notifications".into(), count(pool, &unsettled).await),
        ("notifications not planned yet".into(), expected_notifications - notifications),
        (
            "aggregates not projected".into(),
            count(
                pool,
                "SELECT count(*) FROM (SELECT aggregate_type, aggregate_id, max(sequence) AS last FROM events GROUP BY 1, 2) e
                  WHERE NOT EXISTS (SELECT 1 FROM projection_checkpoints c WHERE c.aggregate_type = e.aggregate_type
                                    AND c.aggregate_id = e.aggregate_id AND c.last_sequence = e.last)",
            )
            .await,
        ),
    ]
}

/// Read the whole topic: every event of the log must be on it, each aggregate's in order. Returns the
/// violations and how many copies beyond the first the relay published (at-least-once: allowed, counted).
async fn check_stream(cluster: &Cluster, pool: &PgPool) -> (Vec<String>, usize) {
    let env: HashMap<&str, &str> = cluster
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let logged: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY aggregate_id, sequence")
            .fetch_all(pool)
            .await
            .unwrap();
    let logged: HashSet<(String, i64)> = logged.into_iter().collect();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.address())
        .set(
            "group.id",
            format!("herald-faults-{}-audit", cluster.unique),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[env["HERALD_KAFKA_TOPIC"]]).unwrap();
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    let (mut violations, mut copies) = (Vec::new(), 0);
    while seen.len() < logged.len() {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await
        else {
            violations.push(format!(
                "{} of {} events never reached Kafka",
                logged.len() - seen.len(),
                logged.len()
            ));
            break;
        };
        let event: domain::StoredEvent =
            serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
        let key = (event.aggregate_id.clone(), event.sequence);
        if !seen.insert(key) {
            copies += 1;
            continue;
        }
        let previous = last
            .insert(event.aggregate_id.clone(), event.sequence)
            .unwrap_or(0);
        if event.sequence <= previous {
            violations.push(format!(
                "{} {}: event {} arrived after {previous}",
                event.aggregate_type, event.aggregate_id, event.sequence
            ));
        }
    }
    (violations, copies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_accepted_is_lost_and_nothing_is_sent_twice_under_faults() {
    let seed: u64 = std::env::var("HERALD_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("faults: seed {seed} (HERALD_FAULT_SEED={seed} repeats this schedule)");
    let started = Instant::now();
    let shape = Shape::from_env();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{seed}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let telegram = FakeTelegram::start().await;
    telegram.enforce_limits();
    let database = fresh_database().await;
    let mut cluster = Cluster::start(dir.clone(), database.clone(), &telegram).await;
    let pool = PgPool::connect(&url_of(&database)).await.unwrap();
    let projects = Arc::new(set_up_projects(&cluster, &pool, &shape, &mut rng).await);

    telegram.chaos(
        rng.gen(),
        ChaosRates {
            too_many_requests: 0.08,
            server_error: 0.08,
            slow: 0.10,
            timeout: 0.02,
        },
    );
    let webhooks = workload(&mut rng, &shape);
    let gaps: Vec<Duration> = webhooks
        .iter()
        .map(|_| Duration::from_millis(rng.gen_range(20..250)))
        .collect();
    let driver = drive(&cluster, projects.clone(), webhooks, gaps);
    let mut schedule: Vec<Fault> = Vec::new();
    let mut injected: Vec<String> = Vec::new();
    let mut kinds: HashSet<Fault> = HashSet::new();
    while !driver.is_finished() || kinds.len() < Fault::all().len() {
        if schedule.is_empty() {
            schedule = Fault::all();
            schedule.shuffle(&mut rng);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1500))).await;
        let fault = schedule.pop().expect("refilled above");
        let what = inject(fault, &mut cluster, &telegram, &mut rng).await;
        eprintln!("faults: {:>6.1}s {what}", started.elapsed().as_secs_f64());
        kinds.insert(fault);
        injected.push(what);
    }
    let (accepted, refused) = driver.await.unwrap();
    telegram.calm();

    let expected: i64 = accepted
        .iter()
        .map(|a| projects[a.project].subscriptions.len() as i64)
        .sum();
    let quiet = wait_for(
        "Herald has done everything",
        Duration::from_secs(240),
        || async {
            remaining(&pool, expected)
                .await
                .iter()
                .all(|(_, n)| *n == 0)
        },
    )
    .await;
    let mut violations: Vec<String> = Vec::new();
    if !quiet {
        violations.extend(
            remaining(&pool, expected)
                .await
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(what, n)| format!("after 240 s still {n} {what}")),
        );
    }
    cluster.stop_all().await;

    // Every webhook was accepted in the end, and each is in the log once.
    violations.extend(
        refused
            .iter()
            .map(|d| format!("webhook {d} was never accepted")),
    );
    for webhook in &accepted {
        let events = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE metadata::jsonb->>'delivery_id' = $1",
        )
        .bind(&webhook.delivery)
        .fetch_one(&pool)
        .await
        .unwrap();
        if events == 0 {
            violations.push(format!(
                "accepted webhook {} is not in the log",
                webhook.delivery
            ));
        }
    }
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT metadata::jsonb->>'delivery_id', event_type, count(*) FROM events
          WHERE aggregate_type = 'BuildRun' GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    violations.extend(
        twice
            .iter()
            .map(|(d, t, n)| format!("webhook {d} recorded {t} {n} times")),
    );

    // One notification per build and subscription, each settled.
    let planned: Vec<(String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload::jsonb FROM events WHERE aggregate_type = 'Notification' AND sequence = 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut per_build: HashMap<(String, String), usize> = HashMap::new();
    for (_, payload) in &planned {
        let body = payload
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or_default();
        let key = (
            body["build_run_id"].as_str().unwrap_or_default().to_owned(),
            body["subscription_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        *per_build.entry(key).or_default() += 1;
    }
    for webhook in &accepted {
        for (subscription, chat) in &projects[webhook.project].subscriptions {
            let key = (webhook.build_run_id.clone(), subscription.to_string());
            match per_build.remove(&key) {
                Some(1) => {}
                Some(n) => violations.push(format!(
                    "{} planned {n} times for chat {chat}",
                    webhook.build_run_id
                )),
                None => violations.push(format!(
                    "{} never planned for chat {chat}",
                    webhook.build_run_id
                )),
            }
        }
    }
    violations.extend(
        per_build
            .keys()
            .map(|(b, s)| format!("{b} planned for {s}, which nothing asked for")),
    );
    let outcomes: Vec<(String, String, Value)> = sqlx::query_as(&format!(
        "SELECT e.aggregate_id, e.event_type, p.payload::jsonb FROM events e
           JOIN events p ON p.aggregate_type = e.aggregate_type AND p.aggregate_id = e.aggregate_id AND p.sequence = 1
          WHERE e.aggregate_type = 'Notification' AND e.event_type IN {SETTLED}"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut settled: BTreeMap<String, usize> = BTreeMap::new();
    for (_, outcome, _) in &outcomes {
        *settled.entry(outcome.clone()).or_default() += 1;
    }

    // No chat saw a message twice; every delivered notification is in its chat.
    let mut in_chats: HashMap<(i64, String), usize> = HashMap::new();
    for message in telegram.delivered() {
        *in_chats.entry((message.chat_id, message.text)).or_default() += 1;
    }
    violations.extend(
        in_chats
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((chat, text), n)| format!("chat {chat} got this {n} times: {text}")),
    );
    for (notification, outcome, planned) in &outcomes {
        let body = &planned["NotificationPlanned"];
        let key = (
            body["channel"]["chat_id"].as_i64().unwrap_or_default(),
            body["text"].as_str().unwrap_or_default().to_owned(),
        );
        if outcome == "Delivered" && !in_chats.contains_key(&key) {
            violations.push(format!(
                "notification {notification} recorded delivered, but chat {} never got it",
                key.0
            ));
        }
    }

    // The stream, and the read models against a rebuild from the log.
    let (stream_violations, copies) = check_stream(&cluster, &pool).await;
    violations.extend(stream_violations);
    let live = read_model_state(&pool).await;
    let rebuilt_ok = cluster.herald(&["rebuild", "all"]).await.success();
    let rebuilt = read_model_state(&pool).await;
    if !rebuilt_ok {
        violations.push("herald rebuild all failed".into());
    }
    let only_live: Vec<&String> = live
        .iter()
        .filter(|r| !rebuilt.contains(r))
        .take(5)
        .collect();
    let only_rebuilt: Vec<&String> = rebuilt
        .iter()
        .filter(|r| !live.contains(r))
        .take(5)
        .collect();
    if !only_live.is_empty() || !only_rebuilt.is_empty() {
        violations.push(format!(
            "read models differ from a rebuild: live only {only_live:#?}, rebuilt only {only_rebuilt:#?}"
        ));
    }

    let events = count(&pool, "SELECT count(*) FROM events").await;
    eprintln!(
        "faults: seed {seed}: {} webhooks accepted, {} faults injected, {events} events checked on the log and the \
         stream ({copies} extra copies on the stream), {} notifications settled {settled:?}, {} messages in chats, \
         {} answers 429 from the rate limits, {:.0}s",
        accepted.len(),
        injected.len(),
        outcomes.len(),
        telegram.delivered().len(),
        telegram.limited(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        violations.is_empty(),
        "seed {seed} (repeat with HERALD_FAULT_SEED={seed}; logs in {}):\n{}\nfaults:\n{}",
        dir.display(),
        violations.join("\n"),
        injected.join("\n")
    );
    pool.close().await;
    drop_database(&database).await;
    let _ = std::fs::remove_dir_all(&dir);
}
