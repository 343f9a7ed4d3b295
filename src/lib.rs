//! Herald, assembled: settings, the connection to Postgres, and [`start`], which runs any set of roles (API,
//! relay, projections, planner, delivery) in this process. `herald run` starts them all; the distributed
//! commands start one each. Tests start exactly the roles they need.

pub mod config;
mod mail;
pub mod ops;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use commands::Commands;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use workers::breaker::Breaker;
use workers::{
    run_consumer, DeliveryEnqueuer, DeliverySettings, DeliveryWorker, EventHandler, InProcessBus,
    KafkaConfig, KafkaPublisher, Planner, ProjectionHandler, Providers, Publisher, Relay, Stream,
    TelegramClient, TelegramConfig,
};

/// What this process is configured with. Secrets in here are never logged.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub listen: SocketAddr,
    /// The URL users reach this Herald at (for the webhook URLs it hands out).
    pub public_url: String,
    /// `None`: all-in-one with the in-process bus.
    pub kafka: Option<KafkaConfig>,
    /// `None`: notifications are planned and queued, not sent.
    pub telegram: Option<TelegramConfig>,
    /// Attempt budgets, concurrency, Telegram's rate limits, circuit breakers.
    pub delivery: DeliverySettings,
    /// Scheduled backups, when configured.
    pub backups: Option<ops::backup::Schedule>,
    pub pool: PoolSettings,
    /// Secrets bearer JWTs may be signed with (disabled: API keys only).
    pub jwt: api::auth::jwt::JwtKeys,
    /// How long a rotated-out webhook secret keeps working.
    pub webhook_secret_overlap: Duration,
    /// How long the live feed keeps a change (`projections::live_feed`); chrono's, as the feed compares it
    /// with events' times.
    pub live_feed_retention: chrono::Duration,
    pub limits: api::limits::LimitSettings,
    pub http: api::HttpSettings,
    /// How the bot gets updates (with a Telegram token); `None`: no bot.
    pub bot: Option<workers::bot::BotMode>,
    /// The SMTP server verification emails go through; `None`: email contacts cannot be added.
    pub email: Option<workers::email::EmailConfig>,
    /// Firebase Cloud Messaging; `None`: FCM contacts get nothing (`channel_unavailable`).
    pub fcm: Option<workers::push::FcmConfig>,
    /// Web Push with VAPID; `None`: Web Push contacts get nothing.
    pub web_push: Option<workers::push::WebPushConfig>,
}

impl Settings {
    /// Settle what is one value for the whole process: the live feed's window, which every rebuild and pruner
    /// of the process uses.
    pub fn apply_process_wide(&self) {
        projections::live_feed::set_retention(self.live_feed_retention);
    }

    /// The channels this Herald can deliver to: Telegram always (without a token its notifications wait in the
    /// dead-letter queue for one), the others when their provider is configured.
    pub fn channels(&self) -> std::collections::BTreeSet<domain::ChannelKind> {
        let mut channels = std::collections::BTreeSet::from([domain::ChannelKind::Telegram]);
        if self.email.is_some() {
            channels.insert(domain::ChannelKind::Email);
        }
        if self.fcm.is_some() {
            channels.insert(domain::ChannelKind::Fcm);
        }
        if self.web_push.is_some() {
            channels.insert(domain::ChannelKind::WebPush);
        }
        channels
    }

    /// Defaults for everything but the database: all-in-one, nothing sent, no backups.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            kafka: None,
            telegram: None,
            delivery: DeliverySettings::default(),
            backups: None,
            pool: PoolSettings::default(),
            jwt: api::auth::jwt::JwtKeys::disabled(),
            webhook_secret_overlap: commands::DEFAULT_SECRET_OVERLAP,
            live_feed_retention: projections::live_feed::DEFAULT_RETENTION,
            limits: api::limits::LimitSettings::default(),
            http: api::HttpSettings::default(),
            bot: None,
            email: None,
            fcm: None,
            web_push: None,
        }
    }
}

