//! Brute-force guard tests through `Keyring::authenticate`: which failures count, the 429 and its
//! `Retry-After`, valid keys from a blocked address, one audit event per block, the cooldown, and
//! that the audit row of a block contains no token. `guard_logging.rs` checks its log line.

mod common;

use std::time::Duration as StdDuration;

use common::*;
use keyturn::core::{Actor, AuditEvent, AuditEventType, Duration, Expiry, KeyId, TokenFormat, TrustedProxies};
use keyturn::store::AuditFilter;
use keyturn::{AuthRequest, Authentication, Config, GuardConfig, Issued, NewKey, RotateOptions};
use rand_core::OsRng;

const ADDR: &str = "203.0.113.7:50312";
const SECOND: i64 = 1000;

fn guarded(max_failures: u32) -> Config {
    let minute = StdDuration::from_secs(60);
    Config { guard: Some(GuardConfig::new(max_failures, minute, minute).unwrap()), ..Config::default() }
}

async fn send(fixture: &Fixture, token: &str, client_addr: Option<&str>) -> Authentication {
    let header = format!("Bearer {token}");
    let authorization = [header.as_str()];
    let request = AuthRequest { authorization: &authorization, api_key: &[], query: &[], client_addr };
    fixture.keyring.authenticate(&request, &scopes(&[])).await
}

fn status(result: &Authentication) -> u16 {
    match result {
        Authentication::Allowed { .. } => 200,
        Authentication::Rejected { response, .. } => response.status,
    }
}

fn header<'a>(result: &'a Authentication, name: &str) -> Option<&'a str> {
    let Authentication::Rejected { response, .. } = result else { return None };
    response.headers.iter().find(|(header, _)| *header == name).map(|(_, value)| value.as_str())
}

/// Returns a well-formed token with a valid checksum for the key of `issued` and another secret.
fn wrong_secret(issued: &Issued) -> String {
    TokenFormat::default().generate(&issued.record.key_id, &mut OsRng).expose().to_owned()
}

async fn guard_events(fixture: &Fixture) -> Vec<AuditEvent> {
    fixture.keyring.flush().await.unwrap();
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenFailMax), ..AuditFilter::default() };
    fixture.keyring.audit(&filter).await.unwrap()
}

#[tokio::test]
async fn blocked_address_gets_429_for_failures() {
    let fixture = Fixture::with_config(guarded(3)).await;
    let issued = fixture.keyring.create(new_key("guarded"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);

    for attempt in 1..=3 {
        let result = send(&fixture, &wrong, Some(ADDR)).await;
        assert_eq!(status(&result), 401, "failure {attempt} within the limit");
    }
    let result = send(&fixture, &wrong, Some(ADDR)).await;
    assert_eq!(status(&result), 429);
    assert_eq!(header(&result, "Retry-After"), Some("60"));
    assert_eq!(header(&result, "Content-Type"), Some("application/problem+json"));
    let Authentication::Rejected { response, decision } = &result else { unreachable!() };
    assert!(decision.is_none(), "a throttled rejection carries no decision");
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["code"], "too_many_requests");
    assert_eq!(body["status"], 429);
    assert!(body.get("key_id").is_none(), "{body}");

    fixture.clock.advance(Duration::from_secs(45));
    let result = send(&fixture, &wrong, Some(ADDR)).await;
    assert_eq!(status(&result), 429);
    assert_eq!(header(&result, "Retry-After"), Some("15"));
}

#[tokio::test]
async fn valid_key_from_blocked_address_allowed() {
    let fixture = Fixture::with_config(guarded(2)).await;
    let issued = fixture.keyring.create(new_key("shared nat"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..3 {
        send(&fixture, &wrong, Some(ADDR)).await;
    }
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 429);

    let result = send(&fixture, issued.token.expose(), Some(ADDR)).await;
    assert!(result.is_allowed(), "a valid key is throttled: status {}", status(&result));
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 429, "the valid key lifted the block");
}

