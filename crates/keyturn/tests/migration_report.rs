//! The migration report of the keyring on a real SQLite file: a manual clock rotates keys whose
//! clients moved, use both keys or have not moved, and usage flushes write what the report reads.

mod common;

use common::*;
use keyturn::core::{Duration, Instant, KeyId, MigrationStatus};
use keyturn::{Issued, MigrationEntry, NewKey, RotateOptions};

/// Rotates `key` now with an overlap window of `days` days and returns the successor.
async fn rotate(fixture: &Fixture, key: &Issued, days: i64) -> Issued {
    let options = RotateOptions { overlap: Some(Duration::from_days(days)), ..RotateOptions::default() };
    fixture.keyring.rotate(&key.record.key_id, &options, &cli()).await.unwrap()
}

/// Verifies `key`'s token now, as a request from `client_addr` would.
async fn use_key(fixture: &Fixture, key: &Issued, client_addr: Option<&str>) {
    let decision = fixture.keyring.verify(key.token.expose(), &scopes(&[]), client_addr).await.unwrap();
    assert!(decision.allowed(), "{} was rejected as {}", key.record.key_id, decision.code());
}

fn ids(entries: &[MigrationEntry]) -> Vec<KeyId> {
    entries.iter().map(|entry| entry.key_id.clone()).collect()
}

fn entry<'a>(entries: &'a [MigrationEntry], key: &Issued) -> &'a MigrationEntry {
    entries.iter().find(|entry| entry.key_id == key.record.key_id).expect("key missing from the report")
}

fn at(millis: i64) -> Option<Instant> {
    Some(Instant::from_millis(millis))
}

#[tokio::test]
async fn report_shows_moved_both_and_not_moved() {
    let fixture = Fixture::new().await;
    let moved = fixture.keyring.create(new_key("moved"), &cli()).await.unwrap();
    let both = fixture.keyring.create(new_key("both"), &cli()).await.unwrap();
    let waiting = fixture.keyring.create(new_key("waiting"), &cli()).await.unwrap();
    for key in [&moved, &both, &waiting] {
        use_key(&fixture, key, Some("192.0.2.1")).await;
    }
    fixture.keyring.flush().await.unwrap();

    fixture.at(T0 + 1_000);
    let moved_successor = rotate(&fixture, &moved, 3).await;
    let both_successor = rotate(&fixture, &both, 1).await;
    rotate(&fixture, &waiting, 2).await;

    fixture.at(T0 + 2_000);
    use_key(&fixture, &moved, Some("192.0.2.1")).await;
    use_key(&fixture, &waiting, Some("192.0.2.3")).await;
    use_key(&fixture, &waiting, Some("192.0.2.4")).await;
    fixture.keyring.flush().await.unwrap();
    fixture.at(T0 + 3_000);
    use_key(&fixture, &moved_successor, Some("198.51.100.1")).await;
    use_key(&fixture, &both_successor, Some("198.51.100.2")).await;
    fixture.keyring.flush().await.unwrap();
    fixture.at(T0 + 4_000);
    use_key(&fixture, &both, Some("203.0.113.9")).await;
    fixture.keyring.flush().await.unwrap();

    let report = fixture.keyring.migration_report(None).await.unwrap();

    assert_eq!(
        ids(&report),
        vec![both.record.key_id.clone(), waiting.record.key_id.clone(), moved.record.key_id.clone()]
    );

    let row = entry(&report, &moved);
    assert_eq!(row.status, MigrationStatus::Moved);
    assert_eq!(row.name, "moved");
    assert_eq!(row.owner.as_deref(), Some("billing"));
    assert_eq!(row.rotated_at, Instant::from_millis(T0 + 1_000));
    assert_eq!(row.overlap_ends_at, Instant::from_millis(T0 + 1_000 + 3 * DAY));
    assert_eq!(row.last_used_at, at(T0 + 2_000));
    assert_eq!(row.last_client_addr.as_deref(), Some("192.0.2.1"));
    assert_eq!(row.uses_since_rotation, 1, "the use before the rotation was flushed before it");
    assert_eq!(row.successor_id, moved_successor.record.key_id);
    assert_eq!(row.successor_first_used_at, at(T0 + 3_000));

    let row = entry(&report, &both);
    assert_eq!(row.status, MigrationStatus::Both);
    assert_eq!(row.last_used_at, at(T0 + 4_000));
    assert_eq!(row.last_client_addr.as_deref(), Some("203.0.113.9"));
    assert_eq!(row.uses_since_rotation, 1);
    assert_eq!(row.successor_first_used_at, at(T0 + 3_000));

    let row = entry(&report, &waiting);
    assert_eq!(row.status, MigrationStatus::NotMoved);
    assert_eq!(row.last_client_addr.as_deref(), Some("192.0.2.4"));
    assert_eq!(row.uses_since_rotation, 2);
    assert_eq!(row.successor_first_used_at, None);
}

