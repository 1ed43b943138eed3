//! The store behaviour behind rotation requests and the scheduler: requests move the expiry and
//! report keys they skip, due keys are found by range, the high-water mark only moves forward,
//! and an event of one key is recorded once however many writers race.

use std::sync::Arc;

use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent, TimedEvent};
use keyturn_store::{AuditFilter, DueFilter, RotationRequest, RotationRequestResult, Store};
use serde_json::json;

use super::{get, insert, key, key_id, revocation, rotation, DAY};

fn request(n: u32, at: i64, deadline: i64) -> RotationRequest {
    let event = NewAuditEvent::new(
        AuditEventType::AuthnTokenRotationRequested,
        Instant::from_millis(at),
        Some(key_id(n)),
        Actor::Cli("alice".into()),
    )
    .with_details(json!({ "deadline": Instant::from_millis(deadline).to_rfc3339() }));
    RotationRequest {
        key_id: key_id(n),
        requested_at: Instant::from_millis(at),
        deadline: Instant::from_millis(deadline),
        event,
    }
}

async fn rows_of(store: &dyn Store, event: AuditEventType) -> Vec<keyturn_core::AuditEvent> {
    store.list_audit(&AuditFilter { event: Some(event), ..AuditFilter::default() }).await.unwrap()
}

fn once_event(n: u32, event: AuditEventType, at: i64) -> NewAuditEvent {
    NewAuditEvent::new(event, Instant::from_millis(at), Some(key_id(n)), Actor::System)
}

pub async fn rotation_request_moves_expiry(store: &dyn Store) {
    insert(store, &key(1, None, 0)).await;
    let seq_before = store.change_seq().await.unwrap();

    let results = store.request_rotation(&[request(1, DAY, 10 * DAY)]).await.unwrap();

    let RotationRequestResult::Requested(record) = &results[0] else { panic!("not requested: {results:?}") };
    assert_eq!(record.rotation_requested_at, Some(Instant::from_millis(DAY)));
    assert_eq!(record.rotation_deadline, Some(Instant::from_millis(10 * DAY)));
    assert_eq!(record.expires_at, Some(Instant::from_millis(10 * DAY)));
    assert_eq!(record.expires_before_request, Some(Instant::from_millis(90 * DAY)));
    assert_eq!(&get(store, 1).await, record.as_ref());
    assert_eq!(rows_of(store, AuditEventType::AuthnTokenRotationRequested).await.len(), 1);
    assert_eq!(store.change_seq().await.unwrap(), seq_before + 1);

    // A later deadline never extends the first one, and the first request instant stays.
    store.request_rotation(&[request(1, 2 * DAY, 20 * DAY)]).await.unwrap();
    let again = get(store, 1).await;
    assert_eq!(again.rotation_deadline, Some(Instant::from_millis(10 * DAY)));
    assert_eq!(again.rotation_requested_at, Some(Instant::from_millis(DAY)));
    assert_eq!(again.expires_before_request, Some(Instant::from_millis(90 * DAY)));
}

pub async fn rotation_request_keeps_earlier_expiry(store: &dyn Store) {
    let mut short = key(1, None, 0);
    short.expires_at = Some(Instant::from_millis(5 * DAY));
    insert(store, &short).await;
    let mut unbounded = key(2, None, 0);
    unbounded.expires_at = None;
    insert(store, &unbounded).await;

    store.request_rotation(&[request(1, DAY, 10 * DAY), request(2, DAY, 10 * DAY)]).await.unwrap();

    assert_eq!(get(store, 1).await.expires_at, Some(Instant::from_millis(5 * DAY)));
    let unbounded = get(store, 2).await;
    assert_eq!(unbounded.expires_at, Some(Instant::from_millis(10 * DAY)));
    assert_eq!(unbounded.expires_before_request, None);
}

pub async fn rotation_request_reports_skipped_keys(store: &dyn Store) {
    insert(store, &key(1, None, 0)).await;
    insert(store, &key(2, None, 0)).await;
    store.revoke_key(&revocation(1, DAY, "leaked")).await.unwrap();
    store.rotate_key(&rotation(&key(2, None, 0), 3, DAY)).await.unwrap();
    let seq_before = store.change_seq().await.unwrap();

    let results = store
        .request_rotation(&[request(1, DAY, 9 * DAY), request(2, DAY, 9 * DAY), request(9, DAY, 9 * DAY)])
        .await
        .unwrap();

    assert_eq!(results[0], RotationRequestResult::Revoked);
    assert_eq!(results[1], RotationRequestResult::AlreadyRotated { successor_id: key_id(3) });
    assert_eq!(results[2], RotationRequestResult::NotFound);
    assert!(rows_of(store, AuditEventType::AuthnTokenRotationRequested).await.is_empty());
    assert_eq!(store.change_seq().await.unwrap(), seq_before);
    assert_eq!(get(store, 1).await.rotation_deadline, None);
}

