//! One attempt at one notification, through the provider of its channel: what is sent, and how each
//! provider's answer is read (accepted with a message id, or refused, and whether the address is gone).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use commands::Commands;
use domain::{Channel, ChannelKind, Notification, SendFailure, Settled};
use tokio::sync::OnceCell;

use crate::email::{Mailer, OutgoingEmail};
use crate::push::{FcmClient, PushMessage, PushRefusal, WebPushClient, WebPushTarget};
use crate::rate_limit::TelegramLimiter;
use crate::telegram::{
    split_message, ChatTarget, InlineButton, TelegramClient, MAX_MESSAGE_UNITS, MAX_PARTS,
};

/// The provider took the message.
pub(super) struct Sent {
    /// Telegram: the message ids (comma-separated when a long text took several); email: the Message-ID; FCM:
    /// the message name; Web Push: the push service's message URL.
    pub message_id: Option<String>,
}

/// The provider did not take the message.
pub(super) struct Refusal {
    pub failure: SendFailure,
    /// The address no longer exists: the contacts reaching it are disabled.
    pub contact_gone: bool,
}

impl From<SendFailure> for Refusal {
    fn from(failure: SendFailure) -> Self {
        Self {
            failure,
            contact_gone: false,
        }
    }
}

impl From<PushRefusal> for Refusal {
    fn from(refusal: PushRefusal) -> Self {
        Self {
            failure: refusal.failure,
            contact_gone: refusal.token_gone,
        }
    }
}

/// How long a push service keeps a notification for a device that is offline: a build verdict older than a
/// day is no longer news.
const PUSH_TTL: Duration = Duration::from_secs(24 * 3600);

/// The providers this process can send through; a channel without one is dead-lettered (and redriven once it
/// is configured).
#[derive(Default)]
pub struct Providers {
    pub telegram: Option<TelegramClient>,
    pub email: Option<Mailer>,
    pub fcm: Option<FcmClient>,
    pub web_push: Option<WebPushClient>,
    /// Herald's public URL, for one-click unsubscribe links in emails.
    pub public_url: Option<String>,
    unsubscribe_key: OnceCell<[u8; 32]>,
    /// Telegram's limits, taken right before each call so that the spacing holds where Telegram counts it.
    pub(super) limiter: Option<TelegramLimiter>,
}

impl Providers {
    pub fn new(public_url: Option<String>) -> Self {
        Self {
            public_url,
            ..Self::default()
        }
    }

    pub fn has(&self, kind: ChannelKind) -> bool {
        match kind {
            ChannelKind::Telegram => self.telegram.is_some(),
            ChannelKind::Email => self.email.is_some(),
            ChannelKind::Fcm => self.fcm.is_some(),
            ChannelKind::WebPush => self.web_push.is_some(),
        }
    }

    /// Take a slot for one message to `chat_id`, or say how long until there is one.
    pub(super) fn chat_slot(&self, chat_id: i64) -> Result<(), Duration> {
        self.limiter
            .as_ref()
            .map_or(Ok(()), |l| l.chat_slot(chat_id))
    }

