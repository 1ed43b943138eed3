//! Incident tools through the keyring: bulk revocation by owner, leak reports and pepper
//! retirement, against a real SQLite file.

mod common;

use common::{cli, new_key, pepper_entry, scopes, Fixture};
use keyturn::core::{AuditEventType, Outcome, PepperId, PepperRing, PolicyName};
use keyturn::store::{AuditFilter, BulkOutcome, KeySelection};
use keyturn::{
    parse_token_lines, Config, Error, Keyring, LeakStatus, NewKey, ReportedToken, RotationSelector, MAX_LEAK_TOKENS,
};

async fn audit_text(fixture: &Fixture) -> String {
    let events = fixture.keyring.audit(&AuditFilter::default()).await.unwrap();
    events.iter().map(|event| format!("{} {:?}\n", event.canonical, event.event)).collect()
}

#[tokio::test]
async fn revoke_owner_rejects_at_once() {
    let fixture = Fixture::new().await;
    let first = fixture.keyring.create(new_key("one"), &cli()).await.unwrap();
    let second = fixture.keyring.create(new_key("two"), &cli()).await.unwrap();
    let other = NewKey { owner: Some("search".into()), ..new_key("other") };
    let other = fixture.keyring.create(other, &cli()).await.unwrap();
    let none = scopes(&[]);
    // Warm the cache, so the revocation must evict it.
    assert!(fixture.keyring.verify(first.token.expose(), &none, None).await.unwrap().outcome.is_allowed());
    fixture.keyring.revoke(&second.record.key_id, Some("earlier"), &cli()).await.unwrap();

    let (dry, missing) = fixture.keyring.select_keys(&KeySelection::Owner(" billing ".into())).await.unwrap();
    assert_eq!(dry.len(), 2);
    assert!(missing.is_empty());
    assert!(fixture.keyring.get(&first.record.key_id).await.unwrap().record.revoked_at.is_none(), "dry run");

    let selection = KeySelection::Owner("billing".into());
    let report = fixture.keyring.revoke_selection(&selection, Some("incident 12"), &cli()).await.unwrap();

    let outcome_of = |key_id| report.keys.iter().find(|key| &key.record.key_id == key_id).map(|key| key.outcome);
    assert_eq!(report.keys.len(), 2);
    assert_eq!(outcome_of(&first.record.key_id), Some(BulkOutcome::Revoked));
    assert_eq!(outcome_of(&second.record.key_id), Some(BulkOutcome::AlreadyRevoked));
    let decision = fixture.keyring.verify(first.token.expose(), &none, None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Revoked);
    assert!(fixture.keyring.verify(other.token.expose(), &none, None).await.unwrap().outcome.is_allowed());
    let filter = AuditFilter {
        key_id: Some(first.record.key_id.clone()),
        event: Some(AuditEventType::AuthnTokenRevoked),
        ..AuditFilter::default()
    };
    let rows = fixture.keyring.audit(&filter).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.reason.as_deref(), Some("incident 12"));
    assert_eq!(rows[0].event.actor, cli().actor);
}

#[tokio::test]
async fn revoke_selection_rejects_bad_selection() {
    let fixture = Fixture::new().await;
    for selection in [KeySelection::Owner("  ".into()), KeySelection::KeyIds(Vec::new())] {
        let error = fixture.keyring.revoke_selection(&selection, None, &cli()).await.unwrap_err();
        assert!(matches!(error, Error::InvalidInput { .. }), "{error}");
    }
}