#[tokio::test]
async fn other_addresses_unaffected() {
    let fixture = Fixture::with_config(guarded(2)).await;
    let issued = fixture.keyring.create(new_key("neighbours"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..3 {
        send(&fixture, &wrong, Some(ADDR)).await;
    }

    assert_eq!(status(&send(&fixture, &wrong, Some("203.0.113.8:50312")).await), 401);
    assert_eq!(status(&send(&fixture, &wrong, Some("2001:db8::1")).await), 401);
}

#[tokio::test]
async fn every_failed_outcome_counts() {
    let fixture = Fixture::with_config(guarded(1)).await;
    let valid = fixture.keyring.create(new_key("valid"), &cli()).await.unwrap();
    let token = valid.token.expose().to_owned();
    let wrong = wrong_secret(&valid);

    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    let short_lived = NewKey { expiry: Some(Expiry::After(Duration::from_secs(60))), ..new_key("expired") };
    let expired = fixture.keyring.create(short_lived, &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    let no_overlap = RotateOptions { overlap: Some(Duration::ZERO), ..RotateOptions::default() };
    fixture.keyring.rotate(&rotated.record.key_id, &no_overlap, &cli()).await.unwrap();
    fixture.clock.advance(Duration::from_days(30));

    let mut bad_checksum = token.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let unknown_id = TokenFormat::default().generate(&KeyId::parse("ZZZZZZZZZZZZ").unwrap(), &mut OsRng);
    let cases = [
        ("malformed", "not-a-token".to_owned()),
        ("bad checksum", bad_checksum),
        ("unknown key id", unknown_id.expose().to_owned()),
        ("wrong secret", wrong),
        ("revoked", revoked.token.expose().to_owned()),
        ("expired", expired.token.expose().to_owned()),
        ("rotated", rotated.token.expose().to_owned()),
    ];
    for (index, (case, token)) in cases.iter().enumerate() {
        let address = format!("198.51.100.{index}");
        assert_eq!(status(&send(&fixture, token, Some(&address)).await), 401, "{case}: first failure");
        assert_eq!(status(&send(&fixture, token, Some(&address)).await), 429, "{case}: not counted");
    }
}

#[tokio::test]
async fn requests_without_failed_token_not_counted() {
    let fixture = Fixture::with_config(guarded(1)).await;
    let issued = fixture.keyring.create(new_key("scoped"), &cli()).await.unwrap();
    let other = fixture.keyring.create(new_key("other"), &cli()).await.unwrap();
    let header = format!("Bearer {}", issued.token.expose());
    let authorization = [header.as_str()];

    for _ in 0..5 {
        let missing = AuthRequest { client_addr: Some(ADDR), ..AuthRequest::default() };
        assert_eq!(status(&fixture.keyring.authenticate(&missing, &scopes(&[])).await), 401);

        let api_key = [other.token.expose()];
        let conflicting =
            AuthRequest { authorization: &authorization, api_key: &api_key, query: &[], client_addr: Some(ADDR) };
        assert_eq!(status(&fixture.keyring.authenticate(&conflicting, &scopes(&[])).await), 400);

        let under_scoped =
            AuthRequest { authorization: &authorization, api_key: &[], query: &[], client_addr: Some(ADDR) };
        assert_eq!(status(&fixture.keyring.authenticate(&under_scoped, &scopes(&["orders:write"])).await), 403);
    }
    let wrong = wrong_secret(&issued);
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 401, "earlier requests were counted");
}

#[tokio::test]
async fn requests_without_address_not_counted() {
    let fixture = Fixture::with_config(guarded(1)).await;
    let issued = fixture.keyring.create(new_key("no address"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..30 {
        assert_eq!(status(&send(&fixture, &wrong, None).await), 401);
    }
    assert_eq!(fixture.keyring.guard_stats().unwrap().tracked_clients, 0);
}

#[tokio::test]
async fn guard_off_never_throttles() {
    let fixture = Fixture::with_config(Config { guard: None, ..Config::default() }).await;
    let issued = fixture.keyring.create(new_key("unguarded"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..50 {
        assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 401);
    }
    assert!(fixture.keyring.guard_stats().is_none());
    assert!(guard_events(&fixture).await.is_empty());
}

#[tokio::test]
async fn default_guard_allows_twenty_failures() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("defaults"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for attempt in 1..=20 {
        assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 401, "failure {attempt}");
    }
    let result = send(&fixture, &wrong, Some(ADDR)).await;
    assert_eq!(status(&result), 429);
    assert_eq!(header(&result, "Retry-After"), Some("60"));
}

#[tokio::test]
async fn one_audit_event_per_block() {
    let fixture = Fixture::with_config(guarded(3)).await;
    let issued = fixture.keyring.create(new_key("audited"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..10 {
        send(&fixture, &wrong, Some(ADDR)).await;
    }

    let events = guard_events(&fixture).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0].event;
    assert_eq!(event.key_id, None);
    assert_eq!(event.actor, Actor::System);
    assert_eq!(event.client_addr.as_deref(), Some(ADDR));
    assert_eq!(event.details["counted_as"], "203.0.113.7");
    assert_eq!(event.details["failures"], 4);
    assert_eq!(event.details["max_failures"], 3);
    assert_eq!(event.details["window"], "1m");
    assert_eq!(event.details["cooldown"], "1m");
    assert_eq!(event.details["first_failure_at"], fixture.keyring.now().to_rfc3339());
    let canonical = &events[0].canonical;
    assert!(!canonical.contains(&issued.token.expose()[21..]), "the audit row contains a secret");
    assert!(!canonical.contains(&wrong[21..]), "the audit row contains a sent secret");

    let stats = fixture.keyring.guard_stats().unwrap();
    assert_eq!((stats.blocks, stats.throttled, stats.blocked_clients), (1, 7, 1));
}

#[tokio::test]
async fn block_after_cooldown_audited_again() {
    let fixture = Fixture::with_config(guarded(2)).await;
    let issued = fixture.keyring.create(new_key("twice"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    for _ in 0..5 {
        send(&fixture, &wrong, Some(ADDR)).await;
    }
    assert_eq!(guard_events(&fixture).await.len(), 1);

    fixture.clock.advance(Duration::from_millis(60 * SECOND));
    assert_eq!(fixture.keyring.guard_stats().unwrap().blocked_clients, 0);
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 401, "the cooldown has ended");
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 401);
    assert_eq!(status(&send(&fixture, &wrong, Some(ADDR)).await), 429);

    let events = guard_events(&fixture).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].event.at, fixture.keyring.now());
}

#[tokio::test]
async fn audit_event_written_after_store_outage() {
    let fixture = Fixture::with_config(guarded(1)).await;
    let issued = fixture.keyring.create(new_key("outage"), &cli()).await.unwrap();
    let wrong = wrong_secret(&issued);
    send(&fixture, &wrong, Some(ADDR)).await;
    send(&fixture, &wrong, Some(ADDR)).await;

    fixture.store.set_down(true);
    assert!(fixture.keyring.flush().await.is_ok(), "usage has nothing to write, so flush succeeds");
    fixture.store.set_down(false);
    assert_eq!(guard_events(&fixture).await.len(), 1);
}

#[tokio::test]
async fn client_addr_follows_trusted_proxies() {
    let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
    let fixture = Fixture::with_config(Config { trusted_proxies: trusted, ..Config::default() }).await;
    let keyring = &fixture.keyring;
    assert_eq!(keyring.client_addr("10.1.2.3:443", &["198.51.100.9, 10.0.0.2"]), "198.51.100.9");
    assert_eq!(keyring.client_addr("192.0.2.1:443", &["198.51.100.9"]), "192.0.2.1:443");

    let untrusting = Fixture::new().await;
    assert_eq!(untrusting.keyring.client_addr("10.1.2.3:443", &["198.51.100.9"]), "10.1.2.3:443");
}
