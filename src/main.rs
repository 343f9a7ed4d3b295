//! The `herald` command line: `run` (all-in-one), `serve`, `relay`, `worker <role>`, `migrate`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use herald::config::Config;
use herald::Role;

/// mimalloc instead of glibc's malloc. perf during `herald bench delivery` put glibc's malloc and free
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, …) at about a third of the process's CPU samples (the
/// bench's fake Telegram shares the process, and allocates as an HTTP server does): every event is decoded,
/// rendered and encoded into short-lived strings and JSON values, and glibc spent that time splitting,
/// consolidating and unlinking free chunks. With mimalloc the same build delivered 4,097–5,190 messages/s in five
/// runs against 3,778–4,599/s in six, run alternately, and the read and webhook latencies of `bench load` fell by
/// a fifth to a third; the price is memory kept for reuse: `herald run` idles at 34 MiB instead of 21 MiB and
/// peaked at 66 MiB instead of 52 MiB under 1,000 users (targets: 64 / 256 MiB). docs/benchmarks.md, "The
/// allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Self-hosted CI/CD status notifier",
    after_help = "Settings come from defaults, then the --config file (TOML), then the environment \
                  (HERALD_<SETTING>, DATABASE_URL); secrets also from HERALD_<SETTING>_FILE. \
                  `herald config check` shows the result. See docs/configuration.md."
)]
struct Cli {
    /// A TOML file of settings (keys as in docs/configuration.md); the environment overrides it.
    #[arg(long, env = "HERALD_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: API, relay, projections, planner, delivery, bot.
    Run,
    /// The HTTP API only.
    Serve,
    /// The outbox relay only (needs Kafka).
    Relay,
    /// One stream consumer (needs Kafka).
    Worker {
        #[arg(value_enum)]
        role: WorkerRole,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Write the event log, outbox and webhook secrets as checksummed NDJSON (gzip) into a new directory.
    Backup {
        /// The directory to create.
        dir: std::path::PathBuf,
    },
    /// Rebuild read models from the log into shadow tables, then swap them in atomically (resumes after a crash).
    /// With --as-of and --name, build a named snapshot instead, queryable with `?as_of=<name>`.
    Rebuild {
        /// all, projects, build_runs, subscriptions or notifications.
        #[arg(default_value = "all")]
        target: String,
        #[arg(long, requires = "name")]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, requires = "as_of")]
        name: Option<String>,
    },
    /// What a proposed subscription (and template) would have sent over a past time range. Sends nothing.
    DryRun {
        #[arg(long)]
        project: uuid::Uuid,
        /// Comma-separated outcome filters, as subscriptions take them.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        outcomes: Vec<String>,
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// A file holding a proposed Telegram template (handlebars).
        #[arg(long)]
        template_file: Option<std::path::PathBuf>,
    },
    /// Projects and subscriptions as one JSON document.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Benchmarks that print figures beside a same-run baseline.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
    /// Outbox depth, projection and consumer lag, delivery and dead-letter queues (JSON).
    Status,
    /// The notification trail: who was told what, when, through which channel, and why not.
    Replay {
        /// One build (its build_run_id).
        #[arg(long, conflicts_with_all = ["project", "subscription"])]
        build: Option<String>,
        #[arg(long, conflicts_with = "subscription")]
        project: Option<uuid::Uuid>,
        #[arg(long)]
        subscription: Option<uuid::Uuid>,
        /// RFC 3339; with --to and nothing else, every event in the range.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value_t = herald::ops::replay::Format::Table)]
        format: herald::ops::replay::Format,
    },
    /// API keys: create (shown once), list, revoke.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Mint a short-lived JWT signed with HERALD_JWT_SECRET (for scripts and gateways).
    Token {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        role: api::auth::Role,
        /// Producers: the projects they may post webhooks for.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<uuid::Uuid>,
        /// Lifetime: 90s, 15m, 6h, 1d.
        #[arg(long, default_value = "1h", value_parser = herald::ops::backup::parse_interval)]
        ttl: Duration,
    },
    /// Exit 0 when the Herald at --url answers its health check (for container health checks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/health")]
        url: String,
    },
    /// The dead-letter queue: notifications Herald gave up on.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Load a backup into a database with no events, after verifying its checksums; then rebuild the read models.
    Restore {
        dir: std::path::PathBuf,
        /// Only verify the checksums; write nothing.
        #[arg(long)]
        verify_only: bool,
    },
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Signed webhooks over HTTP into durable events (open-loop, stepped rates), beside single-row INSERTs.
    Ingest {
        /// Seconds per offered rate.
        #[arg(long, default_value_t = 5)]
        step_seconds: u64,
        /// Requests in flight at most, for Herald and the baseline alike.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Dashboard reads under many concurrent clients with a million runs in the read model (beside `/health`),
    /// uncached query times, and the projection lag under ingest.
    Analytics {
        #[arg(long, default_value_t = 1_000_000)]
        builds: u64,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Seconds per endpoint, and of the ingest run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Webhook → `sendMessage` at a fake Telegram, open-loop, through Kafka (when brokers are configured) and
    /// the in-process bus; beside the webhook's own 202 at the same rate.
    E2e {
        /// Seconds per offered rate.
        #[arg(long, default_value_t = 5)]
        step_seconds: u64,
        /// Kafka brokers (default: `kafka_brokers` from the configuration); without any, the in-process bus only.
        #[arg(long)]
        brokers: Option<String>,
        /// The Kafka consumers' `fetch.wait.max.ms` (default: `kafka_fetch_wait_ms` from the configuration).
        #[arg(long)]
        fetch_wait_ms: Option<u32>,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Outbox → Kafka for N generated events, beside raw rdkafka produce of the same events.
    Relay {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Kafka brokers (default: `kafka_brokers` from the configuration).
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// One failed run to N chats at a fake Telegram that enforces the per-chat limit (429s counted), beside a
    /// plain HTTP client sending the same messages.
    Delivery {
        #[arg(long, default_value_t = 10_000)]
        chats: u64,
        /// Notifications in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Many users at once (readers, webhook writers, live streams) against a `herald run` child process, and its
    /// memory idle and over the run (a soak with a long `--seconds`).
    Load {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Runs in the read model.
        #[arg(long, default_value_t = 100_000)]
        builds: u64,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Rebuild all read models from N generated events, beside `COPY ... TO` of the same table.
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it; Herald keeps only its hash, so this is the only time it is shown.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: api::auth::Role,
        /// Producers: the projects they may post webhooks for.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<uuid::Uuid>,
        /// The subscriber the key stands for: its holder manages that subscriber's own subscriptions and
        /// preferences (`/api/v1/me`, the dashboard's subscriptions page).
        #[arg(long)]
        subscriber: Option<uuid::Uuid>,
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Every key (never the secrets), as JSON.
    List,
    /// Revoke a key by its id.
    Revoke { id: uuid::Uuid },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the settings and print them, secrets redacted.
    Check,
    /// Print the configuration (JSON) to standard output.
    Export {
        /// Include webhook secrets (then the file is as sensitive as the database).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Create what a configuration file holds and this Herald lacks; what exists is left as it is.
    Import { file: std::path::PathBuf },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Dead letters, oldest first.
    List {
        #[arg(long)]
        project: Option<uuid::Uuid>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One notification with its whole trail of events (JSON).
    Show { id: uuid::Uuid },
    /// Send a dead letter again, with a fresh budget of attempts.
    Redrive { id: uuid::Uuid },
    /// Give a dead letter up for good.
    Discard {
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkerRole {
    Projections,
    Planner,
    Delivery,
    /// The Telegram bot (one per bot token: Telegram allows one poller).
    Bot,
}

/// Logs to stderr; `json` lines carry the span fields, so every line of a request has its `trace_id`.
fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        _ => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(cli: Cli, settings: herald::Settings) -> anyhow::Result<()> {
    let roles: Vec<Role> = match cli.command {
        Command::Healthcheck { url } => return herald::ops::healthcheck::check(&url).await,
        Command::Token {
            subject,
            role,
            projects,
            ttl,
        } => {
            let claims = api::auth::jwt::Claims {
                sub: subject,
                role,
                projects,
                exp: chrono::Utc::now().timestamp() + ttl.as_secs() as i64,
            };
            let token = settings.jwt.mint(&claims).map_err(|e| {
                anyhow::anyhow!("{e}: set HERALD_JWT_SECRET (or HERALD_JWT_SECRET_FILE)")
            })?;
            println!("{token}");
            return Ok(());
        }
        Command::Keys { action } => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let keys = api::auth::keys::ApiKeys::new(pool);
            match action {
                KeysAction::Create {
                    name,
                    role,
                    projects,
                    subscriber,
                    expires_at,
                } => {
                    let key = keys
                        .create(&api::auth::keys::KeySpec {
                            name: &name,
                            role,
                            projects: &projects,
                            subscriber_id: subscriber,
                            expires_at,
                        })
                        .await?;
                    eprintln!(
                        "Store this key now: Herald keeps only its hash and cannot show it again."
                    );
                    println!("{}", serde_json::to_string_pretty(&key)?);
                }
                KeysAction::List => {
                    println!("{}", serde_json::to_string_pretty(&keys.list().await?)?)
                }
                KeysAction::Revoke { id } => match keys.revoke(id).await? {
                    Some(info) => println!("{}", serde_json::to_string_pretty(&info)?),
                    None => anyhow::bail!("no API key with id {id}"),
                },
            }
            return Ok(());
        }
        Command::Migrate => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            tracing::info!("migrations applied");
            return Ok(());
        }
        Command::Backup { dir } => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let manifest = herald::ops::backup::backup(
                &pool,
                &dir,
                &mut herald::ops::progress::Progress::for_stderr(),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            return Ok(());
        }
        Command::Restore { dir, verify_only } => {
            if verify_only {
                let manifest = herald::ops::backup::verify(&dir)?;
                println!(
                    "backup verified: {} files, events up to global_seq {}",
                    manifest.files.len(),
                    manifest.last_global_seq
                );
                return Ok(());
            }
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            herald::ops::backup::restore(
                &pool,
                &dir,
                &mut herald::ops::progress::Progress::for_stderr(),
            )
            .await?;
            return Ok(());
        }
        Command::Rebuild {
            target,
            as_of,
            name,
        } => {
            use projections::rebuild::{self, Rebuild, Snapshot, Target};
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let mut progress = herald::ops::progress::Progress::for_stderr();
            let label = if name.is_some() {
                "building snapshot"
            } else {
                "rebuilding read models"
            };
            let mut started = false;
            let mut report = |done: u64, total: u64| {
                if !started {
                    progress.start(label, total);
                    started = true;
                }
                progress.set(done);
            };
            let run = rebuild::run(
                &pool,
                Rebuild {
                    target: Target::parse(&target)?,
                    snapshot: as_of.zip(name).map(|(at, name)| Snapshot { name, at }),
                    progress: &mut report,
                    stop_after: None,
                    batch_size: None,
                },
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
            return Ok(());
        }
        Command::DryRun {
            project,
            outcomes,
            from,
            to,
            template_file,
        } => {
            let outcomes = outcomes
                .iter()
                .map(|o| o.parse::<domain::OutcomeFilter>())
                .collect::<Result<Vec<_>, _>>()?;
            let template = template_file.map(std::fs::read_to_string).transpose()?;
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let request = commands::dry_run::DryRunRequest {
                project_id: project,
                outcomes,
                template,
                from,
                to,
            };
            let report = commands::dry_run::dry_run(&pool, &request).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        Command::Config { action } => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let commands = commands::Commands::new(pool.clone());
            match action {
                ConfigAction::Check => unreachable!("answered before connecting"),
                ConfigAction::Export { include_secrets } => {
                    let document =
                        commands::config::export(&pool, &commands, include_secrets).await?;
                    println!("{}", serde_json::to_string_pretty(&document)?);
                }
                ConfigAction::Import { file } => {
                    let raw = std::fs::read(&file)?;
                    let document: commands::config::ConfigDocument = serde_json::from_slice(&raw)
                        .map_err(|e| {
                        anyhow::anyhow!("{} is not a Herald configuration: {e}", file.display())
                    })?;
                    let report = commands::config::import(&commands, &document).await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
            }
            return Ok(());
        }
        Command::Bench { scenario } => {
            match scenario {
                BenchScenario::Rebuild { events, json } => {
                    let result =
                        herald::ops::bench::rebuild(&settings.database_url, events).await?;
                    herald::ops::bench::print(&result);
                    if let Some(path) = json {
                        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
                    }
                }
                BenchScenario::Analytics {
                    builds,
                    clients,
                    seconds,
                    json,
                } => {
                    let result = herald::ops::bench_analytics::analytics(
                        &settings.database_url,
                        builds,
                        clients.max(1),
                        seconds.max(1),
                    )
                    .await?;
                    herald::ops::bench_analytics::print(&result);
                    if let Some(path) = json {
                        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
                    }
                }
                BenchScenario::E2e {
                    step_seconds,
                    brokers,
                    fetch_wait_ms,
                    json,
                } => {
                    use herald::ops::bench_pipeline::{self as pipeline, Bus};
                    let mut buses = Vec::new();
                    match brokers.or_else(|| settings.kafka.as_ref().map(|k| k.brokers.clone())) {
                        Some(brokers) => buses.push(Bus::Kafka(brokers)),
                        None => eprintln!(
                            "no Kafka brokers configured (--brokers or HERALD_KAFKA_BROKERS): the in-process bus only"
                        ),
                    }
                    buses.push(Bus::InProcess);
                    let fetch_wait_ms = fetch_wait_ms
                        .or_else(|| settings.kafka.as_ref().map(|k| k.fetch_wait_ms))
                        .unwrap_or(workers::DEFAULT_FETCH_WAIT_MS);
                    let result = pipeline::end_to_end_with(
                        &settings.database_url,
                        &buses,
                        (10.0, 12_800.0),
                        Duration::from_secs(step_seconds.max(1)),
                        fetch_wait_ms,
                    )
                    .await?;
                    pipeline::print_end_to_end(&result);
                    write_json(json, &result)?;
                }
                BenchScenario::Relay {
                    events,
                    brokers,
                    json,
                } => {
                    let brokers = brokers
                        .or_else(|| settings.kafka.as_ref().map(|k| k.brokers.clone()))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "the relay benchmark needs a Kafka broker: --brokers or HERALD_KAFKA_BROKERS"
                            )
                        })?;
                    let result = herald::ops::bench_pipeline::relay(
                        &settings.database_url,
                        &brokers,
                        events.max(1),
                    )
                    .await?;
                    herald::ops::bench_pipeline::print_relay(&result);
                    write_json(json, &result)?;
                }
                BenchScenario::Delivery {
                    chats,
                    concurrency,
                    json,
                } => {
                    let result = herald::ops::bench_pipeline::delivery(
                        &settings.database_url,
                        chats.max(1),
                        concurrency.max(1),
                    )
                    .await?;
                    herald::ops::bench_pipeline::print_delivery(&result);
                    write_json(json, &result)?;
                }
                BenchScenario::Load {
                    users,
                    seconds,
                    builds,
                    json,
                } => {
                    let exe = std::env::current_exe()?;
                    let result = herald::ops::bench_load::load(
                        &exe,
                        &settings.database_url,
                        users,
                        seconds,
                        builds,
                    )
                    .await?;
                    herald::ops::bench_load::print(&result);
                    write_json(json, &result)?;
                }
                BenchScenario::Ingest {
                    step_seconds,
                    concurrency,
                    json,
                } => {
                    let result = herald::ops::bench_ingest::ingest(
                        &settings.database_url,
                        Duration::from_secs(step_seconds.max(1)),
                        concurrency.max(1),
                    )
                    .await?;
                    herald::ops::bench_ingest::print(&result);
                    if let Some(path) = json {
                        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
                    }
                }
            }
            return Ok(());
        }
        Command::Status => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            let database = projections::status::database_status(&pool).await?;
            let stream = match &settings.kafka {
                Some(kafka) => match kafka.lag(&["projections", "planner", "delivery"]).await {
                    Ok(partitions) => {
                        serde_json::json!({ "kind": "kafka", "partitions": partitions })
                    }
                    Err(e) => serde_json::json!({ "kind": "kafka", "error": e.to_string() }),
                },
                None => serde_json::json!({ "kind": "in-process" }),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "database": database, "stream": stream })
                )?
            );
            return Ok(());
        }
        Command::Replay {
            build,
            project,
            subscription,
            from,
            to,
            format,
        } => {
            use projections::audit::Scope;
            let scope = match (build, project, subscription, from, to) {
                (Some(id), ..) => Scope::Build(id),
                (_, Some(project_id), ..) => Scope::Project {
                    project_id,
                    from,
                    to,
                },
                (_, _, Some(id), ..) => Scope::Subscription(id),
                (None, None, None, Some(from), Some(to)) => Scope::Range { from, to },
                _ => anyhow::bail!(
                    "say what to replay: --build, --project, --subscription, or --from and --to"
                ),
            };
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            return herald::ops::replay::run(&pool, &scope, format).await;
        }
        Command::Dlq { action } => {
            let pool = herald::connect_with(&settings.database_url, &settings.pool).await?;
            commands::migrate(&pool).await?;
            return herald::ops::dlq::run(&pool, action.into()).await;
        }
        Command::Run => Role::ALL.to_vec(),
        Command::Serve => vec![Role::Api],
        Command::Relay => vec![Role::Relay],
        Command::Worker { role } => vec![match role {
            WorkerRole::Projections => Role::Projections,
            WorkerRole::Planner => Role::Planner,
            WorkerRole::Delivery => Role::Delivery,
            WorkerRole::Bot => Role::Bot,
        }],
    };
    if settings.kafka.is_none() && roles.len() == 1 && roles != [Role::Api] && roles != [Role::Bot]
    {
        anyhow::bail!("this role reads the event stream from Kafka: set HERALD_KAFKA_BROKERS, or use `herald run` for all-in-one");
    }
    let mut running = herald::start(&settings, &roles).await?;
    if let Some(addr) = running.api_addr {
        println!(
            "Herald is up: API on http://{addr} (mode: {})",
            if settings.kafka.is_some() {
                "kafka"
            } else {
                "all-in-one, in-process bus"
            }
        );
    }
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        role = running.wait_any() => tracing::error!(role, "a role stopped unexpectedly; shutting down"),
    }
    running.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_format);
    let settings = match config.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    settings.apply_process_wide();
    if let Command::Config {
        action: ConfigAction::Check,
    } = &cli.command
    {
        println!(
            "{}",
            serde_json::to_string_pretty(&config.redacted()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl From<DlqAction> for herald::ops::dlq::Action {
    fn from(action: DlqAction) -> Self {
        use herald::ops::dlq::Action;
        match action {
            DlqAction::List { project, limit } => Action::List { project, limit },
            DlqAction::Show { id } => Action::Show(id),
            DlqAction::Redrive { id } => Action::Redrive(id),
            DlqAction::Discard { id, reason } => Action::Discard(id, reason),
        }
    }
}

/// Write a benchmark's figures as JSON where `--json` asked for them.
fn write_json(
    path: Option<std::path::PathBuf>,
    figures: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(&path, serde_json::to_vec_pretty(figures)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