#[tokio::test]
async fn uses_since_rotation_written_behind() {
    let fixture = Fixture::new().await;
    let key = fixture.keyring.create(new_key("counted"), &cli()).await.unwrap();
    use_key(&fixture, &key, None).await;
    use_key(&fixture, &key, None).await;
    fixture.keyring.flush().await.unwrap();
    fixture.at(T0 + 1_000);
    rotate(&fixture, &key, 1).await;

    fixture.at(T0 + 2_000);
    for _ in 0..3 {
        use_key(&fixture, &key, None).await;
    }
    let before_flush = fixture.keyring.migration_report(None).await.unwrap();
    assert_eq!(before_flush[0].uses_since_rotation, 0, "verification must not write to the store");
    assert_eq!(before_flush[0].last_used_at, at(T0));

    fixture.keyring.flush().await.unwrap();
    let after_flush = fixture.keyring.migration_report(None).await.unwrap();
    assert_eq!(after_flush[0].uses_since_rotation, 3, "only the uses after the rotation count");
    assert_eq!(after_flush[0].last_used_at, at(T0 + 2_000));
    assert_eq!(after_flush[0].status, MigrationStatus::NotMoved);
}

#[tokio::test]
async fn report_filters_by_owner() {
    let fixture = Fixture::new().await;
    let billing = fixture.keyring.create(new_key("billing key"), &cli()).await.unwrap();
    let ops_key = NewKey { name: "ops key".into(), owner: Some("ops".into()), ..NewKey::default() };
    let ops = fixture.keyring.create(ops_key, &cli()).await.unwrap();
    rotate(&fixture, &billing, 1).await;
    rotate(&fixture, &ops, 2).await;

    let report = fixture.keyring.migration_report(Some("ops")).await.unwrap();
    assert_eq!(ids(&report), vec![ops.record.key_id.clone()]);
    let report = fixture.keyring.migration_report(Some("billing")).await.unwrap();
    assert_eq!(ids(&report), vec![billing.record.key_id.clone()]);
    assert!(fixture.keyring.migration_report(Some("nobody")).await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_outside_overlap_excluded() {
    let fixture = Fixture::new().await;
    let active = fixture.keyring.create(new_key("active"), &cli()).await.unwrap();
    let ended = fixture.keyring.create(new_key("ended"), &cli()).await.unwrap();
    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    let open = fixture.keyring.create(new_key("open"), &cli()).await.unwrap();
    rotate(&fixture, &ended, 0).await;
    rotate(&fixture, &revoked, 1).await;
    fixture.keyring.revoke(&revoked.record.key_id, Some("leaked"), &cli()).await.unwrap();
    let successor = rotate(&fixture, &open, 1).await;

    let report = fixture.keyring.migration_report(None).await.unwrap();
    assert_eq!(ids(&report), vec![open.record.key_id.clone()], "{report:?}");
    assert!(!ids(&report).contains(&active.record.key_id));
    assert!(!ids(&report).contains(&successor.record.key_id));

    fixture.at(T0 + DAY - 1);
    assert_eq!(fixture.keyring.migration_report(None).await.unwrap().len(), 1, "the window is still open");
    fixture.at(T0 + DAY);
    assert!(fixture.keyring.migration_report(None).await.unwrap().is_empty(), "the window ends exclusive");
}

#[tokio::test]
async fn report_pages_follow_cursor() {
    let fixture = Fixture::new().await;
    let mut rotated = Vec::new();
    for days in [3, 1, 2] {
        let key = fixture.keyring.create(new_key(&format!("{days} days")), &cli()).await.unwrap();
        rotate(&fixture, &key, days).await;
        rotated.push(key.record.key_id);
    }
    let expected = [rotated[1].clone(), rotated[2].clone(), rotated[0].clone()];

    let first = fixture.keyring.migration_report_page(None, None, 2).await.unwrap();
    assert_eq!(ids(&first.keys), expected[..2]);
    assert_eq!(first.next_after.as_ref(), Some(&expected[1]));
    let second = fixture.keyring.migration_report_page(None, first.next_after, 2).await.unwrap();
    assert_eq!(ids(&second.keys), expected[2..]);
    assert_eq!(second.next_after, None);
    let zero = fixture.keyring.migration_report_page(None, None, 0).await.unwrap();
    assert_eq!(zero.keys.len(), 1, "a limit below 1 is clamped to 1");
}
