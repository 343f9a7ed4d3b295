//! Web Push message encryption (RFC 8291, over RFC 8188's `aes128gcm` content coding).
//!
//! Push services relay what they cannot read: only the browser that made the subscription holds the private
//! key its `p256dh` belongs to. Every message gets a fresh ephemeral ECDH key and a fresh salt, so two
//! messages never share a content key. This module owns the bytes of the body and nothing else: no HTTP, no
//! VAPID, and it never keeps a key past one message.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::hkdf::{self, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// The record size written into the header: the whole message is one record, and 4096 is what every push
/// service accepts as a body.
const RECORD_SIZE: u32 = 4096;
/// salt (16) + rs (4) + idlen (1) + keyid (65, the uncompressed ephemeral public key).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
/// The padding delimiter of the last (here, only) record.
const LAST_RECORD: u8 = 0x02;
const TAG_LEN: usize = 16;
/// The largest plaintext whose body fits in 4096 bytes (RFC 8291 section 4: push services need not take more).
pub(super) const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - HEADER_LEN - 1 - TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum EncryptError {
    #[error("the subscription's p256dh is not an uncompressed P-256 public key")]
    BadReceiverKey,
    #[error("the subscription's auth secret is {0} bytes, not 16")]
    BadAuthSecret(usize),
    #[error("the payload is {0} bytes; Web Push carries at most {MAX_PLAINTEXT}")]
    TooLarge(usize),
    #[error("the system random number generator failed")]
    Random,
}

/// Encrypt `plaintext` for the browser whose subscription has `ua_public` (p256dh) and `auth_secret`: the whole
/// request body, header included.
pub(super) fn encrypt(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    check_inputs(ua_public, auth_secret, plaintext)?;
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EncryptError::Random)?;
    let ephemeral =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::Random)?;
    let as_public = ephemeral
        .compute_public_key()
        .map_err(|_| EncryptError::Random)?;
    agreement::agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&ECDH_P256, ua_public),
        |ecdh_secret| {
            seal(
                ecdh_secret,
                ua_public,
                as_public.as_ref(),
                auth_secret,
                &salt,
                plaintext,
            )
        },
    )
    // ring refuses a point that is not on the curve.
    .map_err(|_| EncryptError::BadReceiverKey)?
}

fn check_inputs(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> Result<(), EncryptError> {
    if ua_public.len() != 65 || ua_public[0] != 0x04 {
        return Err(EncryptError::BadReceiverKey);
    }
    if auth_secret.len() != 16 {
        return Err(EncryptError::BadAuthSecret(auth_secret.len()));
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    Ok(())
}

/// The content key and nonce (RFC 8291 section 3.4, RFC 8188 section 2.2), from the ECDH secret both sides
/// compute.
fn derive_keys(
    ecdh_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    auth_secret: &[u8],
    salt: &[u8; 16],
) -> ([u8; 16], [u8; 12]) {
    let prk_key = Salt::new(HKDF_SHA256, auth_secret).extract(ecdh_secret);
    let mut ikm = [0u8; 32];
    expand(
        &prk_key,
        &[b"WebPush: info\0", ua_public, as_public],
        &mut ikm,
    );
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let mut cek = [0u8; 16];
    expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek);
    let mut nonce = [0u8; 12];
    expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce);
    (cek, nonce)
}