/// The Postgres connection pool of one process.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// This process's metrics recorder (installed on first use; one per process, as the `metrics` facade has one).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("herald_http_request_duration_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; Herald's metrics are not recorded"
                );
            }
            handle
        })
        .clone()
}

/// One part of Herald that can run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Relay,
    Projections,
    Planner,
    Delivery,
    /// The Telegram bot: needs a bot token, and runs in one process per token.
    Bot,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Api,
        Role::Relay,
        Role::Projections,
        Role::Planner,
        Role::Delivery,
        Role::Bot,
    ];
}

/// Connect to Postgres, creating the database when the server is there but the database is not, and say
/// clearly what is wrong when the server cannot be reached.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    connect_with(database_url, &PoolSettings::default()).await
}

/// A pooled connection idle for longer than this is pinged before it is used again.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How long a starting process waits for the broker before it gives up.
const BROKER_PATIENCE: Duration = Duration::from_secs(60);

/// Create the topic, waiting out a broker that is restarting: a process started while the broker is briefly
/// away (both restarted together, or the broker's host rebooting) comes up when the broker does, instead of
/// exiting and leaving the restart loop to an orchestrator.
async fn ensure_topic_patiently(kafka: &KafkaConfig) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BROKER_PATIENCE;
    let mut wait = Duration::from_millis(250);
    loop {
        match kafka.ensure_topic().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, brokers = %kafka.brokers, "the broker is not answering yet; waiting");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often the projections worker prunes the live feed to its window.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Keep the live feed to its window (`projections::live_feed::prune`), once at start and then every
/// [`PRUNE_EVERY`]. Several projections workers may prune at once: each deletes what is expired, and what one
/// deleted the other finds gone.
async fn prune_live_feed(pool: PgPool, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match projections::live_feed::prune(&pool, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "live feed pruned to its window"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning the live feed failed; trying again later")
            }
        }
    }
}

/// [`connect`] with the pool sized as configured.
pub async fn connect_with(database_url: &str, pool: &PoolSettings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    let options = options.log_statements(tracing::log::LevelFilter::Trace);
    let where_ = format!(
        "{}:{} (database {:?})",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("default")
    );
    // sqlx pings a pooled connection before every use by default: a round trip before each statement, which
    // `herald bench ingest` paid four times a webhook. A connection in use within the last second is taken as
    // it is; one idle for longer (perhaps cut off by a Postgres restart meanwhile) is still pinged, and a
    // connection that breaks in between fails its statement, which every caller already retries or answers 503.
    let pool_options = || {
        PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .acquire_timeout(pool.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    };
    match pool_options().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let database = options.get_database().unwrap_or("herald").to_owned();
            let admin = options.clone().database("postgres");
            let mut conn = admin
                .connect()
                .await
                .with_context(|| format!("database {database:?} does not exist and Herald cannot connect to create it"))?;
            let quoted = format!("\"{}\"", database.replace('"', "\"\""));
            if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut conn).await {
                // Another process may have created it at the same moment.
                tracing::debug!(error = %e, "CREATE DATABASE");
            }
            tracing::info!(database, "created database");
            pool_options()
                .connect_with(options)
                .await
                .with_context(|| format!("cannot connect to Postgres at {where_}"))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot connect to Postgres at {where_}. Start PostgreSQL there, or point DATABASE_URL at a running server"
            )
        }),
    }
}

/// The running roles of this process.
pub struct Running {
    /// The API's bound address, when the API role runs.
    pub api_addr: Option<SocketAddr>,
    /// Where this process answers HTTP: the API, or a worker's `/health` and `/metrics`.
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Running {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until any role ends (which, without a shutdown, is a failure) and report it.
    pub async fn wait_any(&mut self) -> &'static str {
        if self.tasks.is_empty() {
            return "nothing";
        }
        let handles = self.tasks.iter_mut().map(|(_, h)| h);
        let (_, index, _) = futures::future::select_all(handles).await;
        self.tasks[index].0
    }

