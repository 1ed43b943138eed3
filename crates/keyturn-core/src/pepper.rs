//! The pepper ring: versioned HMAC-SHA256 keys under which token hashes are computed.
//!
//! The ring is parsed from text (the `KEYTURN_PEPPER` variable or the lines of a pepper file);
//! reading the file and checking its mode belong to the service layer. The first entry is the
//! current pepper and hashes every new key; older entries still verify keys hashed under them
//! until those keys are rehashed.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{error::quote_value, Error, Pepper};

/// The shortest pepper accepted, in bytes (256 bits, the HMAC-SHA256 block's natural key size).
pub const MIN_PEPPER_BYTES: usize = 32;

/// The version label of one pepper, such as `1` or `2027a`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PepperId(String);

/// `HMAC-SHA256(pepper, token)`: what the store keeps in place of the secret.
#[derive(Clone, Copy, Eq)]
pub struct TokenHash([u8; 32]);

/// An ordered set of peppers; the first is current.
#[derive(Clone)]
pub struct PepperRing {
    entries: Vec<(PepperId, Pepper)>,
}

impl PepperId {
    /// Parses a pepper id: 1 to 32 characters of `[A-Za-z0-9._-]`.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid = !value.is_empty()
            && value.len() <= 32
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(PepperId(value.to_owned()))
        } else {
            Err(Error::InvalidPepper {
                entry: format!("id {}", quote_value(value)),
                reason: "a pepper id is 1 to 32 characters of [A-Za-z0-9._-]".to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PepperId {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        PepperId::parse(&value)
    }
}

impl From<PepperId> for String {
    fn from(id: PepperId) -> String {
        id.0
    }
}

impl fmt::Debug for PepperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PepperId({})", self.0)
    }
}

impl fmt::Display for PepperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TokenHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// Reads a hash from a stored column; `None` when the column does not hold 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(TokenHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

impl PepperRing {
    /// Parses `ID:BASE64` entries separated by commas, as in `KEYTURN_PEPPER`. The first entry
    /// is the current pepper.
    pub fn parse_list(text: &str) -> Result<Self, Error> {
        Self::from_entries(text.split(','), "KEYTURN_PEPPER")
    }

    /// Parses a pepper file: one `ID:BASE64` entry per line, the first current; blank lines and
    /// lines starting with `#` are ignored.
    pub fn parse_file(text: &str) -> Result<Self, Error> {
        let lines = text.lines().filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'));
        Self::from_entries(lines, "the pepper file")
    }

    /// Generates a new `ID:BASE64` entry with 32 random bytes, for `keyturn init`.
    pub fn generate_entry<R: RngCore + CryptoRng>(id: &PepperId, rng: &mut R) -> String {
        let mut bytes = [0u8; MIN_PEPPER_BYTES];
        rng.fill_bytes(&mut bytes);
        let entry = format!("{id}:{}", STANDARD.encode(bytes));
        bytes.fill(0);
        entry
    }

    pub fn current_id(&self) -> &PepperId {
        &self.entries[0].0
    }

    pub fn ids(&self) -> impl Iterator<Item = &PepperId> {
        self.entries.iter().map(|(id, _)| id)
    }

    pub fn contains(&self, id: &PepperId) -> bool {
        self.entries.iter().any(|(entry, _)| entry == id)
    }

    /// Hashes `token` under the current pepper.
    pub fn hash_current(&self, token: &str) -> (PepperId, TokenHash) {
        let (id, pepper) = &self.entries[0];
        (id.clone(), hmac_sha256(pepper, token))
    }

    /// Hashes `token` under the pepper `id`; `None` when the ring has no such pepper.
    pub fn hash_with(&self, id: &PepperId, token: &str) -> Option<TokenHash> {
        self.entries.iter().find(|(entry, _)| entry == id).map(|(_, pepper)| hmac_sha256(pepper, token))
    }

