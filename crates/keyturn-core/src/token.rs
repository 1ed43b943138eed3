//! The token format `<prefix>_<key id>_<secret><checksum>` and its parser.
//!
//! The key id is 12 base62 characters (about 71 bits, public, unique). The secret is 30 base62
//! characters from a CSPRNG (about 178 bits). The checksum is the CRC32 of everything before it,
//! written as 6 base62 digits, so scanners and the parser can reject a mistyped or truncated
//! token without a store lookup. Tokens use only `[A-Za-z0-9_]`, so a double click selects one.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::{error::quote_value, Error, Token};

pub const KEY_ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 30;
pub const CHECKSUM_LEN: usize = 6;
pub const MAX_PREFIX_LEN: usize = 32;
/// The longest token any valid prefix can produce; longer input is rejected unparsed.
pub const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + 2 + KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;
pub const DEFAULT_PREFIX: &str = "kt_live";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The public identifier of a key: 12 base62 characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// The deployment's token prefix, such as `kt_live` or `acme_test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFormat {
    prefix: String,
}

/// A token whose format, prefix and checksum are valid. Its secret has not been checked.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    key_id: KeyId,
    token: &'a str,
}

impl KeyId {
    pub fn parse(value: &str) -> Result<Self, Error> {
        if value.len() == KEY_ID_LEN && value.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            Ok(KeyId(value.to_owned()))
        } else {
            Err(Error::InvalidKeyId { key_id: quote_value(value), length: KEY_ID_LEN })
        }
    }

    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        KeyId(random_base62(rng, KEY_ID_LEN))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets a map keyed by [`KeyId`] be searched with a `&str`. The derived `Hash` and `Eq` of
/// `KeyId` are those of its string, as `Borrow` requires.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        KeyId::parse(&value)
    }
}

impl From<KeyId> for String {
    fn from(key_id: KeyId) -> String {
        key_id.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for TokenFormat {
    fn default() -> Self {
        TokenFormat { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

impl TokenFormat {
    /// Creates a format with `prefix`: 1 to 32 characters of `[a-z0-9]` in segments separated by
    /// single underscores, such as `acme_live`.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let valid_segments = prefix.split('_').all(|segment| {
            !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !valid_segments {
            return Err(Error::InvalidPrefix { prefix: quote_value(prefix) });
        }
        Ok(TokenFormat { prefix: prefix.to_owned() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn token_len(&self) -> usize {
        self.prefix.len() + 2 + KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN
    }

    /// Generates a token for `key_id` with a fresh secret drawn from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(&self, key_id: &KeyId, rng: &mut R) -> Token {
        let mut text = String::with_capacity(self.token_len());
        text.push_str(&self.prefix);
        text.push('_');
        text.push_str(key_id.as_str());
        text.push('_');
        text.push_str(&random_base62(rng, SECRET_LEN));
        let checksum = encode_checksum(crc32fast::hash(text.as_bytes()));
        text.push_str(&checksum);
        Token::new(text)
    }

    /// Checks length, alphabet, prefix, structure and checksum, in that order, without touching
    /// any store. The error names the first defect found and never quotes the token.
    pub fn parse<'a>(&self, token: &'a str) -> Result<ParsedToken<'a>, Error> {
        let key_id = self.parse_key_id(token)?;
        Ok(ParsedToken { key_id: KeyId(key_id.to_owned()), token })
    }

    /// Checks a token as [`TokenFormat::parse`] does and returns its key id as a slice of it,
    /// without allocating: the verify path looks the key id up in a map keyed by [`KeyId`].
    pub fn parse_key_id<'a>(&self, token: &'a str) -> Result<&'a str, Error> {
        let expected = self.token_len();
        if token.len() != expected {
            return Err(Error::TokenLength { expected, actual: token.len() });
        }
        if let Some(position) = token.bytes().position(|b| !(b.is_ascii_alphanumeric() || b == b'_')) {
            return Err(Error::TokenAlphabet { position });
        }
        let Some(rest) = token.strip_prefix(self.prefix.as_str()).and_then(|rest| rest.strip_prefix('_')) else {
            return Err(Error::TokenPrefix { expected: self.prefix.clone() });
        };

        let (key_id, tail) = rest.split_at(KEY_ID_LEN);
        let well_formed = !key_id.contains('_') && tail.starts_with('_') && !tail[1..].contains('_');
        if !well_formed {
            return Err(Error::TokenStructure);
        }

        let (body, checksum) = token.split_at(expected - CHECKSUM_LEN);
        if decode_checksum(checksum) != Some(crc32fast::hash(body.as_bytes())) {
            return Err(Error::TokenChecksum);
        }
        Ok(key_id)
    }
}

impl<'a> ParsedToken<'a> {
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Returns the full token text, which is what the pepper ring hashes.
    pub fn token(&self) -> &'a str {
        self.token
    }
}

fn random_base62<R: RngCore + CryptoRng>(rng: &mut R, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buffer = [0u8; 64];
    while out.len() < len {
        rng.fill_bytes(&mut buffer);
        // Bytes at or above 248 (4 × 62) are discarded so that every character is equally likely.
        for byte in buffer.iter().filter(|byte| **byte < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[usize::from(*byte % 62)] as char);
        }
    }
    buffer.fill(0);
    out
}

fn encode_checksum(mut value: u32) -> String {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|b| *b as char).collect()
}

