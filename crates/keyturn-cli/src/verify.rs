//! `keyturn keys verify`: reads a token from stdin, verifies it against the required scopes
//! and exits 0 when it is allowed, 1 when it is rejected and 2 when verification could not run.
//! The token is read from stdin, never from an argument, so it stays out of shell history and
//! process listings, and this command never prints it.

use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;

use keyturn_core::token::MAX_TOKEN_LEN;
use keyturn_core::{Decision, Token};
use zeroize::Zeroize;

use crate::commands::{parse_scopes, with_keyring};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::{GlobalArgs, VerifyArgs};

/// Maximum number of bytes read from stdin: room for a token padded with white space, such as
/// one pasted from a file. A valid token is at most `MAX_TOKEN_LEN` (82) bytes, so any text that
/// is not white space beyond that is rejected as an invalid token.
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// Exit code of a rejected token.
const EXIT_REJECTED: u8 = 1;

/// Input of `keys verify`, read from stdin.
enum Input {
    /// The input with surrounding white space removed; never empty.
    Text(Token),
    /// Input that is not UTF-8, so it cannot be a token. Its bytes were zeroed.
    NotUtf8,
}

/// Runs `keys verify` and returns its exit code.
pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let required = parse_scopes(&args.scopes)?;
    let input = read_input()?;

    with_keyring(global, |keyring| async move {
        let decision = match input {
            Input::Text(token) => keyring.verify(token.expose(), &required, None).await?,
            Input::NotUtf8 => Decision::invalid(&required),
        };
        if let Err(error) = keyring.flush().await {
            eprintln!("warning: failed to record the key's usage: {error}");
        }

        let text = if args.json {
            output::json_text(&output::decision_json(&decision))
        } else {
            output::decision_text(&decision)
        };
        emit(&text)?;
        Ok(if decision.allowed() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REJECTED) })
    })
    .await
}

/// Reads the token from stdin and trims white space around it. From a terminal it prompts on
/// stderr and reads one line. Otherwise it reads everything up to the end of input, and fails
/// when that is more than `MAX_INPUT_BYTES` or only white space.
fn read_input() -> Result<Input, CliError> {
    let stdin = std::io::stdin();
    // Reserving one byte more than the limit up front keeps the buffer from being reallocated,
    // which would leave copies of the token behind that are never zeroed. The extra byte shows
    // that the input went on past the limit.
    let mut bytes = Vec::with_capacity(MAX_INPUT_BYTES + 1);
    let terminal = stdin.is_terminal();
    let mut limited = stdin.lock().take(MAX_INPUT_BYTES as u64 + 1);
    let read = if terminal {
        // NOTE: the terminal echoes the token as it is typed; pipe it in to keep it off screen.
        eprint!("token: ");
        limited.read_until(b'\n', &mut bytes)
    } else {
        limited.read_to_end(&mut bytes)
    };

    if let Err(error) = read {
        bytes.zeroize();
        return Err(CliError::new(format!("failed to read the token from stdin: {error}")));
    }
    if bytes.len() > MAX_INPUT_BYTES {
        bytes.zeroize();
        return Err(CliError::new(format!(
            "stdin contains more than {MAX_INPUT_BYTES} bytes, the maximum read; a token is at most {MAX_TOKEN_LEN} \
             bytes, so pipe in only the token"
        )));
    }

    let token = match String::from_utf8(bytes) {
        Ok(text) => Token::new(text),
        Err(error) => {
            error.into_bytes().zeroize();
            return Ok(Input::NotUtf8);
        }
    };
    let trimmed = token.expose().trim();
    if trimmed.is_empty() {
        return Err(CliError::new(
            "no token on stdin; pipe it in, such as `printf '%s' \"$TOKEN\" | keyturn keys verify`",
        ));
    }
    if trimmed.len() == token.expose().len() {
        return Ok(Input::Text(token));
    }
    Ok(Input::Text(Token::new(trimmed.to_owned())))
}
