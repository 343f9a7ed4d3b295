//! `/api/v1/telegram/webhook`: where Telegram posts bot updates in webhook mode.
//!
//! The caller is Telegram, proven by the secret given to `setWebhook`, which Telegram echoes in
//! `X-Telegram-Bot-Api-Secret-Token`; it is compared in constant time. An accepted update is stored in the bot's
//! inbox before the 200 (Telegram retries anything else), and the bot worker handles it from there.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use commands::telegram_inbox::{InboxError, TelegramInbox};
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhook))
}

const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Receive one Telegram update (webhook mode). Called by Telegram, authenticated by its secret token header.
#[utoipa::path(post, path = "/api/v1/telegram/webhook", tag = "telegram",
    operation_id = "telegram_webhook",
    request_body(content = Object, description = "a Telegram `Update`"),
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "the secret given to setWebhook")),
    responses(
        (status = 200, description = "stored; the bot handles it"),
        (status = 401, description = "missing or wrong secret token"),
        (status = 404, description = "the bot webhook is not enabled"),
        (status = 422, description = "not a Telegram update (no `update_id`)")))]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(update): Json<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(expected) = &state.telegram_webhook_secret else {
        return Err(ApiError::RouteNotFound);
    };
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.as_bytes())) {
        return Err(ApiError::Unauthorized(
            "missing or wrong X-Telegram-Bot-Api-Secret-Token".into(),
        ));
    }
    match TelegramInbox::new(state.pool.clone())
        .store(std::slice::from_ref(&update))
        .await
    {
        Ok(_) => Ok(StatusCode::OK),
        Err(InboxError::NoUpdateId) => Err(ApiError::Invalid(
            "not a Telegram update: `update_id` is missing".into(),
        )),
        Err(InboxError::Database(e)) => Err(e.into()),
    }
}
