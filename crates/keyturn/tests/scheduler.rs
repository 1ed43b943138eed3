//! The scheduler records each time-caused lifecycle event exactly at its boundary (not 1 ms
//! before), once per key and event across instances and verifications, and catches up after a
//! gap with the real boundary in the details. Rotation requests move the expiry, show as the
//! `rotation_requested` outcome until the deadline, and report keys they skip.

mod common;

use std::sync::Arc;

use common::*;
use keyturn::core::{AuditEventType, Duration, Instant, ManualClock, Outcome, PepperRing, TimedEvent};
use keyturn::store::{AuditFilter, DatabaseUrl, PostgresOptions, PostgresStore, Store};
use keyturn::{Config, Keyring, RequestStatus, RotateOptions, RotationSelector};
use sqlx::Connection;

async fn rows_of(keyring: &Keyring, event: AuditEventType) -> Vec<keyturn::core::AuditEvent> {
    let filter = AuditFilter { event: Some(event), ..AuditFilter::default() };
    keyring.audit(&filter).await.unwrap()
}

/// Runs the scheduler at `at` and returns the events it recorded.
async fn run_at(fixture: &Fixture, at: i64) -> Vec<(TimedEvent, i64)> {
    fixture.at(at);
    let run = fixture.keyring.run_scheduler().await.unwrap();
    run.recorded.iter().map(|event| (event.event, event.boundary.as_millis())).collect()
}

fn selector_of(key_ids: &[&keyturn::Issued]) -> RotationSelector {
    RotationSelector::Keys(key_ids.iter().map(|issued| issued.record.key_id.clone()).collect())
}

#[tokio::test]
async fn expiry_events_recorded_at_boundary() {
    let fixture = Fixture::new().await;
    fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());
    let warning = T0 + 76 * DAY;
    let expiry = T0 + 90 * DAY;
    let grace_end = T0 + 97 * DAY;

    assert!(run_at(&fixture, warning - 1).await.is_empty());
    assert_eq!(run_at(&fixture, warning).await, [(TimedEvent::ExpiringSoon, warning)]);
    assert!(run_at(&fixture, expiry - 1).await.is_empty());
    assert_eq!(run_at(&fixture, expiry).await, [(TimedEvent::GraceEntered, expiry)]);
    assert!(run_at(&fixture, grace_end - 1).await.is_empty());
    assert_eq!(run_at(&fixture, grace_end).await, [(TimedEvent::Expired, grace_end)]);
    assert!(run_at(&fixture, grace_end + DAY).await.is_empty());

    let rows = rows_of(&fixture.keyring, AuditEventType::AuthnTokenExpired).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.at, Instant::from_millis(grace_end));
    assert_eq!(rows[0].event.actor.to_stored(), "system");
    assert_eq!(rows[0].event.details["boundary"], Instant::from_millis(grace_end).to_rfc3339());
}

#[tokio::test]
async fn overlap_end_recorded_at_boundary() {
    let fixture = Fixture::new().await;
    let old = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());
    let day = RotateOptions { overlap: Some(Duration::from_days(1)), ..RotateOptions::default() };
    fixture.keyring.rotate(&old.record.key_id, &day, &cli()).await.unwrap();

    assert!(run_at(&fixture, T0 + DAY - 1).await.is_empty());
    assert_eq!(run_at(&fixture, T0 + DAY).await, [(TimedEvent::OverlapEnded, T0 + DAY)]);
    let rows = rows_of(&fixture.keyring, AuditEventType::AuthnTokenOverlapEnded).await;
    assert_eq!(rows[0].event.key_id.as_ref(), Some(&old.record.key_id));
}

#[tokio::test]
async fn rotation_deadline_recorded_at_boundary() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());
    let deadline = T0 + 10 * DAY;
    let selector = selector_of(&[&key, &rotated]);
    fixture.keyring.request_rotation(&selector, Instant::from_millis(deadline), None, false, &cli()).await.unwrap();
    fixture.at(T0 + 5 * DAY);
    let week = RotateOptions { overlap: Some(Duration::from_days(7)), ..RotateOptions::default() };
    fixture.keyring.rotate(&rotated.record.key_id, &week, &cli()).await.unwrap();

    assert!(run_at(&fixture, deadline - 1).await.is_empty());
    let mut recorded = run_at(&fixture, deadline).await;
    recorded.sort_by_key(|(event, _)| format!("{event:?}"));
    assert_eq!(recorded, [(TimedEvent::GraceEntered, deadline), (TimedEvent::RotationDeadlineReached, deadline)]);
    let rows = rows_of(&fixture.keyring, AuditEventType::AuthnTokenRotationDeadlineReached).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.key_id.as_ref(), Some(&key.record.key_id));
    let grace = rows_of(&fixture.keyring, AuditEventType::AuthnTokenGraceEntered).await;
    assert_eq!(grace[0].event.key_id.as_ref(), Some(&key.record.key_id));
}

