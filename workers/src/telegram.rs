//! The Telegram Bot API client: one `call` that classifies every answer into success, retry later (429 with
//! `retry_after`, 5xx, timeouts) and permanent (400 bad chat, 403 blocked), and the few methods Herald uses on
//! top of it: `sendMessage` for notifications, and `getMe`, `getUpdates`, `setWebhook`, `answerCallbackQuery`
//! and `getChatMember` for the bot.

use std::time::Duration;

use domain::SendFailure;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Telegram's limit on a message's text, in UTF-16 code units after entity parsing. Herald counts the raw
/// HTML, which is never shorter, so a part it accepts Telegram accepts.
pub const MAX_MESSAGE_UNITS: usize = 4096;

/// A text longer than this many messages is cut after the last one (with "…"): a build notification that
/// long is a template gone wrong, not news.
pub const MAX_PARTS: usize = 4;

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Cut a Telegram HTML text into at most `max_parts` messages of at most `max_units` each, at line breaks so
/// no tag or entity is split. A single line longer than a message loses its tags (its escaped text stays
/// valid HTML) and is cut between characters, never inside an entity. What does not fit in `max_parts`
/// messages is dropped, and the last message ends with "…".
pub fn split_message(text: &str, max_units: usize, max_parts: usize) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut pieces: Vec<String> = Vec::new();
    for line in text.split('\n') {
        if units(line) < max_units {
            pieces.push(line.to_owned());
        } else {
            pieces.extend(cut_plain(&strip_tags(line), max_units - 1));
        }
    }
    for piece in pieces {
        let needed = units(&piece) + usize::from(!current.is_empty());
        if !current.is_empty() && units(&current) + needed > max_units {
            parts.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&piece);
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    if parts.len() > max_parts.max(1) {
        parts.truncate(max_parts.max(1));
        if let Some(last) = parts.last_mut() {
            while units(last) + 2 > max_units {
                match last.rfind('\n') {
                    Some(i) => last.truncate(i),
                    None => {
                        *last = cut_plain(&strip_tags(last), max_units - 2).swap_remove(0);
                        break;
                    }
                }
            }
            last.push_str("\n…");
        }
    }
    parts
}

/// Telegram HTML without its tags (entities stay escaped).
pub(crate) fn strip_tags(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_tag = false;
    for c in line.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Cut tag-free text into chunks of at most `max_units`, never inside an `&...;` entity.
fn cut_plain(text: &str, max_units: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // An entity moves as one piece.
        let token_len = if c == '&' {
            rest.find(';').filter(|&i| i <= 10).map_or(1, |i| i + 1)
        } else {
            c.len_utf8()
        };
        let token = &rest[..token_len];
        if units(&current) + units(token) > max_units && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        current.push_str(token);
        rest = &rest[token_len..];
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[derive(Clone)]
pub struct TelegramConfig {
    /// `https://api.telegram.org` in production; a fake server in tests.
    pub api_url: String,
    pub bot_token: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("api_url", &self.api_url)
            .field("bot_token", &"<redacted>")
            .finish()
    }
}

pub struct TelegramClient {
    http: reqwest::Client,
    config: TelegramConfig,
}

#[derive(Deserialize)]
struct ApiResponse {
    ok: bool,
    result: Option<Value>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
struct SentMessage {
    message_id: i64,
}

/// Where a message goes: a chat, or a forum topic of a supergroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatTarget {
    pub chat_id: i64,
    pub topic_id: Option<i64>,
}

/// An inline keyboard button with callback data (at most 64 bytes, Telegram's limit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InlineButton {
    pub text: String,
    pub callback_data: String,
}