/// ring's HKDF-Expand into `out`.
fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    // Expand fails only for outputs over 255 hash lengths; ours are at most 32 bytes.
    if let Ok(okm) = prk.expand(info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

/// The body for one message, with the ECDH secret and salt given: [`encrypt`] draws them, tests fix them to
/// reproduce RFC 8291's example byte for byte.
fn seal(
    ecdh_secret: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    auth_secret: &[u8],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    check_inputs(ua_public, auth_secret, plaintext)?;
    if as_public.len() != 65 {
        return Err(EncryptError::BadReceiverKey);
    }
    let (cek, nonce) = derive_keys(ecdh_secret, ua_public, as_public, auth_secret, salt);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EncryptError::BadReceiverKey)?,
    );
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut record,
    )
    .map_err(|_| EncryptError::TooLarge(plaintext.len()))?;

    let mut body = Vec::with_capacity(HEADER_LEN + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// What a browser does with a body: the other half of [`seal`], for tests.
#[cfg(test)]
fn open(ecdh_secret: &[u8], ua_public: &[u8], auth_secret: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let salt: [u8; 16] = body.get(..16)?.try_into().ok()?;
    let as_public = body.get(21..86)?;
    let (cek, nonce) = derive_keys(ecdh_secret, ua_public, as_public, auth_secret, &salt);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).ok()?);
    let mut record = body.get(86..)?.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut record,
        )
        .ok()?;
    let end = plain.iter().rposition(|b| *b != 0)?;
    (plain[end] == LAST_RECORD).then(|| plain[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    // RFC 8291 Appendix A.
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE: &str = "4h_95klXJ5E_qnoN";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml\
                        mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT\
                        pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";

    fn rfc_salt() -> [u8; 16] {
        b64(SALT).try_into().unwrap()
    }

    #[test]
    fn the_rfc_8291_example_keys_are_derived() {
        let (cek, nonce) = derive_keys(
            &b64(ECDH_SECRET),
            &b64(UA_PUBLIC),
            &b64(AS_PUBLIC),
            &b64(AUTH_SECRET),
            &rfc_salt(),
        );
        assert_eq!(cek.to_vec(), b64(CEK));
        assert_eq!(nonce.to_vec(), b64(NONCE));
    }

    #[test]
    fn the_rfc_8291_example_is_reproduced_byte_for_byte() {
        let body = seal(
            &b64(ECDH_SECRET),
            &b64(UA_PUBLIC),
            &b64(AS_PUBLIC),
            &b64(AUTH_SECRET),
            &rfc_salt(),
            PLAINTEXT,
        )
        .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
        assert_eq!(
            open(&b64(ECDH_SECRET), &b64(UA_PUBLIC), &b64(AUTH_SECRET), &body).as_deref(),
            Some(PLAINTEXT)
        );
    }

    #[test]
    fn a_browser_opens_what_we_encrypt_and_no_two_bodies_are_alike() {
        let rng = SystemRandom::new();
        let browser = EphemeralPrivateKey::generate(&ECDH_P256, &rng).unwrap();
        let ua_public = browser.compute_public_key().unwrap().as_ref().to_vec();
        let auth = [7u8; 16];
        let body = encrypt(&ua_public, &auth, b"{\"title\":\"Build failed\"}").unwrap();
        let again = encrypt(&ua_public, &auth, b"{\"title\":\"Build failed\"}").unwrap();
        assert_ne!(body[..16], again[..16], "a fresh salt per message");
        assert_ne!(
            body[21..86],
            again[21..86],
            "a fresh ephemeral key per message"
        );
        assert_eq!(&body[16..21], &[0, 0, 0x10, 0, 65]);

        let as_public = UnparsedPublicKey::new(&ECDH_P256, body[21..86].to_vec());
        let opened = agreement::agree_ephemeral(browser, &as_public, |secret| {
            open(secret, &ua_public, &auth, &body)
        })
        .unwrap();
        assert_eq!(
            opened.as_deref(),
            Some(&b"{\"title\":\"Build failed\"}"[..])
        );
    }

    #[test]
    fn the_largest_payload_fills_exactly_one_4096_byte_record() {
        let ua_public = b64(UA_PUBLIC);
        let auth = b64(AUTH_SECRET);
        let body = encrypt(&ua_public, &auth, &[b'x'; MAX_PLAINTEXT]).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(
            encrypt(&ua_public, &auth, &[b'x'; MAX_PLAINTEXT + 1]),
            Err(EncryptError::TooLarge(MAX_PLAINTEXT + 1))
        );
    }

    #[test]
    fn bad_subscription_keys_are_refused() {
        let auth = b64(AUTH_SECRET);
        assert_eq!(
            encrypt(&[4u8; 65], &auth, b"hi"),
            Err(EncryptError::BadReceiverKey),
            "not a point on the curve"
        );
        assert_eq!(
            encrypt(&b64(UA_PUBLIC)[..33], &auth, b"hi"),
            Err(EncryptError::BadReceiverKey)
        );
        assert_eq!(
            encrypt(&b64(UA_PUBLIC), &auth[..8], b"hi"),
            Err(EncryptError::BadAuthSecret(8))
        );
    }
}
