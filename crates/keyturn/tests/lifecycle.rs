//! Lifecycle tests of the keyring on a real SQLite file: a manual clock moves each key through
//! every transition, including 1 ms before and exactly at each deadline.

mod common;

use common::*;
use keyturn::core::{Actor, AuditEventType, Duration, Expiry, Instant, Outcome};
use keyturn::store::AuditFilter;
use keyturn::{Caller, Error, ListFilter, NewKey, RotateOptions};

async fn outcome(fixture: &Fixture, token: &str) -> Outcome {
    fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap().outcome
}

#[tokio::test]
async fn default_policy_applies_to_new_key() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("default"), &cli()).await.unwrap();
    let record = &issued.record;
    assert_eq!(record.expires_at, Some(Instant::from_millis(T0 + 90 * DAY)));
    assert_eq!(record.grace, Duration::from_days(7));
    assert_eq!(record.warn_before, Duration::from_days(14));
    assert_eq!(record.owner.as_deref(), Some("billing"));
}

#[tokio::test]
async fn create_if_empty_creates_first_key_only() {
    let fixture = Fixture::new().await;

    let first = fixture.keyring.create_if_empty(new_key("first"), &cli()).await.unwrap();
    let second = fixture.keyring.create_if_empty(new_key("second"), &cli()).await.unwrap();

    let first = first.expect("an empty store gets the key");
    assert!(second.is_none());
    assert_eq!(outcome(&fixture, first.token.expose()).await, Outcome::Active);
    let listed = fixture.keyring.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.key_id, first.record.key_id);
}

#[tokio::test]
async fn create_if_empty_validates_input() {
    let fixture = Fixture::new().await;

    let error = fixture.keyring.create_if_empty(new_key("bad\nname"), &cli()).await.unwrap_err();

    assert!(matches!(error, Error::InvalidInput { field: "name", .. }), "{error:?}");
    assert!(fixture.keyring.list(&ListFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn expiry_transitions_at_each_boundary() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("expiring"), &cli()).await.unwrap();
    let token = issued.token.expose();
    let expires = T0 + 90 * DAY;
    let warn_start = expires - 14 * DAY;
    let grace_end = expires + 7 * DAY;

    let cases = [
        (T0, Outcome::Active),
        (warn_start - 1, Outcome::Active),
        (warn_start, Outcome::Expiring),
        (expires - 1, Outcome::Expiring),
        (expires, Outcome::Grace),
        (grace_end - 1, Outcome::Grace),
        (grace_end, Outcome::Expired),
    ];
    for (instant, expected) in cases {
        fixture.at(instant);
        assert_eq!(outcome(&fixture, token).await, expected, "at T0 + {} ms", instant - T0);
    }
}

#[tokio::test]
async fn lifecycle_headers_name_next_deadline() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("headers"), &cli()).await.unwrap();
    let token = issued.token.expose();
    let expires = Instant::from_millis(T0 + 90 * DAY);

    fixture.at(T0 + 80 * DAY);
    let decision = fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    assert_eq!(
        decision.lifecycle_headers(),
        vec![("API-Key-Status", "expiring".to_owned()), ("API-Key-Expires", expires.to_http_date())]
    );

    fixture.at(T0 + 91 * DAY);
    let decision = fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    let grace_end = Instant::from_millis(T0 + 97 * DAY);
    assert_eq!(decision.lifecycle_headers()[1], ("API-Key-Expires", grace_end.to_http_date()));

    fixture.at(T0 + DAY);
    let decision = fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    assert!(decision.lifecycle_headers().is_empty());
}

#[tokio::test]
async fn rotation_overlap_boundaries() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("rotating"), &cli()).await.unwrap();
    let rotated_at = T0 + 10 * DAY;
    fixture.at(rotated_at);
    let options = RotateOptions { overlap: Some(Duration::parse("1h").unwrap()), ..RotateOptions::default() };
    let successor = fixture.keyring.rotate(&old.record.key_id, &options, &cli()).await.unwrap();

    assert_eq!(successor.record.predecessor_id.as_ref(), Some(&old.record.key_id));
    assert_eq!(successor.record.expires_at, Some(Instant::from_millis(rotated_at + 90 * DAY)));
    assert_eq!(successor.record.name, old.record.name);
    assert_eq!(successor.record.owner, old.record.owner);
    let view = fixture.keyring.get(&old.record.key_id).await.unwrap();
    assert_eq!(view.record.successor_id.as_ref(), Some(&successor.record.key_id));

    let overlap_end = rotated_at + 3_600_000;
    fixture.at(overlap_end - 1);
    assert_eq!(outcome(&fixture, old.token.expose()).await, Outcome::Superseded);
    fixture.at(overlap_end);
    assert_eq!(outcome(&fixture, old.token.expose()).await, Outcome::Rotated);
    assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active);
}

