//! Herald's integration tests: one binary, real Postgres, real Kafka-protocol broker (tansu, started by the
//! test script), fake Telegram over HTTP. Each test gets its own database, topic and consumer groups.

mod helpers;
mod live;
mod log_secrets;

mod analytics;
mod audit;
mod auth;
mod backup;
mod batches;
mod benchmarks;
mod bot;
mod bounces;
mod channels;
mod config;
mod dashboard;
mod digests;
mod dlq;
mod dry_run;
mod e2e;
mod email;
mod faults;
mod health;

mod observability;
mod pipeline;
mod projections_idempotence;
mod projects;
mod providers;
mod push;
mod push_fakes;
mod read_cache;
mod rebuild;
mod relay;
mod robustness;
mod schema_fuzz;
mod smtp;
mod status;
mod subscribers;
mod subscriptions;
mod telegram_delivery;
mod templates;
mod unsubscribe;
mod upcast;
mod webhooks;
