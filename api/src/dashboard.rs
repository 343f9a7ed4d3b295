//! The web dashboard's files: `/ui/<file>` from the copy embedded at build time (see `build.rs`), `/ui/` the
//! page itself, `/` a redirect to it. The page is plain HTML, CSS and ES modules that call the same API as
//! everyone else (with the session cookie of [`crate::session`]); there is no server-side rendering to keep in
//! step with the JSON.
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles and connections to this origin
//! only, so even a string that slipped past the page's escaping could not run as script or load anything.
//! `HERALD_UI_DIR` serves the files from a directory instead, read on every request, for front-end work.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::{ApiError, AppState};

/// Every file of `ui/`, by name.
static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    serve(&state, "index.html").await
}

async fn asset(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    serve(&state, &file).await
}

async fn serve(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let Some(content_type) = content_type(name) else {
        return Err(ApiError::NotFound("dashboard file"));
    };
    let body = match &state.http.ui_dir {
        Some(dir) => read_from(dir, name).await?,
        None => embedded(name)
            .ok_or(ApiError::NotFound("dashboard file"))?
            .to_vec(),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate every time: the ETag layer answers 304 while the file is unchanged, and a new Herald's page
    // never runs against an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}

fn embedded(name: &str) -> Option<&'static [u8]> {
    ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The type of a file Herald is willing to serve; `None` for any other name. Only flat names of lowercase
/// letters, digits and dashes pass, so a name can never climb out of the directory.
fn content_type(name: &str) -> Option<&'static str> {
    let (stem, extension) = name.rsplit_once('.')?;
    let plain = !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain {
        return None;
    }
    match extension {
        "html" => Some("text/html; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        "js" => Some("text/javascript; charset=utf-8"),
        "svg" => Some("image/svg+xml"),
        _ => None,
    }
}

async fn read_from(dir: &std::path::Path, name: &str) -> Result<Vec<u8>, ApiError> {
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::NotFound("dashboard file"))
        }
        Err(e) => Err(ApiError::Internal(format!(
            "cannot read {name} from the dashboard directory: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flat_plain_names_of_known_types_are_served() {
        assert_eq!(
            content_type("app.js"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type("index.html"), Some("text/html; charset=utf-8"));
        for refused in [
            "../secret.js",
            "a/b.js",
            ".env",
            "app.JS",
            "x.map",
            "Index.html",
            ".js",
            "app",
        ] {
            assert_eq!(content_type(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_page_and_its_script_are_embedded() {
        assert!(embedded("index.html").is_some_and(|b| !b.is_empty()));
        assert!(embedded("app.js").is_some_and(|b| !b.is_empty()));
    }
}
