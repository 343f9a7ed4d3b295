//! The Telegram Bot API client: `sendMessage` with HTML parse mode, and the classification of its answers into
//! delivered, retry later (429 with `retry_after`, 5xx, timeouts) and permanent (400 bad chat, 403 blocked).

use std::time::Duration;

use domain::SendFailure;
use serde::Deserialize;

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
    result: Option<SentMessage>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct SentMessage {
    message_id: i64,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

impl TelegramClient {
    pub fn new(config: TelegramConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self { http, config })
    }

    /// Send `text` (Telegram HTML) to `chat_id`; returns the message id.
    pub async fn send_message(&self, chat_id: i64, text: &str) -> Result<i64, SendFailure> {
        let url = format!(
            "{}/bot{}/sendMessage",
            self.config.api_url.trim_end_matches('/'),
            self.config.bot_token
        );
        let body = serde_json::json!({
            "chat_id": chat_id,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": { "is_disabled": true },
        });
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendFailure {
                code: None,
                // The URL carries the bot token: never let it into the log.
                description: e.without_url().to_string(),
                retryable: true,
                retry_after_secs: None,
            })?;
        let status = response.status();
        let parsed: Option<ApiResponse> = response.json().await.ok();
        match parsed {
            Some(ApiResponse {
                ok: true,
                result: Some(sent),
                ..
            }) => Ok(sent.message_id),
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
}
