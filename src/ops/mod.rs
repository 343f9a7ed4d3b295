//! Operator tools: backup and restore, rebuilding read models, progress reporting. Each is a library function the
//! CLI calls (and tests call directly).

pub mod backup;
pub mod bench;
pub mod bench_analytics;
pub mod bench_ingest;
pub mod dlq;
pub mod healthcheck;
pub mod progress;
pub mod rebuild;
pub mod replay;