#[tokio::test]
async fn unknown_policy_selection_rejected() {
    let fixture = Fixture::new().await;
    fixture.keyring.create(new_key("one"), &cli()).await.unwrap();
    let before = audit_text(&fixture).await;
    let selection = KeySelection::Policy(PolicyName::parse("missing").unwrap());

    let dry = fixture.keyring.select_keys(&selection).await.unwrap_err();
    let revoke = fixture.keyring.revoke_selection(&selection, None, &cli()).await.unwrap_err();
    let selector = RotationSelector::Policy(PolicyName::parse("missing").unwrap());
    let deadline = fixture.keyring.now().saturating_add(keyturn::core::Duration::from_days(7));
    let request = fixture.keyring.request_rotation(&selector, deadline, None, false, &cli()).await.unwrap_err();

    for error in [dry, revoke, request] {
        assert!(matches!(&error, Error::UnknownPolicy(name) if name == "missing"), "{error}");
    }
    assert_eq!(audit_text(&fixture).await, before, "a rejected selection writes nothing");
    // The built-in default policy exists without a stored version.
    let (keys, _) = fixture.keyring.select_keys(&KeySelection::Policy(PolicyName::default_name())).await.unwrap();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn leak_report_revokes_matching_tokens() {
    let fixture = Fixture::new().await;
    let leaked = fixture.keyring.create(new_key("leaked"), &cli()).await.unwrap();
    let revoked = fixture.keyring.create(new_key("revoked"), &cli()).await.unwrap();
    let untouched = fixture.keyring.create(new_key("untouched"), &cli()).await.unwrap();
    fixture.keyring.revoke(&revoked.record.key_id, None, &cli()).await.unwrap();
    // A well-formed token with the key id of a live key and another secret.
    let untouched_token = untouched.token.expose().to_owned();
    let forged = Config::default().format.generate(&untouched.record.key_id, &mut rand_core::OsRng);
    let forged = forged.expose().to_owned();
    let text = format!("\n  {}  \n{}\nnot-a-token\n{forged}\n", leaked.token.expose(), revoked.token.expose());
    let tokens = parse_token_lines(&text).unwrap();
    assert_eq!(tokens.iter().map(|token| token.line).collect::<Vec<_>>(), vec![2, 3, 4, 5]);

    let results = fixture.keyring.report_leaks(&tokens, Some("github scan"), Some("ticket 9"), &cli()).await.unwrap();

    let statuses: Vec<(usize, LeakStatus)> = results.iter().map(|result| (result.line, result.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (2, LeakStatus::Revoked),
            (3, LeakStatus::AlreadyRevoked),
            (4, LeakStatus::NotFound),
            (5, LeakStatus::NotFound)
        ]
    );
    assert_eq!(results[0].key_id.as_ref(), Some(&leaked.record.key_id));
    assert_eq!(results[2].key_id, None);
    assert_eq!(results[3].key_id.as_ref(), Some(&untouched.record.key_id));
    let record = fixture.keyring.get(&leaked.record.key_id).await.unwrap().record;
    assert_eq!(record.revocation_reason.as_deref(), Some("leak reported: ticket 9"));
    assert!(fixture.keyring.get(&untouched.record.key_id).await.unwrap().record.revoked_at.is_none());

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenLeakReported), ..AuditFilter::default() };
    let rows = fixture.keyring.audit(&filter).await.unwrap();
    let keys: Vec<_> = rows.iter().map(|row| row.event.key_id.clone().unwrap()).collect();
    assert_eq!(keys, vec![leaked.record.key_id.clone(), revoked.record.key_id.clone()]);
    assert_eq!(rows[0].event.details["source"], "github scan");
    assert_eq!(rows[0].event.details["line"], 2);
    let audit = audit_text(&fixture).await;
    for token in [leaked.token.expose(), revoked.token.expose(), forged.as_str(), untouched_token.as_str()] {
        let secret = &token[token.len() - 20..];
        assert!(!audit.contains(secret), "an audit row contains a token");
    }
}

/// The same token on two lines revokes its key once, and only the first line reports it revoked.
#[tokio::test]
async fn leak_report_counts_repeated_token_once() {
    let fixture = Fixture::new().await;
    let leaked = fixture.keyring.create(new_key("leaked"), &cli()).await.unwrap();
    let text = format!("{}\n{}\r\n", leaked.token.expose(), leaked.token.expose());
    let tokens = parse_token_lines(&text).unwrap();

    let results = fixture.keyring.report_leaks(&tokens, Some("gist"), None, &cli()).await.unwrap();

    let statuses: Vec<LeakStatus> = results.iter().map(|result| result.status).collect();
    assert_eq!(statuses, vec![LeakStatus::Revoked, LeakStatus::AlreadyRevoked]);
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRevoked), ..AuditFilter::default() };
    assert_eq!(fixture.keyring.audit(&filter).await.unwrap().len(), 1);
}

