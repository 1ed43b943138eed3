//! The rotation cadence of named policies. The scheduler requests the rotation of a key of a
//! policy with `rotate_every` exactly when the key reaches that age (not 1 ms before), with the
//! key's expiry as the deadline. It does so once per key, even with two instances on SQLite or
//! PostgreSQL. Keys of policies without a cadence, revoked keys, rotated keys and keys with a
//! request already are never touched.

mod common;

use std::sync::Arc;

use common::*;
use keyturn::core::{
    AuditEventType, Duration, Expiry, Instant, ManualClock, NamedPolicy, Outcome, PepperRing, PolicyName,
};
use keyturn::store::{AuditFilter, DatabaseUrl, PostgresOptions, PostgresStore, Store};
use keyturn::{Config, Issued, Keyring, RotateOptions, RotationSelector};
use sqlx::Connection;

/// Builds a policy with a 30-day lifetime, a 7-day warning window and the given cadence.
fn policy(name: &str, rotate_every: Option<Duration>) -> NamedPolicy {
    let mut policy = NamedPolicy::from_policy(PolicyName::parse(name).unwrap(), &Default::default());
    policy.max_lifetime = Duration::from_days(30);
    policy.grace = Duration::from_days(2);
    policy.warn_before = Duration::from_days(7);
    policy.rotate_every = rotate_every;
    policy
}

async fn store_policy(keyring: &Keyring, policy: &NamedPolicy) {
    let plan = keyring.plan_policy(policy, false).await.unwrap();
    keyring.apply_policies(plan, &cli()).await.unwrap();
}

async fn create_under(keyring: &Keyring, policy: &str, name: &str) -> Issued {
    let new = keyturn::NewKey { policy: Some(PolicyName::parse(policy).unwrap()), ..new_key(name) };
    keyring.create(new, &cli()).await.unwrap()
}

/// Runs the scheduler at `at` and returns the key ids and deadlines it requested.
async fn requested_at(fixture: &Fixture, at: i64) -> Vec<(String, i64)> {
    fixture.at(at);
    let run = fixture.keyring.run_scheduler().await.unwrap();
    run.rotations_requested.iter().map(|request| (request.key_id.to_string(), request.deadline.as_millis())).collect()
}

async fn request_rows(keyring: &Keyring) -> Vec<keyturn::core::AuditEvent> {
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRotationRequested), ..AuditFilter::default() };
    keyring.audit(&filter).await.unwrap()
}

/// Sets up the policies `ci` (rotate every 20 days) and `plain` (no cadence).
async fn cadence_fixture() -> Fixture {
    let fixture = Fixture::new().await;
    store_policy(&fixture.keyring, &policy("ci", Some(Duration::from_days(20)))).await;
    store_policy(&fixture.keyring, &policy("plain", None)).await;
    fixture
}

#[tokio::test]
async fn cadence_requests_at_exact_age() {
    let fixture = cadence_fixture().await;
    let key = create_under(&fixture.keyring, "ci", "bot").await;
    let plain = create_under(&fixture.keyring, "plain", "plain").await;
    let default = fixture.keyring.create(new_key("default"), &cli()).await.unwrap();
    let due = T0 + 20 * DAY;
    let expiry = T0 + 30 * DAY;

    assert!(requested_at(&fixture, due - 1).await.is_empty());
    assert_eq!(requested_at(&fixture, due).await, [(key.record.key_id.to_string(), expiry)]);
    assert!(requested_at(&fixture, due + DAY).await.is_empty());

    let rows = request_rows(&fixture.keyring).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0].event;
    assert_eq!(row.key_id.as_ref(), Some(&key.record.key_id));
    assert_eq!(row.actor.to_stored(), "system");
    assert_eq!(row.at, Instant::from_millis(due));
    assert_eq!(row.reason.as_deref(), Some("rotation cadence of policy ci"));
    assert_eq!(row.details["deadline"], Instant::from_millis(expiry).to_rfc3339());
    assert_eq!(row.details["previous_expires_at"], Instant::from_millis(expiry).to_rfc3339());
    assert_eq!(row.details["policy"], "ci");

    let record = fixture.keyring.get(&key.record.key_id).await.unwrap().record;
    assert_eq!(record.rotation_requested_at, Some(Instant::from_millis(due)));
    assert_eq!(record.rotation_deadline, Some(Instant::from_millis(expiry)));
    assert_eq!(record.expires_at, Some(Instant::from_millis(expiry)), "the request never shortens the key's life");
    for untouched in [&plain, &default] {
        let record = fixture.keyring.get(&untouched.record.key_id).await.unwrap().record;
        assert_eq!(record.rotation_requested_at, None, "{}", record.name);
    }
}