    /// Stop every role and wait (bounded) for each to finish its current step.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (name, handle) in self.tasks {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .is_err()
            {
                tracing::warn!(role = name, "did not stop in time; aborted");
                abort.abort();
            }
        }
    }

    /// Stop at once, as a crash would: no role finishes what it is doing.
    pub fn kill(self) {
        self.shutdown.cancel();
        for (_, handle) in self.tasks {
            handle.abort();
        }
    }
}

/// A delivery task holds its claimed queue rows' connection while it loads and records the notifications on
/// another, so its tasks need twice as many connections: with fewer, every task can hold one and wait for a
/// second until the pool's acquire timeout (found by the fault-injection suite, with 4 connections and 8
/// one-at-a-time deliveries). Refused at start, with the numbers, rather than discovered as a stall.
fn check_pool_for_delivery(
    max_connections: u32,
    delivery: &workers::DeliverySettings,
) -> anyhow::Result<()> {
    let tasks = delivery.tasks();
    let needed = tasks.saturating_mul(2);
    if (max_connections as usize) < needed {
        anyhow::bail!(
            "HERALD_DELIVERY_CONCURRENCY={} runs {tasks} delivery tasks, which need HERALD_DATABASE_MAX_CONNECTIONS \
             of at least {needed} (got {max_connections}): each task holds its claimed queue rows on one \
             connection while it records their attempts on another; raise the connections or lower the concurrency",
            delivery.concurrency
        );
    }
    Ok(())
}

