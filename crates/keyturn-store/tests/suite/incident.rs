//! The suite of bulk revocation and pepper usage, mounted for every backend like the rest.

use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent, PepperId, PolicyName};
use keyturn_store::{
    AuditFilter, BulkOutcome, BulkRevocation, CopiedKey, KeySelection, Store, StoreError, MAX_BULK_KEYS,
};
use serde_json::json;

use super::{insert, key, key_id, revocation, rotation, DAY};

fn bulk(selection: KeySelection, at: i64) -> BulkRevocation {
    BulkRevocation {
        selection,
        revoked_at: Instant::from_millis(at),
        reason: Some("incident 7".to_owned()),
        event: NewAuditEvent::new(AuditEventType::AuthnTokenRevoked, Instant::from_millis(at), None, Actor::System)
            .with_reason(Some("incident 7".to_owned())),
        leading_events: Vec::new(),
        closing_events: Vec::new(),
        limit: 100,
    }
}

async fn events_of(store: &dyn Store, event: AuditEventType) -> Vec<Option<KeyId>> {
    let filter = AuditFilter { event: Some(event), ..AuditFilter::default() };
    store.list_audit(&filter).await.unwrap().into_iter().map(|row| row.event.key_id).collect()
}

pub async fn revoke_selection_by_owner(store: &dyn Store) {
    insert(store, &key(1, Some("billing"), 1_000)).await;
    insert(store, &key(2, Some("billing"), 2_000)).await;
    insert(store, &key(3, Some("search"), 3_000)).await;
    store.revoke_key(&revocation(2, 4_000, "earlier")).await.unwrap();
    let seq_before = store.change_seq().await.unwrap();

    let report = store.revoke_selection(&bulk(KeySelection::Owner("billing".into()), 5_000)).await.unwrap();

    let outcomes: Vec<(KeyId, BulkOutcome)> =
        report.keys.iter().map(|key| (key.record.key_id.clone(), key.outcome)).collect();
    assert_eq!(outcomes, vec![(key_id(1), BulkOutcome::Revoked), (key_id(2), BulkOutcome::AlreadyRevoked)]);
    assert!(report.missing.is_empty());
    let first = store.get_key(&key_id(1)).await.unwrap().unwrap();
    assert_eq!(first.revoked_at, Some(Instant::from_millis(5_000)));
    assert_eq!(first.revocation_reason.as_deref(), Some("incident 7"));
    assert_eq!(report.keys[0].record, first);
    let second = store.get_key(&key_id(2)).await.unwrap().unwrap();
    assert_eq!(second.revocation_reason.as_deref(), Some("earlier"), "an earlier revocation is kept");
    assert!(store.get_key(&key_id(3)).await.unwrap().unwrap().revoked_at.is_none());

    let changes = store.changes_since(seq_before, 100).await.unwrap();
    assert_eq!(changes.iter().map(|change| change.key_id.clone()).collect::<Vec<_>>(), vec![key_id(1)]);
    assert_eq!(events_of(store, AuditEventType::AuthnTokenRevoked).await, vec![Some(key_id(2)), Some(key_id(1))]);
}

pub async fn revoke_selection_by_key_ids(store: &dyn Store) {
    insert(store, &key(1, None, 1_000)).await;
    insert(store, &key(2, None, 2_000)).await;
    let selection = KeySelection::KeyIds(vec![key_id(2), key_id(9), key_id(1), key_id(2)]);
    let mut revocation = bulk(selection, 5_000);
    let leak = NewAuditEvent::new(
        AuditEventType::AuthnTokenLeakReported,
        Instant::from_millis(5_000),
        Some(key_id(2)),
        Actor::System,
    )
    .with_details(json!({ "line": 1 }));
    revocation.leading_events = vec![leak];
    revocation.closing_events =
        vec![NewAuditEvent::new(AuditEventType::AuthnPepperRetired, Instant::from_millis(5_000), None, Actor::System)];

    let report = store.revoke_selection(&revocation).await.unwrap();

    let ids: Vec<KeyId> = report.keys.iter().map(|key| key.record.key_id.clone()).collect();
    assert_eq!(ids, vec![key_id(2), key_id(1)], "selection order, each key once");
    assert_eq!(report.missing, vec![key_id(9)]);
    let rows = store.list_audit(&AuditFilter { after_seq: Some(2), ..AuditFilter::default() }).await.unwrap();
    let kinds: Vec<(AuditEventType, Option<KeyId>)> =
        rows.iter().map(|row| (row.event.event, row.event.key_id.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (AuditEventType::AuthnTokenLeakReported, Some(key_id(2))),
            (AuditEventType::AuthnTokenRevoked, Some(key_id(2))),
            (AuditEventType::AuthnTokenRevoked, Some(key_id(1))),
            (AuditEventType::AuthnPepperRetired, None),
        ]
    );
}

