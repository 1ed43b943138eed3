//! Verification tests: request parsing, identical rejections, scopes, pepper rotation, the cache
//! and its coherence across keyrings on one SQLite file, and store outages.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration as StdDuration, Instant as MonotonicInstant};

use common::*;
use keyturn::core::{AuditEventType, KeyId, Outcome};
use keyturn::store::{AuditFilter, Store};
use keyturn::{AuthRequest, Authentication, Config, Consistency};
use rand_core::OsRng;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn authenticate(
    fixture: &Fixture,
    authorization: &[&str],
    api_key: &[&str],
    query: &[(&str, &str)],
    required: &[&str],
) -> Authentication {
    let request = AuthRequest { authorization, api_key, query, client_addr: Some("127.0.0.1") };
    fixture.keyring.authenticate(&request, &scopes(required)).await
}

fn rejected(result: Authentication) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    match result {
        Authentication::Rejected { response, .. } => (response.status, response.headers, response.body),
        Authentication::Allowed { .. } => panic!("expected a rejection"),
    }
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn missing_and_foreign_scheme_get_bare_challenge() {
    let fixture = Fixture::new().await;
    for authorization in [&[][..], &["Basic dXNlcjpwYXNz"][..]] {
        let (status, headers, body) = rejected(authenticate(&fixture, authorization, &[], &[], &[]).await);
        assert_eq!(status, 401);
        assert!(headers.contains(&("WWW-Authenticate", "Bearer realm=\"api\"".to_owned())));
        assert_eq!(code(&body), "missing_credentials");
    }
}

#[tokio::test]
async fn lowercase_bearer_and_api_key_header_accepted() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("schemes"), &cli()).await.unwrap();
    let lower = format!("bearer   {}  ", issued.token.expose());
    assert!(authenticate(&fixture, &[&lower], &[], &[], &[]).await.is_allowed());
    assert!(authenticate(&fixture, &[], &[issued.token.expose()], &[], &[]).await.is_allowed());
}

#[tokio::test]
async fn invalid_causes_give_identical_bodies() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("identical"), &cli()).await.unwrap();
    let token = issued.token.expose().to_owned();
    let format = &fixture.keyring.config().format;

    let unknown = format.generate(&keyturn::core::KeyId::parse("ZZZZZZZZZZZZ").unwrap(), &mut rand_core::OsRng);
    let wrong_secret = format.generate(&issued.record.key_id, &mut rand_core::OsRng);
    let mut bad_checksum = token.clone();
    bad_checksum.pop();
    bad_checksum.push(if token.ends_with('0') { '1' } else { '0' });
    let inner_space = format!("{} {}", &token[..10], &token[11..]);
    let oversized = "a".repeat(16 * 1024);

    let candidates = [
        unknown.expose().to_owned(),
        wrong_secret.expose().to_owned(),
        bad_checksum,
        inner_space,
        "ünïcode".to_owned(),
        "tab\tinside".to_owned(),
        oversized,
    ];
    let mut bodies = Vec::new();
    for candidate in &candidates {
        let header = bearer(candidate);
        let (status, headers, body) = rejected(authenticate(&fixture, &[&header], &[], &[], &[]).await);
        assert_eq!(status, 401);
        assert!(headers.contains(&("WWW-Authenticate", "Bearer realm=\"api\", error=\"invalid_token\"".to_owned())));
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    let (_, _, empty) = rejected(authenticate(&fixture, &["Bearer "], &[], &[], &[]).await);
    assert_eq!(empty, bodies[0]);
}

#[tokio::test]
async fn two_credentials_and_query_token_are_invalid_requests() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("request"), &cli()).await.unwrap();
    let other = fixture.keyring.create(new_key("other"), &cli()).await.unwrap();
    let header = bearer(issued.token.expose());

    let (status, _, body) = rejected(authenticate(&fixture, &[&header], &[other.token.expose()], &[], &[]).await);
    assert_eq!((status, code(&body)), (400, "invalid_request".to_owned()));

    let query = [("api_key", issued.token.expose())];
    let (status, _, body) = rejected(authenticate(&fixture, &[], &[], &query, &[]).await);
    assert_eq!((status, code(&body)), (400, "invalid_request".to_owned()));
    assert!(!String::from_utf8_lossy(&body).contains(issued.token.expose()));

    fixture.keyring.flush().await.unwrap();
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenExposed), ..AuditFilter::default() };
    let exposed = fixture.keyring.audit(&filter).await.unwrap();
    assert_eq!(exposed.len(), 1);
    assert_eq!(exposed[0].event.key_id.as_ref(), Some(&issued.record.key_id));
    assert!(!exposed[0].canonical.contains(issued.token.expose()));
}

