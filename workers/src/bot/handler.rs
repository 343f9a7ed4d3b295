//! One Telegram update in, one command carried out, one answer out.
//!
//! A command acts on the chat it was sent from and nothing else: that is the whole permission model for
//! private chats (a user cannot reach someone else's chat from their own), and in groups the sender must be a
//! chat administrator to change anything. Every state change goes through the same commands as the API, with
//! ids and times derived from the update (contact id from the chat, mute start from the message date), so an
//! update handled twice after a crash records nothing new.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use commands::{CommandError, Commands, FilterInput, Metadata};
use domain::{
    ChatId, ChatKind, Language, OutcomeFilter, SubscriberError, SubscriptionError,
    SubscriptionTarget,
};
use projections::queries::{self, Page, SubscriptionQuery};
use serde_json::Value;
use uuid::Uuid;

use super::command::{self, BotCommand, ParseError};
use super::i18n::{Answer, ListItem, StatusLine};
use crate::telegram::{ChatTarget, TelegramClient};

/// What `/subscribe <project>` listens to when no outcomes are given: what people act on.
const DEFAULT_OUTCOMES: [OutcomeFilter; 2] = [OutcomeFilter::Failed, OutcomeFilter::Fixed];

/// Namespace of contact ids derived from a chat (and topic).
const CONTACT_NAMESPACE: Uuid = Uuid::from_u128(0x6865_7261_6c64_436f_6e74_6163_7443_6861);

pub struct Bot {
    commands: Arc<Commands>,
    telegram: Arc<TelegramClient>,
    username: Option<String>,
}

/// The parts of an update the bot uses.
#[derive(Debug, Clone)]
pub struct Incoming {
    chat_id: ChatId,
    chat_kind: ChatKind,
    topic_id: Option<i64>,
    user_id: Option<i64>,
    language: Option<Language>,
    at: DateTime<Utc>,
    input: Input,
}

#[derive(Debug, Clone)]
enum Input {
    Text(String),
    Button { query_id: String, data: String },
}

