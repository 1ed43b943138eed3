//! Webhook signing secrets and signatures. A secret is `whsec_` followed by the standard base64 of
//! 24 to 64 random bytes; a signature is `v1,` followed by the base64 of HMAC-SHA256 under the
//! decoded bytes of `{webhook-id}.{webhook-timestamp}.{body}`. Secrets are kept in the store
//! sealed with XChaCha20-Poly1305 under a [`WebhookKey`] held outside the database, like the
//! pepper, and bound to their endpoint id, so a sealed secret copied to another endpoint's row
//! does not open.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;

/// The prefix of a serialised signing secret.
const SECRET_PREFIX: &str = "whsec_";
/// The number of random bytes in a new signing secret.
const NEW_SECRET_BYTES: usize = 32;
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;
/// The number of bytes of a webhook key.
const WEBHOOK_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// The signature version of HMAC-SHA256 signatures.
pub const SIGNATURE_VERSION: &str = "v1";

/// A webhook signing secret. Its `Debug` output is redacted and its memory is zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WebhookSecret(Vec<u8>);

/// The key that seals signing secrets at rest. Its `Debug` output is redacted and its memory is
/// zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WebhookKey([u8; WEBHOOK_KEY_BYTES]);

impl WebhookSecret {
    /// Generates a secret of 32 random bytes.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> WebhookSecret {
        let mut bytes = vec![0u8; NEW_SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        WebhookSecret(bytes)
    }

    /// Parses `whsec_` followed by the base64 of 24 to 64 bytes. The error never quotes the text.
    pub fn parse(text: &str) -> Result<WebhookSecret, Error> {
        let invalid = |reason: &str| Error::InvalidField { field: "webhook secret", reason: reason.to_owned() };
        let encoded =
            text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| invalid("it does not start with \"whsec_\""))?;
        let bytes =
            Zeroizing::new(STANDARD.decode(encoded).map_err(|_| invalid("it is not valid base64 after \"whsec_\""))?);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(invalid(&format!(
                "it decodes to {} bytes; a secret is {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes",
                bytes.len()
            )));
        }
        Ok(WebhookSecret(bytes.to_vec()))
    }

    /// Returns the serialised secret, `whsec_` and base64, to show once to the operator.
    pub fn expose(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0)))
    }

    /// Signs one message: `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so building one cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("{SIGNATURE_VERSION},{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// Builds the `webhook-signature` header value: one signature per secret, separated by spaces.