fn decode_checksum(text: &str) -> Option<u32> {
    let mut value: u64 = 0;
    for byte in text.bytes() {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 36,
            _ => return None,
        };
        value = value * 62 + u64::from(digit);
    }
    u32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn format() -> TokenFormat {
        TokenFormat::default()
    }

    #[test]
    fn parse_key_id_matches_parse() {
        let key_id = KeyId::parse("abcdefABCDEF").unwrap();
        let token = format().generate(&key_id, &mut OsRng);
        assert_eq!(format().parse_key_id(token.expose()), Ok("abcdefABCDEF"));
        let mut corrupt = token.expose().to_owned();
        corrupt.pop();
        corrupt.push(if token.expose().ends_with('A') { 'B' } else { 'A' });
        assert_eq!(format().parse_key_id(&corrupt), Err(Error::TokenChecksum));
        assert_eq!(format().parse(&corrupt).unwrap_err(), Error::TokenChecksum);
    }

    #[test]
    fn generated_token_has_documented_shape() {
        let key_id = KeyId::generate(&mut OsRng);
        let token = format().generate(&key_id, &mut OsRng);
        let text = token.expose();
        assert_eq!(text.len(), format().token_len());
        assert!(text.starts_with(&format!("kt_live_{key_id}_")));
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert_eq!(format().parse(text).unwrap().key_id(), &key_id);
    }

    #[test]
    fn secret_carries_at_least_160_bits() {
        let bits = SECRET_LEN as f64 * 62f64.log2();
        assert!(bits >= 160.0, "{bits}");
    }

    #[test]
    fn parse_reports_each_defect() {
        let key_id = KeyId::generate(&mut OsRng);
        let token = format().generate(&key_id, &mut OsRng);
        let text = token.expose();

        let short = &text[..text.len() - 1];
        assert!(matches!(format().parse(short), Err(Error::TokenLength { .. })));

        let mut alphabet = text.to_owned();
        alphabet.replace_range(10..11, "-");
        assert_eq!(format().parse(&alphabet).unwrap_err(), Error::TokenAlphabet { position: 10 });

        let other = TokenFormat::new("kt_test").unwrap().generate(&key_id, &mut OsRng);
        assert!(matches!(format().parse(other.expose()), Err(Error::TokenPrefix { .. })));

        let mut structure = text.to_owned();
        structure.replace_range(12..13, "_");
        assert_eq!(format().parse(&structure).unwrap_err(), Error::TokenStructure);

        let mut checksum = text.to_owned();
        let last = if text.ends_with('0') { "1" } else { "0" };
        checksum.replace_range(text.len() - 1.., last);
        assert_eq!(format().parse(&checksum).unwrap_err(), Error::TokenChecksum);
    }

    #[test]
    fn parse_error_never_quotes_token() {
        let token = format().generate(&KeyId::generate(&mut OsRng), &mut OsRng);
        let mut broken = token.expose().to_owned();
        broken.push('x');
        let message = format().parse(&broken).unwrap_err().to_string();
        assert!(!message.contains(&token.expose()[8..]), "{message}");
    }

    #[test]
    fn prefix_rules() {
        for valid in ["kt_live", "acme_test", "a", "x1_y2_z3"] {
            assert!(TokenFormat::new(valid).is_ok(), "{valid}");
        }
        for invalid in ["", "_kt", "kt_", "kt__live", "KT_live", "kt-live", "abcdefghijklmnopqrstuvwxyz0123456"] {
            assert!(TokenFormat::new(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn key_id_parse_rules() {
        assert!(KeyId::parse("abcDEF012345").is_ok());
        assert!(KeyId::parse("abcDEF01234").is_err());
        assert!(KeyId::parse("abcDEF01234_").is_err());
    }

    fn format_strategy() -> impl Strategy<Value = TokenFormat> {
        prop::sample::select(vec!["kt_live", "acme_test", "x", "a1_b2_c3_d4"])
            .prop_map(|p| TokenFormat::new(p).unwrap())
    }

    proptest! {
        #[test]
        fn every_generated_token_parses_back(format in format_strategy(), seed in any::<[u8; 32]>()) {
            let mut rng = SeededRng(seed, 0);
            let key_id = KeyId::generate(&mut rng);
            let token = format.generate(&key_id, &mut rng);
            let parsed = format.parse(token.expose()).unwrap();
            prop_assert_eq!(parsed.key_id(), &key_id);
        }

        #[test]
        fn every_single_character_change_is_rejected(
            format in format_strategy(),
            seed in any::<[u8; 32]>(),
            position in any::<prop::sample::Index>(),
            replacement in prop::sample::select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-. ".to_vec()),
        ) {
            let mut rng = SeededRng(seed, 0);
            let token = format.generate(&KeyId::generate(&mut rng), &mut rng);
            let mut bytes = token.expose().as_bytes().to_vec();
            let index = position.index(bytes.len());
            prop_assume!(bytes[index] != replacement);
            bytes[index] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(format.parse(&changed).is_err());
        }
    }

    /// A deterministic generator for property tests; it is marked as a CSPRNG only so that it
    /// fits the generation API, and it is never used outside tests.
    struct SeededRng([u8; 32], u64);

    impl rand_core::RngCore for SeededRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }

        fn next_u64(&mut self) -> u64 {
            // SplitMix64 over the seed, enough to vary the generated characters.
            self.1 = self.1.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.1 ^ u64::from_le_bytes(self.0[..8].try_into().unwrap());
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let bytes = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for SeededRng {}
}