    fn from_entries<'a>(entries: impl Iterator<Item = &'a str>, source: &str) -> Result<Self, Error> {
        let mut ring = Vec::new();
        for (index, entry) in entries.enumerate() {
            let position = format!("{} in {source}", index + 1);
            let (id, encoded) = entry.trim().split_once(':').ok_or_else(|| Error::InvalidPepper {
                entry: position.clone(),
                reason: "expected ID:BASE64, such as 1:<44 base64 characters>".to_owned(),
            })?;
            let id = PepperId::parse(id.trim())?;
            let bytes = STANDARD.decode(encoded.trim()).map_err(|_| Error::InvalidPepper {
                entry: format!("{id} ({position})"),
                reason: "the value after the colon is not valid base64".to_owned(),
            })?;
            if bytes.len() < MIN_PEPPER_BYTES {
                return Err(Error::InvalidPepper {
                    entry: format!("{id} ({position})"),
                    reason: format!(
                        "it is {} bytes long; use at least {MIN_PEPPER_BYTES} random bytes, as `keyturn init` generates",
                        bytes.len()
                    ),
                });
            }
            if ring.iter().any(|(existing, _)| existing == &id) {
                return Err(Error::InvalidPepper {
                    entry: format!("{id} ({position})"),
                    reason: "the id appears twice; give every pepper its own id".to_owned(),
                });
            }
            ring.push((id, Pepper::new(bytes)));
        }
        if ring.is_empty() {
            return Err(Error::MissingPepper { hint: format!("{source} has no entry") });
        }
        Ok(PepperRing { entries: ring })
    }
}

impl fmt::Debug for PepperRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PepperRing").field("ids", &self.ids().collect::<Vec<_>>()).finish()
    }
}

fn hmac_sha256(pepper: &Pepper, token: &str) -> TokenHash {
    // HMAC accepts keys of any length, so creating the MAC cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper.expose()).expect("HMAC takes keys of any length");
    mac.update(token.as_bytes());
    TokenHash(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn entry(id: &str) -> String {
        PepperRing::generate_entry(&PepperId::parse(id).unwrap(), &mut OsRng)
    }

    #[test]
    fn ring_parses_list_with_current_first() {
        let ring = PepperRing::parse_list(&format!("{},{}", entry("2"), entry("1"))).unwrap();
        assert_eq!(ring.current_id().as_str(), "2");
        assert_eq!(ring.ids().count(), 2);
    }

    #[test]
    fn ring_parses_file_skipping_comments() {
        let text = format!("# current first\n{}\n\n{}\n", entry("b"), entry("a"));
        let ring = PepperRing::parse_file(&text).unwrap();
        assert_eq!(ring.current_id().as_str(), "b");
    }

    #[test]
    fn ring_rejects_bad_entries() {
        let short = format!("1:{}", STANDARD.encode([7u8; 16]));
        let cases = ["", "nocolon", "1:!!!notbase64", short.as_str(), "bad id:AAAA"];
        for text in cases {
            assert!(PepperRing::parse_list(text).is_err(), "{text:?}");
        }
        let duplicate = format!("{},{}", entry("1"), entry("1"));
        assert!(PepperRing::parse_list(&duplicate).is_err());
    }

    #[test]
    fn ring_error_never_quotes_pepper() {
        let secret = STANDARD.encode([9u8; 16]);
        let message = PepperRing::parse_list(&format!("1:{secret}")).unwrap_err().to_string();
        assert!(!message.contains(&secret), "{message}");
    }

    #[test]
    fn hash_depends_on_pepper_and_token() {
        let ring = PepperRing::parse_list(&format!("{},{}", entry("2"), entry("1"))).unwrap();
        let (current, hash) = ring.hash_current("token-a");
        assert_eq!(current.as_str(), "2");
        assert_eq!(ring.hash_with(&current, "token-a"), Some(hash));
        assert_ne!(ring.hash_with(&PepperId::parse("1").unwrap(), "token-a"), Some(hash));
        assert_ne!(ring.hash_with(&current, "token-b"), Some(hash));
        assert_eq!(ring.hash_with(&PepperId::parse("9").unwrap(), "token-a"), None);
    }

    #[test]
    fn ring_debug_shows_ids_only() {
        let line = entry("1");
        let ring = PepperRing::parse_list(&line).unwrap();
        let printed = format!("{ring:?}");
        assert!(printed.contains("\"1\"") || printed.contains("PepperId(1)"), "{printed}");
        assert!(!printed.contains(line.split(':').nth(1).unwrap()), "{printed}");
    }
}
