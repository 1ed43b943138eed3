//! The behaviour every [`Store`] must show, written against `&dyn Store` so each backend mounts
//! the same suite. Each function builds its own keys in an empty store and panics on the first
//! broken expectation.

#![allow(dead_code)]

mod webhooks;

pub use self::webhooks::*;

use std::sync::Arc;

use keyturn_core::{
    Actor, AuditEventType, Duration, Instant, KeyId, KeyRecord, NewAuditEvent, Outcome, PepperId, PolicyName, Scopes,
    TokenHash,
};
use keyturn_store::{
    AuditFilter, Change, KeyFilter, OverlapFilter, Rehash, Revocation, Rotation, Store, StoreError, UsageRecord,
};
use serde_json::{json, Map, Value};

mod cadence;
mod incident;
pub use cadence::*;
pub use incident::*;
pub mod policies;
mod schedule;

pub use schedule::*;

pub(crate) const DAY: i64 = 86_400_000;

/// Returns a 12-character key id ending in `n`.
pub fn key_id(n: u32) -> KeyId {
    KeyId::parse(&format!("key{n:09}")).unwrap()
}

fn pepper(id: &str) -> PepperId {
    PepperId::parse(id).unwrap()
}

/// Returns an active key created at `created` with a 90-day lifetime.
pub fn key(n: u32, owner: Option<&str>, created: i64) -> KeyRecord {
    KeyRecord {
        key_id: key_id(n),
        name: format!("key {n}"),
        owner: owner.map(str::to_owned),
        scopes: Scopes::parse(["orders:read"]).unwrap(),
        metadata: Map::new(),
        hash: TokenHash::from_bytes([n as u8; 32]),
        pepper_id: pepper("1"),
        created_at: Instant::from_millis(created),
        expires_at: Some(Instant::from_millis(created + 90 * DAY)),
        grace: Duration::from_days(7),
        warn_before: Duration::from_days(14),
        revoked_at: None,
        revocation_reason: None,
        rotated_at: None,
        overlap_ends_at: None,
        successor_id: None,
        predecessor_id: None,
        chain_started_at: Instant::from_millis(created),
        self_rotation: true,
        max_chain_lifetime: Duration::from_days(365),
        rotation_requested_at: None,
        rotation_deadline: None,
        expires_before_request: None,
        first_used_at: None,
        last_used_at: None,
        policy: PolicyName::default_name(),
        overlap_after_first_use: None,
    }
}

pub fn created_event(key: &KeyRecord) -> NewAuditEvent {
    NewAuditEvent::new(
        AuditEventType::AuthnTokenCreated,
        key.created_at,
        Some(key.key_id.clone()),
        Actor::Cli("alice".into()),
    )
}

pub async fn insert(store: &dyn Store, key: &KeyRecord) {
    store.insert_key(key, &created_event(key)).await.unwrap();
}

pub(crate) async fn get(store: &dyn Store, n: u32) -> KeyRecord {
    store.get_key(&key_id(n)).await.unwrap().unwrap()
}

/// Returns a rotation of key `old` to a new key `new` at `at` with a one-day overlap.
pub fn rotation(old: &KeyRecord, new: u32, at: i64) -> Rotation {
    let mut successor = key(new, old.owner.as_deref(), at);
    successor.predecessor_id = Some(old.key_id.clone());
    successor.chain_started_at = old.chain_started_at;
    let rotated = NewAuditEvent::new(
        AuditEventType::AuthnTokenRotated,
        Instant::from_millis(at),
        Some(old.key_id.clone()),
        Actor::Cli("alice".into()),
    )
    .with_details(json!({"successor_id": successor.key_id.as_str()}));
    Rotation {
        old_key_id: old.key_id.clone(),
        rotated_at: Instant::from_millis(at),
        overlap_ends_at: Instant::from_millis(at + DAY),
        events: vec![rotated, created_event(&successor)],
        successor,
        replace_unused_successor: None,
        overlap_after_first_use: None,
    }
}

pub(crate) fn revocation(n: u32, at: i64, reason: &str) -> Revocation {
    Revocation {
        key_id: key_id(n),
        revoked_at: Instant::from_millis(at),
        reason: Some(reason.to_owned()),
        event: NewAuditEvent::new(
            AuditEventType::AuthnTokenRevoked,
            Instant::from_millis(at),
            Some(key_id(n)),
            Actor::System,
        )
        .with_reason(Some(reason.to_owned())),
    }
}

pub async fn all_changes(store: &dyn Store) -> Vec<KeyId> {
    store.changes_since(0, 1_000).await.unwrap().into_iter().map(|change| change.key_id).collect()
}

pub async fn audit_count(store: &dyn Store) -> usize {
    store.list_audit(&AuditFilter::default()).await.unwrap().len()
}

