//! Running the bot: fetch updates (long polling) or take them from the webhook, store them in the inbox, and
//! handle what is pending, in order.

use std::sync::Arc;
use std::time::Duration;

use commands::telegram_inbox::TelegramInbox;
use tokio_util::sync::CancellationToken;

use super::handler::Bot;
use crate::telegram::TelegramClient;

/// How updates reach Herald.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotMode {
    /// `getUpdates` long polling: no public URL needed.
    Polling,
    /// Telegram posts to `/api/v1/telegram/webhook`; the API stores, this loop handles.
    Webhook { url: String, secret: String },
}

pub struct BotRunner {
    bot: Bot,
    telegram: Arc<TelegramClient>,
    inbox: TelegramInbox,
    mode: BotMode,
    /// How long one `getUpdates` waits for an update.
    pub long_poll: Duration,
}

impl BotRunner {
    pub fn new(
        bot: Bot,
        telegram: Arc<TelegramClient>,
        inbox: TelegramInbox,
        mode: BotMode,
    ) -> Self {
        Self {
            bot,
            telegram,
            inbox,
            mode,
            long_poll: Duration::from_secs(25),
        }
    }

    /// Handle every stored, unhandled update, oldest first; returns how many.
    pub async fn handle_pending(&self) -> Result<usize, commands::telegram_inbox::InboxError> {
        let mut handled = 0;
        loop {
            let pending = self.inbox.pending(50).await?;
            if pending.is_empty() {
                return Ok(handled);
            }
            for (update_id, update) in pending {
                if let Err(e) = self.bot.handle(&update).await {
                    // Left pending: the next turn tries it again (the commands are idempotent).
                    tracing::warn!(update_id, error = %e, "bot update failed; will retry");
                    return Ok(handled);
                }
                self.inbox.mark_handled(update_id).await?;
                handled += 1;
            }
        }
    }

    /// One long poll: fetch what Telegram has past the stored offset and store it. Telegram forgets only
    /// what the *next* call's offset acknowledges, which is computed from the inbox.
    pub async fn poll_once(&self) -> Result<usize, String> {
        let offset = self.inbox.next_offset().await.map_err(|e| e.to_string())?;
        let updates = self
            .telegram
            .get_updates(offset, self.long_poll)
            .await
            .map_err(|e| e.description)?;
        self.inbox.store(&updates).await.map_err(|e| e.to_string())
    }

    /// Register with Telegram: remove a webhook before polling, or set ours.
    pub async fn register(&self) -> Result<(), String> {
        match &self.mode {
            BotMode::Polling => self.telegram.delete_webhook().await,
            BotMode::Webhook { url, secret } => self.telegram.set_webhook(url, secret).await,
        }
        .map_err(|e| e.description)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        while let Err(e) = self.register().await {
            tracing::warn!(error = %e, "cannot register the bot with Telegram; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
        tracing::info!(mode = ?std::mem::discriminant(&self.mode), "bot running");
        let mut turns: u64 = 0;
        loop {
            if let Err(e) = self.handle_pending().await {
                tracing::warn!(error = %e, "bot inbox failed");
            }
            turns += 1;
            if turns.is_multiple_of(1000) {
                let _ = self.inbox.prune().await;
            }
            let fetched = match self.mode {
                BotMode::Polling => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.poll_once() => r,
                },
                // The API fills the inbox; look again shortly.
                BotMode::Webhook { .. } => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => Ok(0),
                },
            };
            if let Err(e) = fetched {
                tracing::warn!(error = %e, "getUpdates failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}