#[tokio::test]
async fn catch_up_after_gap_records_once() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());

    let later = T0 + 200 * DAY;
    let mut recorded = run_at(&fixture, later).await;
    recorded.sort_by_key(|(_, boundary)| *boundary);

    assert_eq!(
        recorded,
        [
            (TimedEvent::ExpiringSoon, T0 + 76 * DAY),
            (TimedEvent::GraceEntered, T0 + 90 * DAY),
            (TimedEvent::Expired, T0 + 97 * DAY)
        ]
    );
    for event in [AuditEventType::AuthnTokenExpiringSoon, AuditEventType::AuthnTokenGraceEntered] {
        let rows = rows_of(&fixture.keyring, event).await;
        assert_eq!(rows.len(), 1, "{event}");
        assert_eq!(rows[0].event.at, Instant::from_millis(later), "{event}");
        assert_eq!(rows[0].event.key_id.as_ref(), Some(&key.record.key_id));
    }
    assert!(run_at(&fixture, later + DAY).await.is_empty());
    assert_eq!(fixture.store.scheduler_high_water().await.unwrap(), Some(Instant::from_millis(later + DAY)));
}

#[tokio::test]
async fn first_run_catches_up_from_start() {
    let fixture = Fixture::new().await;
    fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();

    let run = {
        fixture.at(T0 + 80 * DAY);
        fixture.keyring.run_scheduler().await.unwrap()
    };

    assert_eq!(run.from, None);
    assert_eq!(run.recorded.len(), 1);
    assert_eq!(run.recorded[0].event, TimedEvent::ExpiringSoon);
}

#[tokio::test]
async fn verification_and_scheduler_record_once() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());

    fixture.at(T0 + 91 * DAY);
    let decision = fixture.keyring.verify(key.token.expose(), &Default::default(), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Grace);
    fixture.keyring.flush().await.unwrap();
    let recorded = run_at(&fixture, T0 + 91 * DAY).await;

    assert_eq!(recorded, [(TimedEvent::ExpiringSoon, T0 + 76 * DAY)]);
    assert_eq!(rows_of(&fixture.keyring, AuditEventType::AuthnTokenGraceEntered).await.len(), 1);
}

#[tokio::test]
async fn revoked_key_records_nothing() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    assert!(run_at(&fixture, T0).await.is_empty());
    fixture.keyring.revoke(&key.record.key_id, Some("leaked"), &cli()).await.unwrap();

    assert!(run_at(&fixture, T0 + 200 * DAY).await.is_empty());
}

/// Creates `count` keys whose boundaries are spread over 100 days, so each scheduler run sees a
/// mix of due keys.
async fn create_many(keyring: &Keyring, count: u32) {
    for n in 0..count {
        let mut new = new_key(&format!("key {n}"));
        new.expiry = Some(keyturn::core::Expiry::After(Duration::from_millis(i64::from(n) * DAY / 3 + DAY)));
        keyring.create(new, &cli()).await.unwrap();
    }
}

