//! Wakes the relays after events were committed: `pg_notify('herald_outbox')`, sent outside the events'
//! transaction and once per burst.
//!
//! The notice used to be sent by the outbox trigger inside each append. Postgres serializes the commits of
//! transactions that notify (a database-wide lock, held until the commit is flushed), so every append waited for
//! every other append's WAL flush, and commits could not share a flush. Here a commit only raises a flag; a task
//! sends the notice, and commits that land while it is under way are covered by one more. The notice is a hint:
//! a lost one (a crash between commit and notice) costs the relay's poll interval, never an event, because the
//! outbox row was written in the events' own transaction.

use std::sync::OnceLock;

use sqlx::PgPool;
use tokio::sync::mpsc;

/// The channel the relays listen on.
pub const CHANNEL: &str = "herald_outbox";

pub(crate) struct OutboxSignal {
    pool: PgPool,
    /// Capacity one: a raise while a notice is pending is already covered by it.
    pending: OnceLock<mpsc::Sender<()>>,
}

impl OutboxSignal {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            pending: OnceLock::new(),
        }
    }

    /// Events were committed: make sure a notice follows. The task starts on first use (inside the runtime) and
    /// ends when the signal is dropped.
    pub(crate) fn raise(&self) {
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
