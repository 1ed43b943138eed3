//! Shared fixtures for the HTTP tests: a real server on 127.0.0.1 with ephemeral ports, over a
//! keyring on a real SQLite file in a temporary directory, driven by a manual clock. The store
//! can be switched off to simulate an outage, and the server is stopped by each test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use keyturn::core::{
    AuditEvent, Instant, KeyId, KeyRecord, ManualClock, NewAuditEvent, Outcome, PepperId, PepperRing, Scopes,
};
use keyturn::store::{
    AuditFilter, Change, CopiedKey, DatabaseUrl, KeyFilter, OverlapFilter, OverlappingKey, Rehash, Revocation,
    Rotation, RowCounts, SqliteOptions, SqliteStore, Store, StoreError, UsageRecord,
};
use keyturn::{Caller, Config, Issued, Keyring, NewKey};
use keyturn_http::{Limits, Listeners};
use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const T0: i64 = 1_800_000_000_000;
pub const DAY: i64 = 86_400_000;

pub struct Server {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub keyring: Arc<Keyring>,
    pub store: Arc<SwitchableStore>,
    pub api: SocketAddr,
    pub gateway: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keyturn_http::Error>>>,
}

pub fn scopes(values: &[&str]) -> Scopes {
    Scopes::parse(values.iter().copied()).unwrap()
}