/// Runs two keyrings' schedulers concurrently at 30 instants and checks that every event of
/// every key was recorded exactly once.
async fn check_two_instances(first: Arc<Keyring>, second: Arc<Keyring>, clock: ManualClock, keys: u32) {
    for step in 1..=30 {
        clock.set(Instant::from_millis(T0 + i64::from(step) * 4 * DAY));
        let (a, b) = tokio::join!(
            tokio::spawn({
                let first = Arc::clone(&first);
                async move { first.run_scheduler().await.unwrap().recorded.len() }
            }),
            tokio::spawn({
                let second = Arc::clone(&second);
                async move { second.run_scheduler().await.unwrap().recorded.len() }
            })
        );
        a.unwrap();
        b.unwrap();
    }

    let all = first.audit(&AuditFilter::default()).await.unwrap();
    for event in [
        AuditEventType::AuthnTokenExpiringSoon,
        AuditEventType::AuthnTokenGraceEntered,
        AuditEventType::AuthnTokenExpired,
    ] {
        let mut key_ids: Vec<_> =
            all.iter().filter(|row| row.event.event == event).map(|row| row.event.key_id.clone().unwrap()).collect();
        let total = key_ids.len();
        key_ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        key_ids.dedup();
        assert_eq!(key_ids.len(), total, "{event} recorded twice for a key");
        assert!(total > 0, "{event} never recorded");
    }
    let expired = all.iter().filter(|row| row.event.event == AuditEventType::AuthnTokenExpired).count();
    assert_eq!(expired, keys as usize, "every key ends past its grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_record_once_sqlite() {
    let fixture = Fixture::new().await;
    create_many(&fixture.keyring, 60).await;
    let (peer, _) = fixture.peer(&fixture.pepper, Config::default()).await;

    check_two_instances(Arc::clone(&fixture.keyring), peer, fixture.clock.clone(), 60).await;
}

/// Returns a new database on the PostgreSQL server of `KEYTURN_TEST_POSTGRES_URL`, or `None`
/// after a notice when it is unset outside CI.
async fn postgres_database() -> Option<(String, String)> {
    let server = match std::env::var("KEYTURN_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!("KEYTURN_TEST_POSTGRES_URL must be set in CI"),
        _ => {
            eprintln!("skipping PostgreSQL scheduler test: KEYTURN_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let name = format!("keyturn_scheduler_{}_{}", std::process::id(), T0 % 1_000);
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    for statement in [format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"), format!("CREATE DATABASE \"{name}\"")]
    {
        sqlx::raw_sql(&statement).execute(&mut admin).await.unwrap();
    }
    admin.close().await.unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    Some((server.clone(), format!("{base}/{name}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_record_once_postgres() {
    let Some((server, url)) = postgres_database().await else { return };
    let database = DatabaseUrl::parse(&url).unwrap();
    let clock = ManualClock::new(Instant::from_millis(T0));
    let pepper = pepper_entry("1");
    let mut keyrings = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::open(&database, &PostgresOptions::default()).await.unwrap());
        let ring = PepperRing::parse_list(&pepper).unwrap();
        keyrings.push(Keyring::new(store, ring, Arc::new(clock.clone()), Config::default()));
    }
    create_many(&keyrings[0], 60).await;

    check_two_instances(Arc::clone(&keyrings[0]), Arc::clone(&keyrings[1]), clock, 60).await;

    drop(keyrings);
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

#[tokio::test]
async fn rotation_request_sets_outcome_and_deadline() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    let deadline = T0 + 10 * DAY;
    let selector = RotationSelector::Owner("billing".into());

    let entries = fixture
        .keyring
        .request_rotation(&selector, Instant::from_millis(deadline), Some("vendor breach"), false, &cli())
        .await
        .unwrap();

    let expected = Instant::from_millis(deadline);
    assert_eq!(entries[0].status, RequestStatus::Requested { deadline: expected, expires_at: Some(expected) });
    let no_scopes = Default::default();
    let verify = |at: i64| {
        fixture.at(at);
        fixture.keyring.verify(key.token.expose(), &no_scopes, None)
    };
    let decision = verify(deadline - 1).await.unwrap();
    assert_eq!(decision.outcome, Outcome::RotationRequested);
    assert_eq!(decision.deadline, Some(expected));
    let headers = decision.lifecycle_headers();
    assert_eq!(headers[0], ("API-Key-Status", "rotation-requested".to_owned()));
    assert_eq!(headers[1], ("API-Key-Expires", expected.to_http_date()));
    assert_eq!(verify(deadline).await.unwrap().outcome, Outcome::Grace);
    assert_eq!(verify(deadline + 7 * DAY - 1).await.unwrap().outcome, Outcome::Grace);
    assert_eq!(verify(deadline + 7 * DAY).await.unwrap().outcome, Outcome::Expired);

    let rows = rows_of(&fixture.keyring, AuditEventType::AuthnTokenRotationRequested).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.reason.as_deref(), Some("vendor breach"));
    assert_eq!(rows[0].event.details["deadline"], expected.to_rfc3339());
}

#[tokio::test]
async fn rotation_request_successor_keeps_lifetime() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    let selector = RotationSelector::Keys(vec![key.record.key_id.clone()]);
    fixture.keyring.request_rotation(&selector, Instant::from_millis(T0 + DAY), None, false, &cli()).await.unwrap();

    fixture.at(T0 + DAY / 2);
    let successor = fixture.keyring.rotate(&key.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();

    assert_eq!(successor.record.expires_at, Some(Instant::from_millis(T0 + DAY / 2 + 90 * DAY)));
    assert_eq!(successor.record.rotation_deadline, None);
    let decision = fixture.keyring.verify(successor.token.expose(), &Default::default(), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Active);
}

#[tokio::test]
async fn rotation_request_reports_skipped_keys() {
    let fixture = Fixture::new().await;
    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    let fresh = fixture.keyring.create(new_key("fresh"), &cli()).await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    let successor = fixture.keyring.rotate(&rotated.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    let missing = keyturn::core::KeyId::parse("zzzzzzzzzzzz").unwrap();
    let selector = RotationSelector::Keys(vec![
        revoked.record.key_id.clone(),
        rotated.record.key_id.clone(),
        missing,
        fresh.record.key_id.clone(),
    ]);
    let deadline = Instant::from_millis(T0 + DAY);

    let dry = fixture.keyring.request_rotation(&selector, deadline, None, true, &cli()).await.unwrap();
    let statuses: Vec<_> = dry.iter().map(|entry| entry.status.as_str()).collect();
    assert_eq!(statuses, ["revoked", "already_rotated", "not_found", "requested"]);
    assert!(rows_of(&fixture.keyring, AuditEventType::AuthnTokenRotationRequested).await.is_empty());
    assert_eq!(fixture.keyring.get(&fresh.record.key_id).await.unwrap().record.rotation_deadline, None);

    let done = fixture.keyring.request_rotation(&selector, deadline, None, false, &cli()).await.unwrap();
    assert_eq!(done[1].status, RequestStatus::AlreadyRotated { successor_id: successor.record.key_id.clone() });
    assert_eq!(rows_of(&fixture.keyring, AuditEventType::AuthnTokenRotationRequested).await.len(), 1);
}

#[tokio::test]
async fn rotation_request_rejects_bad_input() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("billing"), &cli()).await.unwrap();
    let selector = RotationSelector::Keys(vec![key.record.key_id.clone()]);

    let past = fixture.keyring.request_rotation(&selector, Instant::from_millis(T0), None, false, &cli()).await;
    let message = past.unwrap_err().to_string();
    assert!(message.contains("not after now"), "{message}");

    let later = Instant::from_millis(T0 + DAY);
    let empty = fixture.keyring.request_rotation(&RotationSelector::Keys(Vec::new()), later, None, false, &cli()).await;
    assert!(empty.unwrap_err().to_string().contains("no key id given"));

    let control = fixture.keyring.request_rotation(&selector, later, Some("a\nb"), false, &cli()).await;
    assert!(control.unwrap_err().to_string().contains("reason"));
}

#[tokio::test]
async fn rotation_request_report_shows_progress() {
    let fixture = Fixture::new().await;
    let moved = fixture.keyring.create(new_key("moved"), &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    let lagging = fixture.keyring.create(new_key("lagging"), &cli()).await.unwrap();
    let mut other = new_key("other owner");
    other.owner = Some("sales".into());
    fixture.keyring.create(other, &cli()).await.unwrap();
    let selector = RotationSelector::Keys(vec![
        moved.record.key_id.clone(),
        rotated.record.key_id.clone(),
        lagging.record.key_id.clone(),
    ]);
    let deadline = Instant::from_millis(T0 + 10 * DAY);
    fixture.keyring.request_rotation(&selector, deadline, None, false, &cli()).await.unwrap();
    fixture.at(T0 + DAY);
    let moved_successor =
        fixture.keyring.rotate(&moved.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    fixture.keyring.rotate(&rotated.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    fixture.keyring.verify(moved_successor.token.expose(), &Default::default(), None).await.unwrap();
    fixture.keyring.flush().await.unwrap();

    let report = fixture.keyring.rotation_request_report(Some("billing")).await.unwrap();

    assert_eq!(report.len(), 3);
    let entry = |issued: &keyturn::Issued| report.iter().find(|entry| entry.key_id == issued.record.key_id).unwrap();
    assert_eq!(entry(&moved).successor_id.as_ref(), Some(&moved_successor.record.key_id));
    assert_eq!(entry(&moved).successor_first_used_at, Some(Instant::from_millis(T0 + DAY)));
    assert!(entry(&rotated).successor_id.is_some());
    assert_eq!(entry(&rotated).successor_first_used_at, None);
    assert_eq!(entry(&lagging).successor_id, None);
    assert_eq!(entry(&lagging).state.outcome, Outcome::RotationRequested);
    assert_eq!(entry(&lagging).deadline, deadline);
    assert!(fixture.keyring.rotation_request_report(Some("sales")).await.unwrap().is_empty());
}