#[tokio::test]
async fn leak_report_limits_input() {
    let too_long = "a".repeat(600);
    let error = parse_token_lines(&format!("ok\n{too_long}\n")).unwrap_err().to_string();
    assert!(error.contains("line 2") && !error.contains(&too_long), "{error}");

    let many = "token\n".repeat(MAX_LEAK_TOKENS + 1);
    let error = parse_token_lines(&many).unwrap_err().to_string();
    assert!(error.contains("at most 1000"), "{error}");

    let fixture = Fixture::new().await;
    let tokens: Vec<ReportedToken> = (0..=MAX_LEAK_TOKENS).map(|line| ReportedToken::new(line, "x")).collect();
    assert!(fixture.keyring.report_leaks(&tokens, None, None, &cli()).await.is_err());
    assert!(!format!("{:?}", ReportedToken::new(1, "kt_live_secret")).contains("secret"));
}

/// Opens a keyring on the fixture's file with the ring `entries`, the first current.
async fn with_ring(fixture: &Fixture, entries: &[&str]) -> std::sync::Arc<Keyring> {
    fixture.peer(&entries.join(","), Config::default()).await.0
}

#[tokio::test]
async fn pepper_retire_checks_use() {
    let fixture = Fixture::new().await;
    let old_key = fixture.keyring.create(new_key("old"), &cli()).await.unwrap();
    let new_entry = pepper_entry("2");
    let rotated = with_ring(&fixture, &[&new_entry, &fixture.pepper]).await;
    let new_key_issued = rotated.create(new_key("new"), &cli()).await.unwrap();

    let status = rotated.pepper_status().await.unwrap();
    assert_eq!(status.current.as_str(), "2");
    assert_eq!((status.live_keys, status.live_under_current), (2, 1));
    let listed: Vec<(&str, bool, u64)> =
        status.peppers.iter().map(|entry| (entry.pepper_id.as_str(), entry.current, entry.live_keys)).collect();
    assert_eq!(listed, vec![("2", true, 1), ("1", false, 1)]);

    let one = PepperId::parse("1").unwrap();
    let error = rotated.retire_pepper(&one, false, &cli()).await.unwrap_err();
    assert!(matches!(&error, Error::PepperInUse { count: 1, .. }), "{error}");
    assert!(error.to_string().contains(old_key.record.key_id.as_str()), "{error}");
    let current = rotated.retire_pepper(&PepperId::parse("2").unwrap(), true, &cli()).await.unwrap_err();
    assert!(matches!(current, Error::CurrentPepper(_)), "{current}");
    let unknown = rotated.retire_pepper(&PepperId::parse("9").unwrap(), true, &cli()).await.unwrap_err();
    assert!(matches!(unknown, Error::UnknownPepper { .. }), "{unknown}");
    assert!(rotated.get(&old_key.record.key_id).await.unwrap().record.revoked_at.is_none());

    let retirement = rotated.retire_pepper(&one, true, &cli()).await.unwrap();

    assert_eq!(retirement.revoked, vec![old_key.record.key_id.clone()]);
    let old = rotated.get(&old_key.record.key_id).await.unwrap().record;
    assert_eq!(old.revocation_reason.as_deref(), Some("pepper retired"));
    assert!(rotated.get(&new_key_issued.record.key_id).await.unwrap().record.revoked_at.is_none());
    let filter = AuditFilter { event: Some(AuditEventType::AuthnPepperRetired), ..AuditFilter::default() };
    let rows = rotated.audit(&filter).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["pepper_id"], "1");
    assert_eq!(rows[0].event.details["revoked_keys"], 1);
    let audit = audit_text(&fixture).await;
    for entry in [&new_entry, &fixture.pepper] {
        assert!(!audit.contains(entry.split_once(':').unwrap().1), "an audit row contains a pepper");
    }
    assert!(PepperRing::parse_list(&new_entry).is_ok());

    // A process whose ring lacks pepper 1 still lists the keys stored under it.
    let without_old = with_ring(&fixture, &[&new_entry]).await;
    let status = without_old.pepper_status().await.unwrap();
    let listed: Vec<(&str, bool, u64)> =
        status.peppers.iter().map(|entry| (entry.pepper_id.as_str(), entry.in_ring, entry.live_keys)).collect();
    assert_eq!(listed, vec![("2", true, 1), ("1", false, 0)]);
}