#[tokio::test]
async fn cadence_request_shows_in_headers() {
    let fixture = cadence_fixture().await;
    let key = create_under(&fixture.keyring, "ci", "bot").await;
    let expiry = Instant::from_millis(T0 + 30 * DAY);
    requested_at(&fixture, T0 + 20 * DAY).await;

    fixture.at(T0 + 20 * DAY + 1);
    let decision = fixture.keyring.verify(key.token.expose(), &Default::default(), None).await.unwrap();

    assert_eq!(decision.outcome, Outcome::RotationRequested);
    assert_eq!(decision.deadline, Some(expiry));
    let headers = decision.lifecycle_headers();
    assert_eq!(headers[0], ("API-Key-Status", "rotation-requested".to_owned()));
    assert_eq!(headers[1], ("API-Key-Expires", expiry.to_http_date()));
    fixture.at(T0 + 30 * DAY);
    let at_expiry = fixture.keyring.verify(key.token.expose(), &Default::default(), None).await.unwrap();
    assert_eq!(at_expiry.outcome, Outcome::Grace);
}

#[tokio::test]
async fn cadence_skips_revoked_and_rotated() {
    let fixture = cadence_fixture().await;
    let revoked = create_under(&fixture.keyring, "ci", "revoked").await;
    let rotated = create_under(&fixture.keyring, "ci", "rotated").await;
    let requested = create_under(&fixture.keyring, "ci", "requested").await;
    fixture.keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    let operator_deadline = Instant::from_millis(T0 + 25 * DAY);
    let selector = RotationSelector::Keys(vec![requested.record.key_id.clone()]);
    fixture.keyring.request_rotation(&selector, operator_deadline, None, false, &cli()).await.unwrap();
    fixture.at(T0 + 5 * DAY);
    let successor = fixture.keyring.rotate(&rotated.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();

    assert!(requested_at(&fixture, T0 + 20 * DAY).await.is_empty());
    let successor_due = T0 + 25 * DAY;
    assert!(requested_at(&fixture, successor_due - 1).await.is_empty());
    let expected = [(successor.record.key_id.to_string(), T0 + 5 * DAY + 30 * DAY)];
    assert_eq!(requested_at(&fixture, successor_due).await, expected);

    let rows = request_rows(&fixture.keyring).await;
    assert_eq!(rows.len(), 2, "the operator's request and the successor's cadence request");
    let operator_requested = fixture.keyring.get(&requested.record.key_id).await.unwrap().record;
    assert_eq!(operator_requested.rotation_deadline, Some(operator_deadline));
    assert_eq!(operator_requested.rotation_requested_at, Some(Instant::from_millis(T0)));
}

#[tokio::test]
async fn cadence_skips_keys_past_expiry() {
    let fixture = cadence_fixture().await;
    let late = create_under(&fixture.keyring, "ci", "late").await;
    let mut short = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("short") };
    short.expiry = Some(Expiry::After(Duration::from_days(10)));
    let expired = fixture.keyring.create(short, &cli()).await.unwrap();

    assert!(requested_at(&fixture, T0 + 20 * DAY)
        .await
        .iter()
        .all(|(key_id, _)| key_id != expired.record.key_id.as_str()));
    let record = fixture.keyring.get(&expired.record.key_id).await.unwrap().record;
    assert_eq!(record.rotation_requested_at, None, "a key in its grace period or later gets no request");
    let requested = fixture.keyring.get(&late.record.key_id).await.unwrap().record;
    assert!(requested.rotation_requested_at.is_some());
}

#[tokio::test]
async fn cadence_starts_when_policy_gains_it() {
    let fixture = Fixture::new().await;
    store_policy(&fixture.keyring, &policy("ci", None)).await;
    let key = create_under(&fixture.keyring, "ci", "bot").await;
    assert!(requested_at(&fixture, T0 + 25 * DAY).await.is_empty());

    store_policy(&fixture.keyring, &policy("ci", Some(Duration::from_days(20)))).await;

    let expected = [(key.record.key_id.to_string(), T0 + 30 * DAY)];
    assert_eq!(requested_at(&fixture, T0 + 25 * DAY + 1).await, expected);
}

