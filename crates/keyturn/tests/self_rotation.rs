//! Self-rotation tests of the keyring on a real SQLite file, driven by a manual clock. They cover
//! the states that may rotate, the replacement of an unused successor, the conflicts, the policy
//! switch, and the chain lifetime cap 1 ms before and exactly at its end.

mod common;

use common::*;
use keyturn::core::{Actor, AuditEventType, Duration, Expiry, Instant, Outcome, SelfRotationDenied};
use keyturn::store::AuditFilter;
use keyturn::{Error, NewKey, RotateOptions, SelfRotationOptions};

const ADDR: &str = "127.0.0.1:40000";

async fn outcome(fixture: &Fixture, token: &str) -> Outcome {
    fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap().outcome
}

fn thirty_day_key(name: &str) -> NewKey {
    NewKey { expiry: Some(Expiry::After(Duration::from_days(30))), ..new_key(name) }
}

#[tokio::test]
async fn active_expiring_and_grace_may_rotate() {
    let fixture = Fixture::new().await;
    // 30-day keys: active at day 1, expiring from day 16, in grace from day 30 to day 37.
    for (day, expected) in [(1, Outcome::Active), (20, Outcome::Expiring), (31, Outcome::Grace)] {
        fixture.at(T0);
        let issued = fixture.keyring.create(thirty_day_key("client"), &cli()).await.unwrap();
        let now = T0 + day * DAY;
        fixture.at(now);
        assert_eq!(outcome(&fixture, issued.token.expose()).await, expected);

        let successor = fixture.keyring.self_rotate(issued.token.expose(), Some(ADDR)).await.unwrap();

        assert_eq!(successor.record.predecessor_id.as_ref(), Some(&issued.record.key_id), "{expected}");
        assert_eq!(successor.record.expires_at, Some(Instant::from_millis(now + 30 * DAY)), "{expected}");
        assert_eq!(successor.record.chain_started_at, issued.record.chain_started_at, "{expected}");
        assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active, "{expected}");
        assert_eq!(outcome(&fixture, issued.token.expose()).await, Outcome::Superseded, "{expected}");
    }
}

#[tokio::test]
async fn self_rotation_is_audited_with_key_as_actor() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("audited"), &cli()).await.unwrap();
    let successor = fixture.keyring.self_rotate(issued.token.expose(), Some(ADDR)).await.unwrap();

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenSelfRotated), ..AuditFilter::default() };
    let events = fixture.keyring.audit(&filter).await.unwrap();
    assert_eq!(events.len(), 1);
    let event = &events[0].event;
    assert_eq!(event.key_id.as_ref(), Some(&issued.record.key_id));
    assert_eq!(event.actor, Actor::Key(issued.record.key_id.clone()));
    assert_eq!(event.client_addr.as_deref(), Some(ADDR));
    assert_eq!(event.details["successor_id"], successor.record.key_id.as_str());

    let created = AuditFilter { key_id: Some(successor.record.key_id.clone()), ..AuditFilter::default() };
    let created = fixture.keyring.audit(&created).await.unwrap();
    assert_eq!(created[0].event.event, AuditEventType::AuthnTokenCreated);
    assert_eq!(created[0].event.actor, Actor::Key(issued.record.key_id.clone()));
}

#[tokio::test]
async fn superseded_replaces_unused_successor() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("lost response"), &cli()).await.unwrap();
    let lost = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();
    let overlap_end = fixture.keyring.get(&old.record.key_id).await.unwrap().record.overlap_ends_at;

    fixture.at(T0 + 60_000);
    let fresh = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();

    assert_ne!(fresh.record.key_id, lost.record.key_id);
    assert_eq!(outcome(&fixture, lost.token.expose()).await, Outcome::Revoked);
    assert_eq!(outcome(&fixture, fresh.token.expose()).await, Outcome::Active);
    let view = fixture.keyring.get(&old.record.key_id).await.unwrap();
    assert_eq!(view.record.successor_id.as_ref(), Some(&fresh.record.key_id));
    assert_eq!(view.record.overlap_ends_at, overlap_end);
    assert_eq!(view.state.outcome, Outcome::Superseded);
}

#[tokio::test]
async fn replacement_waits_ten_seconds() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("concurrent"), &cli()).await.unwrap();
    let first = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();

    fixture.at(T0 + 9_999);
    let error = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap_err();
    assert!(matches!(error, Error::AlreadyRotated { .. }), "{error:?}");
    assert_eq!(outcome(&fixture, first.token.expose()).await, Outcome::Active);

    fixture.at(T0 + 10_000);
    let replacement = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();
    assert_eq!(outcome(&fixture, replacement.token.expose()).await, Outcome::Active);
    assert_eq!(outcome(&fixture, first.token.expose()).await, Outcome::Revoked);
}

#[tokio::test]
async fn operator_successor_never_replaced() {
    let fixture = Fixture::new().await;
    let leaked = fixture.keyring.create(new_key("leaked"), &cli()).await.unwrap();
    let issued = fixture.keyring.rotate(&leaked.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();

    fixture.at(T0 + DAY / 2);
    let error = fixture.keyring.self_rotate(leaked.token.expose(), Some(ADDR)).await.unwrap_err();

    assert!(matches!(error, Error::AlreadyRotated { .. }), "{error:?}");
    assert_eq!(outcome(&fixture, issued.token.expose()).await, Outcome::Active);
}

#[tokio::test]
async fn revoked_successor_never_replaced() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("revoked successor"), &cli()).await.unwrap();
    let successor = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();
    fixture.keyring.revoke(&successor.record.key_id, Some("leaked"), &cli()).await.unwrap();

    fixture.at(T0 + DAY / 2);
    let error = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap_err();

    assert!(matches!(error, Error::AlreadyRotated { .. }), "{error:?}");
}