#[tokio::test]
async fn rotate_twice_conflicts_naming_successor() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("twice"), &cli()).await.unwrap();
    let successor = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    let error = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap_err();
    match error {
        Error::AlreadyRotated { successor_id, .. } => assert_eq!(successor_id, successor.record.key_id),
        other => panic!("expected AlreadyRotated, got {other:?}"),
    }
    assert!(error_text_names(&fixture, &old.record.key_id, &successor.record.key_id).await);
}

async fn error_text_names(fixture: &Fixture, old: &keyturn::core::KeyId, successor: &keyturn::core::KeyId) -> bool {
    let error = fixture.keyring.rotate(old, &RotateOptions::default(), &cli()).await.unwrap_err();
    error.to_string().contains(successor.as_str())
}

#[tokio::test]
async fn replace_unused_successor_revokes_it() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("lost response"), &cli()).await.unwrap();
    let lost = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    let replace = RotateOptions { replace_unused_successor: true, ..RotateOptions::default() };
    let fresh = fixture.keyring.rotate(&old.record.key_id, &replace, &cli()).await.unwrap();

    assert_ne!(fresh.record.key_id, lost.record.key_id);
    assert_eq!(outcome(&fixture, lost.token.expose()).await, Outcome::Revoked);
    assert_eq!(outcome(&fixture, fresh.token.expose()).await, Outcome::Active);
    assert_eq!(outcome(&fixture, old.token.expose()).await, Outcome::Superseded);
    let view = fixture.keyring.get(&old.record.key_id).await.unwrap();
    assert_eq!(view.record.successor_id.as_ref(), Some(&fresh.record.key_id));
}

#[tokio::test]
async fn replace_revoked_successor_issues_new_one() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("revoked successor"), &cli()).await.unwrap();
    let revoked = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    assert_eq!(outcome(&fixture, revoked.token.expose()).await, Outcome::Active);
    fixture.keyring.flush().await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, Some("leaked"), &cli()).await.unwrap();

    let replace = RotateOptions { replace_unused_successor: true, ..RotateOptions::default() };
    let fresh = fixture.keyring.rotate(&old.record.key_id, &replace, &cli()).await.unwrap();
    assert_eq!(outcome(&fixture, fresh.token.expose()).await, Outcome::Active);
    let view = fixture.keyring.get(&revoked.record.key_id).await.unwrap();
    assert_eq!(view.record.revocation_reason.as_deref(), Some("leaked"));
    let filter = AuditFilter {
        key_id: Some(revoked.record.key_id.clone()),
        event: Some(AuditEventType::AuthnTokenRevoked),
        ..AuditFilter::default()
    };
    assert_eq!(fixture.keyring.audit(&filter).await.unwrap().len(), 1);
}

#[tokio::test]
async fn replace_used_successor_conflicts() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("used"), &cli()).await.unwrap();
    let successor = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active);
    fixture.keyring.flush().await.unwrap();

    let replace = RotateOptions { replace_unused_successor: true, ..RotateOptions::default() };
    let error = fixture.keyring.rotate(&old.record.key_id, &replace, &cli()).await.unwrap_err();
    assert!(matches!(error, Error::SuccessorUsed { .. }), "{error:?}");
    assert_eq!(outcome(&fixture, successor.token.expose()).await, Outcome::Active);
}