    pub(super) fn shrink_limits(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.shrink();
        }
    }

    pub(super) async fn send(
        &self,
        commands: &Arc<Commands>,
        notification: &Notification,
        channel: &Channel,
    ) -> Result<Sent, Refusal> {
        let key = notification
            .notification_id
            .unwrap_or_default()
            .simple()
            .to_string();
        match channel {
            Channel::Telegram { chat_id, topic_id } => {
                let Some(telegram) = &self.telegram else {
                    return Err(missing(ChannelKind::Telegram));
                };
                let target = ChatTarget {
                    chat_id: chat_id.get(),
                    topic_id: *topic_id,
                };
                self.telegram(telegram, commands, notification, target)
                    .await
            }
            Channel::Email { address } => {
                let Some(mailer) = &self.email else {
                    return Err(missing(ChannelKind::Email));
                };
                let email = OutgoingEmail {
                    to: address.clone(),
                    subject: notification
                        .details
                        .subject
                        .clone()
                        .unwrap_or_else(|| first_line(&notification.text)),
                    text: notification.text.clone(),
                    html: notification.details.html.clone(),
                    list_unsubscribe: self.unsubscribe_url(commands, notification).await,
                };
                let message_id = mailer.send_as(&email, &key).await?;
                Ok(Sent {
                    message_id: Some(message_id),
                })
            }
            Channel::Fcm { token } => {
                let Some(fcm) = &self.fcm else {
                    return Err(missing(ChannelKind::Fcm));
                };
                let name = fcm.send(token, &push_message(notification, key)).await?;
                Ok(Sent {
                    message_id: Some(name),
                })
            }
            Channel::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                let Some(web_push) = &self.web_push else {
                    return Err(missing(ChannelKind::WebPush));
                };
                let target = WebPushTarget {
                    endpoint: endpoint.clone(),
                    p256dh: p256dh.clone(),
                    auth: auth.clone(),
                };
                let location = web_push
                    .send(&target, &push_message(notification, key))
                    .await?;
                Ok(Sent {
                    message_id: location,
                })
            }
        }
    }

    /// Telegram: edit the message this one replaces when there is one to edit, otherwise send (cut into
    /// several messages when the text is long).
    async fn telegram(
        &self,
        telegram: &TelegramClient,
        commands: &Arc<Commands>,
        notification: &Notification,
        target: ChatTarget,
    ) -> Result<Sent, Refusal> {
        let buttons: Vec<InlineButton> = notification
            .buttons
            .iter()
            .map(|b| InlineButton {
                text: b.text.clone(),
                callback_data: b.data.clone(),
            })
            .collect();
        if let Some(message_id) = self.message_to_edit(commands, notification, target).await {
            if let Some(limiter) = &self.limiter {
                limiter.overall_slot().await;
            }
            match telegram
                .edit_message_text(target.chat_id, message_id, &notification.text, &buttons)
                .await
            {
                Ok(()) => {
                    return Ok(Sent {
                        message_id: Some(message_id.to_string()),
                    })
                }
                // Deleted, too old to edit, or otherwise refused: the news goes out as a new message.
                Err(f) if f.code == Some(400) => {
                    tracing::info!(error = %f.description, "cannot edit the earlier message; sending a new one");
                }
                Err(f) => return Err(telegram_refusal(f)),
            }
        }
        let parts = split_message(&notification.text, MAX_MESSAGE_UNITS, MAX_PARTS);
        let last = parts.len().saturating_sub(1);
        let mut ids = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if let Some(limiter) = &self.limiter {
                // The chat's slot for the first part was taken when the notification was claimed.
                if i > 0 {
                    while let Err(wait) = limiter.chat_slot(target.chat_id) {
                        tokio::time::sleep(wait).await;
                    }
                }
                limiter.overall_slot().await;
            }
            let part_buttons = if i == last { buttons.as_slice() } else { &[] };
            ids.push(
                telegram
                    .send(target, part, part_buttons)
                    .await
                    .map_err(telegram_refusal)?,
            );
        }
        Ok(Sent {
            message_id: Some(ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        })
    }

    /// The Telegram message id of the notification this one replaces, when that was delivered as one message
    /// to the same chat and the new text fits in one message.
    async fn message_to_edit(
        &self,
        commands: &Arc<Commands>,
        notification: &Notification,
        target: ChatTarget,
    ) -> Option<i64> {
        let replaced_id = notification.details.replaces?;
        if notification.text.encode_utf16().count() > MAX_MESSAGE_UNITS {
            return None;
        }
        let replaced = commands
            .notifications()
            .load(&replaced_id.to_string())
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot load the notification to edit"))
            .ok()?;
        let same_chat = matches!(
            replaced.channel,
            Some(Channel::Telegram { chat_id, .. }) if chat_id.get() == target.chat_id
        );
        if replaced.settled != Some(Settled::Delivered) || !same_chat {
            return None;
        }
        replaced.provider_message_id?.parse().ok()
    }

    /// The one-click unsubscribe link of the notification's subscription (none without a public URL, or for a
    /// message that belongs to no subscription).
    async fn unsubscribe_url(
        &self,
        commands: &Arc<Commands>,
        notification: &Notification,
    ) -> Option<String> {
        let public_url = self.public_url.as_deref()?;
        let subscription_id = notification.subscription_id.filter(|id| !id.is_nil())?;
        let key = self
            .unsubscribe_key
            .get_or_try_init(|| commands::unsubscribe::signing_key(commands.pool()))
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot load the unsubscribe signing key"))
            .ok()?;
        let token = commands::unsubscribe::token(key, subscription_id);
        Some(commands::unsubscribe::unsubscribe_url(public_url, &token))
    }
}

/// Telegram's 403 means the bot was blocked, kicked or the user is gone: the chat is unreachable for good.
fn telegram_refusal(failure: SendFailure) -> Refusal {
    Refusal {
        contact_gone: failure.code == Some(403),
        failure,
    }
}

fn missing(kind: ChannelKind) -> Refusal {
    Refusal::from(SendFailure {
        code: None,
        description: format!("no {} provider is configured", kind.as_str()),
        retryable: false,
        retry_after_secs: None,
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("Herald")
        .chars()
        .take(200)
        .collect()
}

fn push_message(notification: &Notification, collapse_key: String) -> PushMessage {
    let mut data = BTreeMap::new();
    if let Some(id) = notification.notification_id {
        data.insert("notification_id".to_owned(), id.to_string());
    }
    if let Some(id) = notification.project_id {
        data.insert("project_id".to_owned(), id.to_string());
    }
    if !notification.build_run_id.is_empty() {
        data.insert("build_run_id".to_owned(), notification.build_run_id.clone());
    }
    PushMessage {
        title: notification
            .details
            .subject
            .clone()
            .unwrap_or_else(|| first_line(&notification.text)),
        body: notification.text.clone(),
        link: notification.details.link.clone(),
        data,
        collapse_key,
        ttl: PUSH_TTL,
    }
}
