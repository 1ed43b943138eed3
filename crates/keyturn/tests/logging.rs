//! Runs every kind of operation with all logging on at TRACE level and checks that no issued
//! token, and no pepper, appears in the captured output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use keyturn::{AuthRequest, RotateOptions};

/// Authorization values, API key header values and query parameters of one request.
type RequestParts<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<(&'a str, &'a str)>);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_contain_no_token_or_pepper() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fixture = Fixture::new().await;
    let mut tokens = Vec::new();
    let issued = fixture.keyring.create(new_key("logged"), &cli()).await.unwrap();
    tokens.push(issued.token.expose().to_owned());
    let successor = fixture.keyring.rotate(&issued.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    tokens.push(successor.token.expose().to_owned());

    let mut wrong = tokens[0].clone();
    wrong.replace_range(20..21, if &wrong[20..21] == "a" { "b" } else { "a" });
    let header = format!("Bearer {}", tokens[1]);
    let requests: Vec<RequestParts> = vec![
        (vec![header.as_str()], vec![], vec![]),
        (vec![header.as_str()], vec![tokens[0].as_str()], vec![]),
        (vec![], vec![wrong.as_str()], vec![]),
        (vec![], vec![], vec![("token", tokens[0].as_str())]),
    ];
    for (authorization, api_key, query) in &requests {
        let request = AuthRequest { authorization, api_key, query, client_addr: None };
        fixture.keyring.authenticate(&request, &scopes(&["orders:read"])).await;
    }
    fixture.keyring.revoke(&successor.record.key_id, Some("test"), &cli()).await.unwrap();
    fixture.keyring.verify(&tokens[1], &scopes(&[]), None).await.unwrap();
    fixture.keyring.flush().await.unwrap();
    println!("{:?}", fixture.keyring);

    let output = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("key created"), "logging was not captured: {output}");
    for token in &tokens {
        let secret = &token[token.len() - 36..];
        assert!(!output.contains(secret), "a token secret appears in the logs");
    }
    let pepper_value = fixture.pepper.split(':').nth(1).unwrap();
    assert!(!output.contains(pepper_value), "the pepper appears in the logs");
    assert!(!format!("{:?}", fixture.keyring).contains(pepper_value));
}