pub fn signature_header(secrets: &[WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signatures: Vec<String> = secrets.iter().map(|secret| secret.sign(msg_id, timestamp, body)).collect();
    signatures.join(" ")
}

impl WebhookKey {
    /// Parses the standard base64 of exactly 32 bytes. `origin` names where the text came from,
    /// for the error message, which never quotes it.
    pub fn parse(text: &str, origin: &str) -> Result<WebhookKey, Error> {
        let invalid =
            |reason: String| Error::InvalidField { field: "webhook key", reason: format!("{origin}: {reason}") };
        let bytes =
            Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| invalid("it is not valid base64".to_owned()))?);
        let key: [u8; WEBHOOK_KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "it decodes to {} bytes; a webhook key is {WEBHOOK_KEY_BYTES} random bytes, as `keyturn init` generates",
                bytes.len()
            ))
        })?;
        Ok(WebhookKey(key))
    }

    /// Generates the base64 text of a new webhook key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; WEBHOOK_KEY_BYTES]);
        rng.fill_bytes(bytes.as_mut());
        Zeroizing::new(STANDARD.encode(bytes.as_ref()))
    }

    /// Seals `secret` for endpoint `endpoint_id`: a random 24-byte nonce followed by the
    /// ciphertext and tag.
    pub fn seal<R: RngCore + CryptoRng>(&self, secret: &WebhookSecret, endpoint_id: &str, rng: &mut R) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let payload = Payload { msg: &secret.0, aad: endpoint_id.as_bytes() };
        // Encryption fails only for messages longer than the cipher's limit of about 256 GiB.
        let sealed = cipher.encrypt(XNonce::from_slice(&nonce), payload).expect("a secret is far below the limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a secret sealed for `endpoint_id`. Fails when another key sealed it, when it was
    /// sealed for another endpoint, or when the bytes were changed.
    pub fn open(&self, sealed: &[u8], endpoint_id: &str) -> Result<WebhookSecret, Error> {
        let failed = || Error::InvalidField {
            field: "webhook secret",
            reason: format!(
                "the stored secret of endpoint {endpoint_id} does not open under the configured webhook key; \
                 check KEYTURN_WEBHOOK_KEY or KEYTURN_WEBHOOK_KEY_FILE, or rotate the endpoint's secret"
            ),
        };
        if sealed.len() <= NONCE_BYTES {
            return Err(failed());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let payload = Payload { msg: ciphertext, aad: endpoint_id.as_bytes() };
        let bytes = Zeroizing::new(cipher.decrypt(XNonce::from_slice(nonce), payload).map_err(|_| failed())?);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(failed());
        }
        Ok(WebhookSecret(bytes.to_vec()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    /// Computed independently with Python's `hmac` and `base64` modules over the key bytes 0..24.
    const VECTOR_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
    const VECTOR_SIGNATURE: &str = "v1,juTipmymc2qIWHjskLEAN0KUfSucfHP2cCAFiULfoPw=";

    #[test]
    fn sign_matches_fixed_vector() {
        let secret = WebhookSecret::parse(VECTOR_SECRET).unwrap();

        let signature = secret.sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1_674_087_231, br#"{"type":"contact.created"}"#);

        assert_eq!(signature, VECTOR_SIGNATURE);
    }

    #[test]
    fn signature_header_joins_with_spaces() {
        let first = WebhookSecret::parse(VECTOR_SECRET).unwrap();
        let second = WebhookSecret::generate(&mut OsRng);

        let header = signature_header(
            &[first, second],
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            1_674_087_231,
            br#"{"type":"contact.created"}"#,
        );

        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], VECTOR_SIGNATURE);
        assert!(parts[1].starts_with("v1,"));
    }

    #[test]
    fn secret_round_trips_and_hides() {
        let secret = WebhookSecret::generate(&mut OsRng);
        let text = secret.expose();

        let parsed = WebhookSecret::parse(&text).unwrap();

        assert_eq!(parsed.expose().as_str(), text.as_str());
        assert!(text.starts_with("whsec_"));
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn secret_parse_rejects_bad_input() {
        let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        for text in ["", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", "whsec_!!!!", short.as_str(), long.as_str()] {
            let error = WebhookSecret::parse(text).unwrap_err().to_string();
            assert!(error.starts_with("invalid webhook secret"), "{error}");
            if text.len() > 8 {
                assert!(!error.contains(&text[6..]), "{error}");
            }
        }
    }

    #[test]
    fn sealed_secret_opens_only_for_its_endpoint() {
        let key = WebhookKey::parse(&WebhookKey::generate(&mut OsRng), "test").unwrap();
        let other = WebhookKey::parse(&WebhookKey::generate(&mut OsRng), "test").unwrap();
        let secret = WebhookSecret::generate(&mut OsRng);

        let sealed = key.seal(&secret, "wh_one", &mut OsRng);

        assert_eq!(key.open(&sealed, "wh_one").unwrap().expose().as_str(), secret.expose().as_str());
        assert!(key.open(&sealed, "wh_two").is_err());
        assert!(other.open(&sealed, "wh_one").is_err());
        assert!(key.open(&sealed[..10], "wh_one").is_err());
        let plain = secret.expose();
        let raw = STANDARD.decode(&plain[6..]).unwrap();
        assert!(!sealed.windows(raw.len()).any(|window| window == raw.as_slice()));
    }

    #[test]
    fn webhook_key_errors_hide_value() {
        let text = STANDARD.encode([9u8; 31]);

        let error = WebhookKey::parse(&text, "KEYTURN_WEBHOOK_KEY").unwrap_err().to_string();

        assert!(error.contains("31 bytes"), "{error}");
        assert!(!error.contains(&text), "{error}");
        assert_eq!(format!("{:?}", WebhookKey([1u8; 32])), "WebhookKey(<redacted>)");
    }
}
