//! JWT bearer tokens (HS256), for callers that get their identity from elsewhere (an SSO gateway, a script that
//! mints short-lived tokens with `herald token`).
//!
//! Rotation without downtime: tokens signed with the current secret are accepted, and so are tokens signed with
//! the previous secret until the end of its window. Deploy the new secret as current with the old one as
//! previous, let the issuers switch, and drop the previous secret when the window ends.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthError, Principal, Role};

/// What Herald reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// For producers: the projects they may post webhooks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<Uuid>,
    /// Expiry, seconds since the epoch. Required: a token that never expires is refused.
    pub exp: i64,
}

/// The secrets tokens may be signed with.
#[derive(Clone, Default)]
pub struct JwtKeys {
    current: Option<Secret>,
    previous: Option<(Secret, DateTime<Utc>)>,
}

#[derive(Clone)]
struct Secret {
    decoding: DecodingKey,
    encoding: EncodingKey,
}

impl Secret {
    fn new(secret: &str) -> Self {
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
        }
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("current", &self.current.is_some())
            .field(
                "previous_until",
                &self.previous.as_ref().map(|(_, until)| until),
            )
            .finish()
    }
}

impl JwtKeys {
    /// No bearer tokens accepted (API keys only).
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn new(current: &str) -> Self {
        Self {
            current: Some(Secret::new(current)),
            previous: None,
        }
    }

    /// Also accept tokens signed with `previous` until `until`.
    pub fn with_previous(mut self, previous: &str, until: DateTime<Utc>) -> Self {
        self.previous = Some((Secret::new(previous), until));
        self
    }

    /// A token for `claims`, signed with the current secret.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let secret = self.current.as_ref().ok_or(AuthError::JwtDisabled)?;
        encode(&Header::new(Algorithm::HS256), claims, &secret.encoding)
            .map_err(|_| AuthError::Invalid)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let current = self.current.as_ref().ok_or(AuthError::JwtDisabled)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded = match decode::<Claims>(token, &current.decoding, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => match (&self.previous, e.kind()) {
                (Some((previous, until)), jsonwebtoken::errors::ErrorKind::InvalidSignature)
                    if Utc::now() < *until =>
                {
                    decode::<Claims>(token, &previous.decoding, &validation)
                        .map(|data| data.claims)
                        .map_err(map_error)
                }
                _ => Err(map_error(e)),
            },
        }?;
        if decoded.role == Role::Producer && decoded.projects.is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            id: format!("jwt:{}", decoded.sub),
            role: decoded.role,
            projects: if decoded.role == Role::Producer {
                decoded.projects
            } else {
                Vec::new()
            },
            subscriber: None,
        })
    }
}

fn map_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: Role, exp_in: i64) -> Claims {
        Claims {
            sub: "ci-bot".into(),
            role,
            projects: Vec::new(),
            exp: Utc::now().timestamp() + exp_in,
        }
    }

    #[test]
    fn a_token_signed_with_the_current_secret_is_accepted() {
        let keys = JwtKeys::new("current-secret");
        let token = keys.mint(&claims(Role::Reader, 60)).unwrap();
        let principal = keys.verify(&token).unwrap();
        assert_eq!(principal.role, Role::Reader);
        assert_eq!(principal.id, "jwt:ci-bot");
    }

    #[test]
    fn the_previous_secret_is_accepted_only_inside_its_window() {
        let old = JwtKeys::new("old-secret");
        let token = old.mint(&claims(Role::Operator, 60)).unwrap();
        let open = JwtKeys::new("new-secret")
            .with_previous("old-secret", Utc::now() + chrono::Duration::hours(1));
        assert_eq!(open.verify(&token).unwrap().role, Role::Operator);
        let closed = JwtKeys::new("new-secret")
            .with_previous("old-secret", Utc::now() - chrono::Duration::seconds(1));
        assert!(matches!(closed.verify(&token), Err(AuthError::Invalid)));
    }

    #[test]
    fn expired_forged_and_unconfigured_tokens_are_refused() {
        let keys = JwtKeys::new("s");
        let expired = keys.mint(&claims(Role::Admin, -3600)).unwrap();
        assert!(matches!(keys.verify(&expired), Err(AuthError::Expired)));
        let forged = JwtKeys::new("other")
            .mint(&claims(Role::Admin, 60))
            .unwrap();
        assert!(matches!(keys.verify(&forged), Err(AuthError::Invalid)));
        assert!(matches!(
            JwtKeys::disabled().verify(&forged),
            Err(AuthError::JwtDisabled)
        ));
        let producer_without_projects = keys.mint(&claims(Role::Producer, 60)).unwrap();
        assert!(keys.verify(&producer_without_projects).is_err());
    }
}