#[tokio::test]
async fn replace_rotated_successor_conflicts() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("chain"), &cli()).await.unwrap();
    let middle = fixture.keyring.rotate(&old.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    let newest = fixture.keyring.rotate(&middle.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();

    let replace = RotateOptions { replace_unused_successor: true, ..RotateOptions::default() };
    let error = fixture.keyring.rotate(&old.record.key_id, &replace, &cli()).await.unwrap_err();
    assert!(matches!(error, Error::SuccessorUsed { .. }), "{error:?}");
    assert_eq!(outcome(&fixture, middle.token.expose()).await, Outcome::Superseded);
    assert_eq!(outcome(&fixture, newest.token.expose()).await, Outcome::Active);
    let view = fixture.keyring.get(&old.record.key_id).await.unwrap();
    assert_eq!(view.record.successor_id.as_ref(), Some(&middle.record.key_id));
}

#[tokio::test]
async fn rejected_states_cannot_rotate() {
    let fixture = Fixture::new().await;
    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, Some("leaked"), &cli()).await.unwrap();
    let expired = fixture.keyring.create(new_key("expired"), &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    let zero = RotateOptions { overlap: Some(Duration::ZERO), ..RotateOptions::default() };
    fixture.keyring.rotate(&rotated.record.key_id, &zero, &cli()).await.unwrap();
    fixture.at(T0 + 97 * DAY);

    for (key, expected) in [(&revoked, Outcome::Revoked), (&expired, Outcome::Expired), (&rotated, Outcome::Rotated)] {
        let error = fixture.keyring.rotate(&key.record.key_id, &RotateOptions::default(), &cli()).await.unwrap_err();
        match error {
            Error::NotRotatable { outcome, .. } => assert_eq!(outcome, expected),
            other => panic!("expected NotRotatable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn revoke_is_final_even_when_clock_moves_back() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("final"), &cli()).await.unwrap();
    fixture.at(T0 + DAY);
    fixture.keyring.revoke(&issued.record.key_id, Some("incident 7"), &cli()).await.unwrap();
    let error = fixture.keyring.revoke(&issued.record.key_id, None, &cli()).await.unwrap_err();
    assert!(matches!(error, Error::AlreadyRevoked { revoked_at, .. } if revoked_at == Instant::from_millis(T0 + DAY)));

    fixture.at(T0);
    assert_eq!(outcome(&fixture, issued.token.expose()).await, Outcome::Revoked);
    let view = fixture.keyring.get(&issued.record.key_id).await.unwrap();
    assert_eq!(view.record.revocation_reason.as_deref(), Some("incident 7"));
}

#[tokio::test]
async fn create_rejects_bad_input_and_writes_nothing() {
    let fixture = Fixture::new().await;
    let bad = [
        NewKey { expiry: Some(Expiry::After(Duration::ZERO)), ..new_key("zero") },
        NewKey { expiry: Some(Expiry::At(Instant::from_millis(T0))), ..new_key("past") },
        NewKey { name: "  ".into(), ..new_key("") },
        NewKey { owner: Some("bad\u{7}owner".into()), ..new_key("control") },
    ];
    for new in bad {
        assert!(fixture.keyring.create(new, &cli()).await.is_err());
    }
    assert!(fixture.keyring.list(&ListFilter::default()).await.unwrap().is_empty());
    assert!(fixture.keyring.audit(&AuditFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn no_expiry_only_when_asked_and_audited() {
    let fixture = Fixture::new().await;
    let new = NewKey { expiry: Some(Expiry::Never), ..new_key("forever") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();
    assert_eq!(issued.record.expires_at, None);
    fixture.at(T0 + 10_000 * DAY);
    assert_eq!(outcome(&fixture, issued.token.expose()).await, Outcome::Active);
    let events = fixture.keyring.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(events[0].event.details["no_expiry"], true);
}

#[tokio::test]
async fn list_filters_by_owner_and_state() {
    let fixture = Fixture::new().await;
    let a = fixture.keyring.create(new_key("a"), &cli()).await.unwrap();
    fixture.keyring.create(NewKey { owner: Some("search".into()), ..new_key("b") }, &cli()).await.unwrap();
    fixture.keyring.revoke(&a.record.key_id, None, &cli()).await.unwrap();

    let billing = ListFilter { owner: Some("billing".into()), ..ListFilter::default() };
    assert_eq!(fixture.keyring.list(&billing).await.unwrap().len(), 1);
    let revoked = ListFilter { state: Some(Outcome::Revoked), ..ListFilter::default() };
    let listed = fixture.keyring.list(&revoked).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.key_id, a.record.key_id);
}

#[tokio::test]
async fn audit_rows_written_with_each_change() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("audited"), &cli()).await.unwrap();
    let successor = fixture.keyring.rotate(&issued.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    fixture.keyring.revoke(&successor.record.key_id, Some("done"), &cli()).await.unwrap();

    let events = fixture.keyring.audit(&AuditFilter::default()).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|row| row.event.event).collect();
    assert_eq!(
        kinds,
        [
            AuditEventType::AuthnTokenCreated,
            AuditEventType::AuthnTokenRotated,
            AuditEventType::AuthnTokenCreated,
            AuditEventType::AuthnTokenRevoked
        ]
    );
    assert!(events.iter().all(|row| row.event.actor == cli().actor));
    assert_eq!(events[3].event.reason.as_deref(), Some("done"));
    for row in &events {
        let canonical: serde_json::Value = serde_json::from_str(&row.canonical).unwrap();
        assert_eq!(canonical["seq"], row.seq);
    }
}

#[tokio::test]
async fn reserved_scopes_need_admin_key() {
    let fixture = Fixture::new().await;
    let reserved = NewKey { scopes: scopes(&["keyturn:keys:read"]), ..new_key("reader") };
    let writer = NewKey { scopes: scopes(&["keyturn:keys:write"]), ..new_key("writer") };
    let writer = fixture.keyring.create(writer, &cli()).await.unwrap().record;
    let admin = NewKey { scopes: scopes(&["keyturn:admin"]), ..new_key("admin") };
    let admin = fixture.keyring.create(admin, &cli()).await.unwrap().record;
    let as_writer = Caller::key(writer.key_id.clone(), writer.scopes.clone(), Some("127.0.0.1:9".into()));
    let as_admin = Caller::key(admin.key_id.clone(), admin.scopes.clone(), Some("127.0.0.1:9".into()));

    let error = fixture.keyring.create(reserved.clone(), &as_writer).await.unwrap_err();
    assert!(matches!(error, Error::ReservedScope), "{error:?}");
    let plain = fixture.keyring.create(new_key("plain"), &as_writer).await.unwrap();
    let created = fixture.keyring.create(reserved, &as_admin).await.unwrap();

    let error = fixture.keyring.rotate(&created.record.key_id, &RotateOptions::default(), &as_writer).await;
    assert!(matches!(error, Err(Error::ReservedScope)), "{error:?}");
    fixture.keyring.rotate(&plain.record.key_id, &RotateOptions::default(), &as_writer).await.unwrap();
    fixture.keyring.rotate(&created.record.key_id, &RotateOptions::default(), &as_admin).await.unwrap();

    let filter = AuditFilter { key_id: Some(plain.record.key_id), ..AuditFilter::default() };
    let events = fixture.keyring.audit(&filter).await.unwrap();
    assert_eq!(events[0].event.actor, Actor::Key(writer.key_id));
    assert_eq!(events[0].event.client_addr.as_deref(), Some("127.0.0.1:9"));
}

#[tokio::test]
async fn list_page_follows_cursor_and_state() {
    let fixture = Fixture::new().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        fixture.at(T0 + n);
        ids.push(fixture.keyring.create(new_key(&format!("k{n}")), &cli()).await.unwrap().record.key_id);
    }
    fixture.keyring.revoke(&ids[1], None, &cli()).await.unwrap();
    fixture.keyring.revoke(&ids[3], None, &cli()).await.unwrap();

    let first = fixture.keyring.list_page(&ListFilter::default(), None, 2).await.unwrap();
    let listed: Vec<_> = first.keys.iter().map(|view| view.record.key_id.clone()).collect();
    assert_eq!(listed, ids[..2]);
    assert_eq!(first.next_after.as_ref(), Some(&ids[1]));
    let last = fixture.keyring.list_page(&ListFilter::default(), Some(ids[3].clone()), 2).await.unwrap();
    assert_eq!(last.keys.len(), 1);
    assert_eq!(last.next_after, None);

    let revoked = ListFilter { state: Some(Outcome::Revoked), ..ListFilter::default() };
    let page = fixture.keyring.list_page(&revoked, None, 1).await.unwrap();
    assert_eq!(page.keys[0].record.key_id, ids[1]);
    assert_eq!(page.next_after.as_ref(), Some(&ids[1]));
    let page = fixture.keyring.list_page(&revoked, page.next_after, 1).await.unwrap();
    assert_eq!(page.keys[0].record.key_id, ids[3]);
    assert_eq!(page.next_after, None, "no revoked key follows the last one");
}

#[tokio::test]
async fn list_filters_expiring_and_stale_keys() {
    let fixture = Fixture::new().await;
    let keyring = &fixture.keyring;
    let old = keyring.create(new_key("old and idle"), &cli()).await.unwrap();
    fixture.at(T0 + 50 * DAY);
    let used = keyring.create(new_key("used"), &cli()).await.unwrap();
    let revoked = keyring.create(new_key("revoked"), &cli()).await.unwrap();
    keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    fixture.at(T0 + 80 * DAY);
    keyring.verify(used.token.expose(), &Default::default(), None).await.unwrap();
    keyring.flush().await.unwrap();

    let names = |views: Vec<keyturn::KeyView>| views.into_iter().map(|view| view.record.name).collect::<Vec<_>>();
    let within = |days| ListFilter { expiring_within: Some(Duration::from_days(days)), ..ListFilter::default() };
    // At T0 + 80 days the first key expires in 10 days and the second in 60.
    assert_eq!(names(keyring.list(&within(30)).await.unwrap()), ["old and idle"]);
    assert_eq!(names(keyring.list(&within(70)).await.unwrap()), ["old and idle", "used"]);

    let idle = |days| ListFilter { unused_for: Some(Duration::from_days(days)), ..ListFilter::default() };
    assert_eq!(names(keyring.list(&idle(60)).await.unwrap()), ["old and idle"]);
    assert!(keyring.list(&idle(90)).await.unwrap().is_empty());
    let page = keyring.list_page(&idle(60), None, 10).await.unwrap();
    assert_eq!(page.keys.len(), 1);
    assert_eq!(page.keys[0].record.key_id, old.record.key_id);
}