/// Migrate, then start `roles` in this process.
pub async fn start(settings: &Settings, roles: &[Role]) -> anyhow::Result<Running> {
    settings.apply_process_wide();
    if roles.contains(&Role::Delivery) {
        check_pool_for_delivery(settings.pool.max_connections, &settings.delivery)?;
    }
    let pool = connect_with(&settings.database_url, &settings.pool).await?;
    commands::migrate(&pool)
        .await
        .context("cannot apply database migrations")?;
    let commands =
        Arc::new(Commands::new(pool.clone()).with_secret_overlap(settings.webhook_secret_overlap));
    let metrics = metrics_handle();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    let (stream, publisher): (Stream, Arc<dyn Publisher>) = match &settings.kafka {
        Some(kafka) => {
            ensure_topic_patiently(kafka).await.with_context(|| {
                format!(
                    "cannot create Kafka topic {:?} at {}",
                    kafka.topic, kafka.brokers
                )
            })?;
            let publisher =
                KafkaPublisher::new(kafka).context("cannot create the Kafka producer")?;
            (Stream::Kafka(kafka.clone()), Arc::new(publisher))
        }
        None => {
            let consumers = roles
                .iter()
                .any(|r| matches!(r, Role::Projections | Role::Planner | Role::Delivery));
            if roles.contains(&Role::Relay) && !consumers {
                bail!("without Kafka (HERALD_KAFKA_BROKERS) the relay can only run together with its consumers: use `herald run`");
            }
            let bus = InProcessBus::new();
            (Stream::InProcess(bus.clone()), Arc::new(bus))
        }
    };

    let mut handlers: Vec<Arc<dyn EventHandler>> = Vec::new();
    let mut breakers: Vec<Arc<Breaker>> = Vec::new();
    if roles.contains(&Role::Projections) {
        handlers.push(Arc::new(ProjectionHandler(projections::Projector::all(
            pool.clone(),
        ))));
        tasks.push((
            "live feed pruning",
            tokio::spawn(prune_live_feed(pool.clone(), shutdown.clone())),
        ));
    }
    if roles.contains(&Role::Planner) {
        handlers.push(Arc::new(Planner::new(
            commands.clone(),
            settings.channels(),
        )));
        let digester = workers::digest::Digester::new(commands.clone());
        tasks.push((
            "digests",
            tokio::spawn(digester.run(std::time::Duration::from_secs(5), shutdown.clone())),
        ));
    }
    if roles.contains(&Role::Delivery) {
        let wake = Arc::new(tokio::sync::Notify::new());
        handlers.push(Arc::new(DeliveryEnqueuer::new(pool.clone(), wake.clone())));
        let mut providers = Providers::new(Some(settings.public_url.clone()));
        match &settings.telegram {
            Some(config) => {
                providers.telegram = Some(
                    TelegramClient::new(config.clone()).context("cannot build the HTTP client")?,
                );
            }
            None => tracing::warn!(
                "HERALD_TELEGRAM_BOT_TOKEN is not set: Telegram notifications are planned and queued, and sent once a token is configured"
            ),
        }
        if let Some(config) = &settings.email {
            providers.email = Some(
                workers::email::Mailer::new(config.clone())
                    .context("cannot set up the SMTP mailer")?,
            );
        }
        if let Some(config) = &settings.fcm {
            providers.fcm =
                Some(workers::push::FcmClient::new(config.clone()).context("cannot set up FCM")?);
        }
        if let Some(config) = &settings.web_push {
            providers.web_push = Some(
                workers::push::WebPushClient::new(config.clone())
                    .context("cannot set up Web Push")?,
            );
        }
        if let Some(kafka) = &settings.kafka {
            handlers.push(Arc::new(
                workers::dead_letters::DeadLetterTopic::new(kafka, commands.clone())
                    .context("cannot create the Kafka producer for dead letters")?,
            ));
        }
        let worker =
            DeliveryWorker::new(commands.clone(), providers, settings.delivery.clone(), wake);
        breakers.extend(worker.breakers());
        tasks.push(("delivery", tokio::spawn(worker.run(shutdown.clone()))));
    }
    if roles.contains(&Role::Bot) {
        match (&settings.telegram, &settings.bot) {
            (Some(config), Some(mode)) => {
                let client = Arc::new(
                    TelegramClient::new(config.clone()).context("cannot build the HTTP client")?,
                );
                // The username makes `/command@bot` in groups unambiguous; without it every addressed command
                // is taken as ours.
                let username = client.get_me().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e.description, "getMe failed; the bot answers commands for any bot name");
                    None
                });
                let bot = workers::bot::Bot::new(commands.clone(), client.clone(), username);
                let inbox = commands::telegram_inbox::TelegramInbox::new(pool.clone());
                let runner = workers::bot::BotRunner::new(bot, client, inbox, mode.clone());
                tasks.push(("bot", tokio::spawn(runner.run(shutdown.clone()))));
            }
            (None, _) => tracing::info!("no Telegram token: the bot is off"),
            (Some(_), None) => tracing::info!("HERALD_TELEGRAM_BOT_MODE=off: the bot is off"),
        }
    }
    if let Stream::InProcess(bus) = &stream {
        // Registered before the relay starts, so the first batch already waits for every group.
        for handler in &handlers {
            bus.register(handler.group()).await;
        }
    }
    for handler in handlers {
        let (stream, token) = (stream.clone(), shutdown.clone());
        let group = handler.group();
        tasks.push((
            group,
            tokio::spawn(async move {
                if let Err(e) = run_consumer(stream, handler, token).await {
                    tracing::error!(group, error = %e, "consumer could not start");
                }
            }),
        ));
    }
    if roles.contains(&Role::Relay) {
        let relay = Relay::new(pool.clone(), publisher).with_local(commands.local_relay());
        tasks.push(("relay", tokio::spawn(relay.run(shutdown.clone()))));
    }

    if let Some(schedule) = &settings.backups {
        let (pool, schedule, token) = (pool.clone(), schedule.clone(), shutdown.clone());
        tasks.push((
            "backups",
            tokio::spawn(ops::backup::run_schedule(pool, schedule, token)),
        ));
    }

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let app = if roles.contains(&Role::Api) {
        let mut dependencies: Vec<Arc<dyn api::Dependency>> = Vec::new();
        if let Some(kafka) = &settings.kafka {
            dependencies.push(Arc::new(KafkaStatus(kafka.clone())));
        }
        let mut state = api::AppState::new(
            commands.clone(),
            pool.clone(),
            settings.public_url.clone(),
            dependencies,
        )
        .with_jwt(settings.jwt.clone())
        .with_limits(&settings.limits)
        .with_http(settings.http.clone())
        .with_shutdown(shutdown.clone())
        .with_metrics(metrics.clone());
        if let Some(workers::bot::BotMode::Webhook { secret, .. }) = &settings.bot {
            state = state.with_telegram_webhook(secret.clone());
        }
        if let Some(email) = &settings.email {
            let mailer = workers::email::Mailer::new(email.clone())
                .context("cannot set up the SMTP mailer")?;
            state = state.with_mailer(Arc::new(mail::VerificationMail(mailer)));
        }
        if let Some(config) = &settings.telegram {
            // For the deep links link codes come with; a bot that cannot be asked simply gets none.
            let client =
                TelegramClient::new(config.clone()).context("cannot build the HTTP client")?;
            // Asked briefly: an unreachable Telegram must not hold up the API's start.
            let asked =
                tokio::time::timeout(std::time::Duration::from_secs(2), client.get_me()).await;
            if let Ok(Ok(Some(username))) = asked {
                state = state.with_bot_username(username);
            }
        }
        if let Some(kafka) = &settings.kafka {
            state = state.with_stream_status(Arc::new(KafkaStatus(kafka.clone())));
        }
        if !breakers.is_empty() {
            let breakers = breakers.clone();
            state = state.with_breakers(Arc::new(move || {
                breakers
                    .iter()
                    .map(|b| serde_json::to_value(b.view()).unwrap_or_default())
                    .collect()
            }));
        }
        if !state.auth.keys.any_active().await? {
            tracing::warn!("no API key exists yet: create one with `herald keys create --role admin --name <name>`");
        }
        tracing::info!(%addr, "api listening");
        api::router(state)
    } else {
        // Workers answer only what orchestrators and Prometheus ask: liveness and their own metrics.
        tracing::info!(%addr, "health and metrics listening");
        worker_router(metrics)
    };
    let token = shutdown.clone();
    // The request timeout bounds reading the headers as well as the body and the answer.
    let header_timeout = settings.http.request_timeout;
    tasks.push((
        "http",
        tokio::spawn(async move {
            serve::serve(listener, app, header_timeout, token).await;
        }),
    ));
    let api_addr = roles.contains(&Role::Api).then_some(addr);
    let http_addr = addr;

    Ok(Running {
        api_addr,
        http_addr,
        shutdown,
        tasks,
    })
}