#[tokio::test]
async fn used_successor_conflicts() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("used"), &cli()).await.unwrap();
    let successor = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap();
    assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active);
    fixture.keyring.flush().await.unwrap();

    let error = fixture.keyring.self_rotate(old.token.expose(), Some(ADDR)).await.unwrap_err();

    match error {
        Error::SuccessorUsed { key_id, successor_id } => {
            assert_eq!(key_id, old.record.key_id);
            assert_eq!(successor_id, successor.record.key_id);
        }
        other => panic!("expected SuccessorUsed, got {other:?}"),
    }
    assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active);
}

#[tokio::test]
async fn disabled_policy_rejects() {
    let fixture = Fixture::new().await;
    let options = SelfRotationOptions { allowed: Some(false), ..SelfRotationOptions::default() };
    let issued = fixture.keyring.create_with(new_key("operator only"), options, &cli()).await.unwrap();
    assert!(!issued.record.self_rotation);

    let error = fixture.keyring.self_rotate(issued.token.expose(), Some(ADDR)).await.unwrap_err();

    assert!(matches!(error, Error::SelfRotationDenied(SelfRotationDenied::Disabled { .. })), "{error:?}");
    let view = fixture.keyring.get(&issued.record.key_id).await.unwrap();
    assert_eq!(view.record.successor_id, None);
}

#[tokio::test]
async fn chain_lifetime_caps_at_boundary() {
    let fixture = Fixture::new().await;
    let options = SelfRotationOptions { max_chain_lifetime: Some(Duration::from_days(10)), ..Default::default() };
    let first = fixture.keyring.create_with(thirty_day_key("capped"), options, &cli()).await.unwrap();
    let chain_end = T0 + 10 * DAY;

    fixture.at(chain_end - 1);
    let last = fixture.keyring.self_rotate(first.token.expose(), Some(ADDR)).await.unwrap();
    assert_eq!(last.record.expires_at, Some(Instant::from_millis(chain_end)));
    assert_eq!(last.record.max_chain_lifetime, Duration::from_days(10));
    assert!(last.record.self_rotation);

    fixture.at(chain_end);
    assert_eq!(outcome(&fixture, last.token.expose()).await, Outcome::Grace);
    let error = fixture.keyring.self_rotate(last.token.expose(), Some(ADDR)).await.unwrap_err();

    match &error {
        Error::SelfRotationDenied(SelfRotationDenied::ChainEnded { chain_ends_at, .. }) => {
            assert_eq!(*chain_ends_at, Instant::from_millis(chain_end));
        }
        other => panic!("expected ChainEnded, got {other:?}"),
    }
    assert!(error.to_string().contains("an operator must issue a new key"), "{error}");
}

#[tokio::test]
async fn rejected_keys_cannot_rotate() {
    let fixture = Fixture::new().await;
    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    let expired = fixture.keyring.create(thirty_day_key("expired"), &cli()).await.unwrap();
    fixture.at(T0 + 37 * DAY);

    for (issued, expected) in [(&revoked, Outcome::Revoked), (&expired, Outcome::Expired)] {
        let error = fixture.keyring.self_rotate(issued.token.expose(), Some(ADDR)).await.unwrap_err();
        assert!(matches!(error, Error::NotRotatable { outcome, .. } if outcome == expected), "{error:?}");
    }
}

#[tokio::test]
async fn invalid_token_rejected() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("real"), &cli()).await.unwrap();
    let token = issued.token.expose();
    let other = fixture.keyring.create(new_key("other"), &cli()).await.unwrap();
    // The first key's id with the other key's secret and checksum fails the checksum or the hash.
    let (prefix, _) = token.rsplit_once('_').unwrap();
    let (_, secret) = other.token.expose().rsplit_once('_').unwrap();
    let forged = format!("{prefix}_{secret}");

    for candidate in ["kt_live_nonsense", forged.as_str()] {
        let error = fixture.keyring.self_rotate(candidate, Some(ADDR)).await.unwrap_err();
        assert!(matches!(error, Error::InvalidToken), "{error:?}");
    }
}

#[tokio::test]
async fn reserved_scope_key_needs_admin() {
    let fixture = Fixture::new().await;
    let reader = NewKey { scopes: scopes(&["keyturn:keys:read"]), ..new_key("reader") };
    let reader = fixture.keyring.create(reader, &cli()).await.unwrap();
    let admin = NewKey { scopes: scopes(&["keyturn:admin"]), ..new_key("admin") };
    let admin = fixture.keyring.create(admin, &cli()).await.unwrap();

    let error = fixture.keyring.self_rotate(reader.token.expose(), Some(ADDR)).await.unwrap_err();
    assert!(matches!(error, Error::ReservedScope), "{error:?}");
    assert!(fixture.keyring.self_rotate(admin.token.expose(), Some(ADDR)).await.is_ok());
}
