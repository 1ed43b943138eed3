//! The store suite for named policies and for overlap windows shortened by a successor's first
//! use, mounted for every backend like the rest of the suite.

use std::sync::Arc;

use keyturn_core::{Actor, AuditEventType, Duration, Instant, NamedPolicy, NewAuditEvent, Outcome, Policy, PolicyName};
use keyturn_store::{AuditFilter, PolicyChange, PolicyUpdate, Rotation, Store, StoreError};
use serde_json::json;

use super::{all_changes, audit_count, get, insert, key, key_id, rotation, usage};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn name(text: &str) -> PolicyName {
    PolicyName::parse(text).unwrap()
}

fn policy(text: &str, lifetime_days: i64) -> NamedPolicy {
    let mut policy = NamedPolicy::from_policy(name(text), &Policy::default());
    policy.max_lifetime = Duration::from_days(lifetime_days);
    policy
}

fn change(old: Option<&NamedPolicy>, new: Option<&NamedPolicy>, apply_to_existing: bool) -> PolicyChange {
    let policy_name = old.or(new).map(|policy| policy.name.clone()).unwrap();
    let event =
        NewAuditEvent::new(AuditEventType::AuthzPolicyChanged, Instant::from_millis(5 * DAY), None, Actor::System)
            .with_details(json!({ "policy": policy_name.as_str() }));
    PolicyChange { name: policy_name, old: old.cloned(), new: new.cloned(), apply_to_existing, event }
}

fn update(changes: Vec<PolicyChange>) -> PolicyUpdate {
    PolicyUpdate { at: Instant::from_millis(5 * DAY), changes }
}

async fn policy_events(store: &dyn Store) -> Vec<serde_json::Value> {
    let filter = AuditFilter { event: Some(AuditEventType::AuthzPolicyChanged), ..AuditFilter::default() };
    store.list_audit(&filter).await.unwrap().into_iter().map(|row| row.event.details).collect()
}

pub async fn policy_crud(store: &dyn Store) {
    assert!(store.list_policies().await.unwrap().is_empty());
    let ci = policy("ci", 30);
    let mut batch = policy("batch", 7);
    batch.rotate_every = Some(Duration::from_days(3));
    batch.overlap_after_first_use = Some(Duration::from_secs(3600));

    let added = update(vec![change(None, Some(&ci), false), change(None, Some(&batch), false)]);
    assert_eq!(store.apply_policy_update(&added).await.unwrap(), vec![0, 0]);
    assert_eq!(store.list_policies().await.unwrap(), vec![batch.clone(), ci.clone()]);
    assert_eq!(store.get_policy(&name("batch")).await.unwrap(), Some(batch.clone()));
    assert_eq!(store.get_policy(&name("missing")).await.unwrap(), None);

    let mut longer = ci.clone();
    longer.max_lifetime = Duration::from_days(60);
    store.apply_policy_update(&update(vec![change(Some(&ci), Some(&longer), false)])).await.unwrap();
    assert_eq!(store.get_policy(&name("ci")).await.unwrap(), Some(longer.clone()));

    store.apply_policy_update(&update(vec![change(Some(&batch), None, false)])).await.unwrap();
    assert_eq!(store.list_policies().await.unwrap(), vec![longer]);

    let events = policy_events(store).await;
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|details| details["keys_updated"] == 0), "{events:?}");
}

pub async fn policy_stale_change_conflicts(store: &dyn Store) {
    let ci = policy("ci", 30);
    store.apply_policy_update(&update(vec![change(None, Some(&ci), false)])).await.unwrap();
    let before = audit_count(store).await;

    let again = store.apply_policy_update(&update(vec![change(None, Some(&ci), false)])).await.unwrap_err();
    assert!(matches!(&again, StoreError::PolicyConflict { name } if name == "ci"), "{again:?}");
    assert_eq!(audit_count(store).await, before);
}

