//! The analytics cache refreshes an answer ahead of its TTL: readers past the refresh point get the cached
//! answer at once while one background task computes the next, and a change notice still wins over a refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::read_cache::{CacheKey, CacheSettings, ReadCache};
use axum::body::Bytes;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{drop_database, fresh_database, url_of, wait_until};

/// Long enough that the steps below fit between the refresh point (at most 0.9 of it) and the TTL.
const TTL: Duration = Duration::from_secs(6);

fn key(project: Uuid) -> CacheKey {
    CacheKey {
        project: Some(project),
        reads: &["build_runs"],
        query: "statistics?".to_owned(),
    }
}

/// What the cache answers for `key`, and whether it had to run the computation to answer.
async fn read(cache: &ReadCache, pool: &PgPool, key: CacheKey, computed: &str) -> (String, bool) {
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let computed = computed.to_owned();
    let answer = cache
        .get_or_compute(pool, key, async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(Bytes::from(computed))
        })
        .await
        .expect("the computation does not fail");
    let text = String::from_utf8(answer.to_vec()).expect("the answers are text");
    (text, ran.load(Ordering::SeqCst) > 0)
}

/// A computation that waits for the test to release it, so a refresh can be held in flight.
fn held(
    answer: &str,
) -> (
    oneshot::Sender<()>,
    impl std::future::Future<Output = Result<Bytes, String>>,
) {
    let (release, released) = oneshot::channel::<()>();
    let answer = Bytes::from(answer.to_owned());
    (release, async move {
        let _ = released.await;
        Ok(answer)
    })
}

/// Past every refresh point (0.5 to 0.9 of the TTL after `cached_at`) and before the TTL, read `project`'s
/// answer with a refresh that computes `computed` once released: the reader gets `served` without waiting.
async fn refresh_held(
    cache: &ReadCache,
    pool: &PgPool,
    project: Uuid,
    cached_at: Instant,
    computed: &str,
    served: &str,
) -> oneshot::Sender<()> {
    tokio::time::sleep_until((cached_at + TTL.mul_f64(0.92)).into()).await;
    let (release, refresh) = held(computed);
    let answer = cache
        .get_or_compute(pool, key(project), refresh)
        .await
        .expect("cached");
    assert_eq!(
        answer, served,
        "the reader past the refresh point does not wait for it"
    );
    release
}

async fn notify(pool: &PgPool, project: Uuid) {
    sqlx::query("SELECT pg_notify('herald_read_models', $1)")
        .bind(format!("build_runs:{project}"))
        .execute(pool)
        .await
        .expect("notify");
}

/// A cache whose change listener is known to be up (it forgets everything when it connects, which would
/// otherwise race the test's first answer).
async fn listening_cache(pool: &PgPool) -> ReadCache {
    let cache = ReadCache::new(&CacheSettings {
        ttl: TTL,
        max_entries: 100,
    });
    let probe = Uuid::new_v4();
    read(&cache, pool, key(probe), "probe").await;
    wait_until(
        "the cache listens for change notices",
        Duration::from_secs(10),
        || {
            let cache = cache.clone();
            async move {
                notify(pool, probe).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                read(&cache, pool, key(probe), "probe").await.1
            }
        },
    )
    .await;
    cache
}

async fn scratch_pool() -> (String, PgPool) {
    let database = fresh_database().await;
    let pool = PgPool::connect(&url_of(&database)).await.expect("connect");
    (database, pool)
}

#[tokio::test]
async fn an_answer_past_its_refresh_point_is_served_at_once_and_replaced_in_the_background() {
    let (database, pool) = scratch_pool().await;
    let cache = listening_cache(&pool).await;
    let project = Uuid::new_v4();

    let cached_at = Instant::now();
    assert_eq!(
        read(&cache, &pool, key(project), "one").await,
        ("one".to_owned(), true)
    );
    assert_eq!(
        read(&cache, &pool, key(project), "unused").await,
        ("one".to_owned(), false)
    );

    let release = refresh_held(&cache, &pool, project, cached_at, "two", "one").await;
    // One refresh at a time: a second reader neither waits nor starts another.
    assert_eq!(
        read(&cache, &pool, key(project), "three").await,
        ("one".to_owned(), false)
    );

    release.send(()).expect("the refresh is waiting");
    wait_until("the refreshed answer is served", Duration::from_secs(5), || {
        let (cache, pool) = (cache.clone(), pool.clone());
        async move { read(&cache, &pool, key(project), "unused").await == ("two".to_owned(), false) }
    })
    .await;
    // The refreshed answer has a TTL of its own: it outlives the first answer's.
    tokio::time::sleep_until((cached_at + TTL + Duration::from_millis(500)).into()).await;
    assert_eq!(
        read(&cache, &pool, key(project), "unused").await,
        ("two".to_owned(), false)
    );

    pool.close().await;
    drop_database(&database).await;
}