pub async fn list_due_selects_boundary_range(store: &dyn Store) {
    // Keys expiring at 10, 20, 30 and 40 days; key 4 is revoked.
    for n in 1..=4 {
        let mut record = key(n, None, 0);
        record.expires_at = Some(Instant::from_millis(i64::from(n) * 10 * DAY));
        insert(store, &record).await;
    }
    store.revoke_key(&revocation(4, DAY, "test")).await.unwrap();
    let due = |event, after: i64, until: i64| DueFilter {
        event,
        after: Instant::from_millis(after),
        until: Instant::from_millis(until),
        cursor: None,
        limit: 10,
    };
    let ids = |records: Vec<keyturn_core::KeyRecord>| records.into_iter().map(|r| r.key_id).collect::<Vec<KeyId>>();

    let grace = store.list_due(&due(TimedEvent::GraceEntered, 10 * DAY, 30 * DAY)).await.unwrap();
    assert_eq!(ids(grace), [key_id(2), key_id(3)]);
    let grace = store.list_due(&due(TimedEvent::GraceEntered, 10 * DAY - 1, 20 * DAY - 1)).await.unwrap();
    assert_eq!(ids(grace), [key_id(1)]);
    let warning = store.list_due(&due(TimedEvent::ExpiringSoon, 0, 6 * DAY)).await.unwrap();
    assert_eq!(ids(warning), [key_id(2)]);
    let expired = store.list_due(&due(TimedEvent::Expired, 17 * DAY, 17 * DAY)).await.unwrap();
    assert!(expired.is_empty());
    let expired = store.list_due(&due(TimedEvent::Expired, 17 * DAY - 1, 17 * DAY)).await.unwrap();
    assert_eq!(ids(expired), [key_id(1)]);
    let revoked = store.list_due(&due(TimedEvent::GraceEntered, 35 * DAY, 45 * DAY)).await.unwrap();
    assert!(revoked.is_empty());

    let mut page = due(TimedEvent::GraceEntered, 0, 50 * DAY);
    page.limit = 1;
    page.cursor = Some((Instant::from_millis(10 * DAY), key_id(1)));
    assert_eq!(ids(store.list_due(&page).await.unwrap()), [key_id(2)]);

    store.request_rotation(&[request(3, DAY, 25 * DAY)]).await.unwrap();
    let deadline = store.list_due(&due(TimedEvent::RotationDeadlineReached, 0, 25 * DAY)).await.unwrap();
    assert_eq!(ids(deadline), [key_id(3)]);
    store.rotate_key(&rotation(&get(store, 2).await, 5, 2 * DAY)).await.unwrap();
    let overlap = store.list_due(&due(TimedEvent::OverlapEnded, 0, 3 * DAY)).await.unwrap();
    assert_eq!(ids(overlap), [key_id(2)]);
}

pub async fn scheduler_high_water_only_advances(store: &dyn Store) {
    assert_eq!(store.scheduler_high_water().await.unwrap(), None);
    store.advance_scheduler_high_water(Instant::from_millis(5_000)).await.unwrap();
    store.advance_scheduler_high_water(Instant::from_millis(4_000)).await.unwrap();
    assert_eq!(store.scheduler_high_water().await.unwrap(), Some(Instant::from_millis(5_000)));
    store.advance_scheduler_high_water(Instant::from_millis(6_000)).await.unwrap();
    assert_eq!(store.scheduler_high_water().await.unwrap(), Some(Instant::from_millis(6_000)));
}

pub async fn append_once_per_key_and_event(store: &dyn Store) {
    insert(store, &key(1, None, 0)).await;
    let grace = once_event(1, AuditEventType::AuthnTokenGraceEntered, 1_000);

    assert!(store.append_audit_once(&grace, false).await.unwrap().is_some());
    let later = once_event(1, AuditEventType::AuthnTokenGraceEntered, 2_000).with_details(json!({ "boundary": "x" }));
    assert_eq!(store.append_audit_once(&later, false).await.unwrap(), None);
    assert!(store
        .append_audit_once(&once_event(1, AuditEventType::AuthnTokenExpired, 3_000), false)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .append_audit_once(&once_event(2, AuditEventType::AuthnTokenGraceEntered, 3_000), false)
        .await
        .unwrap()
        .is_some());

    assert_eq!(rows_of(store, AuditEventType::AuthnTokenGraceEntered).await.len(), 2);
}

/// Many writers on separate pools record the same events of 20 keys at once: each is recorded
/// exactly once.
pub async fn append_once_concurrently_records_once(stores: &[Arc<dyn Store>]) {
    let mut tasks = Vec::new();
    for (index, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let mut recorded = 0;
            for n in 0..20 {
                for event in [AuditEventType::AuthnTokenExpiringSoon, AuditEventType::AuthnTokenExpired] {
                    let at = 1_000 + i64::try_from(index).unwrap();
                    if store.append_audit_once(&once_event(n, event, at), false).await.unwrap().is_some() {
                        recorded += 1;
                    }
                }
            }
            recorded
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }

    assert_eq!(total, 40);
    assert_eq!(rows_of(stores[0].as_ref(), AuditEventType::AuthnTokenExpiringSoon).await.len(), 20);
    assert_eq!(rows_of(stores[0].as_ref(), AuditEventType::AuthnTokenExpired).await.len(), 20);
}

/// A store that imports copied audit rows records no event of them a second time.
pub async fn import_rebuilds_once_guard(store: &dyn Store) {
    let event = once_event(1, AuditEventType::AuthnTokenGraceEntered, 1_000);
    let copied = keyturn_core::AuditEvent { seq: 7, canonical: event.canonical(7), event, mac: None };

    store.import(&[], &[copied]).await.unwrap();

    let again = once_event(1, AuditEventType::AuthnTokenGraceEntered, 2_000);
    assert_eq!(store.append_audit_once(&again, false).await.unwrap(), None);
    let other = once_event(1, AuditEventType::AuthnTokenExpired, 2_000);
    assert!(store.append_audit_once(&other, false).await.unwrap().is_some());
}