#[tokio::test]
async fn missing_scope_is_403() {
    let fixture = Fixture::new().await;
    let new = keyturn::NewKey { scopes: scopes(&["orders:read"]), ..new_key("scoped") };
    let issued = fixture.keyring.create(new, &cli()).await.unwrap();
    let header = bearer(issued.token.expose());
    assert!(authenticate(&fixture, &[&header], &[], &[], &["orders:read"]).await.is_allowed());
    let (status, headers, body) = rejected(authenticate(&fixture, &[&header], &[], &[], &["orders:write"]).await);
    assert_eq!(status, 403);
    assert!(headers.contains(&(
        "WWW-Authenticate",
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:write\"".to_owned()
    )));
    assert_eq!(code(&body), "insufficient_scope");
}

#[tokio::test]
async fn old_pepper_verifies_then_rehashes() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("pepper"), &cli()).await.unwrap();
    let ring = format!("{},{}", pepper_entry("2"), fixture.pepper);
    let (rotated_ring, _) = fixture.peer(&ring, Config::default()).await;

    let decision = rotated_ring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Active);
    rotated_ring.flush().await.unwrap();

    let view = rotated_ring.get(&issued.record.key_id).await.unwrap();
    assert_eq!(view.record.pepper_id.as_str(), "2");
    let only_new = ring.split(',').next().unwrap().to_owned();
    let (new_only, _) = fixture.peer(&only_new, Config::default()).await;
    let decision = new_only.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Active);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRehashed), ..AuditFilter::default() };
    assert_eq!(rotated_ring.audit(&filter).await.unwrap().len(), 1);
}

#[tokio::test]
async fn cache_hit_writes_nothing_until_flush() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("cached"), &cli()).await.unwrap();
    fixture.keyring.sync_cache().await.unwrap();
    let seq = fixture.store.change_seq().await.unwrap();
    let audit_rows = fixture.keyring.audit(&AuditFilter::default()).await.unwrap().len();

    for _ in 0..3 {
        fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    }
    assert!(fixture.store.usage_counts(&issued.record.key_id).await.unwrap().is_empty());
    assert_eq!(fixture.store.change_seq().await.unwrap(), seq);
    assert_eq!(fixture.keyring.audit(&AuditFilter::default()).await.unwrap().len(), audit_rows);

    fixture.keyring.flush().await.unwrap();
    let counts = fixture.store.usage_counts(&issued.record.key_id).await.unwrap();
    assert_eq!(counts, vec![(Outcome::Active, 3)]);
    let view = fixture.keyring.get(&issued.record.key_id).await.unwrap();
    assert!(view.record.last_used_at.is_some());
}

#[tokio::test]
async fn cache_spares_store_reads_until_change() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("reads"), &cli()).await.unwrap();
    let unknown = fixture.keyring.config().format.generate(&KeyId::parse("UnknownKey01").unwrap(), &mut OsRng);
    fixture.keyring.sync_cache().await.unwrap();
    let reads = || fixture.store.key_reads.load(Ordering::SeqCst);

    let before = reads();
    for _ in 0..5 {
        fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
        fixture.keyring.verify(unknown.expose(), &scopes(&[]), None).await.unwrap();
    }
    assert_eq!(reads() - before, 2, "one read for the known key and one for the unknown id");

    fixture.keyring.revoke(&issued.record.key_id, None, &cli()).await.unwrap();
    let decision = fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Revoked);
}