pub async fn insert_get_round_trip(store: &dyn Store) {
    let mut full = key(1, Some("team-a"), 1_000);
    full.scopes = Scopes::parse(["orders:read", "orders:write", "keyturn:admin"]).unwrap();
    full.metadata = json!({"env": "prod", "nested": {"n": 1, "list": [true, null]}}).as_object().unwrap().clone();
    full.revoked_at = Some(Instant::from_millis(5_000));
    full.revocation_reason = Some("leaked in a log".into());
    full.rotated_at = Some(Instant::from_millis(3_000));
    full.overlap_ends_at = Some(Instant::from_millis(4_000));
    full.successor_id = Some(key_id(2));
    full.predecessor_id = Some(key_id(3));
    full.chain_started_at = Instant::from_millis(10);
    full.self_rotation = false;
    full.max_chain_lifetime = Duration::from_days(30);
    full.first_used_at = Some(Instant::from_millis(1_500));
    full.last_used_at = Some(Instant::from_millis(2_500));
    full.pepper_id = pepper("2027a");
    full.grace = Duration::ZERO;

    let mut bare = key(4, None, 2_000);
    bare.scopes = Scopes::default();
    bare.expires_at = None;

    insert(store, &full).await;
    insert(store, &bare).await;

    assert_eq!(get(store, 1).await, full);
    assert_eq!(get(store, 4).await, bare);
    assert_eq!(store.get_key(&key_id(99)).await.unwrap(), None);
}

pub async fn insert_duplicate_key_id(store: &dyn Store) {
    let first = key(1, Some("team-a"), 1_000);
    insert(store, &first).await;
    let mut second = key(1, Some("team-b"), 2_000);
    second.name = "other".into();

    let error = store.insert_key(&second, &created_event(&second)).await.unwrap_err();

    assert!(matches!(&error, StoreError::DuplicateKeyId(id) if *id == key_id(1)), "{error:?}");
    assert_eq!(get(store, 1).await, first);
    assert_eq!(audit_count(store).await, 1);
    assert_eq!(all_changes(store).await, vec![key_id(1)]);
}

pub async fn list_keys_by_owner(store: &dyn Store) {
    insert(store, &key(3, Some("team-a"), 2_000)).await;
    insert(store, &key(2, Some("team-a"), 2_000)).await;
    insert(store, &key(1, Some("team-a"), 3_000)).await;
    insert(store, &key(4, Some("team-b"), 1_000)).await;
    insert(store, &key(5, None, 500)).await;

    let team_a = store.list_keys(&KeyFilter { owner: Some("team-a".into()), ..KeyFilter::default() }).await.unwrap();
    let ids: Vec<KeyId> = team_a.into_iter().map(|key| key.key_id).collect();
    assert_eq!(ids, vec![key_id(2), key_id(3), key_id(1)]);

    let all = store.list_keys(&KeyFilter::default()).await.unwrap();
    let ids: Vec<KeyId> = all.into_iter().map(|key| key.key_id).collect();
    assert_eq!(ids, vec![key_id(5), key_id(4), key_id(2), key_id(3), key_id(1)]);

    let none = store.list_keys(&KeyFilter { owner: Some("nobody".into()), ..KeyFilter::default() }).await.unwrap();
    assert!(none.is_empty());
}

pub async fn list_keys_pages_after_cursor(store: &dyn Store) {
    insert(store, &key(3, Some("team-a"), 2_000)).await;
    insert(store, &key(2, Some("team-a"), 2_000)).await;
    insert(store, &key(1, Some("team-a"), 3_000)).await;
    insert(store, &key(4, Some("team-b"), 1_000)).await;
    insert(store, &key(5, None, 500)).await;

    let mut pages = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let filter = KeyFilter { after: after.clone(), limit: Some(2), ..KeyFilter::default() };
        let page: Vec<KeyId> = store.list_keys(&filter).await.unwrap().into_iter().map(|key| key.key_id).collect();
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        pages.push(page);
    }
    assert_eq!(pages, vec![vec![key_id(5), key_id(4)], vec![key_id(2), key_id(3)], vec![key_id(1)]]);

    let filter = KeyFilter { owner: Some("team-a".into()), after: Some(key_id(2)), limit: Some(1) };
    let ids: Vec<KeyId> = store.list_keys(&filter).await.unwrap().into_iter().map(|key| key.key_id).collect();
    assert_eq!(ids, vec![key_id(3)], "the owner filter and the cursor combine");

    let unknown = KeyFilter { after: Some(key_id(99)), ..KeyFilter::default() };
    assert!(store.list_keys(&unknown).await.unwrap().is_empty(), "an unknown cursor matches no key");
}

