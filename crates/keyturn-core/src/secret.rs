//! Secret-holding types. Each one redacts `Debug`, zeroizes its memory on drop and compares in
//! constant time, so a secret cannot reach a log line through formatting or leak through timing.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A full API token as presented by a client or shown once at creation.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Token(String);

/// The key material of one pepper: the HMAC key under which token hashes are computed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pepper(Vec<u8>);

impl Token {
    pub fn new(value: String) -> Self {
        Token(value)
    }

    /// Returns the token text. Call this only to hash it or to show it to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Token {}

impl Pepper {
    pub fn new(bytes: Vec<u8>) -> Self {
        Pepper(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pepper(<redacted {} bytes>)", self.0.len())
    }
}

impl PartialEq for Pepper {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Pepper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted() {
        let token = Token::new("kt_live_abc_supersecretvalue".to_owned());
        let printed = format!("{token:?} {:#?}", token);
        assert!(!printed.contains("supersecret"), "{printed}");
    }

    #[test]
    fn pepper_debug_is_redacted() {
        let pepper = Pepper::new(b"pepper-material-0123456789abcdef".to_vec());
        let printed = format!("{pepper:?}");
        assert!(!printed.contains("pepper-material"), "{printed}");
        assert!(printed.contains("32 bytes"));
    }

    #[test]
    fn token_equality_compares_content() {
        assert_eq!(Token::new("a".into()), Token::new("a".into()));
        assert_ne!(Token::new("a".into()), Token::new("b".into()));
    }
}