impl Server {
    pub async fn start() -> Server {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Server {
        Self::with_config(Config::default(), limits).await
    }

    pub async fn with_config(config: Config, limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::parse(dir.path().join("keyturn.db").to_str().unwrap()).unwrap();
        let options = SqliteOptions { create_if_missing: true, ..SqliteOptions::default() };
        let inner = SqliteStore::open(&url, &options).await.unwrap();
        let store = Arc::new(SwitchableStore { inner, down: AtomicBool::new(false) });
        let pepper = PepperRing::generate_entry(&PepperId::parse("1").unwrap(), &mut OsRng);
        let clock = ManualClock::new(Instant::from_millis(T0));
        let keyring =
            Keyring::new(store.clone(), PepperRing::parse_list(&pepper).unwrap(), Arc::new(clock.clone()), config);

        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = api_listener.local_addr().unwrap();
        let gateway = gateway_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners { api: api_listener, gateway: Some(gateway_listener) };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(keyturn_http::serve(keyring.clone(), listeners, limits, shutdown));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Server { dir, clock, keyring, store, api, gateway, client, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    pub fn at(&self, millis: i64) {
        self.clock.set(Instant::from_millis(millis));
    }

    /// Creates a key with the CLI's rights, as `keyturn keys create` would.
    pub async fn key(&self, name: &str, scope_list: &[&str]) -> Issued {
        let new =
            NewKey { name: name.into(), owner: Some("team-a".into()), scopes: scopes(scope_list), ..NewKey::default() };
        self.keyring.create(new, &Caller::cli()).await.unwrap()
    }

    /// Creates a key that never expires, so it stays usable while a test moves the clock.
    pub async fn lasting_key(&self, name: &str, scope_list: &[&str]) -> Issued {
        let new = NewKey {
            name: name.into(),
            scopes: scopes(scope_list),
            expiry: Some(keyturn::core::Expiry::Never),
            ..NewKey::default()
        };
        self.keyring.create(new, &Caller::cli()).await.unwrap()
    }

    /// Stops the server and waits until it has shut the keyring down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The real SQLite store, with a switch that makes every call fail as an unreachable store does.
pub struct SwitchableStore {
    pub inner: SqliteStore,
    down: AtomicBool,
}

impl SwitchableStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Reads the stored usage counts of a key, bypassing the switch.
    pub async fn inner_usage(&self, key_id: &KeyId) -> Vec<(Outcome, u64)> {
        self.inner.usage_counts(key_id).await.unwrap()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused (simulated outage)".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for SwitchableStore {
    async fn insert_key(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_key(key, event).await
    }
    async fn insert_key_if_empty(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.insert_key_if_empty(key, event).await
    }
    async fn get_key(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.check()?;
        self.inner.get_key(key_id).await
    }
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.check()?;
        self.inner.list_keys(filter).await
    }
    async fn list_overlapping(&self, filter: &OverlapFilter) -> Result<Vec<OverlappingKey>, StoreError> {
        self.check()?;
        self.inner.list_overlapping(filter).await
    }
    async fn rotate_key(&self, rotation: &Rotation) -> Result<(), StoreError> {
        self.check()?;
        self.inner.rotate_key(rotation).await
    }
    async fn revoke_key(&self, revocation: &Revocation) -> Result<KeyRecord, StoreError> {
        self.check()?;
        self.inner.revoke_key(revocation).await
    }
    async fn rehash_key(&self, rehash: &Rehash) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.rehash_key(rehash).await
    }
    async fn record_usage(&self, usage: &[UsageRecord]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_usage(usage).await
    }
    async fn append_audit(&self, event: &NewAuditEvent) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.append_audit(event).await
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.check()?;
        self.inner.list_audit(filter).await
    }
    async fn usage_counts(&self, key_id: &KeyId) -> Result<Vec<(Outcome, u64)>, StoreError> {
        self.check()?;
        self.inner.usage_counts(key_id).await
    }
    async fn append_audit_once(&self, event: &NewAuditEvent, same_details: bool) -> Result<Option<i64>, StoreError> {
        self.check()?;
        self.inner.append_audit_once(event, same_details).await
    }
    async fn last_client_addr(&self, key_id: &KeyId) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.last_client_addr(key_id).await
    }
    async fn uses_since_rotation(&self, key_id: &KeyId) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.uses_since_rotation(key_id).await
    }
    async fn row_counts(&self) -> Result<RowCounts, StoreError> {
        self.check()?;
        self.inner.row_counts().await
    }
    async fn import(&self, keys: &[CopiedKey], events: &[AuditEvent]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.import(keys, events).await
    }
    async fn change_seq(&self) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.change_seq().await
    }
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        self.check()?;
        self.inner.changes_since(after, limit).await
    }
    async fn select_keys(
        &self,
        selection: &keyturn::store::KeySelection,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, Vec<KeyId>), StoreError> {
        self.check()?;
        self.inner.select_keys(selection, limit).await
    }
    async fn revoke_selection(
        &self,
        revocation: &keyturn::store::BulkRevocation,
    ) -> Result<keyturn::store::BulkReport, StoreError> {
        self.check()?;
        self.inner.revoke_selection(revocation).await
    }
    async fn pepper_usage(&self, at: keyturn::core::Instant) -> Result<Vec<keyturn::store::PepperUsage>, StoreError> {
        self.check()?;
        self.inner.pepper_usage(at).await
    }
    async fn live_keys_under_pepper(
        &self,
        pepper_id: &keyturn::core::PepperId,
        at: keyturn::core::Instant,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError> {
        self.check()?;
        self.inner.live_keys_under_pepper(pepper_id, at, limit).await
    }
    async fn list_policies(&self) -> Result<Vec<keyturn::core::NamedPolicy>, StoreError> {
        self.check()?;
        self.inner.list_policies().await
    }
    async fn get_policy(
        &self,
        name: &keyturn::core::PolicyName,
    ) -> Result<Option<keyturn::core::NamedPolicy>, StoreError> {
        self.check()?;
        self.inner.get_policy(name).await
    }
    async fn count_policy_keys(
        &self,
        name: &keyturn::core::PolicyName,
        at: Instant,
    ) -> Result<keyturn::store::PolicyKeyCounts, StoreError> {
        self.check()?;
        self.inner.count_policy_keys(name, at).await
    }
    async fn apply_policy_update(&self, update: &keyturn::store::PolicyUpdate) -> Result<Vec<u64>, StoreError> {
        self.check()?;
        self.inner.apply_policy_update(update).await
    }
    async fn import_policies(&self, policies: &[keyturn::core::NamedPolicy], at: Instant) -> Result<(), StoreError> {
        self.check()?;
        self.inner.import_policies(policies, at).await
    }
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &keyturn_store::NewWebhookEndpoint,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_webhook_endpoint(endpoint, event).await
    }
    async fn list_webhook_endpoints(&self) -> Result<Vec<keyturn_store::WebhookEndpoint>, StoreError> {
        self.check()?;
        self.inner.list_webhook_endpoints().await
    }
    async fn get_webhook_endpoint(
        &self,
        endpoint_id: &str,
    ) -> Result<Option<keyturn_store::WebhookEndpoint>, StoreError> {
        self.check()?;
        self.inner.get_webhook_endpoint(endpoint_id).await
    }
    async fn remove_webhook_endpoint(&self, endpoint_id: &str, event: &NewAuditEvent) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.remove_webhook_endpoint(endpoint_id, event).await
    }
    async fn add_webhook_secret(
        &self,
        endpoint_id: &str,
        sealed: &[u8],
        old_expires_at: keyturn_core::Instant,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.add_webhook_secret(endpoint_id, sealed, old_expires_at, event).await
    }
    async fn disable_webhook_endpoint(
        &self,
        endpoint_id: &str,
        reason: &str,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.disable_webhook_endpoint(endpoint_id, reason, event).await
    }
    async fn claim_webhook_deliveries(
        &self,
        claim: &keyturn_store::DeliveryClaim,
    ) -> Result<Vec<keyturn_store::ClaimedDelivery>, StoreError> {
        self.check()?;
        self.inner.claim_webhook_deliveries(claim).await
    }
    async fn finish_webhook_delivery(&self, report: &keyturn_store::AttemptReport) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.finish_webhook_delivery(report).await
    }
    async fn list_webhook_deliveries(
        &self,
        filter: &keyturn_store::DeliveryFilter,
    ) -> Result<Vec<keyturn_store::WebhookDelivery>, StoreError> {
        self.check()?;
        self.inner.list_webhook_deliveries(filter).await
    }
    async fn retry_webhook_deliveries(
        &self,
        endpoint_id: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.retry_webhook_deliveries(endpoint_id, event).await
    }
    async fn list_outbox(&self, after_seq: i64, limit: u32) -> Result<Vec<keyturn_store::OutboxMessage>, StoreError> {
        self.check()?;
        self.inner.list_outbox(after_seq, limit).await
    }
    async fn request_rotation(
        &self,
        requests: &[keyturn::store::RotationRequest],
    ) -> Result<Vec<keyturn::store::RotationRequestResult>, StoreError> {
        self.check()?;
        self.inner.request_rotation(requests).await
    }
    async fn list_due(&self, filter: &keyturn::store::DueFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.check()?;
        self.inner.list_due(filter).await
    }
    async fn scheduler_high_water(&self) -> Result<Option<keyturn::core::Instant>, StoreError> {
        self.check()?;
        self.inner.scheduler_high_water().await
    }
    async fn advance_scheduler_high_water(&self, to: keyturn::core::Instant) -> Result<(), StoreError> {
        self.check()?;
        self.inner.advance_scheduler_high_water(to).await
    }

    async fn list_cadence_due(&self, filter: &keyturn::store::CadenceFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.check()?;
        self.inner.list_cadence_due(filter).await
    }

    async fn request_first_rotation(&self, request: &keyturn::store::RotationRequest) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.request_first_rotation(request).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