#[tokio::test]
async fn a_change_notice_during_a_refresh_keeps_the_refreshed_answer_out() {
    let (database, pool) = scratch_pool().await;
    let cache = listening_cache(&pool).await;
    let project = Uuid::new_v4();

    let cached_at = Instant::now();
    assert_eq!(
        read(&cache, &pool, key(project), "before").await,
        ("before".to_owned(), true)
    );
    let release = refresh_held(
        &cache,
        &pool,
        project,
        cached_at,
        "read before the change",
        "before",
    )
    .await;

    // The rows change while the refresh is computing: the cached answer goes at once ...
    notify(&pool, project).await;
    wait_until("the change notice drops the answer", Duration::from_secs(5), || {
        let (cache, pool) = (cache.clone(), pool.clone());
        async move { read(&cache, &pool, key(project), "after").await == ("after".to_owned(), true) }
    })
    .await;
    // ... and the refresh that may have read the old rows is not kept when it ends.
    release.send(()).expect("the refresh is waiting");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read(&cache, &pool, key(project), "unused").await,
        ("after".to_owned(), false)
    );

    pool.close().await;
    drop_database(&database).await;
}

#[tokio::test]
async fn a_change_notice_about_another_project_keeps_the_refresh() {
    let (database, pool) = scratch_pool().await;
    let cache = listening_cache(&pool).await;
    let (project, other) = (Uuid::new_v4(), Uuid::new_v4());

    let cached_at = Instant::now();
    assert_eq!(
        read(&cache, &pool, key(project), "one").await,
        ("one".to_owned(), true)
    );
    assert_eq!(
        read(&cache, &pool, key(other), "other").await,
        ("other".to_owned(), true)
    );
    let release = refresh_held(&cache, &pool, project, cached_at, "two", "one").await;
    // Another project's rows change while the refresh computes: its answer goes, this one's refresh stays.
    notify(&pool, other).await;
    wait_until(
        "the other project's answer is dropped",
        Duration::from_secs(5),
        || {
            let (cache, pool) = (cache.clone(), pool.clone());
            async move { read(&cache, &pool, key(other), "changed").await.1 }
        },
    )
    .await;
    release.send(()).expect("the refresh is waiting");
    wait_until("the refreshed answer is served", Duration::from_secs(5), || {
        let (cache, pool) = (cache.clone(), pool.clone());
        async move { read(&cache, &pool, key(project), "unused").await == ("two".to_owned(), false) }
    })
    .await;

    pool.close().await;
    drop_database(&database).await;
}

/// An answer computed on a miss is kept unless its own rows changed meanwhile: under steady writes there is always
/// a notice about some other project, and answers were once dropped for those too, so that a busy Herald's
/// dashboard hardly cached at all.
#[tokio::test]
async fn a_miss_computed_while_another_project_changes_is_kept_and_one_its_own_project_changed_is_not(
) {
    let (database, pool) = scratch_pool().await;
    let cache = listening_cache(&pool).await;
    // Another answer over the changed project's rows: when it is dropped, the notice has been handled.
    let probe = |project| CacheKey {
        query: "overview?".to_owned(),
        ..key(project)
    };
    let (first, other, second) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    for (reader, changed, kept) in [(first, other, true), (second, second, false)] {
        read(&cache, &pool, probe(changed), "probe").await;
        let (release, compute) = held("computed");
        let reading = tokio::spawn({
            let (cache, pool) = (cache.clone(), pool.clone());
            async move { cache.get_or_compute(&pool, key(reader), compute).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        notify(&pool, changed).await;
        wait_until("the notice is handled", Duration::from_secs(5), || {
            let (cache, pool) = (cache.clone(), pool.clone());
            async move { read(&cache, &pool, probe(changed), "probe").await.1 }
        })
        .await;
        release.send(()).expect("the computation is waiting");
        let answer = reading.await.expect("no panic").expect("computed");
        assert_eq!(answer, "computed", "the waiting reader gets the answer");
        let expected = if kept {
            ("computed", false)
        } else {
            ("again", true)
        };
        assert_eq!(
            read(&cache, &pool, key(reader), "again").await,
            (expected.0.to_owned(), expected.1),
            "kept after a notice about another project, dropped after one about its own"
        );
    }

    pool.close().await;
    drop_database(&database).await;
}
