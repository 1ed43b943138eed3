//! The store behaviour behind the rotation cadence of policies. The candidates of a policy are
//! found by creation instant and page in order, and keys revoked, rotated or with a request are
//! left out. A first rotation request is recorded once however many writers race.

use std::sync::Arc;

use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent, PolicyName};
use keyturn_store::{AuditFilter, CadenceFilter, RotationRequest, Store};
use serde_json::json;

use super::{get, insert, key, key_id, revocation, rotation, DAY};

fn ci() -> PolicyName {
    PolicyName::parse("ci").unwrap()
}

/// Inserts key `n` of policy `ci` created at `created`, with a 90-day lifetime.
async fn insert_ci(store: &dyn Store, n: u32, created: i64) {
    let mut record = key(n, None, created);
    record.policy = ci();
    insert(store, &record).await;
}

fn filter(created_until: i64) -> CadenceFilter {
    CadenceFilter { policy: ci(), created_until: Instant::from_millis(created_until), cursor: None, limit: 100 }
}

fn ids(keys: Vec<keyturn_core::KeyRecord>) -> Vec<KeyId> {
    keys.into_iter().map(|key| key.key_id).collect()
}

fn first_request(n: u32, at: i64, deadline: i64) -> RotationRequest {
    let event = NewAuditEvent::new(
        AuditEventType::AuthnTokenRotationRequested,
        Instant::from_millis(at),
        Some(key_id(n)),
        Actor::System,
    )
    .with_reason(Some("rotation cadence of policy ci".into()))
    .with_details(json!({ "deadline": Instant::from_millis(deadline).to_rfc3339() }));
    RotationRequest {
        key_id: key_id(n),
        requested_at: Instant::from_millis(at),
        deadline: Instant::from_millis(deadline),
        event,
    }
}

async fn request_rows(store: &dyn Store) -> usize {
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRotationRequested), ..AuditFilter::default() };
    store.list_audit(&filter).await.unwrap().len()
}

pub async fn cadence_due_selects_candidates(store: &dyn Store) {
    for n in 1..=3 {
        insert_ci(store, n, i64::from(n) * DAY).await;
    }
    insert(store, &key(4, None, DAY)).await;
    insert_ci(store, 5, DAY).await;
    insert_ci(store, 6, DAY).await;
    insert_ci(store, 7, DAY).await;
    store.revoke_key(&revocation(5, 2 * DAY, "leaked")).await.unwrap();
    store.rotate_key(&rotation(&get(store, 6).await, 8, 2 * DAY)).await.unwrap();
    assert!(store.request_first_rotation(&first_request(7, 2 * DAY, 91 * DAY)).await.unwrap());

    assert_eq!(ids(store.list_cadence_due(&filter(2 * DAY)).await.unwrap()), [key_id(1), key_id(2)]);
    assert_eq!(ids(store.list_cadence_due(&filter(2 * DAY - 1)).await.unwrap()), [key_id(1)]);
    assert!(store.list_cadence_due(&filter(DAY - 1)).await.unwrap().is_empty());

    let mut page = CadenceFilter { limit: 1, ..filter(3 * DAY) };
    let mut paged = Vec::new();
    for _ in 0..5 {
        let keys = store.list_cadence_due(&page).await.unwrap();
        let Some(last) = keys.last() else { break };
        page.cursor = Some((last.created_at, last.key_id.clone()));
        paged.extend(ids(keys));
    }
    assert_eq!(paged, [key_id(1), key_id(2), key_id(3)]);
}

pub async fn first_rotation_request_recorded_once(store: &dyn Store) {
    insert_ci(store, 1, 0).await;
    let seq_before = store.change_seq().await.unwrap();

    assert!(store.request_first_rotation(&first_request(1, 20 * DAY, 90 * DAY)).await.unwrap());
    assert!(!store.request_first_rotation(&first_request(1, 21 * DAY, 30 * DAY)).await.unwrap());

    let record = get(store, 1).await;
    assert_eq!(record.rotation_requested_at, Some(Instant::from_millis(20 * DAY)));
    assert_eq!(record.rotation_deadline, Some(Instant::from_millis(90 * DAY)));
    assert_eq!(record.expires_at, Some(Instant::from_millis(90 * DAY)));
    assert_eq!(record.expires_before_request, Some(Instant::from_millis(90 * DAY)));
    assert_eq!(request_rows(store).await, 1);
    assert_eq!(store.change_seq().await.unwrap(), seq_before + 1);

    insert_ci(store, 2, 0).await;
    store.revoke_key(&revocation(2, DAY, "leaked")).await.unwrap();
    assert!(!store.request_first_rotation(&first_request(2, 20 * DAY, 90 * DAY)).await.unwrap());
    assert!(!store.request_first_rotation(&first_request(3, 20 * DAY, 90 * DAY)).await.unwrap());
    assert_eq!(request_rows(store).await, 1);
}

/// Races eight writers on one key's first rotation request through separate store handles.
pub async fn first_rotation_request_concurrently_once(stores: &[Arc<dyn Store>]) {
    insert_ci(stores[0].as_ref(), 1, 0).await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = Arc::clone(&stores[n % stores.len()]);
        tasks.push(tokio::spawn(async move {
            store.request_first_rotation(&first_request(1, 20 * DAY, 90 * DAY)).await.unwrap()
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        recorded += usize::from(task.await.unwrap());
    }

    assert_eq!(recorded, 1);
    assert_eq!(request_rows(stores[0].as_ref()).await, 1);
}