#[tokio::test]
async fn cache_stats_count_hits_and_misses() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("stats"), &cli()).await.unwrap();
    let unknown = fixture.keyring.config().format.generate(&KeyId::parse("UnknownKey02").unwrap(), &mut OsRng);
    let stats = fixture.keyring.cache_stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
    assert!(!stats.fresh, "no sync has run yet");

    fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(fixture.keyring.cache_stats().misses, 1, "a stale cache sends every lookup to the store");

    fixture.keyring.sync_cache().await.unwrap();
    for token in [issued.token.expose(), issued.token.expose(), unknown.expose(), unknown.expose(), "kt_live_short"] {
        fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    }
    let stats = fixture.keyring.cache_stats();
    assert!(stats.fresh);
    assert_eq!(stats.misses, 3, "the first read of each key id after the sync, and the first read before it");
    assert_eq!(stats.hits, 2, "the second read of each key id; a malformed token counts as neither");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_flushed_without_waiting_for_interval() {
    let config = Config { flush_interval: StdDuration::from_secs(60), ..Config::default() };
    let fixture = Fixture::with_config(config).await;
    let issued = fixture.keyring.create(new_key("first use"), &cli()).await.unwrap();
    fixture.keyring.start_background();
    // Let the writer finish its first, empty flush and start waiting out its 60 s interval.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();

    let started = MonotonicInstant::now();
    while fixture.store.get_key(&issued.record.key_id).await.unwrap().unwrap().first_used_at.is_none() {
        assert!(started.elapsed() < StdDuration::from_secs(2), "first use not written within 2 s");
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    fixture.keyring.shutdown().await;
}

#[tokio::test]
async fn malformed_token_never_reaches_store() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("malformed"), &cli()).await.unwrap();
    let mut corrupt = issued.token.expose().to_owned();
    corrupt.pop();
    let before = fixture.store.key_reads.load(Ordering::SeqCst);
    for token in [corrupt.as_str(), "", "kt_live_", &"x".repeat(16 * 1024)] {
        let decision = fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
        assert_eq!(decision.outcome, Outcome::Invalid);
    }
    assert_eq!(fixture.store.key_reads.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn fresh_cache_answers_during_outage_then_503() {
    let config = Config {
        consistency: Consistency { max_staleness: StdDuration::from_millis(300), ..Consistency::default() },
        ..Config::default()
    };
    let fixture = Fixture::with_config(config).await;
    let issued = fixture.keyring.create(new_key("outage"), &cli()).await.unwrap();
    fixture.keyring.sync_cache().await.unwrap();
    fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();

    fixture.store.set_down(true);
    let decision = fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Active);
    assert!(fixture.keyring.sync_cache().await.is_err());

    tokio::time::sleep(StdDuration::from_millis(400)).await;
    let header = bearer(issued.token.expose());
    let (status, headers, body) = rejected(authenticate(&fixture, &[&header], &[], &[], &[]).await);
    assert_eq!(status, 503);
    assert!(headers.contains(&("Retry-After", "1".to_owned())));
    assert_eq!(code(&body), "store_unavailable");

    fixture.store.set_down(false);
    fixture.keyring.sync_cache().await.unwrap();
    assert!(authenticate(&fixture, &[&header], &[], &[], &[]).await.is_allowed());
}

#[tokio::test]
async fn uncached_key_during_outage_is_503_not_invalid() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("cold"), &cli()).await.unwrap();
    fixture.store.set_down(true);
    let error = fixture.keyring.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap_err();
    assert!(error.is_unavailable());
    let malformed = fixture.keyring.verify("not-a-token", &scopes(&[]), None).await.unwrap();
    assert_eq!(malformed.outcome, Outcome::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_keyring_within_a_second() {
    let fixture = Fixture::new().await;
    let (peer, _) = fixture.peer(&fixture.pepper, Config::default()).await;
    fixture.keyring.start_background();
    peer.start_background();
    tokio::time::sleep(StdDuration::from_millis(300)).await;

    for _ in 0..5 {
        let issued = fixture.keyring.create(new_key("propagation"), &cli()).await.unwrap();
        let token = issued.token.expose();
        let allowed = peer.verify(token, &scopes(&[]), None).await.unwrap();
        assert_eq!(allowed.outcome, Outcome::Active, "a key created elsewhere verifies at once");

        fixture.keyring.revoke(&issued.record.key_id, None, &cli()).await.unwrap();
        assert_eq!(fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap().outcome, Outcome::Revoked);
        let started = MonotonicInstant::now();
        while peer.verify(token, &scopes(&[]), None).await.unwrap().outcome != Outcome::Revoked {
            assert!(started.elapsed() < StdDuration::from_secs(1), "peer still accepts a revoked key after 1 s");
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }
    fixture.keyring.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test]
async fn strict_mode_reads_through_every_time() {
    let fixture = Fixture::new().await;
    let strict = Config { consistency: Consistency { strict: true, ..Consistency::default() }, ..Config::default() };
    let (peer, _) = fixture.peer(&fixture.pepper, strict).await;
    let issued = fixture.keyring.create(new_key("strict"), &cli()).await.unwrap();
    peer.sync_cache().await.unwrap();
    assert_eq!(peer.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap().outcome, Outcome::Active);
    fixture.keyring.revoke(&issued.record.key_id, None, &cli()).await.unwrap();
    assert_eq!(peer.verify(issued.token.expose(), &scopes(&[]), None).await.unwrap().outcome, Outcome::Revoked);
    let stats = peer.cache_stats();
    assert!(!stats.fresh, "strict mode never trusts the cache");
    assert_eq!((stats.hits, stats.misses), (0, 2));
}

#[tokio::test]
async fn usage_tracking_off_counts_nothing() {
    let fixture = Fixture::with_config(keyturn::Config { track_usage: false, ..keyturn::Config::default() }).await;
    let key = fixture.keyring.create(new_key("quiet"), &cli()).await.unwrap();
    for _ in 0..3 {
        fixture.keyring.verify(key.token.expose(), &Default::default(), Some("192.0.2.5")).await.unwrap();
    }
    fixture.keyring.flush().await.unwrap();
    assert!(fixture.store.usage_counts(&key.record.key_id).await.unwrap().is_empty());
    let record = fixture.keyring.get(&key.record.key_id).await.unwrap().record;
    assert_eq!(record.first_used_at, None);
}
