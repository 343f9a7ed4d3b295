//! `/api/v1/unsubscribe/{token}`: the one-click unsubscribe link (RFC 8058) of every notification email. The
//! signed token is the credential ([`commands::unsubscribe`]), so the route is public.
//!
//! A GET only asks: mail scanners and link previews fetch every link in a message, and must not unsubscribe
//! anyone by doing so. A POST (the mail client's one-click `List-Unsubscribe=One-Click`, or the page's button)
//! removes the subscription, and answers the same when it is removed already.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use commands::template::escape_html as escape;
use commands::unsubscribe;
use projections::queries::{self, SubscriptionView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ask, confirm))
}

/// The subscription a valid token names; anything else is a 404 that says the link is not valid, and reveals
/// nothing about which subscriptions exist.
struct Unsubscribing(Uuid);

impl FromRequestParts<AppState> for Unsubscribing {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let axum::extract::Path(token) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let key = unsubscribe::signing_key(&state.pool).await?;
        unsubscribe::verify(&key, &token)
            .map(Self)
            .ok_or(ApiError::NotFound("unsubscribe link"))
    }
}

/// Show what the link unsubscribes from, with a button that does it. Anyone (the link is the credential).
///
/// Following the link never unsubscribes by itself.
#[utoipa::path(get, path = "/api/v1/unsubscribe/{token}", tag = "subscriptions",
    operation_id = "ask_unsubscribe",
    params(("token" = String, Path, description = "the token from the email's unsubscribe link")),
    responses(
        (status = 200, description = "a small page with an Unsubscribe button", content_type = "text/html", body = String),
        (status = 404, description = "the link is not valid")))]
async fn ask(
    State(state): State<AppState>,
    Unsubscribing(subscription_id): Unsubscribing,
) -> Result<Response, ApiError> {
    let view = queries::subscription(&state.pool, subscription_id).await?;
    let what = match &view {
        Some(view) => describe(&state, view).await?,
        None => "these build notifications".to_owned(),
    };
    let page = if view.as_ref().is_some_and(|v| !v.active) {
        page(
            "Already unsubscribed",
            &format!("<p>You no longer receive {}.</p>", escape(&what)),
        )
    } else {
        page(
            "Unsubscribe?",
            &format!(
                "<p>Unsubscribe from {}?</p>\n<form method=\"post\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                escape(&what)
            ),
        )
    };
    Ok(page)
}

/// Unsubscribe: the mail client's one-click POST (`List-Unsubscribe=One-Click`, RFC 8058) or the page's
/// button. Anyone (the link is the credential).
///
/// Unsubscribing again answers the same.
#[utoipa::path(post, path = "/api/v1/unsubscribe/{token}", tag = "subscriptions",
    operation_id = "confirm_unsubscribe",
    params(("token" = String, Path, description = "the token from the email's unsubscribe link")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`List-Unsubscribe=One-Click`, or nothing"),
    responses(
        (status = 200, description = "unsubscribed: a small page saying so", content_type = "text/html", body = String),
        (status = 404, description = "the link is not valid"),
        (status = 409, description = "concurrent changes to the subscription; retry")))]
async fn confirm(
    State(state): State<AppState>,
    Unsubscribing(subscription_id): Unsubscribing,
) -> Result<Response, ApiError> {
    state
        .commands
        .unsubscribe(subscription_id, &metadata("one_click_unsubscribe"))
        .await?;
    Ok(page(
        "Unsubscribed",
        "<p>You will not receive these notifications any more. You can close this window.</p>",
    ))
}

/// "builds of acme/api on main, release/* (failed, fixed)": what a person recognises from the emails they got.
async fn describe(state: &AppState, view: &SubscriptionView) -> Result<String, ApiError> {
    let mut text = match &view.owner {
        Some(owner) => format!("build notifications for every repository of {owner}"),
        None => {
            let mut names = Vec::new();
            for id in &view.project_ids {
                let name = queries::project(&state.pool, *id)
                    .await?
                    .map_or_else(|| id.to_string(), |p| p.name);
                names.push(name);
            }
            format!("build notifications for {}", names.join(", "))
        }
    };
    if !view.branches.is_empty() {
        text.push_str(&format!(" on {}", view.branches.join(", ")));
    }
    if !view.workflows.is_empty() {
        text.push_str(&format!(" ({})", view.workflows.join(", ")));
    }
    let outcomes: Vec<&str> = view
        .outcomes
        .iter()
        .map(String::as_str)
        .filter(|o| *o != "all")
        .collect();
    if !outcomes.is_empty() {
        text.push_str(&format!(": {}", outcomes.join(", ")));
    }
    Ok(text)
}

/// A small page; never cached, never indexed, and it sends no referrer (the URL holds the token).
fn page(title: &str, body: &str) -> Response {
    let mut response = Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title></head>\n<body style=\"font-family: sans-serif; max-width: 36em; margin: 4em auto; \
         padding: 0 1em\">\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    ))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_on_the_page_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