pub async fn rotate_links_both_keys(store: &dyn Store) {
    let old = key(1, Some("team-a"), 1_000);
    insert(store, &old).await;
    let rotation = rotation(&old, 2, 5_000);
    let seq_before = store.change_seq().await.unwrap();
    let audit_before = store.list_audit(&AuditFilter::default()).await.unwrap().last().unwrap().seq;

    store.rotate_key(&rotation).await.unwrap();

    let old_after = get(store, 1).await;
    assert_eq!(old_after.successor_id, Some(key_id(2)));
    assert_eq!(old_after.rotated_at, Some(Instant::from_millis(5_000)));
    assert_eq!(old_after.overlap_ends_at, Some(Instant::from_millis(5_000 + DAY)));
    assert_eq!(old_after.revoked_at, None);
    assert_eq!(get(store, 2).await, rotation.successor);

    let events =
        store.list_audit(&AuditFilter { after_seq: Some(audit_before), ..AuditFilter::default() }).await.unwrap();
    let stored: Vec<NewAuditEvent> = events.into_iter().map(|event| event.event).collect();
    assert_eq!(stored, rotation.events);

    let changes = store.changes_since(seq_before, 100).await.unwrap();
    let ids: Vec<KeyId> = changes.into_iter().map(|change| change.key_id).collect();
    assert_eq!(ids, vec![key_id(1), key_id(2)]);
}

pub async fn rotate_twice_conflicts(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.rotate_key(&rotation(&old, 2, 5_000)).await.unwrap();
    let audit_before = audit_count(store).await;
    let seq_before = store.change_seq().await.unwrap();

    let error = store.rotate_key(&rotation(&old, 3, 6_000)).await.unwrap_err();

    match &error {
        StoreError::AlreadyRotated { key_id: id, successor_id } => {
            assert_eq!(*id, key_id(1));
            assert_eq!(*successor_id, key_id(2));
        }
        other => panic!("expected AlreadyRotated, got {other:?}"),
    }
    assert_eq!(store.get_key(&key_id(3)).await.unwrap(), None);
    assert_eq!(get(store, 1).await.rotated_at, Some(Instant::from_millis(5_000)));
    assert_eq!(audit_count(store).await, audit_before);
    assert_eq!(store.change_seq().await.unwrap(), seq_before);
}

pub async fn rotate_revoked_key_fails(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.revoke_key(&revocation(1, 2_000, "leaked")).await.unwrap();

    let error = store.rotate_key(&rotation(&old, 2, 5_000)).await.unwrap_err();

    assert!(matches!(&error, StoreError::Revoked(id) if *id == key_id(1)), "{error:?}");
    assert_eq!(store.get_key(&key_id(2)).await.unwrap(), None);
}

pub async fn rotate_missing_key_fails(store: &dyn Store) {
    let missing = key(1, None, 1_000);

    let error = store.rotate_key(&rotation(&missing, 2, 5_000)).await.unwrap_err();

    assert!(matches!(&error, StoreError::NotFound(id) if *id == key_id(1)), "{error:?}");
    assert_eq!(store.get_key(&key_id(2)).await.unwrap(), None);
    assert_eq!(store.change_seq().await.unwrap(), 0);
}

pub async fn replace_unused_successor(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.rotate_key(&rotation(&old, 2, 5_000)).await.unwrap();
    let seq_before = store.change_seq().await.unwrap();

    let mut replacement = rotation(&old, 3, 8_000);
    replacement.overlap_ends_at = Instant::from_millis(8_000 + 30 * DAY);
    replacement.replace_unused_successor = Some(key_id(2));
    store.rotate_key(&replacement).await.unwrap();

    let old_after = get(store, 1).await;
    assert_eq!(old_after.successor_id, Some(key_id(3)));
    assert_eq!(old_after.rotated_at, Some(Instant::from_millis(5_000)), "replacement must keep rotated_at");
    assert_eq!(old_after.overlap_ends_at, Some(Instant::from_millis(5_000 + DAY)), "replacement must keep overlap");

    let replaced = get(store, 2).await;
    assert_eq!(replaced.revoked_at, Some(Instant::from_millis(8_000)));
    assert_eq!(replaced.revocation_reason.as_deref(), Some(format!("replaced by {}", key_id(3)).as_str()));
    assert_eq!(get(store, 3).await, replacement.successor);

    let changes = store.changes_since(seq_before, 100).await.unwrap();
    let mut ids: Vec<KeyId> = changes.into_iter().map(|change| change.key_id).collect();
    ids.sort();
    assert_eq!(ids, vec![key_id(1), key_id(2), key_id(3)]);
}

