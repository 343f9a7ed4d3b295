//! Who is calling, and may they. Every request passes [`guard`]: it finds the route's [`Access`] in the one
//! policy table ([`policy::POLICY`]), authenticates the caller (API key or JWT bearer), checks the role, and
//! applies the rate limits. Handlers never check roles themselves; a route the table does not know is refused,
//! so a new endpoint is closed until someone decides who may call it.

pub mod jwt;
pub mod keys;
pub mod policy;

use std::str::FromStr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{self, Bucket};
use crate::{ApiError, AppState};
pub use policy::{Access, Rule, POLICY};

/// What a caller is allowed to be. Roles do not nest, except that `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including projects, configuration and API keys.
    Admin,
    /// Runs Herald: dead letters, rebuilds, dry runs, status, subscriptions.
    Operator,
    /// Reads projects, builds and analytics.
    Reader,
    /// Reads the notification trail, and nothing else.
    Auditor,
    /// Posts webhooks for its own projects.
    Producer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Reader,
        Role::Auditor,
        Role::Producer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Producer => "producer",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected admin, operator, reader, auditor or producer")
            })
    }
}

/// An authenticated caller, as handlers see it (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<prefix>` or `jwt:<subject>`: what the event log records as the actor.
    pub id: String,
    pub role: Role,
    /// The projects a producer may post webhooks for (empty otherwise).
    pub projects: Vec<Uuid>,
    /// The subscriber this caller is, for `/api/v1/me` (keys made with `--subscriber`).
    pub subscriber: Option<Uuid>,
}

impl Principal {
    pub fn may(&self, access: Access) -> bool {
        access.allows(self.role)
    }

    /// May this caller post webhooks for `project`?
    pub fn may_post_for(&self, project: Uuid) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Producer => self.projects.contains(&project),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the credentials are not valid")]
    Invalid,
    #[error("the API key was revoked")]
    Revoked,
    #[error("the credentials have expired")]
    Expired,
    #[error("bearer tokens are not accepted: no JWT secret is configured")]
    JwtDisabled,
    #[error("{0}")]
    Store(#[from] sqlx::Error),
}

/// The password of `Authorization: Basic base64(user:password)`; the user name is ignored. Mail providers
/// (SendGrid's Event Webhook) and MTAs that cannot set headers send credentials this way, from the URL's
/// `https://user:key@host/...`, so an API key is accepted as the password.
fn basic_password(value: &str) -> Option<Result<String, ApiError>> {
    use base64::Engine;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let malformed =
        || ApiError::Unauthorized("malformed `Authorization: Basic` credentials".into());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(
        decoded
            .as_deref()
            .and_then(|pair| pair.split_once(':'))
            .map(|(_, password)| password.trim().to_owned())
            .filter(|password| !password.is_empty())
            .ok_or_else(malformed),
    )
}

/// The dashboard's session cookie. HttpOnly and SameSite=Strict; see [`crate::session`].
pub const SESSION_COOKIE: &str = "herald_session";

/// The header a cookie-authenticated request must carry to change anything. A page of another site can make
/// the browser send the cookie (SameSite aside), but cannot add a custom header without a CORS preflight that
/// Herald does not grant: so its absence means the request did not come from the dashboard.
pub const CSRF_HEADER: &str = "x-herald-csrf";

/// The session token in a `Cookie` header, if there is one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A caller and how they proved it.
struct Authenticated {
    principal: Principal,
    /// By the dashboard's session cookie (which needs the CSRF header to change anything).
    by_cookie: bool,
}

/// Who the request says it is: `Authorization: Bearer <api key or JWT>`, `X-Api-Key: <api key>`,
/// `Authorization: Basic` with the key as the password, or the dashboard's session cookie.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let header_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .or_else(|| {
            authorization
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
        });
    let basic = match (header_key, authorization.and_then(basic_password)) {
        (None, Some(password)) => Some(password?),
        _ => None,
    };
    let Some(credential) = header_key.or(basic.as_deref()) else {
        if headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::Unauthorized(
                "expected `Authorization: Bearer <API key or token>` (or Basic with the key as password)"
                    .into(),
            ));
        }
        let Some(token) = session_cookie(headers) else {
            return Ok(None);
        };
        return match state.auth.keys.verify_session(token).await {
            Ok(principal) => Ok(Some(Authenticated {
                principal,
                by_cookie: true,
            })),
            Err(AuthError::Store(e)) => Err(ApiError::from(e)),
            Err(_) => Err(ApiError::Unauthorized(
                "the dashboard session has ended: log in again".into(),
            )),
        };
    };
    let result = if keys::looks_like_key(credential) {
        state.auth.keys.verify(credential).await
    } else {
        state.auth.jwt.verify(credential)
    };
    match result {
        Ok(principal) => Ok(Some(Authenticated {
            principal,
            by_cookie: false,
        })),
        Err(AuthError::Store(e)) => Err(ApiError::from(e)),
        Err(e) => Err(ApiError::Unauthorized(e.to_string())),
    }
}

