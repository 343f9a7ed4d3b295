//! VAPID (RFC 8292): Herald proves to a push service that it is the application server the browser subscribed
//! with, by signing a short-lived ES256 JWT whose audience is the push service's origin.
//!
//! The private key never leaves this module: not in `Debug`, not in a log line, not in an error.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;

use super::PushConfigError;

/// How long a JWT is valid: RFC 8292 allows at most 24 hours; half of that leaves room for clock skew.
const LIFETIME_SECS: i64 = 12 * 3600;
/// A cached JWT is replaced this long before it expires, so none is sent that expires in flight.
const RENEW_BEFORE_SECS: i64 = 3600;

pub(super) struct Vapid {
    key_pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The uncompressed public point, base64url: the `k` parameter and the browser's applicationServerKey.
    public_key: String,
    subject: String,
    /// One JWT per push service origin: signing costs little, but a push service may rate-limit per token.
    tokens: Mutex<HashMap<String, CachedJwt>>,
}

struct CachedJwt {
    jwt: String,
    renew_at: i64,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

impl Vapid {
    pub(super) fn new(private_key_pem: &str, subject: &str) -> Result<Self, PushConfigError> {
        check_subject(subject)?;
        let der = pem_decode(private_key_pem).map_err(PushConfigError::VapidKey)?;
        let rng = SystemRandom::new();
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| PushConfigError::VapidKey(e.to_string()))?;
        let public_key = URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref());
        Ok(Self {
            key_pair,
            rng,
            public_key,
            subject: subject.to_owned(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value for a push service at `origin` (`scheme://host[:port]`), at unix time
    /// `now`.
    pub(super) fn authorization(&self, origin: &str, now: i64) -> Result<String, PushConfigError> {
        let jwt = self.jwt(origin, now)?;
        Ok(format!("vapid t={jwt}, k={}", self.public_key))
    }

    fn jwt(&self, origin: &str, now: i64) -> Result<String, PushConfigError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = tokens.get(origin) {
            if now < cached.renew_at {
                return Ok(cached.jwt.clone());
            }
        }
        let exp = now + LIFETIME_SECS;
        let jwt = self.sign(origin, exp)?;
        tokens.insert(
            origin.to_owned(),
            CachedJwt {
                jwt: jwt.clone(),
                renew_at: exp - RENEW_BEFORE_SECS,
            },
        );
        Ok(jwt)
    }

    /// Forget the JWT for `origin`: the push service refused it, so the next attempt signs a new one.
    pub(super) fn forget(&self, origin: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(origin);
    }

    fn sign(&self, aud: &str, exp: i64) -> Result<String, PushConfigError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::to_vec(&Claims {
            aud,
            exp,
            sub: &self.subject,
        })?;
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .key_pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| PushConfigError::Random)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// RFC 8292 section 2.1: a contact the push service's operator can reach when Herald misbehaves.
fn check_subject(subject: &str) -> Result<(), PushConfigError> {
    let ok = match subject.split_once(':') {
        Some(("mailto", address)) => address
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && !host.is_empty()),
        Some(("https", rest)) => rest.len() > 2 && rest.starts_with("//"),
        _ => false,
    };
    if ok && !subject.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(PushConfigError::VapidSubject(subject.to_owned()))
    }
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The DER inside a PKCS#8 PEM; the error says what to do with the other shapes people have at hand.
fn pem_decode(pem: &str) -> Result<Vec<u8>, String> {
    if pem.contains("BEGIN EC PRIVATE KEY") {
        return Err(
            "it is a SEC1 key (BEGIN EC PRIVATE KEY); convert it with `openssl pkcs8 -topk8 -nocrypt`"
                .to_owned(),
        );
    }
    let start = pem
        .find(PEM_BEGIN)
        .ok_or_else(|| format!("no {PEM_BEGIN} line"))?
        + PEM_BEGIN.len();
    let end = pem[start..]
        .find(PEM_END)
        .ok_or_else(|| format!("no {PEM_END} line"))?
        + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM body is not base64: {e}"))
}

fn pem_encode(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + 80);
    pem.push_str(PEM_BEGIN);
    pem.push('\n');
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// A new VAPID key pair: (PKCS#8 PEM private key, base64url public key). For a `herald` subcommand later.
pub fn generate_vapid_key() -> Result<(String, String), PushConfigError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| PushConfigError::Random)?;
    let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| PushConfigError::VapidKey(e.to_string()))?;
    Ok((
        pem_encode(pkcs8.as_ref()),
        URL_SAFE_NO_PAD.encode(key_pair.public_key().as_ref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn vapid() -> Vapid {
        let (pem, _) = generate_vapid_key().unwrap();
        Vapid::new(&pem, "mailto:ops@example.com").unwrap()
    }

    fn claims(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn a_generated_key_loads_and_keeps_its_public_half() {
        let (pem, public) = generate_vapid_key().unwrap();
        assert!(pem.starts_with(PEM_BEGIN));
        let vapid = Vapid::new(&pem, "https://herald.example/contact").unwrap();
        assert_eq!(vapid.public_key(), public);
        assert_eq!(URL_SAFE_NO_PAD.decode(&public).unwrap().len(), 65);
        assert!(!format!("{vapid:?}").contains(&pem[30..60]));
    }

    #[test]
    fn the_jwt_is_es256_signed_for_the_push_service_origin() {
        let vapid = vapid();
        let header = vapid
            .authorization("https://fcm.googleapis.com", 1_000)
            .unwrap();
        let (t, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, vapid.public_key());
        let claims = claims(t);
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
        assert_eq!(claims["exp"], 1_000 + LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let (input, signature) = t.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert_eq!(signature.len(), 64, "r || s, as JWS wants");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, URL_SAFE_NO_PAD.decode(k).unwrap())
            .verify(input.as_bytes(), &signature)
            .expect("the signature verifies with k");
    }

    #[test]
    fn a_jwt_is_reused_per_origin_until_an_hour_before_it_expires() {
        let vapid = vapid();
        let first = vapid.jwt("https://a.example", 0).unwrap();
        assert_eq!(vapid.jwt("https://a.example", 100).unwrap(), first);
        let other = vapid.jwt("https://b.example", 100).unwrap();
        assert_ne!(other, first);
        let renew = LIFETIME_SECS - RENEW_BEFORE_SECS;
        assert_eq!(vapid.jwt("https://a.example", renew - 1).unwrap(), first);
        let renewed = vapid.jwt("https://a.example", renew).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(claims(&renewed)["exp"], renew + LIFETIME_SECS);
        vapid.forget("https://a.example");
        assert_ne!(vapid.jwt("https://a.example", renew).unwrap(), renewed);
    }

    #[test]
    fn subjects_must_be_a_mailto_or_https_contact() {
        for good in ["mailto:ops@example.com", "https://example.com/contact"] {
            assert!(check_subject(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ops@example.com",
            "mailto:",
            "mailto:@example.com",
            "http://example.com",
            "https://",
            "mailto:ops @example.com",
        ] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_that_are_not_pkcs8_p256_are_refused_with_a_hint() {
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = Vapid::new(sec1, "mailto:a@b.c").unwrap_err().to_string();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
        assert!(Vapid::new("not a key", "mailto:a@b.c").is_err());
        let rsa = include_str!("../../../tests/fixtures/push/fcm-test-service-account-key.pem");
        assert!(Vapid::new(rsa, "mailto:a@b.c").is_err());
    }
}
