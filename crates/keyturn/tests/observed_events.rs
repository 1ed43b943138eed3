//! Lifecycle events that verifications observe (grace entered, expired, superseded key used) and
//! pepper rotations are recorded once per key (or pepper) and event, however many verifications
//! and processes observe them, and never for an active key.

mod common;

use common::*;
use keyturn::core::{AuditEventType, Duration, PepperRing};
use keyturn::store::AuditFilter;
use keyturn::{Config, RotateOptions};

async fn rows_of(fixture: &Fixture, event: AuditEventType) -> Vec<keyturn::core::AuditEvent> {
    let filter = AuditFilter { event: Some(event), ..AuditFilter::default() };
    fixture.keyring.audit(&filter).await.unwrap()
}

#[tokio::test]
async fn observed_events_recorded_once_per_key() {
    let fixture = Fixture::new().await;
    let (peer, _) = fixture.peer(&fixture.pepper, Config::default()).await;
    let first = fixture.keyring.create(new_key("first"), &cli()).await.unwrap();
    let graced = fixture.keyring.create(new_key("grace"), &cli()).await.unwrap();
    fixture.at(T0 + 10 * DAY);
    let expired = fixture.keyring.create(new_key("expired"), &cli()).await.unwrap();
    let rotated = fixture.keyring.create(new_key("rotated"), &cli()).await.unwrap();
    let week = RotateOptions { overlap: Some(Duration::from_days(7)), ..RotateOptions::default() };
    fixture.keyring.rotate(&rotated.record.key_id, &week, &cli()).await.unwrap();

    // 92 days after T0, the two keys created at T0 are in their grace period.
    fixture.at(T0 + 92 * DAY);
    for keyring in [&fixture.keyring, &peer] {
        for _ in 0..3 {
            for key in [&first, &graced] {
                keyring.verify(key.token.expose(), &Default::default(), Some("198.51.100.4")).await.unwrap();
            }
        }
        keyring.flush().await.unwrap();
    }
    fixture.at(T0 + 10 * DAY + 3 * DAY);
    for keyring in [&fixture.keyring, &peer] {
        keyring.verify(rotated.token.expose(), &Default::default(), None).await.unwrap();
        keyring.flush().await.unwrap();
    }
    fixture.at(T0 + 10 * DAY + 100 * DAY);
    for keyring in [&fixture.keyring, &peer] {
        keyring.verify(expired.token.expose(), &Default::default(), None).await.unwrap();
        keyring.flush().await.unwrap();
    }

    let grace = rows_of(&fixture, AuditEventType::AuthnTokenGraceEntered).await;
    let ids: Vec<_> = grace.iter().map(|row| row.event.key_id.clone().unwrap()).collect();
    assert_eq!(ids, [first.record.key_id.clone(), graced.record.key_id.clone()]);
    assert_eq!(grace[0].event.client_addr.as_deref(), Some("198.51.100.4"));
    assert_eq!(grace[0].event.actor.to_stored(), "system");

    let superseded = rows_of(&fixture, AuditEventType::AuthnTokenSupersededUsed).await;
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].event.key_id.as_ref(), Some(&rotated.record.key_id));

    let expired_rows = rows_of(&fixture, AuditEventType::AuthnTokenExpired).await;
    assert_eq!(expired_rows.len(), 1);
    assert_eq!(expired_rows[0].event.key_id.as_ref(), Some(&expired.record.key_id));
    peer.shutdown().await;
}

#[tokio::test]
async fn active_key_records_no_observation() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("active"), &cli()).await.unwrap();
    for _ in 0..5 {
        fixture.keyring.verify(key.token.expose(), &Default::default(), None).await.unwrap();
    }
    fixture.keyring.flush().await.unwrap();
    let rows = fixture.keyring.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1, "only the creation: {rows:?}");
}

#[tokio::test]
async fn pepper_rotation_recorded_once_per_pepper() {
    let fixture = Fixture::new().await;
    fixture.keyring.flush().await.unwrap();
    assert!(rows_of(&fixture, AuditEventType::AuthnPepperRotated).await.is_empty(), "one pepper is no rotation");

    let ring = format!("{},{}", pepper_entry("2"), fixture.pepper);
    for _ in 0..2 {
        let (rotated, _) = fixture.peer(&ring, Config::default()).await;
        rotated.flush().await.unwrap();
        rotated.flush().await.unwrap();
    }
    let rows = rows_of(&fixture, AuditEventType::AuthnPepperRotated).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].event.details["pepper_id"], "2");
    assert!(PepperRing::parse_list(&ring).is_ok());
}