pub async fn policy_apply_to_existing(store: &dyn Store) {
    let ci = policy("ci", 90);
    store.apply_policy_update(&update(vec![change(None, Some(&ci), false)])).await.unwrap();
    let with_policy = |n: u32, created: i64| {
        let mut record = key(n, None, created);
        record.policy = name("ci");
        record
    };
    let live = with_policy(1, DAY);
    let revoked = KeyRecordExt::revoked(with_policy(2, DAY));
    let expired = with_policy(3, -200 * DAY);
    let other = key(4, None, DAY);
    let rotated = with_policy(5, DAY);
    for record in [&live, &revoked, &expired, &other, &rotated] {
        insert(store, record).await;
    }
    let mut rotate = rotation(&rotated, 6, 2 * DAY);
    rotate.successor.policy = name("ci");
    store.rotate_key(&rotate).await.unwrap();
    assert_eq!(store.count_policy_keys(&name("ci"), Instant::from_millis(5 * DAY)).await.unwrap().live, 2);
    let seq_before = store.change_seq().await.unwrap();

    let mut shorter = ci.clone();
    shorter.max_lifetime = Duration::from_days(10);
    shorter.grace = Duration::from_days(1);
    shorter.warn_before = Duration::from_days(2);
    shorter.self_rotation = false;
    shorter.max_chain_lifetime = Duration::from_days(20);
    let counts = store.apply_policy_update(&update(vec![change(Some(&ci), Some(&shorter), true)])).await.unwrap();

    // The successor of the rotated key is live and keeps the policy, so it is updated too.
    assert_eq!(counts, vec![2]);
    let updated = get(store, 1).await;
    assert_eq!(updated.expires_at, Some(Instant::from_millis(11 * DAY)));
    assert_eq!(updated.grace, Duration::from_days(1));
    assert_eq!(updated.warn_before, Duration::from_days(2));
    assert!(!updated.self_rotation);
    assert_eq!(updated.max_chain_lifetime, Duration::from_days(20));
    for unchanged in [&revoked, &expired, &other] {
        let n = unchanged.key_id.as_str()[3..].parse().unwrap();
        assert_eq!(get(store, n).await.expires_at, unchanged.expires_at, "{}", unchanged.key_id);
    }
    assert_eq!(get(store, 5).await.expires_at, rotated.expires_at);
    assert_eq!(get(store, 6).await.expires_at, Some(Instant::from_millis(12 * DAY)));

    let changes: Vec<_> = store.changes_since(seq_before, 100).await.unwrap().into_iter().map(|c| c.key_id).collect();
    assert_eq!(changes.len(), 2);
    assert!(changes.contains(&key_id(1)) && changes.contains(&key_id(6)), "{changes:?}");
    assert_eq!(policy_events(store).await.last().unwrap()["keys_updated"], 2);
}

pub async fn policy_update_is_one_transaction(store: &dyn Store) {
    let ci = policy("ci", 90);
    let gone = policy("gone", 90);
    let batch = policy("batch", 30);
    store
        .apply_policy_update(&update(vec![change(None, Some(&ci), false), change(None, Some(&gone), false)]))
        .await
        .unwrap();
    let mut record = key(1, None, DAY);
    record.policy = name("ci");
    insert(store, &record).await;
    let mut referencing = key(2, None, DAY);
    referencing.policy = name("gone");
    insert(store, &referencing).await;
    let before = (audit_count(store).await, store.change_seq().await.unwrap());

    let mut shorter = ci.clone();
    shorter.max_lifetime = Duration::from_days(10);
    let failing = update(vec![
        change(None, Some(&batch), false),
        change(Some(&ci), Some(&shorter), true),
        change(Some(&gone), None, false),
    ]);
    let error = store.apply_policy_update(&failing).await.unwrap_err();

    // The removal of the still referenced policy fails, so the earlier changes roll back.
    assert!(matches!(&error, StoreError::PolicyInUse { name, keys: 1 } if name == "gone"), "{error:?}");
    assert_eq!(store.list_policies().await.unwrap(), vec![ci, gone]);
    assert_eq!(get(store, 1).await.expires_at, record.expires_at);
    assert_eq!((audit_count(store).await, store.change_seq().await.unwrap()), before);
}

/// Rotates key 1, created at 0, to key 2 at one day, with a 7-day overlap that the successor's
/// first use shortens to one hour after it.
async fn rotate_with_overlap_after_first_use(store: &dyn Store) -> Rotation {
    insert(store, &key(1, None, 0)).await;
    let rotation = Rotation {
        overlap_ends_at: Instant::from_millis(8 * DAY),
        overlap_after_first_use: Some(Duration::from_millis(HOUR)),
        ..rotation(&key(1, None, 0), 2, DAY)
    };
    store.rotate_key(&rotation).await.unwrap();
    rotation
}