/// The linked contact of a chat, with what the answers need of its subscriber.
#[derive(Debug, Clone)]
struct Linked {
    subscriber_id: Uuid,
    contact_id: Uuid,
    name: String,
    language: Option<Language>,
}

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Bot {
    pub fn new(
        commands: Arc<Commands>,
        telegram: Arc<TelegramClient>,
        username: Option<String>,
    ) -> Self {
        Self {
            commands,
            telegram,
            username,
        }
    }

    /// The contact id a chat (or forum topic) gets when it is linked.
    pub fn contact_id(chat_id: i64, topic_id: Option<i64>) -> Uuid {
        let name = format!("telegram:{chat_id}/{}", topic_id.unwrap_or(0));
        Uuid::new_v5(&CONTACT_NAMESPACE, name.as_bytes())
    }

    /// Handle one update. Updates the bot has nothing to say to (other bots' commands, chatter in groups,
    /// kinds it did not ask for) are handled by doing nothing.
    pub async fn handle(&self, update: &Value) -> Result<(), BotError> {
        let Some((incoming, parsed)) = read_update(update, self.username.as_deref()) else {
            return Ok(());
        };
        let target = ChatTarget {
            chat_id: incoming.chat_id.get(),
            topic_id: incoming.topic_id,
        };
        if let Input::Button { query_id, .. } = &incoming.input {
            // Stops the button's spinner; failing to is cosmetic.
            if let Err(e) = self.telegram.answer_callback_query(query_id, "").await {
                tracing::debug!(error = %e.description, "answerCallbackQuery failed");
            }
        }
        let private = incoming.chat_kind == ChatKind::Private;
        let command = match parsed {
            Ok(command) => command,
            Err(ParseError::NotForThisBot) => return Ok(()),
            // Groups are full of messages that are not for the bot.
            Err(ParseError::NotACommand) if !private => return Ok(()),
            Err(error) => {
                let language = language(&incoming, None);
                return self.reply(target, &Answer::Error(&error), language).await;
            }
        };
        let linked = self.linked(&incoming).await?;
        let language = language(&incoming, linked.as_ref());
        let changes = !matches!(
            command,
            BotCommand::Help
                | BotCommand::List
                | BotCommand::Status { .. }
                | BotCommand::Start { code: None }
        );
        if changes && !private && !self.sender_is_admin(&incoming).await {
            return self.reply(target, &Answer::NotAllowed, language).await;
        }
        let metadata = Metadata::from([
            ("source".to_owned(), "telegram".to_owned()),
            ("action".to_owned(), command.name().to_owned()),
            (
                "telegram_chat".to_owned(),
                incoming.chat_id.get().to_string(),
            ),
        ]);
        tracing::info!(
            command = command.name(),
            chat = incoming.chat_id.get(),
            "bot command"
        );
        self.run(command, &incoming, linked, language, &metadata)
            .await
    }

    async fn run(
        &self,
        command: BotCommand,
        incoming: &Incoming,
        linked: Option<Linked>,
        language: Language,
        metadata: &Metadata,
    ) -> Result<(), BotError> {
        let target = ChatTarget {
            chat_id: incoming.chat_id.get(),
            topic_id: incoming.topic_id,
        };
        let reply = |answer: Answer<'_>| {
            let text = answer.render(language);
            async move { self.send(target, &text).await }
        };
        match command {
            BotCommand::Help => reply(Answer::Help).await,
            BotCommand::Start { code: None } => reply(Answer::Welcome).await,
            BotCommand::Start { code: Some(code) } => {
                // A chat belongs to one subscriber: a code for another one does not take it over.
                if let Some(current) = &linked {
                    if Commands::link_code_subscriber(&code) != Some(current.subscriber_id) {
                        return reply(Answer::Linked {
                            subscriber: &current.name,
                        })
                        .await;
                    }
                }
                let contact_id = Self::contact_id(incoming.chat_id.get(), incoming.topic_id);
                let chat = (incoming.chat_id, incoming.chat_kind, incoming.topic_id);
                match self
                    .commands
                    .link_telegram(&code, contact_id, chat, incoming.at, metadata)
                    .await
                {
                    Ok(done) => {
                        reply(Answer::Linked {
                            subscriber: &done.subscriber_name,
                        })
                        .await
                    }
                    // The same update again after a crash: the code is used up, by this very chat.
                    Err(CommandError::Subscriber(
                        SubscriberError::BadLinkCode | SubscriberError::DuplicateContact(_),
                    )) if linked.is_some() => {
                        let name = linked.map(|l| l.name).unwrap_or_default();
                        reply(Answer::Linked { subscriber: &name }).await
                    }
                    Err(CommandError::Subscriber(
                        SubscriberError::BadLinkCode | SubscriberError::DuplicateContact(_),
                    )) => reply(Answer::LinkCodeInvalid).await,
                    Err(e) => Err(e.into()),
                }
            }
            command => match linked {
                Some(linked) => {
                    self.run_linked(command, incoming, linked, language, metadata)
                        .await
                }
                None => reply(Answer::NotLinked).await,
            },
        }
    }

    /// The commands that need a linked chat.
    async fn run_linked(
        &self,
        command: BotCommand,
        incoming: &Incoming,
        linked: Linked,
        language: Language,
        metadata: &Metadata,
    ) -> Result<(), BotError> {
        let target = ChatTarget {
            chat_id: incoming.chat_id.get(),
            topic_id: incoming.topic_id,
        };
        let reply = |answer: Answer<'_>| {
            let text = answer.render(language);
            async move { self.send(target, &text).await }
        };
        match command {
            // Answered before a link is needed.
            BotCommand::Help | BotCommand::Start { .. } => Ok(()),
            BotCommand::Subscribe {
                project,
                branch,
                outcomes,
            } => {
                let Some((project_id, name)) = self.project(&project).await? else {
                    return reply(Answer::UnknownProject { project: &project }).await;
                };
                let outcomes = if outcomes.is_empty() {
                    DEFAULT_OUTCOMES.to_vec()
                } else {
                    outcomes
                };
                let input = FilterInput {
                    project_id: Some(project_id),
                    branches: branch.iter().cloned().collect(),
                    outcomes: Some(outcomes.iter().map(|o| o.as_str().to_owned()).collect()),
                    ..FilterInput::default()
                };
                let filter = match input.parse() {
                    Ok(filter) => filter,
                    Err(_) => {
                        let error = ParseError::BadOutcome(branch.unwrap_or_default());
                        return reply(Answer::Error(&error)).await;
                    }
                };
                let subscription = SubscriptionTarget::Contact {
                    subscriber_id: linked.subscriber_id,
                    contact_id: linked.contact_id,
                };
                match self
                    .commands
                    .subscribe(subscription, filter, metadata)
                    .await
                {
                    Ok(_) => {
                        reply(Answer::Subscribed {
                            project: &name,
                            branch: branch.as_deref(),
                            outcomes: &outcomes,
                        })
                        .await
                    }
                    Err(CommandError::Subscription(SubscriptionError::AlreadyExists)) => {
                        reply(Answer::AlreadySubscribed { project: &name }).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            BotCommand::Unsubscribe { project: None } => reply(Answer::UnsubscribeWhich).await,
            BotCommand::Unsubscribe {
                project: Some(project),
            } => {
                let Some((project_id, name)) = self.project(&project).await? else {
                    return reply(Answer::UnknownProject { project: &project }).await;
                };
                let mut count = 0;
                for s in self.subscriptions(&linked).await? {
                    if s.project_ids.contains(&project_id) {
                        self.commands
                            .unsubscribe(s.subscription_id, metadata)
                            .await?;
                        count += 1;
                    }
                }
                if count == 0 {
                    return reply(Answer::NotSubscribed { project: &name }).await;
                }
                reply(Answer::Unsubscribed {
                    project: &name,
                    count,
                })
                .await
            }
            BotCommand::List => {
                let mut items = Vec::new();
                for s in self.subscriptions(&linked).await? {
                    items.push(ListItem {
                        project: self.scope_name(&s).await?,
                        branches: s.branches.clone(),
                        outcomes: s.outcomes.iter().filter_map(|o| o.parse().ok()).collect(),
                    });
                }
                reply(Answer::List { items: &items }).await
            }
            BotCommand::Mute { duration } => {
                let until = duration.map(|d| incoming.at + d);
                self.commands
                    .mute(linked.subscriber_id, until, incoming.at, metadata)
                    .await?;
                reply(Answer::Muted { until }).await
            }
            BotCommand::Unmute => {
                self.commands.unmute(linked.subscriber_id, metadata).await?;
                reply(Answer::Unmuted).await
            }
            BotCommand::Status { project } => {
                let Some((project_id, name)) = self.project(&project).await? else {
                    return reply(Answer::UnknownProject { project: &project }).await;
                };
                let page = Page {
                    limit: 5,
                    offset: 0,
                };
                let builds: Vec<StatusLine> =
                    queries::builds(self.commands.pool(), project_id, page)
                        .await?
                        .into_iter()
                        .map(|b| StatusLine {
                            workflow: b.workflow,
                            branch: b.branch,
                            outcome: b.outcome,
                            url: b.url,
                            at: b.updated_at,
                        })
                        .collect();
                reply(Answer::Status {
                    project: &name,
                    builds: &builds,
                })
                .await
            }
        }
    }

    async fn reply(
        &self,
        target: ChatTarget,
        answer: &Answer<'_>,
        language: Language,
    ) -> Result<(), BotError> {
        self.send(target, &answer.render(language)).await
    }

    /// Send an answer. A failed answer is logged, not retried: the command itself has been carried out, and
    /// running it again to answer again is worse than a missing "done".
    async fn send(&self, target: ChatTarget, text: &str) -> Result<(), BotError> {
        if let Err(e) = self.telegram.send(target, text, &[]).await {
            tracing::warn!(chat = target.chat_id, code = ?e.code, error = %e.description, "bot answer not delivered");
        }
        Ok(())
    }

    /// The chat's linked contact and its subscriber's name and language, in one read.
    async fn linked(&self, incoming: &Incoming) -> Result<Option<Linked>, BotError> {
        let row: Option<(Uuid, Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT c.subscriber_id, c.contact_id, COALESCE(r.name, ''), r.language
               FROM contacts c LEFT JOIN subscribers r ON r.subscriber_id = c.subscriber_id
              WHERE c.kind = 'telegram' AND c.chat_id = $1 AND COALESCE(c.topic_id, 0) = COALESCE($2, 0)
                AND NOT c.removed
              ORDER BY c.created_at LIMIT 1",
        )
        .bind(incoming.chat_id.get())
        .bind(incoming.topic_id)
        .fetch_optional(self.commands.pool())
        .await?;
        Ok(
            row.map(|(subscriber_id, contact_id, name, language)| Linked {
                subscriber_id,
                contact_id,
                name,
                language: language.as_deref().and_then(Language::from_tag),
            }),
        )
    }

    async fn sender_is_admin(&self, incoming: &Incoming) -> bool {
        let Some(user_id) = incoming.user_id else {
            return false;
        };
        match self
            .telegram
            .is_chat_admin(incoming.chat_id.get(), user_id)
            .await
        {
            Ok(admin) => admin,
            Err(e) => {
                tracing::warn!(error = %e.description, "getChatMember failed; treating the sender as a member");
                false
            }
        }
    }

    /// A project by id or by name (case-insensitive), if it exists and is not archived.
    async fn project(&self, raw: &str) -> Result<Option<(Uuid, String)>, BotError> {
        Ok(sqlx::query_as(
            "SELECT project_id, name FROM projects
              WHERE NOT archived AND (project_id::text = lower($1) OR lower(name) = lower($1))
              ORDER BY created_at LIMIT 1",
        )
        .bind(raw.trim())
        .fetch_optional(self.commands.pool())
        .await?)
    }

    async fn subscriptions(
        &self,
        linked: &Linked,
    ) -> Result<Vec<queries::SubscriptionView>, BotError> {
        let query = SubscriptionQuery {
            contact_id: Some(linked.contact_id),
            ..SubscriptionQuery::default()
        };
        let page = Page {
            limit: 100,
            offset: 0,
        };
        Ok(queries::subscriptions(self.commands.pool(), query, page).await?)
    }

    /// How `/list` names a subscription's scope: its projects' names, or `owner/*`.
    async fn scope_name(&self, s: &queries::SubscriptionView) -> Result<String, BotError> {
        if let Some(owner) = &s.owner {
            return Ok(format!("{owner}/*"));
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM projects WHERE project_id = ANY($1) ORDER BY name",
        )
        .bind(&s.project_ids)
        .fetch_all(self.commands.pool())
        .await?;
        Ok(names.join(", "))
    }
}

/// The subscriber's language when the chat is linked, else the sender's Telegram language, else English.
fn language(incoming: &Incoming, linked: Option<&Linked>) -> Language {
    linked
        .and_then(|l| l.language)
        .or(incoming.language)
        .unwrap_or_default()
}

/// Read the parts of an update the bot uses; `None` for kinds it does not handle.
/// What an update asks of the bot: the pure part of [`Bot::handle`], on its own so it can be fuzzed (it reads
/// whatever Telegram, or anyone who can reach the webhook, sends). `None` for updates the bot does not read.
pub fn read_update(
    update: &Value,
    bot_username: Option<&str>,
) -> Option<(Incoming, Result<BotCommand, ParseError>)> {
    let incoming = incoming(update)?;
    let parsed = match &incoming.input {
        Input::Text(text) => command::parse(text, bot_username),
        Input::Button { data, .. } => command::parse_callback(data).ok_or(ParseError::NotACommand),
    };
    Some((incoming, parsed))
}

impl Incoming {
    /// The chat the update came from.
    pub fn chat_id(&self) -> i64 {
        self.chat_id.get()
    }
}

fn incoming(update: &Value) -> Option<Incoming> {
    let (message, input, from) = if let Some(message) = update.get("message") {
        let text = message["text"].as_str()?.to_owned();
        (message, Input::Text(text), &message["from"])
    } else if let Some(query) = update.get("callback_query") {
        let input = Input::Button {
            query_id: query["id"].as_str()?.to_owned(),
            data: query["data"].as_str()?.to_owned(),
        };
        (&query["message"], input, &query["from"])
    } else {
        return None;
    };
    let chat = &message["chat"];
    let topic_id = message["is_topic_message"]
        .as_bool()
        .unwrap_or(false)
        .then(|| message["message_thread_id"].as_i64())
        .flatten();
    Some(Incoming {
        chat_id: ChatId::parse(chat["id"].as_i64()?).ok()?,
        chat_kind: ChatKind::parse(chat["type"].as_str()?).ok()?,
        topic_id,
        user_id: from["id"].as_i64(),
        language: from["language_code"].as_str().and_then(Language::from_tag),
        at: message["date"]
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .unwrap_or_else(Utc::now),
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn updates_are_read_from_messages_buttons_and_forum_topics() {
        let message = json!({"update_id": 1, "message": {
            "message_id": 5, "date": 1_700_000_000, "text": "/help",
            "from": {"id": 9, "language_code": "de-AT"},
            "chat": {"id": -100123, "type": "supergroup"},
            "is_topic_message": true, "message_thread_id": 77
        }});
        let read = incoming(&message).unwrap();
        assert_eq!(read.chat_id.get(), -100123);
        assert_eq!(read.chat_kind, ChatKind::Supergroup);
        assert_eq!(read.topic_id, Some(77));
        assert_eq!(read.language, Some(Language::De));
        assert_eq!(read.at.timestamp(), 1_700_000_000);
        let button = json!({"update_id": 2, "callback_query": {
            "id": "q1", "data": "unmute", "from": {"id": 9},
            "message": {"message_id": 6, "date": 1, "chat": {"id": 42, "type": "private"}}
        }});
        assert!(
            matches!(incoming(&button).unwrap().input, Input::Button { ref data, .. } if data == "unmute")
        );
        assert!(incoming(&json!({"update_id": 3, "edited_message": {}})).is_none());
        assert!(incoming(
            &json!({"update_id": 4, "message": {"chat": {"id": 1, "type": "private"}}})
        )
        .is_none());
        assert_ne!(Bot::contact_id(1, None), Bot::contact_id(1, Some(2)));
    }
}