/// `/health` and `/metrics` of a process that runs no API.
fn worker_router(metrics: metrics_exporter_prometheus::PrometheusHandle) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
}

struct KafkaStatus(KafkaConfig);

#[async_trait::async_trait]
impl api::Dependency for KafkaStatus {
    fn name(&self) -> &'static str {
        "kafka"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl api::StreamStatus for KafkaStatus {
    async fn lag(&self) -> Result<Vec<projections::status::PartitionLag>, String> {
        self.0
            .lag(&["projections", "planner", "delivery"])
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::check_pool_for_delivery;

    #[test]
    fn a_pool_too_small_for_the_delivery_concurrency_is_refused_with_the_numbers() {
        let delivery = |concurrency| workers::DeliverySettings {
            concurrency,
            ..Default::default()
        };
        assert!(check_pool_for_delivery(20, &delivery(8)).is_ok());
        assert!(check_pool_for_delivery(2, &delivery(1)).is_ok());
        assert!(check_pool_for_delivery(8, &delivery(256)).is_ok());
        let refused = check_pool_for_delivery(4, &delivery(8))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("HERALD_DELIVERY_CONCURRENCY=8 runs 4 delivery tasks"),
            "{refused}"
        );
        assert!(refused.contains("at least 8 (got 4)"), "{refused}");
    }
}