async fn shortened_events(store: &dyn Store) -> Vec<serde_json::Value> {
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenOverlapShortened), ..AuditFilter::default() };
    store.list_audit(&filter).await.unwrap().into_iter().map(|row| row.event.details).collect()
}

pub async fn overlap_shortens_at_first_use(store: &dyn Store) {
    rotate_with_overlap_after_first_use(store).await;
    assert_eq!(get(store, 1).await.overlap_after_first_use, Some(Duration::from_millis(HOUR)));
    let seq_before = store.change_seq().await.unwrap();

    let first_use = 2 * DAY;
    store.record_usage(&[usage(2, first_use, first_use + 10, None, vec![(Outcome::Active, 1)])]).await.unwrap();

    let old = get(store, 1).await;
    let end = first_use + HOUR;
    assert_eq!(old.overlap_ends_at, Some(Instant::from_millis(end)));
    assert_eq!(old.state_at(Instant::from_millis(end - 1)).outcome, Outcome::Superseded);
    assert_eq!(old.state_at(Instant::from_millis(end)).outcome, Outcome::Rotated);
    let changes: Vec<_> = store.changes_since(seq_before, 10).await.unwrap().into_iter().map(|c| c.key_id).collect();
    assert_eq!(changes, vec![key_id(1)]);

    let events = shortened_events(store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["successor_id"], key_id(2).as_str());
    assert_eq!(events[0]["overlap_ends_at"], Instant::from_millis(end).to_rfc3339());
    assert_eq!(events[0]["previous_overlap_ends_at"], Instant::from_millis(8 * DAY).to_rfc3339());
}

pub async fn overlap_cap_holds_without_successor_use(store: &dyn Store) {
    let rotation = rotate_with_overlap_after_first_use(store).await;
    // The old key keeps being used, and the successor never is.
    store.record_usage(&[usage(1, 2 * DAY, 3 * DAY, None, vec![(Outcome::Superseded, 5)])]).await.unwrap();

    let old = get(store, 1).await;
    assert_eq!(old.overlap_ends_at, Some(rotation.overlap_ends_at));
    assert_eq!(old.state_at(Instant::from_millis(8 * DAY - 1)).outcome, Outcome::Superseded);
    assert_eq!(old.state_at(Instant::from_millis(8 * DAY)).outcome, Outcome::Rotated);
    assert!(shortened_events(store).await.is_empty());
    assert_eq!(all_changes(store).await, vec![key_id(1), key_id(1), key_id(2)]);
}

pub async fn overlap_without_after_first_use_stays(store: &dyn Store) {
    insert(store, &key(1, None, 0)).await;
    store.rotate_key(&rotation(&key(1, None, 0), 2, DAY)).await.unwrap();
    store.record_usage(&[usage(2, DAY + 5, DAY + 5, None, vec![(Outcome::Active, 1)])]).await.unwrap();
    assert_eq!(get(store, 1).await.overlap_ends_at, Some(Instant::from_millis(2 * DAY)));
    assert!(shortened_events(store).await.is_empty());
}

pub async fn overlap_shortening_recorded_once(stores: &[Arc<dyn Store>]) {
    rotate_with_overlap_after_first_use(stores[0].as_ref()).await;
    let first_use = 2 * DAY;

    let mut tasks = Vec::new();
    for store in stores {
        let store = Arc::clone(store);
        let record = usage(2, first_use, first_use + 100, None, vec![(Outcome::Active, 1)]);
        tasks.push(tokio::spawn(async move { store.record_usage(&[record]).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let store = stores[0].as_ref();
    assert_eq!(get(store, 1).await.overlap_ends_at, Some(Instant::from_millis(first_use + HOUR)));
    assert_eq!(shortened_events(store).await.len(), 1);
    let later = usage(2, first_use + 50, first_use + 200, None, vec![(Outcome::Active, 1)]);
    store.record_usage(&[later]).await.unwrap();
    assert_eq!(shortened_events(store).await.len(), 1, "a later first use shortens nothing");
}

/// Marks a test key revoked before it is inserted.
trait KeyRecordExt {
    fn revoked(self) -> Self;
}

impl KeyRecordExt for keyturn_core::KeyRecord {
    fn revoked(mut self) -> Self {
        self.revoked_at = Some(Instant::from_millis(2 * DAY));
        self
    }
}
