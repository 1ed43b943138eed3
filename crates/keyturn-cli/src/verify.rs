//! `keyturn keys verify`: reads a token from stdin, verifies it against the required scopes
//! and exits 0 when it is allowed, 1 when it is rejected and 2 when verification could not run.
//! The token is read from stdin, never from an argument, so it stays out of shell history and
//! process listings, and this command never prints it.

use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;

use keyturn_core::Token;

use crate::commands::{parse_scopes, with_keyring};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::{GlobalArgs, VerifyArgs};

/// Maximum number of bytes read from stdin. A valid token is at most `MAX_TOKEN_LEN` (82) bytes,
/// so longer input is cut here and then rejected as an invalid token.
const MAX_INPUT_BYTES: u64 = 4096;

/// Exit code of a rejected token.
const EXIT_REJECTED: u8 = 1;

/// Runs `keys verify` and returns its exit code.
pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let required = parse_scopes(&args.scopes)?;
    let token = read_token()?;

    with_keyring(global, |keyring| async move {
        let decision = keyring.verify(token.expose(), &required, None).await?;
        drop(token);
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

/// Reads one token from stdin and trims white space around it. From a terminal it prompts on
/// stderr and reads one line. Otherwise it reads everything up to the end of input.
fn read_token() -> Result<Token, CliError> {
    let stdin = std::io::stdin();
    // Reserving the maximum up front keeps the buffer from being reallocated, which would leave
    // copies of the token behind that `Token` cannot zero on drop.
    let mut text = String::with_capacity(MAX_INPUT_BYTES as usize + 1);
    let read = if stdin.is_terminal() {
        // NOTE: the terminal echoes the token as it is typed; pipe it in to keep it off screen.
        eprint!("token: ");
        stdin.lock().take(MAX_INPUT_BYTES).read_line(&mut text)
    } else {
        stdin.lock().take(MAX_INPUT_BYTES).read_to_string(&mut text)
    };
    let token = Token::new(text);
    read.map_err(|error| CliError::new(format!("failed to read the token from stdin: {error}")))?;

    let trimmed = token.expose().trim();
    if trimmed.is_empty() {
        return Err(CliError::new(
            "no token on stdin; pipe it in, such as `printf '%s' \"$TOKEN\" | keyturn keys verify`",
        ));
    }
    if trimmed.len() == token.expose().len() {
        return Ok(token);
    }
    Ok(Token::new(trimmed.to_owned()))
}
