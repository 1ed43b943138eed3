//! Checks the log line of a brute-force guard block: one warning on `keyturn::guard` per block,
//! naming the client address and no token. It runs alone in this test binary, because a log
//! capture set per thread misses the events of call sites that other tests reach first.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use common::*;
use keyturn::core::TokenFormat;
use keyturn::{AuthRequest, Config, GuardConfig};
use rand_core::OsRng;

const ADDR: &str = "203.0.113.7:50312";

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
async fn block_logged_once_without_token() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _subscriber = tracing::subscriber::set_default(subscriber);

    let minute = StdDuration::from_secs(60);
    let config = Config { guard: Some(GuardConfig::new(2, minute, minute).unwrap()), ..Config::default() };
    let fixture = Fixture::with_config(config).await;
    let issued = fixture.keyring.create(new_key("logged"), &cli()).await.unwrap();
    let wrong = TokenFormat::default().generate(&issued.record.key_id, &mut OsRng);
    let wrong = wrong.expose();
    for token in [wrong, wrong, wrong, wrong, wrong, wrong, issued.token.expose()] {
        let header = format!("Bearer {token}");
        let authorization = [header.as_str()];
        let request = AuthRequest { authorization: &authorization, api_key: &[], query: &[], client_addr: Some(ADDR) };
        fixture.keyring.authenticate(&request, &scopes(&[])).await;
    }
    fixture.keyring.flush().await.unwrap();

    let output = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let blocks: Vec<&str> = output.lines().filter(|line| line.contains("client blocked")).collect();
    assert_eq!(blocks.len(), 1, "{output}");
    assert!(blocks[0].contains("WARN"), "{}", blocks[0]);
    assert!(blocks[0].contains("keyturn::guard"), "{}", blocks[0]);
    assert!(blocks[0].contains("203.0.113.7"), "{}", blocks[0]);
    for token in [issued.token.expose(), wrong] {
        assert!(!output.contains(&token[21..]), "a token secret appears in the logs");
    }
}
