//! Extractors whose rejections are Herald's own problem+json errors.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::ApiError;

/// `axum::Json` with problem+json rejections: bad syntax 400, wrong shape 422, wrong content type 415; and a NUL
/// character (`\u0000`) in any string 422, since Herald stores what it is given in Postgres, whose text refuses
/// it: refused here, such a body would otherwise fail later as a database error.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        parse(&bytes).map(Self)
    }
}

/// Whether the request says its body is JSON (`application/json` or any `+json` type).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

/// Parse a JSON body: bad syntax 400, wrong shape (with the path of the field) or a NUL character 422.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => value,
        Err(JsonRejection::JsonSyntaxError(e)) => {
            return Err(ApiError::BadRequest(format!(
                "malformed JSON: {}",
                e.body_text()
            )))
        }
        Err(JsonRejection::JsonDataError(e)) => return Err(ApiError::Invalid(e.body_text())),
        Err(e) => return Err(ApiError::BadRequest(e.body_text())),
    };
    if has_nul_escape(bytes) {
        return Err(ApiError::Invalid(
            "a string in the body contains a NUL character (\\u0000), which Herald does not store"
                .into(),
        ));
    }
    Ok(value)
}

/// Whether a JSON text holds the escape `\u0000`. Only an escape can put U+0000 in valid JSON (a raw control
/// character is a syntax error), and a backslash starts an escape unless it is itself escaped: an odd number of
/// backslashes before `u0000` is the character, an even number is text ending in a backslash.
fn has_nul_escape(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window == b"\\u0000"
            && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// A body that could not be read: too large (413, from the body limit) or broken off (400).
fn body_rejection(status: axum::http::StatusCode, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "the body is larger than {} bytes",
            crate::MAX_BODY_BYTES
        ))
    } else {
        ApiError::BadRequest(text)
    }
}

/// A JSON body that may be left out (then `T::default()`); when given, it is read like [`Json`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        parse(&bytes).map(Self)
    }
}

/// Query parameters with problem+json rejections (422).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::Invalid(e.body_text()))
    }
}

/// A path id that is not a UUID names nothing that exists: 404, not 400.
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::NotFound("resource"))
    }
}

/// Paging parameters: `limit` (1..=200, default 50) and `offset`.
///
/// Numbers are read from strings by hand because these structs are `#[serde(flatten)]`ed into others, and
/// serde's flatten hands query values over as strings that the plain integer deserializer refuses.
///
/// In the OpenAPI description, a handler lists `Paging` in its `params(...)` beside its own query struct, whose
/// flattened `paging` field is `#[param(ignore)]`d (utoipa's `IntoParams` does not follow `#[serde(flatten)]`).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// How many items to return: 1 to 200.
    #[serde(default, deserialize_with = "number_from_query")]
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    /// How many items to skip.
    #[serde(default, deserialize_with = "number_from_query")]
    #[param(minimum = 0, default = 0)]
    pub offset: Option<i64>,
}

/// One page of a list, with the paging it was read with.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub limit: i64,
    pub offset: i64,
}

impl<T> Paged<T> {
    pub fn new(items: Vec<T>, page: projections::queries::Page) -> Self {
        Self {
            items,
            limit: page.limit,
            offset: page.offset,
        }
    }
}

fn number_from_query<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a whole number"))),
    }
}

impl Paging {
    pub fn page(&self) -> Result<projections::queries::Page, ApiError> {
        let limit = self.limit.unwrap_or(50);
        let offset = self.offset.unwrap_or(0);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::Invalid("limit: must be between 1 and 200".into()));
        }
        if offset < 0 {
            return Err(ApiError::Invalid("offset: must not be negative".into()));
        }
        Ok(projections::queries::Page { limit, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn only_an_escape_that_is_not_itself_escaped_is_a_nul() {
        assert!(has_nul_escape(br#"{"name":"a\u0000b"}"#));
        assert!(
            has_nul_escape(br#"["\\\u0000"]"#),
            "an escaped backslash, then the escape"
        );
        assert!(
            !has_nul_escape(br#"{"name":"a\\u0000b"}"#),
            "a backslash, then text"
        );
        assert!(!has_nul_escape(br#"{"name":"u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"\u0001"}"#));
    }
}
