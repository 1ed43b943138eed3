//! Named policies in the service layer: keys created under a policy, successors that keep it,
//! planned and applied policy changes, and rotations, operator or self-rotation, that take the
//! policy's overlap after first use.

mod common;

use common::*;
use keyturn::core::{Duration, Instant, NamedPolicy, PolicyName};
use keyturn::{Error, RotateOptions};

fn named(name: &str) -> NamedPolicy {
    let mut policy = NamedPolicy::from_policy(PolicyName::parse(name).unwrap(), &Default::default());
    policy.max_lifetime = Duration::from_days(30);
    policy.grace = Duration::from_days(2);
    policy.default_overlap = Duration::from_days(2);
    policy.overlap_after_first_use = Some(Duration::from_secs(3600));
    policy
}

async fn store_policy(fixture: &Fixture, policy: &NamedPolicy) {
    let plan = fixture.keyring.plan_policy(policy, false).await.unwrap();
    fixture.keyring.apply_policies(plan, &cli()).await.unwrap();
}

#[tokio::test]
async fn create_takes_named_policy() {
    let fixture = Fixture::new().await;
    store_policy(&fixture, &named("ci")).await;

    let new = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("bot") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();
    assert_eq!(issued.record.policy.as_str(), "ci");
    assert_eq!(issued.record.expires_at, Some(Instant::from_millis(T0 + 30 * DAY)));
    assert_eq!(issued.record.grace, Duration::from_days(2));

    let plain = fixture.keyring.create(new_key("plain"), &cli()).await.unwrap();
    assert!(plain.record.policy.is_default());
    assert_eq!(plain.record.expires_at, Some(Instant::from_millis(T0 + 90 * DAY)));

    let unknown = keyturn::NewKey { policy: Some(PolicyName::parse("missing").unwrap()), ..new_key("bot") };
    let error = fixture.keyring.create(unknown, &cli()).await.unwrap_err();
    assert!(matches!(&error, Error::UnknownPolicy(name) if name == "missing"), "{error:?}");
}

#[tokio::test]
async fn rotation_uses_policy_overlaps() {
    let fixture = Fixture::new().await;
    store_policy(&fixture, &named("ci")).await;
    let new = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("bot") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();

    let successor = fixture.keyring.rotate(&issued.record.key_id, &RotateOptions::default(), &cli()).await.unwrap();
    assert_eq!(successor.record.policy.as_str(), "ci");
    assert_eq!(successor.record.overlap_after_first_use, None);
    let old = fixture.keyring.get(&issued.record.key_id).await.unwrap().record;
    assert_eq!(old.overlap_ends_at, Some(Instant::from_millis(T0 + 2 * DAY)));
    assert_eq!(old.overlap_after_first_use, Some(Duration::from_secs(3600)));

    let too_long = RotateOptions {
        overlap: Some(Duration::from_secs(60)),
        overlap_after_first_use: Some(Duration::from_secs(61)),
        ..RotateOptions::default()
    };
    let error = fixture.keyring.rotate(&successor.record.key_id, &too_long, &cli()).await.unwrap_err();
    assert!(matches!(error, Error::InvalidInput { field: "overlap_after_first_use", .. }), "{error:?}");
}

#[tokio::test]
async fn self_rotation_shortens_on_first_use() {
    let fixture = Fixture::new().await;
    store_policy(&fixture, &named("ci")).await;
    let new = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("bot") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();

    fixture.at(T0 + DAY);
    let successor = fixture.keyring.self_rotate(issued.token.expose(), None).await.unwrap();
    fixture.at(T0 + DAY + 5_000);
    let decision = fixture.keyring.verify(successor.token.expose(), &scopes(&[]), None).await.unwrap();
    assert!(decision.outcome.is_allowed());
    fixture.keyring.flush().await.unwrap();

    let old = fixture.keyring.get(&issued.record.key_id).await.unwrap().record;
    assert_eq!(old.overlap_ends_at, Some(Instant::from_millis(T0 + DAY + 5_000 + 3_600_000)));
}