pub async fn replace_used_successor_fails(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.rotate_key(&rotation(&old, 2, 5_000)).await.unwrap();
    let usage = UsageRecord {
        key_id: key_id(2),
        first_used_at: Instant::from_millis(6_000),
        last_used_at: Instant::from_millis(6_000),
        last_client_addr: None,
        counts: vec![(Outcome::Active, 1)],
    };
    store.record_usage(&[usage]).await.unwrap();
    let audit_before = audit_count(store).await;
    let seq_before = store.change_seq().await.unwrap();
    let old_before = get(store, 1).await;
    let successor_before = get(store, 2).await;

    let mut replacement = rotation(&old, 3, 8_000);
    replacement.replace_unused_successor = Some(key_id(2));
    let error = store.rotate_key(&replacement).await.unwrap_err();

    match &error {
        StoreError::SuccessorUsed { key_id: id, successor_id } => {
            assert_eq!(*id, key_id(1));
            assert_eq!(*successor_id, key_id(2));
        }
        other => panic!("expected SuccessorUsed, got {other:?}"),
    }
    assert_eq!(get(store, 1).await, old_before);
    assert_eq!(get(store, 2).await, successor_before);
    assert_eq!(store.get_key(&key_id(3)).await.unwrap(), None);
    assert_eq!(audit_count(store).await, audit_before);
    assert_eq!(store.change_seq().await.unwrap(), seq_before);
}

pub async fn replace_wrong_successor_mismatches(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    let mut replacement = rotation(&old, 3, 8_000);
    replacement.replace_unused_successor = Some(key_id(2));

    let without_successor = store.rotate_key(&replacement).await.unwrap_err();
    assert!(
        matches!(&without_successor, StoreError::SuccessorMismatch { key_id: id, expected } if *id == key_id(1) && *expected == key_id(2)),
        "{without_successor:?}"
    );

    store.rotate_key(&rotation(&old, 4, 5_000)).await.unwrap();
    let other_successor = store.rotate_key(&replacement).await.unwrap_err();
    assert!(matches!(&other_successor, StoreError::SuccessorMismatch { .. }), "{other_successor:?}");
    assert_eq!(get(store, 1).await.successor_id, Some(key_id(4)));
    assert_eq!(store.get_key(&key_id(3)).await.unwrap(), None);
}

pub async fn revoke_is_final(store: &dyn Store) {
    insert(store, &key(1, None, 1_000)).await;

    let revoked = store.revoke_key(&revocation(1, 2_000, "leaked")).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(Instant::from_millis(2_000)));
    assert_eq!(revoked.revocation_reason.as_deref(), Some("leaked"));
    assert_eq!(get(store, 1).await, revoked);
    let seq_after_first = store.change_seq().await.unwrap();
    let audit_after_first = audit_count(store).await;

    let error = store.revoke_key(&revocation(1, 3_000, "again")).await.unwrap_err();

    assert!(matches!(&error, StoreError::Revoked(id) if *id == key_id(1)), "{error:?}");
    let after = get(store, 1).await;
    assert_eq!(after.revoked_at, Some(Instant::from_millis(2_000)));
    assert_eq!(after.revocation_reason.as_deref(), Some("leaked"));
    assert_eq!(store.change_seq().await.unwrap(), seq_after_first);
    assert_eq!(audit_count(store).await, audit_after_first);
}

pub async fn revoke_missing_key_fails(store: &dyn Store) {
    let error = store.revoke_key(&revocation(7, 2_000, "leaked")).await.unwrap_err();

    assert!(matches!(&error, StoreError::NotFound(id) if *id == key_id(7)), "{error:?}");
    assert_eq!(audit_count(store).await, 0);
}

pub async fn rehash_only_from_expected_pepper(store: &dyn Store) {
    insert(store, &key(1, None, 1_000)).await;
    let event = NewAuditEvent::new(
        AuditEventType::AuthnTokenRehashed,
        Instant::from_millis(2_000),
        Some(key_id(1)),
        Actor::System,
    );
    let rehash = |from: &str| Rehash {
        key_id: key_id(1),
        from: pepper(from),
        to: pepper("2"),
        hash: TokenHash::from_bytes([0xAB; 32]),
        event: event.clone(),
    };

    assert!(!store.rehash_key(&rehash("9")).await.unwrap());
    assert_eq!(get(store, 1).await.pepper_id, pepper("1"));
    assert_eq!(all_changes(store).await.len(), 1);
    assert_eq!(audit_count(store).await, 1);

    assert!(store.rehash_key(&rehash("1")).await.unwrap());
    let after = get(store, 1).await;
    assert_eq!(after.pepper_id, pepper("2"));
    assert_eq!(after.hash, TokenHash::from_bytes([0xAB; 32]));
    assert_eq!(all_changes(store).await, vec![key_id(1), key_id(1)]);
    let rehashed = AuditFilter { event: Some(AuditEventType::AuthnTokenRehashed), ..AuditFilter::default() };
    assert_eq!(store.list_audit(&rehashed).await.unwrap().len(), 1);

    assert!(!store.rehash_key(&rehash("1")).await.unwrap(), "a second rehash from the old pepper must not match");
    assert_eq!(all_changes(store).await.len(), 2);
    assert_eq!(audit_count(store).await, 2);

    let missing = Rehash { key_id: key_id(9), ..rehash("1") };
    assert!(!store.rehash_key(&missing).await.unwrap());
}