/// Creates `count` keys of policy `ci`, one every 12 hours from T0.
async fn create_spread(keyring: &Keyring, clock: &ManualClock, count: u32) {
    for n in 0..count {
        clock.set(Instant::from_millis(T0 + i64::from(n) * DAY / 2));
        create_under(keyring, "ci", &format!("key {n}")).await;
    }
}

/// Runs two keyrings' schedulers concurrently at daily instants past every key's cadence and
/// checks that each key received exactly one request.
async fn check_two_instances(first: Arc<Keyring>, second: Arc<Keyring>, clock: ManualClock, keys: u32) {
    let mut reported = 0;
    for step in 0..=(keys / 2 + 1) {
        clock.set(Instant::from_millis(T0 + 20 * DAY + i64::from(step) * DAY));
        let (a, b) = tokio::join!(
            tokio::spawn({
                let first = Arc::clone(&first);
                async move { first.run_scheduler().await.unwrap().rotations_requested.len() }
            }),
            tokio::spawn({
                let second = Arc::clone(&second);
                async move { second.run_scheduler().await.unwrap().rotations_requested.len() }
            })
        );
        reported += a.unwrap() + b.unwrap();
    }

    let rows = request_rows(&first).await;
    let mut key_ids: Vec<_> = rows.iter().map(|row| row.event.key_id.clone().unwrap()).collect();
    key_ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    key_ids.dedup();
    assert_eq!(key_ids.len(), rows.len(), "a key received two cadence requests");
    assert_eq!(rows.len(), keys as usize, "every key received a request");
    assert_eq!(reported, keys as usize, "the runs report each request once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cadence_two_instances_once_sqlite() {
    let fixture = Fixture::new().await;
    store_policy(&fixture.keyring, &policy("ci", Some(Duration::from_days(20)))).await;
    create_spread(&fixture.keyring, &fixture.clock, 40).await;
    let (peer, _) = fixture.peer(&fixture.pepper, Config::default()).await;

    check_two_instances(Arc::clone(&fixture.keyring), peer, fixture.clock.clone(), 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cadence_two_instances_once_postgres() {
    let server = match std::env::var("KEYTURN_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!("KEYTURN_TEST_POSTGRES_URL must be set in CI"),
        _ => {
            eprintln!("skipping PostgreSQL cadence test: KEYTURN_TEST_POSTGRES_URL is not set");
            return;
        }
    };
    let name = format!("keyturn_cadence_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    for statement in [format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"), format!("CREATE DATABASE \"{name}\"")]
    {
        sqlx::raw_sql(&statement).execute(&mut admin).await.unwrap();
    }
    let (base, _) = server.rsplit_once('/').unwrap();
    let database = DatabaseUrl::parse(&format!("{base}/{name}")).unwrap();
    let clock = ManualClock::new(Instant::from_millis(T0));
    let pepper = pepper_entry("1");
    let mut keyrings = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::open(&database, &PostgresOptions::default()).await.unwrap());
        let ring = PepperRing::parse_list(&pepper).unwrap();
        keyrings.push(Keyring::new(store, ring, Arc::new(clock.clone()), Config::default()));
    }
    store_policy(&keyrings[0], &policy("ci", Some(Duration::from_days(20)))).await;
    create_spread(&keyrings[0], &clock, 40).await;

    check_two_instances(Arc::clone(&keyrings[0]), Arc::clone(&keyrings[1]), clock, 40).await;

    drop(keyrings);
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

#[tokio::test]
async fn cadence_deadline_without_expiry() {
    let fixture = cadence_fixture().await;
    let mut lasting = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("lasting") };
    lasting.expiry = Some(Expiry::Never);
    let on_time = fixture.keyring.create(lasting.clone(), &cli()).await.unwrap();
    assert_eq!(on_time.record.expires_at, None);

    let expected = [(on_time.record.key_id.to_string(), T0 + 27 * DAY)];
    assert_eq!(requested_at(&fixture, T0 + 20 * DAY).await, expected, "created_at + rotate_every + warn_before");
    let record = fixture.keyring.get(&on_time.record.key_id).await.unwrap().record;
    assert_eq!(record.expires_at, Some(Instant::from_millis(T0 + 27 * DAY)));

    let late = fixture.keyring.create(lasting, &cli()).await.unwrap();
    let caught_up = T0 + 20 * DAY + 40 * DAY;
    let expected = [(late.record.key_id.to_string(), caught_up + 7 * DAY)];
    assert_eq!(requested_at(&fixture, caught_up).await, expected, "a late run still leaves the warning window");
}
