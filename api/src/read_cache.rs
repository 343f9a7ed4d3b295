//! The cache in front of the analytics queries, and the listener that keeps it honest.
//!
//! Answers are cached as serialized JSON for a bounded TTL. Projections announce changed rows with
//! `pg_notify` on commit ([`projections::changes`]); one listener task per process drops the cached answers over
//! those rows and wakes the live-update streams. So a reader sees a stale answer for at most the projection lag
//! (the rows are not changed yet) plus the time the notice takes; the TTL only bounds the case of a notice
//! lost with a dropped connection, after which the listener drops everything anyway.
//!
//! The listener starts on first use, so every `AppState` (tests included) gets one without wiring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use projections::changes::{Change, CHANNEL};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// What a cached answer was computed from, so a change notice can find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The one project the answer is about, or `None` for answers over every project.
    pub project: Option<Uuid>,
    /// The projections whose rows the answer reads.
    pub reads: &'static [&'static str],
    /// The route and its normalised parameters.
    pub query: String,
}

impl CacheKey {
    fn is_touched_by(&self, change: &Change) -> bool {
        self.reads.contains(&change.projection.as_str())
            && match (self.project, change.project_id) {
                (Some(mine), Some(changed)) => mine == changed,
                _ => true,
            }
    }
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// The longest a cached answer is served without a change notice.
    pub ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            max_entries: 10_000,
        }
    }
}

/// The analytics cache and the change signal, shared by every handler of a process.
#[derive(Clone)]
pub struct ReadCache {
    answers: moka::future::Cache<CacheKey, Bytes>,
    /// Bumped on every change notice for the live feed (and after a reconnect, when notices may be lost).
    feed: Arc<watch::Sender<u64>>,
    /// Bumped on every change notice for the other read models: an answer computed while it moved may have
    /// read rows from before the change and is not kept.
    generation: Arc<AtomicU64>,
    listening: Arc<OnceLock<()>>,
    /// A zero TTL turns caching off (every read goes to the database).
    enabled: bool,
    /// Ends the listener task when the process shuts down.
    shutdown: tokio_util::sync::CancellationToken,
}

impl ReadCache {
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            answers: moka::future::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.ttl)
                .support_invalidation_closures()
                .build(),
            feed: Arc::new(watch::channel(0).0),
            generation: Arc::new(AtomicU64::new(0)),
            listening: Arc::new(OnceLock::new()),
            enabled: !settings.ttl.is_zero(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Stop listening when `token` is cancelled.
    pub fn with_shutdown(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The cached answer for `key`, or the one `compute` gives (computed once for concurrent callers).
    pub async fn get_or_compute<F, E>(
        &self,
        pool: &PgPool,
        key: CacheKey,
        compute: F,
    ) -> Result<Bytes, E>
    where
        F: std::future::Future<Output = Result<Bytes, E>>,
        E: Clone + Send + Sync + 'static,
    {
        self.listen(pool);
        if !self.enabled {
            return compute.await;
        }
        let hit = self.answers.contains_key(&key);
        metrics::counter!("herald_cache_requests_total", "cache" => "analytics", "result" => if hit { "hit" } else { "miss" })
            .increment(1);
        // A change that commits while the answer is computed invalidates nothing yet (the answer is not in the
        // cache), and the answer may have read the rows from before it: such an answer is served to the callers
        // that waited for it, but not kept. (Found by a test that saw the overview stay green for the TTL.)
        let started = self.generation.load(Ordering::SeqCst);
        let answer = self
            .answers
            .try_get_with(key.clone(), compute)
            .await
            .map_err(|e: Arc<E>| (*e).clone())?;
        if self.generation.load(Ordering::SeqCst) != started {
            self.answers.invalidate(&key).await;
        }
        Ok(answer)
    }

    /// A receiver that sees a new value whenever the live feed may have grown.
    pub fn feed_changes(&self, pool: &PgPool) -> watch::Receiver<u64> {
        self.listen(pool);
        self.feed.subscribe()
    }

    fn apply(&self, change: &Change) {
        let change = change.clone();
        if change.projection == "live_feed" {
            self.feed.send_modify(|n| *n = n.wrapping_add(1));
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        // The closure runs against every entry lazily; it is cheap (a slice lookup and a comparison).
        let _ = self
            .answers
            .invalidate_entries_if(move |key, _| key.is_touched_by(&change));
    }

    fn forget_everything(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.answers.invalidate_all();
        self.feed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Start the listener task, once per process (per cache).
    fn listen(&self, pool: &PgPool) {
        if self.listening.set(()).is_err() {
            return;
        }
        let cache = self.clone();
        let pool = pool.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cache.run_listener(pool) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    async fn run_listener(self, pool: PgPool) {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for read-model changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for read-model changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Whatever changed while nobody listened is unknown: start from nothing cached.
            self.forget_everything();
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => match Change::parse(notice.payload()) {
                        Some(change) => self.apply(&change),
                        None => self.forget_everything(),
                    },
                    // The connection dropped; the next call reconnects, and notices in between are lost.
                    Ok(None) => self.forget_everything(),
                    Err(e) => {
                        tracing::warn!(error = %e, "read-model change listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