pub async fn usage_accumulates(store: &dyn Store) {
    insert(store, &key(1, None, 1_000)).await;
    let usage = |first: i64, last: i64, addr: Option<&str>, counts: Vec<(Outcome, u64)>| UsageRecord {
        key_id: key_id(1),
        first_used_at: Instant::from_millis(first),
        last_used_at: Instant::from_millis(last),
        last_client_addr: addr.map(str::to_owned),
        counts,
    };
    let seq_before = store.change_seq().await.unwrap();
    let audit_before = audit_count(store).await;

    store.record_usage(&[usage(5_000, 6_000, Some("10.0.0.1"), vec![(Outcome::Active, 3)])]).await.unwrap();
    // An older flush arrives late: it moves first use back but not last use.
    store
        .record_usage(&[
            usage(2_000, 4_000, Some("10.0.0.2"), vec![(Outcome::Active, 2), (Outcome::Expiring, 1)]),
            UsageRecord { key_id: key_id(42), ..usage(1, 2, None, vec![(Outcome::Active, 1)]) },
        ])
        .await
        .unwrap();

    let after = get(store, 1).await;
    assert_eq!(after.first_used_at, Some(Instant::from_millis(2_000)));
    assert_eq!(after.last_used_at, Some(Instant::from_millis(6_000)));
    let counts = store.usage_counts(&key_id(1)).await.unwrap();
    assert!(counts.contains(&(Outcome::Active, 5)), "{counts:?}");
    assert!(counts.contains(&(Outcome::Expiring, 1)), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(store.usage_counts(&key_id(42)).await.unwrap().is_empty());
    assert_eq!(store.get_key(&key_id(42)).await.unwrap(), None);

    store.record_usage(&[usage(7_000, 9_000, None, vec![(Outcome::Superseded, 4)])]).await.unwrap();
    let after = get(store, 1).await;
    assert_eq!(after.first_used_at, Some(Instant::from_millis(2_000)));
    assert_eq!(after.last_used_at, Some(Instant::from_millis(9_000)));
    assert!(store.usage_counts(&key_id(1)).await.unwrap().contains(&(Outcome::Superseded, 4)));

    assert_eq!(store.change_seq().await.unwrap(), seq_before, "usage must not enter the change feed");
    assert_eq!(audit_count(store).await, audit_before, "usage must not write audit events");
    store.record_usage(&[]).await.unwrap();
}

/// Returns a usage record of key `n` with uses from `first` to `last`.
pub fn usage(n: u32, first: i64, last: i64, addr: Option<&str>, counts: Vec<(Outcome, u64)>) -> UsageRecord {
    UsageRecord {
        key_id: key_id(n),
        first_used_at: Instant::from_millis(first),
        last_used_at: Instant::from_millis(last),
        last_client_addr: addr.map(str::to_owned),
        counts,
    }
}

pub async fn usage_since_rotation_counts_after_rotation(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.record_usage(&[usage(1, 2_000, 3_000, None, vec![(Outcome::Active, 3)])]).await.unwrap();
    assert_eq!(store.uses_since_rotation(&key_id(1)).await.unwrap(), 0, "the key is not rotated yet");

    store.rotate_key(&rotation(&old, 2, 10_000)).await.unwrap();
    let seq_before = store.change_seq().await.unwrap();
    let audit_before = audit_count(store).await;

    // A flush whose last use is the rotation instant counts whole, the use before it included.
    let straddling = usage(1, 9_000, 10_000, None, vec![(Outcome::Active, 2), (Outcome::Superseded, 3)]);
    store.record_usage(&[straddling]).await.unwrap();
    assert_eq!(store.uses_since_rotation(&key_id(1)).await.unwrap(), 5);

    // A late flush whose last use came before the rotation does not count.
    store.record_usage(&[usage(1, 9_500, 9_999, None, vec![(Outcome::Active, 4)])]).await.unwrap();
    assert_eq!(store.uses_since_rotation(&key_id(1)).await.unwrap(), 5);

    // Rejected outcomes are used but not allowed, so they do not count.
    let mixed = vec![(Outcome::Superseded, 1), (Outcome::Rotated, 7), (Outcome::Revoked, 2)];
    store.record_usage(&[usage(1, 11_000, 12_000, None, mixed)]).await.unwrap();
    assert_eq!(store.uses_since_rotation(&key_id(1)).await.unwrap(), 6);

    store.record_usage(&[usage(2, 11_000, 12_000, None, vec![(Outcome::Active, 9)])]).await.unwrap();
    assert_eq!(store.uses_since_rotation(&key_id(2)).await.unwrap(), 0, "the successor is not rotated");
    assert_eq!(store.uses_since_rotation(&key_id(42)).await.unwrap(), 0, "an unknown key counts nothing");

    let counts = store.usage_counts(&key_id(1)).await.unwrap();
    assert!(counts.contains(&(Outcome::Active, 9)), "every flush adds to the outcome counters: {counts:?}");
    assert_eq!(store.change_seq().await.unwrap(), seq_before, "usage must not enter the change feed");
    assert_eq!(audit_count(store).await, audit_before, "usage must not write audit events");
}

pub async fn usage_since_rotation_saturates(store: &dyn Store) {
    let old = key(1, None, 1_000);
    insert(store, &old).await;
    store.rotate_key(&rotation(&old, 2, 2_000)).await.unwrap();

    let huge = vec![(Outcome::Superseded, u64::MAX), (Outcome::Grace, 5)];
    store.record_usage(&[usage(1, 3_000, 3_000, None, huge)]).await.unwrap();
    store.record_usage(&[usage(1, 4_000, 4_000, None, vec![(Outcome::Superseded, 1)])]).await.unwrap();

    assert_eq!(store.uses_since_rotation(&key_id(1)).await.unwrap(), i64::MAX as u64);
}

/// Rotates key `n` of `owner`, created at 1000 ms, at `at` to the successor `n + 100`, with the
/// overlap window ending at `ends`.
async fn rotate_with_overlap(store: &dyn Store, n: u32, owner: &str, at: i64, ends: i64) {
    let old = key(n, Some(owner), 1_000);
    insert(store, &old).await;
    let rotation = Rotation { overlap_ends_at: Instant::from_millis(ends), ..rotation(&old, n + 100, at) };
    store.rotate_key(&rotation).await.unwrap();
}

pub async fn list_overlapping_orders_and_filters(store: &dyn Store) {
    let now = 20_000;
    rotate_with_overlap(store, 1, "team-a", 10_000, now + 500).await;
    rotate_with_overlap(store, 2, "team-b", 5_000, now + 100).await;
    rotate_with_overlap(store, 3, "team-a", 10_000, now + 500).await;
    rotate_with_overlap(store, 4, "team-a", 1_000, now).await;
    rotate_with_overlap(store, 5, "team-a", 1_000, now - 1).await;
    rotate_with_overlap(store, 6, "team-a", 10_000, now + 900).await;
    store.revoke_key(&revocation(6, 11_000, "leaked")).await.unwrap();
    insert(store, &key(7, Some("team-a"), 1_000)).await;

    store.record_usage(&[usage(1, 12_000, 13_000, Some("192.0.2.1"), vec![(Outcome::Superseded, 4)])]).await.unwrap();
    store.record_usage(&[usage(101, 14_000, 15_000, Some("192.0.2.2"), vec![(Outcome::Active, 1)])]).await.unwrap();

    let at = Instant::from_millis(now);
    let list = |owner: Option<&str>, after: Option<u32>, limit: Option<u32>| {
        let filter = OverlapFilter { at, owner: owner.map(str::to_owned), after: after.map(key_id), limit };
        async move { store.list_overlapping(&filter).await.unwrap() }
    };
    let ids = |keys: Vec<keyturn_store::OverlappingKey>| -> Vec<KeyId> {
        keys.into_iter().map(|key| key.record.key_id).collect()
    };

    // Key 4's window ends exactly now and key 5's before, key 6 is revoked, and key 7 and the
    // successors were never rotated. Equal ends are ordered by key id.
    let all = list(None, None, None).await;
    assert_eq!(ids(all.clone()), vec![key_id(2), key_id(1), key_id(3)]);

    let first = &all[1];
    assert_eq!(first.record, get(store, 1).await);
    assert_eq!(first.last_client_addr.as_deref(), Some("192.0.2.1"));
    assert_eq!(first.uses_since_rotation, 4);
    assert_eq!(first.successor_first_used_at, Some(Instant::from_millis(14_000)));
    let unmoved = &all[0];
    assert_eq!(unmoved.last_client_addr, None);
    assert_eq!(unmoved.uses_since_rotation, 0);
    assert_eq!(unmoved.successor_first_used_at, None);

    assert_eq!(ids(list(Some("team-a"), None, None).await), vec![key_id(1), key_id(3)]);
    assert!(list(Some("team-c"), None, None).await.is_empty());
    assert_eq!(ids(list(None, None, Some(2)).await), vec![key_id(2), key_id(1)]);
    assert_eq!(ids(list(None, Some(1), None).await), vec![key_id(3)], "the cursor breaks ties by key id");
    assert_eq!(ids(list(Some("team-a"), Some(2), Some(1)).await), vec![key_id(1)]);
    assert!(list(None, Some(3), None).await.is_empty());
    assert!(list(None, Some(99), None).await.is_empty(), "an unknown cursor matches no key");

    let earlier = OverlapFilter { at: Instant::from_millis(now - 1), owner: None, after: None, limit: None };
    let keys = ids(store.list_overlapping(&earlier).await.unwrap());
    assert_eq!(keys, vec![key_id(4), key_id(2), key_id(1), key_id(3)], "a window is open before its end");
}

pub async fn audit_filters(store: &dyn Store) {
    let event = |kind, at: i64, key: Option<u32>| {
        NewAuditEvent::new(kind, Instant::from_millis(at), key.map(key_id), Actor::Key(key_id(9)))
            .with_details(json!({"z": 1, "a": [at]}))
    };
    let mut exposed = event(AuditEventType::AuthnTokenExposed, 3_000, Some(2));
    exposed.client_addr = Some("192.0.2.7".into());
    exposed.reason = Some("token in query string".into());
    let written = vec![
        event(AuditEventType::AuthnTokenCreated, 1_000, Some(1)),
        event(AuditEventType::AuthnTokenCreated, 2_000, Some(2)),
        exposed,
        event(AuditEventType::AuthnTokenRevoked, 4_000, Some(1)),
        event(AuditEventType::AuthnTokenExposed, 5_000, None),
    ];
    let mut seqs = Vec::new();
    for event in &written {
        seqs.push(store.append_audit(event).await.unwrap());
    }
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");

    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|row| row.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all.iter().map(|row| row.event.clone()).collect::<Vec<_>>(), written);
    for row in &all {
        let canonical: Value = serde_json::from_str(&row.canonical).unwrap();
        assert_eq!(canonical["seq"], json!(row.seq));
        assert_eq!(row.canonical, row.event.canonical(row.seq));
        assert_eq!(row.mac, None);
    }

    let select = |filter: AuditFilter| async move {
        store.list_audit(&filter).await.unwrap().into_iter().map(|row| row.seq).collect::<Vec<_>>()
    };
    let by_key = select(AuditFilter { key_id: Some(key_id(1)), ..AuditFilter::default() }).await;
    assert_eq!(by_key, vec![seqs[0], seqs[3]]);
    let by_event =
        select(AuditFilter { event: Some(AuditEventType::AuthnTokenExposed), ..AuditFilter::default() }).await;
    assert_eq!(by_event, vec![seqs[2], seqs[4]]);
    let since = select(AuditFilter { since: Some(Instant::from_millis(3_000)), ..AuditFilter::default() }).await;
    assert_eq!(since, vec![seqs[2], seqs[3], seqs[4]]);
    let until = select(AuditFilter { until: Some(Instant::from_millis(3_000)), ..AuditFilter::default() }).await;
    assert_eq!(until, vec![seqs[0], seqs[1]]);
    let after = select(AuditFilter { after_seq: Some(seqs[1]), ..AuditFilter::default() }).await;
    assert_eq!(after, vec![seqs[2], seqs[3], seqs[4]]);
    let limited = select(AuditFilter { after_seq: Some(seqs[0]), limit: Some(2), ..AuditFilter::default() }).await;
    assert_eq!(limited, vec![seqs[1], seqs[2]]);
    let combined = select(AuditFilter {
        key_id: Some(key_id(2)),
        event: Some(AuditEventType::AuthnTokenExposed),
        since: Some(Instant::from_millis(2_500)),
        until: Some(Instant::from_millis(3_500)),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(combined, vec![seqs[2]]);
    let zero = select(AuditFilter { limit: Some(0), ..AuditFilter::default() }).await;
    assert!(zero.is_empty());
}

pub async fn change_feed_order(store: &dyn Store) {
    assert_eq!(store.change_seq().await.unwrap(), 0);
    assert!(store.changes_since(0, 10).await.unwrap().is_empty());

    let first = key(1, None, 1_000);
    insert(store, &first).await;
    insert(store, &key(2, None, 1_500)).await;
    store.rotate_key(&rotation(&first, 3, 2_000)).await.unwrap();
    store.revoke_key(&revocation(2, 3_000, "unused")).await.unwrap();

    let changes = store.changes_since(0, 100).await.unwrap();
    let ids: Vec<KeyId> = changes.iter().map(|change| change.key_id.clone()).collect();
    assert_eq!(ids, vec![key_id(1), key_id(2), key_id(1), key_id(3), key_id(2)]);
    assert!(changes.windows(2).all(|pair| pair[0].seq < pair[1].seq), "{changes:?}");
    assert_eq!(store.change_seq().await.unwrap(), changes[4].seq);

    let page = store.changes_since(changes[1].seq, 2).await.unwrap();
    assert_eq!(page, vec![changes[2].clone(), changes[3].clone()]);
    let rest: Vec<Change> = store.changes_since(changes[3].seq, 100).await.unwrap();
    assert_eq!(rest, vec![changes[4].clone()]);
    assert!(store.changes_since(changes[4].seq, 100).await.unwrap().is_empty());
}

/// Runs 50 rotations of one key at once, spread over `stores` (separate pools on one database):
/// exactly one wins and the rest see `AlreadyRotated` naming the winner.
pub async fn rotate_concurrently_one_wins(stores: &[Arc<dyn Store>]) {
    let old = key(1, None, 1_000);
    insert(stores[0].as_ref(), &old).await;

    let mut tasks = Vec::new();
    for attempt in 0..50u32 {
        let store = Arc::clone(&stores[attempt as usize % stores.len()]);
        let rotation = rotation(&old, 100 + attempt, 2_000 + i64::from(attempt));
        tasks.push(tokio::spawn(async move { store.rotate_key(&rotation).await.map(|()| rotation.successor.key_id) }));
    }
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(successor_id) => winners.push(successor_id),
            Err(error) => conflicts.push(error),
        }
    }

    assert_eq!(winners.len(), 1, "winners: {winners:?}, errors: {conflicts:?}");
    let winner = winners[0].clone();
    assert_eq!(conflicts.len(), 49);
    for error in &conflicts {
        assert!(!error.is_unavailable(), "{error:?}");
        assert!(
            matches!(error, StoreError::AlreadyRotated { successor_id, .. } if *successor_id == winner),
            "{error:?}"
        );
    }

    let store = stores[0].as_ref();
    let keys = store.list_keys(&KeyFilter::default()).await.unwrap();
    let successors: Vec<&KeyRecord> = keys.iter().filter(|key| key.predecessor_id == Some(key_id(1))).collect();
    assert_eq!(successors.len(), 1);
    assert_eq!(successors[0].key_id, winner);
    let rotated = AuditFilter { event: Some(AuditEventType::AuthnTokenRotated), ..AuditFilter::default() };
    assert_eq!(store.list_audit(&rotated).await.unwrap().len(), 1);
    assert_eq!(get(store, 1).await.successor_id, Some(winner));
}