pub async fn revoke_selection_too_large_writes_nothing(store: &dyn Store) {
    for n in 1..=3 {
        insert(store, &key(n, Some("billing"), 1_000 * i64::from(n))).await;
    }
    let seq_before = store.change_seq().await.unwrap();
    let mut revocation = bulk(KeySelection::Owner("billing".into()), 5_000);
    revocation.limit = 2;
    revocation.closing_events =
        vec![NewAuditEvent::new(AuditEventType::AuthnPepperRetired, Instant::from_millis(5_000), None, Actor::System)];

    let error = store.revoke_selection(&revocation).await.unwrap_err();

    assert!(matches!(error, StoreError::SelectionTooLarge { limit: 2 }), "{error:?}");
    assert_eq!(store.change_seq().await.unwrap(), seq_before);
    assert!(events_of(store, AuditEventType::AuthnTokenRevoked).await.is_empty());
    assert!(events_of(store, AuditEventType::AuthnPepperRetired).await.is_empty());
    for n in 1..=3 {
        assert!(store.get_key(&key_id(n)).await.unwrap().unwrap().revoked_at.is_none());
    }
    let error = store.select_keys(&KeySelection::Owner("billing".into()), 2).await.unwrap_err();
    assert!(matches!(error, StoreError::SelectionTooLarge { limit: 2 }), "{error:?}");
}

pub async fn select_keys_writes_nothing(store: &dyn Store) {
    insert(store, &key(1, Some("billing"), 1_000)).await;
    insert(store, &key(2, Some("search"), 2_000)).await;
    let seq_before = store.change_seq().await.unwrap();

    let (records, missing) = store.select_keys(&KeySelection::Owner("billing".into()), 10).await.unwrap();
    assert_eq!(records.iter().map(|record| record.key_id.clone()).collect::<Vec<_>>(), vec![key_id(1)]);
    assert!(missing.is_empty());
    let (records, missing) = store.select_keys(&KeySelection::KeyIds(Vec::new()), 10).await.unwrap();
    assert!(records.is_empty() && missing.is_empty());
    let (none, _) = store.select_keys(&KeySelection::Owner("nobody".into()), 10).await.unwrap();
    assert!(none.is_empty());

    assert_eq!(store.change_seq().await.unwrap(), seq_before);
    assert!(store.get_key(&key_id(1)).await.unwrap().unwrap().revoked_at.is_none());
}

pub async fn select_and_revoke_by_policy(store: &dyn Store) {
    let ci = PolicyName::parse("ci").unwrap();
    for (n, created, policy) in [(1, 3_000, Some(&ci)), (2, 1_000, Some(&ci)), (3, 2_000, None)] {
        let mut record = key(n, Some("billing"), created);
        if let Some(policy) = policy {
            record.policy = policy.clone();
        }
        insert(store, &record).await;
    }
    store.revoke_key(&revocation(1, 4_000, "earlier")).await.unwrap();
    let seq_before = store.change_seq().await.unwrap();

    let selection = KeySelection::Policy(ci.clone());
    let (records, missing) = store.select_keys(&selection, 10).await.unwrap();
    let ids: Vec<KeyId> = records.iter().map(|record| record.key_id.clone()).collect();
    assert_eq!(ids, vec![key_id(2), key_id(1)]);
    assert!(missing.is_empty());
    assert_eq!(store.change_seq().await.unwrap(), seq_before);
    let error = store.select_keys(&selection, 1).await.unwrap_err();
    assert!(matches!(error, StoreError::SelectionTooLarge { limit: 1 }), "{error:?}");
    let (none, _) = store.select_keys(&KeySelection::Policy(PolicyName::parse("batch").unwrap()), 10).await.unwrap();
    assert!(none.is_empty());

    let report = store.revoke_selection(&bulk(selection, 5_000)).await.unwrap();
    let outcomes: Vec<(KeyId, BulkOutcome)> =
        report.keys.iter().map(|key| (key.record.key_id.clone(), key.outcome)).collect();
    assert_eq!(outcomes, vec![(key_id(2), BulkOutcome::Revoked), (key_id(1), BulkOutcome::AlreadyRevoked)]);
    assert_eq!(
        events_of(store, AuditEventType::AuthnTokenRevoked)
            .await
            .iter()
            .filter(|id| id.as_ref() == Some(&key_id(2)))
            .count(),
        1
    );
    assert!(store.get_key(&key_id(3)).await.unwrap().unwrap().revoked_at.is_none());
    let revoked = store.get_key(&key_id(2)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(Instant::from_millis(5_000)));
}

