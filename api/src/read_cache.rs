//! The cache in front of the analytics queries, and the listener that keeps it honest.
//!
//! Answers are cached as serialized JSON for a bounded TTL. Projections announce changed rows with
//! `pg_notify` on commit ([`projections::changes`]); one listener task per process drops the cached answers over
//! those rows and wakes the live-update streams. So a reader sees a stale answer for at most the projection lag
//! (the rows are not changed yet) plus the time the notice takes; the TTL only bounds the case of a notice
//! lost with a dropped connection, after which the listener drops everything anyway.
//!
//! An answer computed while a change notice touching it arrives may have read the rows from before the change, so
//! it is served to the callers that waited for it but not kept. Each computation in flight (a miss or a refresh)
//! is watched by key for that: a notice about another project or another read model leaves it be. (A single
//! counter of notices did that job for misses until 2026-12-07; under steady writes to any project it moved during
//! nearly every computation, so answers computed on a miss were rarely kept.)
//!
//! An answer is refreshed ahead of its TTL: a request for an answer older than half the TTL is served the
//! cached answer while one background task computes the next. Without it, every answer computed in the same
//! second (a dashboard's first load of all its projects) expired in the same second too, and every reader of
//! that second waited for a recomputation: `herald bench analytics` measured the statistics p99 at 115 ms
//! over an expiry against 2.3 ms without one. The refresh point is spread over the second half of the TTL so
//! that answers computed together are not recomputed together either. A change notice still drops an answer at
//! once; refresh-ahead only replaces answers that nothing has changed.
//!
//! The listener starts on first use, so every `AppState` (tests included) gets one without wiring.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// A cached answer and when it is due for a refresh.
#[derive(Clone)]
struct Answer {
    bytes: Bytes,
    refresh_at: Instant,
}

/// A key being refreshed in the background; dropping it (the task ended, or panicked) lets the key be
/// refreshed again.
struct Refreshing {
    cache: ReadCache,
    key: CacheKey,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        lock(&self.cache.refreshing).remove(&self.key);
    }
}

/// A computation in flight for a key, told of every change notice touching that key until it is dropped.
struct Watch {
    cache: ReadCache,
    id: u64,
    touched: Arc<AtomicBool>,
}

impl Watch {
    /// Whether a change notice touched the key since the watch began.
    fn touched(&self) -> bool {
        self.touched.load(Ordering::SeqCst)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        lock(&self.cache.watched).remove(&self.id);
    }
}

/// A watched computation's key, and whether a change notice touched it since the computation began.
type Watched = (CacheKey, Arc<AtomicBool>);

/// The maps hold keys and flags only; one left by a panicked holder is still a valid map.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The analytics cache and the change signal, shared by every handler of a process.
#[derive(Clone)]
pub struct ReadCache {
    answers: moka::future::Cache<CacheKey, Answer>,
    ttl: Duration,
    /// The keys whose next answer a background task is computing (one task per key).
    refreshing: Arc<Mutex<HashSet<CacheKey>>>,
    /// Every computation in flight, by id: its key, and whether a change notice touched the key since it began.
    watched: Arc<Mutex<HashMap<u64, Watched>>>,
    next_watch: Arc<AtomicU64>,
    /// Bumped on every change notice for the live feed (and after a reconnect, when notices may be lost).
    feed: Arc<watch::Sender<u64>>,
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
            ttl: settings.ttl,
            refreshing: Arc::default(),
            watched: Arc::default(),
            next_watch: Arc::default(),
            feed: Arc::new(watch::channel(0).0),
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
    ///
    /// A cached answer past its refresh point is returned as it is, and `compute` runs in the background to
    /// replace it (see the module's docs); `compute` is dropped unpolled when the answer is fresh.
    pub async fn get_or_compute<F, E>(
        &self,
        pool: &PgPool,
        key: CacheKey,
        compute: F,
    ) -> Result<Bytes, E>
    where
        F: std::future::Future<Output = Result<Bytes, E>> + Send + 'static,
        E: Clone + std::fmt::Display + Send + Sync + 'static,
    {
        self.listen(pool);
        if !self.enabled {
            return compute.await;
        }
        let cached = self.answers.get(&key).await;
        metrics::counter!("herald_cache_requests_total", "cache" => "analytics",
            "result" => if cached.is_some() { "hit" } else { "miss" })
        .increment(1);
        if let Some(answer) = cached {
            if Instant::now() >= answer.refresh_at {
                self.refresh(key, compute);
            }
            return Ok(answer.bytes);
        }
        // A change that commits while the answer is computed invalidates nothing yet (the answer is not in the
        // cache), and the answer may have read the rows from before it: such an answer is served to the callers
        // that waited for it, but not kept. (Found by a test that saw the overview stay green for the TTL.)
        let watch = self.watch(&key);
        let this = self.clone();
        let answer = self
            .answers
            .try_get_with(key.clone(), async move {
                compute.await.map(|bytes| this.answer(bytes))
            })
            .await
            .map_err(|e: Arc<E>| (*e).clone())?;
        if watch.touched() {
            self.answers.invalidate(&key).await;
        }
        Ok(answer.bytes)
    }

    /// An answer computed now, due for a refresh at a random point of the second half of the TTL.
    fn answer(&self, bytes: Bytes) -> Answer {
        let half = self.ttl / 2;
        let spread = half.mul_f64(rand::random::<f64>() * 0.8);
        Answer {
            bytes,
            refresh_at: Instant::now() + half + spread,
        }
    }

    /// Compute the next answer for `key` in the background, unless a task is at it already. The answer is kept
    /// only if no change notice touching `key` arrived while it was computed (it may have read rows from before
    /// the change); otherwise the next request past the refresh point tries again. Notices about other
    /// projects or read models leave it be: under steady writes there is always one about something.
    fn refresh<F, E>(&self, key: CacheKey, compute: F)
    where
        F: std::future::Future<Output = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        if !lock(&self.refreshing).insert(key.clone()) {
            return;
        }
        let watch = self.watch(&key);
        let refreshing = Refreshing {
            cache: self.clone(),
            key,
        };
        tokio::spawn(async move {
            let Refreshing { cache, key } = &refreshing;
            let bytes = match compute.await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, query = %key.query, "refreshing a cached answer failed");
                    return;
                }
            };
            if watch.touched() {
                return;
            }
            // Checked again after it is kept, as on a miss: a notice between the check and the insert would
            // otherwise go unseen (an invalidation reaches only the entries already in the cache, and a notice
            // marks the watched computations before it invalidates).
            cache.answers.insert(key.clone(), cache.answer(bytes)).await;
            if watch.touched() {
                cache.answers.invalidate(key).await;
            }
        });
    }

    /// Watch `key` from now on for change notices.
    fn watch(&self, key: &CacheKey) -> Watch {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let touched = Arc::new(AtomicBool::new(false));
        lock(&self.watched).insert(id, (key.clone(), touched.clone()));
        Watch {
            cache: self.clone(),
            id,
            touched,
        }
    }

    /// Mark the computations in flight whose key `change` touches (every one for `None`).
    fn touch_watched(&self, change: Option<&Change>) {
        for (key, touched) in lock(&self.watched).values() {
            if change.is_none_or(|change| key.is_touched_by(change)) {
                touched.store(true, Ordering::SeqCst);
            }
        }
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
        self.touch_watched(Some(&change));
        // The closure runs against every entry lazily; it is cheap (a slice lookup and a comparison).
        let _ = self
            .answers
            .invalidate_entries_if(move |key, _| key.is_touched_by(&change));
    }

    fn forget_everything(&self) {
        self.touch_watched(None);
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
