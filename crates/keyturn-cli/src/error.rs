//! The CLI's error type: one line of text that `main` prints as `error: <message>` before it
//! exits with code 2. Messages come from the service layer, which names key ids and paths but
//! never a token, a secret or a pepper, or from this crate's own argument checks.

use std::fmt;

/// A failed command, reduced to the one-line message shown to the operator.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    /// Creates an error from a message. Line breaks and other control characters are replaced
    /// by spaces, so the message always prints as one line.
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        let one_line = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        CliError(one_line)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<keyturn::Error> for CliError {
    fn from(error: keyturn::Error) -> Self {
        if error.is_unavailable() {
            CliError::new(format!("{error}; try again later"))
        } else {
            CliError::new(error.to_string())
        }
    }
}

impl From<keyturn_core::Error> for CliError {
    fn from(error: keyturn_core::Error) -> Self {
        CliError::new(error.to_string())
    }
}