pub async fn pepper_usage_counts_live_keys(store: &dyn Store) {
    let now = 10 * DAY;
    let mut old_pepper = key(1, None, now - DAY);
    old_pepper.pepper_id = PepperId::parse("old").unwrap();
    insert(store, &old_pepper).await;
    // Expired 1 day ago, but still in its 7-day grace period: live.
    let mut in_grace = key(2, None, now - 91 * DAY);
    in_grace.pepper_id = PepperId::parse("old").unwrap();
    insert(store, &in_grace).await;
    // Past its grace period: dead.
    let mut expired = key(3, None, now - 98 * DAY);
    expired.pepper_id = PepperId::parse("old").unwrap();
    insert(store, &expired).await;
    // Revoked: dead.
    insert(store, &key(4, None, now - DAY)).await;
    store.revoke_key(&revocation(4, now - 1, "gone")).await.unwrap();
    // Rotated with an overlap window that ended: dead, while its successor is live.
    let rotated = key(5, None, now - 3 * DAY);
    insert(store, &rotated).await;
    store.rotate_key(&rotation(&rotated, 6, now - 2 * DAY)).await.unwrap();
    // Without expiry: live.
    let mut forever = key(7, None, now - DAY);
    forever.expires_at = None;
    insert(store, &forever).await;

    let usage = store.pepper_usage(Instant::from_millis(now)).await.unwrap();

    let counts: Vec<(&str, u64)> = usage.iter().map(|entry| (entry.pepper_id.as_str(), entry.live_keys)).collect();
    assert_eq!(counts, vec![("1", 2), ("old", 2)]);
    let old = store.live_keys_under_pepper(&PepperId::parse("old").unwrap(), Instant::from_millis(now), 10).await;
    assert_eq!(old.unwrap(), vec![key_id(2), key_id(1)]);
    let limited = store.live_keys_under_pepper(&PepperId::parse("old").unwrap(), Instant::from_millis(now), 1).await;
    assert_eq!(limited.unwrap(), vec![key_id(2)]);
    let current = store.live_keys_under_pepper(&PepperId::parse("1").unwrap(), Instant::from_millis(now), 10).await;
    assert_eq!(current.unwrap(), vec![key_id(6), key_id(7)]);

    // At the end of the grace period the key stops counting: the interval is half-open.
    let grace_end = now + 6 * DAY;
    let later = store.pepper_usage(Instant::from_millis(grace_end)).await.unwrap();
    let old_later = later.iter().find(|entry| entry.pepper_id.as_str() == "old").unwrap();
    assert_eq!(old_later.live_keys, 1);
}

/// Revokes [`MAX_BULK_KEYS`] keys selected by key id in one transaction: the largest selection
/// binds that many parameters, within both backends' limits. Prints how long it took.
pub async fn revoke_selection_at_limit(store: &dyn Store) {
    let keys: Vec<CopiedKey> = (1..=MAX_BULK_KEYS as u32)
        .map(|n| CopiedKey {
            record: key(n, Some("bulk"), 1_000),
            last_client_addr: None,
            usage: Vec::new(),
            uses_since_rotation: 0,
        })
        .collect();
    store.import(&keys, &[]).await.unwrap();
    let ids: Vec<KeyId> = keys.iter().map(|key| key.record.key_id.clone()).collect();
    let mut revocation = bulk(KeySelection::KeyIds(ids), 5_000);
    revocation.limit = MAX_BULK_KEYS;

    let started = std::time::Instant::now();
    let report = store.revoke_selection(&revocation).await.unwrap();
    let elapsed = started.elapsed();

    eprintln!("revoked {} keys in one transaction in {elapsed:?}", report.keys.len());
    assert_eq!(report.keys.len(), MAX_BULK_KEYS);
    assert!(report.keys.iter().all(|key| key.outcome == BulkOutcome::Revoked));
    assert_eq!(events_of(store, AuditEventType::AuthnTokenRevoked).await.len(), MAX_BULK_KEYS);
    assert_eq!(store.changes_since(0, 20_000).await.unwrap().len(), MAX_BULK_KEYS);
}
