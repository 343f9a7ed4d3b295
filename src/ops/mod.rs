//! Operator tools: backup and restore, rebuilding read models, progress reporting. Each is a library function the
//! CLI calls (and tests call directly).

pub mod backup;
pub mod bench;
pub mod bench_analytics;
pub mod bench_ingest;
pub mod bench_load;
pub mod bench_pipeline;
pub mod dlq;
pub mod fake_telegram;
pub mod healthcheck;
pub mod progress;
pub mod rebuild;
pub mod replay;
