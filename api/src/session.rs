//! `/api/v1/session`: the dashboard's login. The person types an API key once; Herald checks it as any request
//! would and answers with a random session token in a cookie that scripts cannot read (HttpOnly), that other
//! sites cannot make the browser send on a cross-site request (SameSite=Strict), and that travels only over
//! HTTPS when Herald is served over HTTPS (Secure). The key itself is never stored in the browser.
//!
//! Why a session and not the key in `localStorage`: a script injected into the page could read the key and use
//! it anywhere, for as long as the key lives; it cannot read an HttpOnly cookie, and a session ends on logout,
//! on expiry, and when its key is revoked.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{keys, session_cookie, AuthError, SESSION_COOKIE};
use crate::extract::Json;
use crate::me::Me;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login, logout))
}

/// An API key to log in with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The API key (`hrld_...`).
    key: String,
}

/// The caller the session stands for, and when it ends.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    me: Me,
    expires_at: DateTime<Utc>,
}

/// Log in to the dashboard with an API key: the answer sets the `herald_session` cookie. Anyone (the key is
/// the credential; failed attempts count against the address's rate limit).
#[utoipa::path(post, path = "/api/v1/session", tag = "session", operation_id = "login",
    request_body = Login,
    responses(
        (status = 200, description = "logged in; `Set-Cookie` holds the session", body = SessionView),
        (status = 401, description = "the key is not valid, revoked or expired"),
        (status = 422, description = "no key, or unknown fields")))]
async fn login(
    State(state): State<AppState>,
    Json(input): Json<Login>,
) -> Result<impl IntoResponse, ApiError> {
    let key = input.key.trim();
    if !keys::looks_like_key(key) {
        return Err(ApiError::Unauthorized(
            "log in with an API key (`hrld_...`); `herald keys create` makes one".into(),
        ));
    }
    let principal = state.auth.keys.verify(key).await.map_err(refusal)?;
    let session = state
        .auth
        .keys
        .start_session(&principal, state.http.session_ttl)
        .await
        .map_err(refusal)?;
    let max_age = state.http.session_ttl.as_secs();
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        session.token,
        secure_flag(&state)
    );
    let mut response = axum::Json(SessionView {
        me: Me::from(&principal),
        expires_at: session.expires_at,
    })
    .into_response();
    set_cookie(&mut response, &cookie)?;
    Ok(response)
}

/// Log out: the session ends and the cookie is cleared. Without a session, nothing changes (204 too).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", operation_id = "logout",
    responses((status = 204, description = "logged out")))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_cookie(&headers) {
        state.auth.keys.end_session(token).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cleared = format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        secure_flag(&state)
    );
    set_cookie(&mut response, &cleared)?;
    Ok(response)
}

fn refusal(e: AuthError) -> ApiError {
    match e {
        AuthError::Store(e) => ApiError::from(e),
        other => ApiError::Unauthorized(other.to_string()),
    }
}

/// Browsers drop a Secure cookie set over plain HTTP, so the flag follows how Herald is reached.
fn secure_flag(state: &AppState) -> &'static str {
    if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(response: &mut Response, cookie: &str) -> Result<(), ApiError> {
    let value = HeaderValue::from_str(cookie)
        .map_err(|e| ApiError::Internal(format!("session cookie: {e}")))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(())
}