/// The middleware every route passes through: rate limit by client address, authenticate, authorize by the
/// policy table, rate limit by caller, and put the [`Principal`] where handlers can find it.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(path) = path else {
        // No route matched: the fallback answers 404 (or 405), which reveals nothing.
        return next.run(request).await;
    };
    let Some(access) = policy::access(request.method(), &path) else {
        return ApiError::Forbidden(format!(
            "{} {path} has no access policy; refusing",
            request.method()
        ))
        .into_response();
    };
    let client = limits::client_address(&request, state.limits.trust_forwarded_for);
    let bucket = if access == Access::Webhook {
        Bucket::Webhook
    } else {
        Bucket::Api
    };
    // The address bucket first, so guessing keys is as slow as any other request.
    let by_address = match state.limits.check(bucket, &format!("ip:{client}")) {
        Ok(headers) => headers,
        Err(refusal) => return refusal,
    };
    // Refusals carry the address bucket's headers too: a client that is told no still learns its budget.
    let refuse = |error: ApiError| {
        let mut response = error.into_response();
        by_address.write(response.headers_mut());
        response
    };
    // Public routes answer whoever asks: a probe carrying a stale key still gets its health answer.
    let principal = if access == Access::Public {
        None
    } else {
        match authenticate(&state, request.headers()).await {
            Ok(Some(found)) => {
                let safe = matches!(
                    *request.method(),
                    Method::GET | Method::HEAD | Method::OPTIONS
                );
                if found.by_cookie && !safe && !request.headers().contains_key(CSRF_HEADER) {
                    return refuse(ApiError::Forbidden(format!(
                        "a request authenticated by the dashboard's cookie must carry `{CSRF_HEADER}` to change anything"
                    )));
                }
                Some(found.principal)
            }
            Ok(None) => None,
            Err(e) => return refuse(e),
        }
    };
    match (&principal, access) {
        (_, Access::Public) | (None, Access::Webhook) => {}
        (None, _) => {
            return refuse(ApiError::Unauthorized(
                "this endpoint needs an API key or token: `Authorization: Bearer <key>`".into(),
            ))
        }
        (Some(p), access) if !p.may(access) => {
            return refuse(ApiError::Forbidden(format!(
                "the {} role may not {}",
                p.role.as_str(),
                access.describe()
            )))
        }
        (Some(_), _) => {}
    }
    let mut rate = by_address;
    if let Some(p) = &principal {
        match state.limits.check(bucket, &p.id) {
            Ok(headers) => rate = rate.tighter(headers),
            Err(refusal) => return refusal,
        }
        request.extensions_mut().insert(p.clone());
    }
    let actor = principal.as_ref().map(|p| p.id.clone());
    let mut response = match actor {
        Some(actor) => commands::trace::as_actor(actor, next.run(request)).await,
        None => next.run(request).await,
    };
    rate.write(response.headers_mut());
    response
}

/// The principal the guard found, if any (webhooks and public routes may have none).
pub struct Caller(pub Option<Principal>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(parts.extensions.get::<Principal>().cloned()))
    }
}