/// Inserts a key when the store is empty, and then no second one.
pub async fn insert_if_empty_once(store: &dyn Store) {
    let first = key(1, None, 1_000);
    let second = key(2, None, 2_000);

    assert!(store.insert_key_if_empty(&first, &created_event(&first)).await.unwrap());
    assert!(!store.insert_key_if_empty(&second, &created_event(&second)).await.unwrap());

    assert_eq!(get(store, 1).await, first);
    assert!(store.get_key(&key_id(2)).await.unwrap().is_none());
    assert_eq!(audit_count(store).await, 1);
    assert_eq!(all_changes(store).await, vec![key_id(1)]);
}

/// Runs one insert-if-empty of a different key from each of `stores` (separate pools on one
/// empty database) at once: exactly one inserts its key, with one audit event and one change.
pub async fn insert_if_empty_concurrently_one_wins(stores: &[Arc<dyn Store>]) {
    let mut tasks = Vec::new();
    for (n, store) in (1..).zip(stores) {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let key = key(n, Some("bootstrap"), 1_000 + i64::from(n));
            store.insert_key_if_empty(&key, &created_event(&key)).await
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            inserted += 1;
        }
    }

    assert_eq!(inserted, 1);
    let store = stores[0].as_ref();
    assert_eq!(store.list_keys(&KeyFilter::default()).await.unwrap().len(), 1);
    assert_eq!(audit_count(store).await, 1);
    assert_eq!(store.changes_since(0, 100).await.unwrap().len(), 1);
}

/// Inserts 200 keys at once, spread over `stores`; every insert must succeed.
pub async fn insert_concurrently_all_succeed(stores: &[Arc<dyn Store>]) {
    let mut tasks = Vec::new();
    for n in 0..200u32 {
        let store = Arc::clone(&stores[n as usize % stores.len()]);
        tasks.push(tokio::spawn(async move {
            let key = key(n, Some("load"), 1_000 + i64::from(n));
            store.insert_key(&key, &created_event(&key)).await
        }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        if let Err(error) = task.await.unwrap() {
            errors.push(error);
        }
    }

    assert!(errors.is_empty(), "{} inserts failed, first: {:?}", errors.len(), errors.first());
    let store = stores[0].as_ref();
    let load = KeyFilter { owner: Some("load".into()), ..KeyFilter::default() };
    assert_eq!(store.list_keys(&load).await.unwrap().len(), 200);
    assert_eq!(audit_count(store).await, 200);
    assert_eq!(store.changes_since(0, 1_000).await.unwrap().len(), 200);
}