#[tokio::test]
async fn plan_lists_field_changes_and_removals() {
    let fixture = Fixture::new().await;
    store_policy(&fixture, &named("ci")).await;
    store_policy(&fixture, &named("gone")).await;
    let mut changed = named("ci");
    changed.grace = Duration::from_days(1);

    let plan = fixture.keyring.plan_policies(&[changed.clone(), named("new")], false).await.unwrap();
    assert_eq!(plan.added.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["new"]);
    assert_eq!(plan.changed.len(), 1);
    assert_eq!(plan.changed[0].fields.len(), 1);
    assert_eq!(plan.changed[0].fields[0].field, "grace");
    assert_eq!(plan.removed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["gone"]);

    let duplicate = fixture.keyring.plan_policies(&[named("ci"), named("ci")], false).await.unwrap_err();
    assert!(matches!(duplicate, Error::InvalidInput { field: "policies", .. }), "{duplicate:?}");

    fixture.keyring.apply_policies(plan, &cli()).await.unwrap();
    let names: Vec<String> = fixture.keyring.policies().await.unwrap().iter().map(|p| p.name.to_string()).collect();
    assert_eq!(names, ["ci", "default", "new"]);
}

#[tokio::test]
async fn first_default_version_reaches_existing_keys() {
    let fixture = Fixture::new().await;
    let existing = fixture.keyring.create(new_key("old"), &cli()).await.unwrap();
    let mut default = fixture.keyring.builtin_default_policy();
    default.max_lifetime = Duration::from_days(10);

    let plan = fixture.keyring.plan_policies(&[default.clone()], true).await.unwrap();
    assert!(plan.added.is_empty());
    assert_eq!(plan.changed.len(), 1);
    assert_eq!(plan.changed[0].keys_affected, 1);
    let applied = fixture.keyring.apply_policies(plan, &cli()).await.unwrap();
    assert_eq!(applied.changed[0].keys_affected, 1);
    let updated = fixture.keyring.get(&existing.record.key_id).await.unwrap().record;
    assert_eq!(updated.expires_at, Some(Instant::from_millis(T0 + 10 * DAY)));

    // A file that leaves `default` out keeps the stored version.
    let plan = fixture.keyring.plan_policies(&[], false).await.unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(fixture.keyring.policy(&PolicyName::default_name()).await.unwrap(), default);
}

#[tokio::test]
async fn store_copy_keeps_policies() {
    let fixture = Fixture::new().await;
    store_policy(&fixture, &named("ci")).await;
    let new = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("bot") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = keyturn::store::DatabaseUrl::parse(dir.path().join("copy.db").to_str().unwrap()).unwrap();
    let target = keyturn::open_store(&url, true).await.unwrap();
    keyturn::copy_store(fixture.store.as_ref(), target.as_ref(), false).await.unwrap();

    assert_eq!(target.list_policies().await.unwrap(), vec![named("ci")]);
    let copied = target.get_key(&issued.record.key_id).await.unwrap().unwrap();
    assert_eq!(copied.policy.as_str(), "ci");
}

#[tokio::test]
async fn apply_to_existing_reaches_cached_keys_at_once() {
    let fixture = Fixture::new().await;
    fixture.keyring.start_background();
    store_policy(&fixture, &named("ci")).await;
    let new = keyturn::NewKey { policy: Some(PolicyName::parse("ci").unwrap()), ..new_key("bot") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();
    let decision = fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert!(decision.outcome.is_allowed());

    let mut short = named("ci");
    short.max_lifetime = Duration::from_days(1);
    short.grace = Duration::ZERO;
    let plan = fixture.keyring.plan_policy(&short, true).await.unwrap();
    fixture.keyring.apply_policies(plan, &cli()).await.unwrap();

    fixture.at(T0 + DAY);
    let decision = fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome.as_str(), "expired");
    fixture.keyring.shutdown().await;
}