impl TelegramClient {
    pub fn new(config: TelegramConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self { http, config })
    }

    /// Call a Bot API method; the `result` on success, the classified failure otherwise.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<T, SendFailure> {
        self.call_with_timeout(method, body, None).await
    }

    async fn call_with_timeout<T: DeserializeOwned>(
        &self,
        method: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<T, SendFailure> {
        let url = format!(
            "{}/bot{}/{method}",
            self.config.api_url.trim_end_matches('/'),
            self.config.bot_token
        );
        let mut request = self.http.post(url).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| {
            // A message whose request may have reached Telegram (it timed out or the connection broke after it
            // was sent) may be in the chat already; Telegram has no idempotency key, so sending it again could
            // show it twice. Only a failure to connect at all is known to have sent nothing.
            let maybe_delivered = method == "sendMessage" && !e.is_connect();
            // The URL carries the bot token: never let it into the log.
            let error = e.without_url();
            SendFailure {
                code: None,
                description: if maybe_delivered {
                    format!(
                        "no answer from Telegram ({error}): the message may have arrived, so it is not sent \
                         again (redrive it to send it anyway)"
                    )
                } else {
                    error.to_string()
                },
                retryable: !maybe_delivered,
                retry_after_secs: None,
            }
        })?;
        let status = response.status();
        let parsed: Option<ApiResponse> = response.json().await.ok();
        match parsed {
            Some(ApiResponse {
                ok: true,
                result: Some(result),
                ..
            }) => serde_json::from_value(result).map_err(|e| SendFailure {
                code: Some(i64::from(status.as_u16())),
                description: format!("{method}: unexpected result: {e}"),
                retryable: false,
                retry_after_secs: None,
            }),
            Some(answer) => {
                let code = answer.error_code.unwrap_or(i64::from(status.as_u16()));
                Err(SendFailure {
                    code: Some(code),
                    description: answer
                        .description
                        .unwrap_or_else(|| format!("HTTP {status}")),
                    retryable: code == 429 || code >= 500,
                    retry_after_secs: answer.parameters.and_then(|p| p.retry_after),
                })
            }
            None => Err(SendFailure {
                code: Some(i64::from(status.as_u16())),
                description: format!("HTTP {status} with an unreadable body"),
                retryable: status.is_server_error() || status.as_u16() == 429,
                retry_after_secs: None,
            }),
        }
    }

    /// Send `text` (Telegram HTML) to a chat; returns the message id.
    pub async fn send_message(&self, chat_id: i64, text: &str) -> Result<i64, SendFailure> {
        let target = ChatTarget {
            chat_id,
            topic_id: None,
        };
        self.send(target, text, &[]).await
    }

    /// Send `text` to a chat or forum topic, with one row of inline buttons when there are any.
    pub async fn send(
        &self,
        target: ChatTarget,
        text: &str,
        buttons: &[InlineButton],
    ) -> Result<i64, SendFailure> {
        let mut body = json!({
            "chat_id": target.chat_id,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": { "is_disabled": true },
        });
        if let Some(topic) = target.topic_id {
            body["message_thread_id"] = json!(topic);
        }
        if !buttons.is_empty() {
            body["reply_markup"] = json!({ "inline_keyboard": [buttons] });
        }
        let sent: SentMessage = self.call("sendMessage", &body).await?;
        Ok(sent.message_id)
    }

    /// Replace the text (and buttons) of a message Herald sent before. Telegram answers 400 "message is not
    /// modified" when nothing changed, which is success here.
    pub async fn edit_message_text(
        &self,
        chat_id: i64,
        message_id: i64,
        text: &str,
        buttons: &[InlineButton],
    ) -> Result<(), SendFailure> {
        let mut body = json!({
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": { "is_disabled": true },
        });
        if !buttons.is_empty() {
            body["reply_markup"] = json!({ "inline_keyboard": [buttons] });
        }
        match self.call::<Value>("editMessageText", &body).await {
            Ok(_) => Ok(()),
            Err(f) if f.description.contains("message is not modified") => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Long polling: updates from `offset` on, waiting up to `wait` for one to arrive. Telegram forgets every
    /// update below `offset`, so callers pass it only once what came before is stored.
    pub async fn get_updates(
        &self,
        offset: i64,
        wait: Duration,
    ) -> Result<Vec<Value>, SendFailure> {
        let body = json!({
            "offset": offset,
            "timeout": wait.as_secs(),
            "allowed_updates": ["message", "callback_query"],
        });
        // The HTTP request must outlive the long poll.
        self.call_with_timeout("getUpdates", &body, Some(wait + self.config.timeout))
            .await
    }

    /// The bot's own username, for `/command@bot` in groups and for deep links.
    pub async fn get_me(&self) -> Result<Option<String>, SendFailure> {
        let me: Value = self.call("getMe", &json!({})).await?;
        Ok(me["username"].as_str().map(str::to_owned))
    }

    /// Point Telegram at Herald's webhook, with the secret it must echo in `X-Telegram-Bot-Api-Secret-Token`.
    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> Result<(), SendFailure> {
        let body = json!({
            "url": url,
            "secret_token": secret_token,
            "allowed_updates": ["message", "callback_query"],
        });
        self.call::<Value>("setWebhook", &body).await.map(|_| ())
    }

    /// Long polling and a webhook exclude each other: polling starts by removing any webhook.
    pub async fn delete_webhook(&self) -> Result<(), SendFailure> {
        self.call::<Value>("deleteWebhook", &json!({}))
            .await
            .map(|_| ())
    }

    /// Stop the spinner on a pressed inline button, with a short notice.
    pub async fn answer_callback_query(&self, id: &str, text: &str) -> Result<(), SendFailure> {
        let body = json!({ "callback_query_id": id, "text": text });
        self.call::<Value>("answerCallbackQuery", &body)
            .await
            .map(|_| ())
    }

    /// Is `user_id` an administrator (or the creator) of `chat_id`?
    pub async fn is_chat_admin(&self, chat_id: i64, user_id: i64) -> Result<bool, SendFailure> {
        let body = json!({ "chat_id": chat_id, "user_id": user_id });
        let member: Value = self.call("getChatMember", &body).await?;
        Ok(matches!(
            member["status"].as_str(),
            Some("creator" | "administrator")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_text_is_one_message() {
        assert_eq!(
            split_message("<b>hi</b>\nthere", 4096, 4),
            vec!["<b>hi</b>\nthere"]
        );
    }

    #[test]
    fn long_texts_are_cut_at_line_breaks() {
        let line = format!("<b>{}</b>", "a".repeat(10));
        let text = [line.as_str(); 5].join("\n");
        let parts = split_message(&text, 40, 4);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts.iter().all(|p| units(p) <= 40));
        assert_eq!(
            parts.join("\n"),
            text,
            "nothing lost, nothing split mid-tag"
        );
    }

    #[test]
    fn an_overlong_line_loses_its_tags_and_never_splits_an_entity() {
        let line = format!("<i>{}&amp;{}</i>", "x".repeat(8), "y".repeat(8));
        let parts = split_message(&line, 10, 4);
        assert_eq!(parts, vec!["xxxxxxxx", "&amp;yyyy", "yyyy"]);
    }

    #[test]
    fn emoji_count_as_two_units_like_telegram_counts_them() {
        let parts = split_message(&["🔴🔴🔴"; 2].join("\n"), 7, 4);
        assert_eq!(parts, vec!["🔴🔴🔴", "🔴🔴🔴"]);
    }

    #[test]
    fn beyond_the_last_part_the_text_is_dropped_with_an_ellipsis() {
        let text = (0..10)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let parts = split_message(&text, 14, 2);
        assert_eq!(parts, vec!["line 0\nline 1", "line 2\n…"]);
        assert!(parts.iter().all(|p| units(p) <= 14));
    }
}
