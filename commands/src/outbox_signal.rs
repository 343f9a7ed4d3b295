//! Wakes the relays after events were committed: `pg_notify('herald_outbox')`, sent outside the events'
//! transaction and once per burst.
//!
//! The notice used to be sent by the outbox trigger inside each append. Postgres serializes the commits of
//! transactions that notify (a database-wide lock, held until the commit is flushed), so every append waited for
//! every other append's WAL flush, and commits could not share a flush. Here a commit only raises a flag; a task
//! sends the notice, and commits that land while it is under way are covered by one more. The notice is a hint:
//! a lost one (a crash between commit and notice) costs the relay's poll interval, never an event, because the
//! outbox row was written in the events' own transaction.
//!
//! Where the leading relay runs in the committer's own process (`herald run`), the commit wakes it directly
//! ([`LocalRelay`]) and no notice goes through Postgres: four `pg_notify` statements and as many hops through
//! the relay's listening connection per build end to end. Only the leader reads the outbox, so no other
//! process needs the notice; commits in other processes still send theirs, and the leader listens for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};

/// The channel the relays listen on.
pub const CHANNEL: &str = "herald_outbox";

/// The relay of this process, while it leads: woken by this process's commits without a round trip.
///
/// If its leadership ends without it noticing (its connection was cut), another process's relay leads and
/// gets no notice for this process's commits until this one's next statement fails: it finds them by its
/// poll interval instead, never loses them.
#[derive(Debug, Default)]
pub struct LocalRelay {
    leading: AtomicBool,
    wake: Notify,
}

impl LocalRelay {
    /// Whether this process's relay leads; while it does, this process's commits wake it through
    /// [`Self::woken`] and send no notice.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }

    /// Resolves after a commit in this process, or at once if one came while nobody waited.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn wake_if_leading(&self) -> bool {
        let leading = self.leading.load(Ordering::Acquire);
        if leading {
            self.wake.notify_one();
        }
        leading
    }
}

pub(crate) struct OutboxSignal {
    pool: PgPool,
    /// Capacity one: a raise while a notice is pending is already covered by it.
    pending: OnceLock<mpsc::Sender<()>>,
    local: Option<Arc<LocalRelay>>,
}

impl OutboxSignal {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            pending: OnceLock::new(),
            local: None,
        }
    }

    pub(crate) fn with_local(mut self, local: Arc<LocalRelay>) -> Self {
        self.local = Some(local);
        self
    }

    /// Events were committed: wake this process's leading relay, or make sure a notice follows. The notice task
    /// starts on first use (inside the runtime) and ends when the signal is dropped.
    pub(crate) fn raise(&self) {
        if self.local.as_ref().is_some_and(|l| l.wake_if_leading()) {
            return;
        }
        let pending = self.pending.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(1);
            tokio::spawn(send_notices(self.pool.clone(), receiver));
            sender
        });
        let _ = pending.try_send(());
    }
}

async fn send_notices(pool: PgPool, mut pending: mpsc::Receiver<()>) {
    while pending.recv().await.is_some() {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "could not wake the relay; it polls");
        }
    }
}
