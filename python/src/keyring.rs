//! The `Keyring` class and `init` function of `keyturn._native`.
//!
//! Construction validates the settings and loads the pepper, without threads or connections.
//! The tokio runtime, the database pool and the background tasks are created on first use in
//! each process and recreated after a fork, because a runtime inherited through `fork` has no
//! threads and would hang every gunicorn worker. The GIL is released while keyturn waits for the
//! store. A verification that the cache decides runs with the GIL held, because it never awaits.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use keyturn::core::{
    Clock, CredentialConfig, Expiry, KeyId, Outcome, PolicyName, ResponseConfig, Scopes, SystemClock, TokenFormat,
    TrustedProxies,
};
use keyturn::settings::{self, PepperSource};
use keyturn::store::{AuditFilter, KeySelection};
use keyturn::{
    AuthRequest, Authentication, Caller, Config, Consistency, GuardConfig, ListFilter, NewKey, OpenOptions,
    RotateOptions, RotationSelector, SelfRotationOptions,
};
use pyo3::prelude::*;

use crate::convert::{json_to_py, py_to_json_object, to_duration, to_instant, to_std_duration};
use crate::errors::{configuration, invalid, to_py};
use crate::fork;
use crate::report::MigrationEntry;
use crate::values::{AuditEvent, AuthResult, IssuedKey, KeyInfo, ManualClock};

/// The keyturn service over one database and one pepper ring.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct Keyring {
    options: OpenOptions,
    clock: Arc<dyn Clock>,
    state: Mutex<Option<ProcessState>>,
    /// The fork generation, instant and message of the last attempt to open an unreachable store.
    failed_open: Mutex<Option<(u64, std::time::Instant, String)>>,
}

/// How long after a failed attempt to reach the store the next one waits, so a web worker responds
/// 503 at once while the store is down instead of waiting out a connect timeout per request.
const OPEN_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The maximum time one attempt to open the store may take in a web worker.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Native state of one process.
struct ProcessState {
    /// The fork generation of the process that created this state.
    generation: u64,
    runtime: Arc<tokio::runtime::Runtime>,
    keyring: Arc<keyturn::Keyring>,
}

impl Drop for ProcessState {
    fn drop(&mut self) {
        // A runtime inherited through fork has no worker threads; dropping it would wait for
        // them, so the child leaks it instead.
        if self.generation != fork::generation() {
            std::mem::forget(Arc::clone(&self.runtime));
            std::mem::forget(Arc::clone(&self.keyring));
        }
    }
}

#[pymethods]
impl Keyring {
    #[new]
    #[pyo3(signature = (
        *, database_url = None, pepper = None, pepper_file = None, token_prefix = "kt_live", realm = "api",
        api_key_header = "X-API-Key", query_parameters = None, strict = false, max_staleness = None,
        poll_interval = None, flush_interval = None, create_if_missing = false, clock = None,
        trusted_proxies = None, guard = true, guard_max_failures = GuardConfig::DEFAULT_MAX_FAILURES as i64,
        guard_window = None, guard_cooldown = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        database_url: Option<&str>,
        pepper: Option<String>,
        pepper_file: Option<String>,
        token_prefix: &str,
        realm: &str,
        api_key_header: &str,
        query_parameters: Option<Vec<String>>,
        strict: bool,
        max_staleness: Option<&Bound<'_, PyAny>>,
        poll_interval: Option<&Bound<'_, PyAny>>,
        flush_interval: Option<&Bound<'_, PyAny>>,
        create_if_missing: bool,
        clock: Option<&Bound<'_, ManualClock>>,
        trusted_proxies: Option<Vec<String>>,
        guard: bool,
        guard_max_failures: i64,
        guard_window: Option<&Bound<'_, PyAny>>,
        guard_cooldown: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let database = settings::resolve_database_url(database_url).map_err(|e| configuration(e.to_string()))?;
        // Explicit arguments replace both variables, so a test that passes its own pepper is not
        // confused by a KEYTURN_PEPPER_FILE exported in the developer's shell.
        let (pepper, pepper_file) = if pepper.is_some() || pepper_file.is_some() {
            (pepper, pepper_file.map(Into::into))
        } else {
            settings::pepper_from_env().map_err(|e| configuration(e.to_string()))?
        };
        let pepper = PepperSource::resolve(pepper, pepper_file, &database).map_err(|e| configuration(e.to_string()))?;
        pepper.load().map_err(|e| configuration(e.to_string()))?;

        let defaults = Consistency::default();
        let mut config = Config {
            format: TokenFormat::new(token_prefix).map_err(|e| configuration(e.to_string()))?,
            responses: ResponseConfig::new(realm, api_key_header).map_err(|e| configuration(e.to_string()))?,
            consistency: Consistency {
                max_staleness: optional_duration(max_staleness, "max_staleness", defaults.max_staleness)?,
                poll_interval: optional_duration(poll_interval, "poll_interval", defaults.poll_interval)?,
                strict,
            },
            ..Config::default()
        };
        config.flush_interval = optional_duration(flush_interval, "flush_interval", config.flush_interval)?;
        config.trusted_proxies = TrustedProxies::parse(trusted_proxies.unwrap_or_default())
            .map_err(|e| configuration(format!("trusted_proxies: {e}")))?;
        let guard_config = guard_config(guard_max_failures, guard_window, guard_cooldown)?;
        config.guard = guard.then_some(guard_config);
        if let Some(names) = query_parameters {
            config.credentials =
                CredentialConfig::new(names.iter().map(String::as_str)).map_err(|e| configuration(e.to_string()))?;
        }

        let clock: Arc<dyn Clock> = match clock {
            Some(clock) => Arc::new(clock.get().inner.clone()),
            None => Arc::new(SystemClock),
        };
        let options = OpenOptions { database, pepper, create_if_missing, config };
        if options.database.is_postgres() {
            // Invalid connection settings are a configuration error now, not a 503 per request.
            settings::postgres_options_from_env().map_err(|e| configuration(e.to_string()))?;
        }
        settings::audit_key_from_env(&options.database).map_err(|e| configuration(e.to_string()))?;
        Ok(Keyring { options, clock, state: Mutex::new(None), failed_open: Mutex::new(None) })
    }

    #[getter]
    fn database_path(&self) -> Option<String> {
        self.options
            .database
            .sqlite_path()
            .map(|path| std::path::absolute(path).unwrap_or(path.to_path_buf()).display().to_string())
    }

    #[getter]
    fn pepper_source(&self) -> String {
        self.options.pepper.describe()
    }

    #[pyo3(signature = (authorization, api_key, query, scopes = Vec::new(), client_addr = None))]
    fn authenticate(
        &self,
        py: Python<'_>,
        authorization: Vec<String>,
        api_key: Vec<String>,
        query: Vec<(String, String)>,
        scopes: Vec<String>,
        client_addr: Option<String>,
    ) -> PyResult<AuthResult> {
        let required = parse_scopes(&scopes)?;
        let authorization: Vec<&str> = authorization.iter().map(String::as_str).collect();
        let api_key: Vec<&str> = api_key.iter().map(String::as_str).collect();
        let query: Vec<(&str, &str)> = query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let request = AuthRequest {
            authorization: &authorization,
            api_key: &api_key,
            query: &query,
            client_addr: client_addr.as_deref(),
        };
        self.authenticate_request(py, &request, &required)
    }

    /// Authenticates a request from a WSGI server, which joins repeated headers into one value:
    /// the same as `authenticate` with the client address that `client_addr` returns, in one
    /// call.
    #[pyo3(signature = (authorization, api_key, query, scopes, remote_addr, forwarded_for))]
    #[allow(clippy::too_many_arguments)]
    fn authenticate_wsgi(
        &self,
        py: Python<'_>,
        authorization: Option<&str>,
        api_key: Option<&str>,
        query: Vec<(String, String)>,
        scopes: Vec<String>,
        remote_addr: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> PyResult<AuthResult> {
        let required = parse_scopes(&scopes)?;
        let query: Vec<(&str, &str)> = query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let headers = WsgiHeaders { authorization, api_key, remote_addr, forwarded_for };
        self.authenticate_headers(py, &headers, &query, &required)
    }

    /// Returns the client address of a request from `remote_addr`: the address itself, or the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy when `remote_addr` is one.
    #[pyo3(signature = (remote_addr, forwarded_for = Vec::new()))]
    fn client_addr(&self, remote_addr: Option<&str>, forwarded_for: Vec<String>) -> Option<String> {
        let remote_addr = remote_addr?;
        let forwarded_for: Vec<&str> = forwarded_for.iter().map(String::as_str).collect();
        Some(self.options.config.trusted_proxies.client_addr(remote_addr, &forwarded_for))
    }

    /// Returns the 400 result for a query string that carries a token (and queues the audit
    /// event for the exposed key), or None. Call it for every request, public routes included.
    #[pyo3(signature = (query, client_addr = None))]
    fn check_query(
        &self,
        py: Python<'_>,
        query: Vec<(String, String)>,
        client_addr: Option<String>,
    ) -> PyResult<Option<AuthResult>> {
        let query: Vec<(&str, &str)> = query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let cheap = self.options.config.credentials.find_token_in_query(&self.options.config.format, &query);
        if cheap.is_none() {
            return Ok(None);
        }
        let response = match self.process(py) {
            Ok((_, keyring)) => keyring.check_query(&query, client_addr.as_deref()),
            // The exposure cannot be queued without the store; the request is still rejected.
            Err(_) => cheap.map(|(parameter, _)| {
                let error = keyturn::core::RequestError::TokenInQuery { parameter: parameter.to_owned() };
                self.options.config.responses.invalid_request(&error.to_string())
            }),
        };
        Ok(response.map(|response| AuthResult::rejected(response, None)))
    }

    #[pyo3(signature = (token, scopes = Vec::new()))]
    fn verify(&self, py: Python<'_>, token: &str, scopes: Vec<String>) -> PyResult<AuthResult> {
        let required = parse_scopes(&scopes)?;
        let (runtime, keyring) = self.process(py)?;
        let decision = match keyring.verify_cached(token, &required, None) {
            Some(decision) => decision,
            None => py.detach(|| runtime.block_on(keyring.verify(token, &required, None))).map_err(to_py)?,
        };
        match keyring.config().responses.rejection(&decision) {
            None => {
                let headers = decision.lifecycle_headers();
                Ok(AuthResult::allowed(decision, headers))
            }
            Some(response) => Ok(AuthResult::rejected(response, Some(decision))),
        }
    }

    #[pyo3(signature = (
        name, *, owner = None, scopes = Vec::new(), expires_in = None, expires_at = None, no_expiry = false,
        grace = None, warn_before = None, metadata = None, self_rotation = None, max_chain_lifetime = None,
        policy = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        py: Python<'_>,
        name: String,
        owner: Option<String>,
        scopes: Vec<String>,
        expires_in: Option<&Bound<'_, PyAny>>,
        expires_at: Option<&Bound<'_, PyAny>>,
        no_expiry: bool,
        grace: Option<&Bound<'_, PyAny>>,
        warn_before: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        self_rotation: Option<bool>,
        max_chain_lifetime: Option<&Bound<'_, PyAny>>,
        policy: Option<&str>,
    ) -> PyResult<IssuedKey> {
        let expiry = match (expires_in, expires_at, no_expiry) {
            (None, None, false) => None,
            (Some(lifetime), None, false) => Some(Expiry::After(to_duration(lifetime, "expires_in")?)),
            (None, Some(instant), false) => Some(Expiry::At(to_instant(instant, "expires_at")?)),
            (None, None, true) => Some(Expiry::Never),
            _ => return Err(invalid("set at most one of expires_in, expires_at and no_expiry")),
        };
        let new = NewKey {
            name,
            owner,
            scopes: parse_scopes(&scopes)?,
            metadata: metadata.map(|value| py_to_json_object(value, "metadata")).transpose()?.unwrap_or_default(),
            expiry,
            grace: grace.map(|value| to_duration(value, "grace")).transpose()?,
            warn_before: warn_before.map(|value| to_duration(value, "warn_before")).transpose()?,
            policy: policy
                .map(|name| PolicyName::parse(name).map_err(|error| invalid(error.to_string())))
                .transpose()?,
        };
        let policy = SelfRotationOptions {
            allowed: self_rotation,
            max_chain_lifetime: max_chain_lifetime.map(|value| to_duration(value, "max_chain_lifetime")).transpose()?,
        };
        let (runtime, keyring) = self.process(py)?;
        let issued = py.detach(|| runtime.block_on(keyring.create_with(new, policy, &Caller::cli()))).map_err(to_py)?;
        IssuedKey::new(py, issued, keyring.now())
    }

    #[pyo3(signature = (key_id, *, overlap = None, replace_unused_successor = false, overlap_after_first_use = None))]
    fn rotate(
        &self,
        py: Python<'_>,
        key_id: &str,
        overlap: Option<&Bound<'_, PyAny>>,
        replace_unused_successor: bool,
        overlap_after_first_use: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<IssuedKey> {
        let key_id = parse_key_id(key_id)?;
        let options = RotateOptions {
            overlap: overlap.map(|value| to_duration(value, "overlap")).transpose()?,
            expiry: None,
            replace_unused_successor,
            overlap_after_first_use: overlap_after_first_use
                .map(|value| to_duration(value, "overlap_after_first_use"))
                .transpose()?,
        };
        let (runtime, keyring) = self.process(py)?;
        let issued =
            py.detach(|| runtime.block_on(keyring.rotate(&key_id, &options, &Caller::cli()))).map_err(to_py)?;
        IssuedKey::new(py, issued, keyring.now())
    }

    #[pyo3(signature = (key_id, *, reason = None))]
    fn revoke(&self, py: Python<'_>, key_id: &str, reason: Option<String>) -> PyResult<KeyInfo> {
        let key_id = parse_key_id(key_id)?;
        let (runtime, keyring) = self.process(py)?;
        let record = py
            .detach(|| runtime.block_on(keyring.revoke(&key_id, reason.as_deref(), &Caller::cli())))
            .map_err(to_py)?;
        let state = record.state_at(keyring.now());
        Ok(KeyInfo::new(Arc::new(record), state))
    }

    /// Revokes every key of `owner` in one transaction, or lists them with `dry_run`, and returns
    /// the report as a dict: the same form as `keyturn keys revoke --owner --json`.
    #[pyo3(signature = (owner, *, reason = None, dry_run = false))]
    fn revoke_owner<'py>(
        &self,
        py: Python<'py>,
        owner: String,
        reason: Option<String>,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.revoke_selected(py, KeySelection::Owner(owner), reason, dry_run)
    }

    /// Revokes every key that references the named policy `policy` in one transaction, or lists
    /// them with `dry_run`, and returns the report as a dict: the same form as `keyturn keys
    /// revoke --policy --json`. An unknown policy raises `ValueError`.
    #[pyo3(signature = (policy, *, reason = None, dry_run = false))]
    fn revoke_policy<'py>(
        &self,
        py: Python<'py>,
        policy: &str,
        reason: Option<String>,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let policy = PolicyName::parse(policy).map_err(|error| invalid(error.to_string()))?;
        self.revoke_selected(py, KeySelection::Policy(policy), reason, dry_run)
    }

    fn get(&self, py: Python<'_>, key_id: &str) -> PyResult<KeyInfo> {
        let key_id = parse_key_id(key_id)?;
        let (runtime, keyring) = self.process(py)?;
        let view = py.detach(|| runtime.block_on(keyring.get(&key_id))).map_err(to_py)?;
        Ok(KeyInfo::new(Arc::new(view.record), view.state))
    }

    #[pyo3(signature = (*, owner = None, state = None))]
    fn list(&self, py: Python<'_>, owner: Option<String>, state: Option<&str>) -> PyResult<Vec<KeyInfo>> {
        let state = state.map(parse_outcome).transpose()?;
        let filter = ListFilter { owner, state, ..ListFilter::default() };
        let (runtime, keyring) = self.process(py)?;
        let views = py.detach(|| runtime.block_on(keyring.list(&filter))).map_err(to_py)?;
        Ok(views.into_iter().map(|view| KeyInfo::new(Arc::new(view.record), view.state)).collect())
    }

    #[pyo3(signature = (*, key_id = None, event = None))]
    fn audit(&self, py: Python<'_>, key_id: Option<&str>, event: Option<&str>) -> PyResult<Vec<AuditEvent>> {
        let filter = AuditFilter {
            key_id: key_id.map(parse_key_id).transpose()?,
            event: event
                .map(|name| {
                    keyturn::core::AuditEventType::parse(name)
                        .ok_or_else(|| invalid(format!("unknown audit event type {name:?}")))
                })
                .transpose()?,
            ..AuditFilter::default()
        };
        let (runtime, keyring) = self.process(py)?;
        let rows = py.detach(|| runtime.block_on(keyring.audit(&filter))).map_err(to_py)?;
        Ok(rows.into_iter().map(AuditEvent::new).collect())
    }

    #[pyo3(signature = (*, owner = None))]
    fn migration_report(&self, py: Python<'_>, owner: Option<String>) -> PyResult<Vec<MigrationEntry>> {
        let (runtime, keyring) = self.process(py)?;
        let entries = py.detach(|| runtime.block_on(keyring.migration_report(owner.as_deref()))).map_err(to_py)?;
        Ok(entries.into_iter().map(MigrationEntry::new).collect())
    }

    /// Asks keys, by owner, by policy or by key id, to be rotated by a deadline and returns one dict per key.
    #[pyo3(signature = (*, by, owner = None, policy = None, key_ids = None, reason = None, dry_run = false))]
    #[allow(clippy::too_many_arguments)]
    fn request_rotation<'py>(
        &self,
        py: Python<'py>,
        by: &Bound<'py, PyAny>,
        owner: Option<String>,
        policy: Option<String>,
        key_ids: Option<Vec<String>>,
        reason: Option<String>,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let selector = match (owner, policy, key_ids) {
            (Some(owner), None, None) => RotationSelector::Owner(owner),
            (None, Some(policy), None) => {
                RotationSelector::Policy(PolicyName::parse(&policy).map_err(|error| invalid(error.to_string()))?)
            }
            (None, None, Some(key_ids)) => {
                RotationSelector::Keys(key_ids.iter().map(|key_id| parse_key_id(key_id)).collect::<PyResult<_>>()?)
            }
            _ => return Err(invalid("give exactly one of owner, policy and key_ids")),
        };
        let (runtime, keyring) = self.process(py)?;
        let deadline = crate::convert::to_deadline(by, keyring.now())?;
        let caller = Caller::cli();
        let entries = py
            .detach(|| {
                runtime.block_on(keyring.request_rotation(&selector, deadline, reason.as_deref(), dry_run, &caller))
            })
            .map_err(to_py)?;
        let rows = entries.iter().map(keyturn::json::request_entry_json).collect();
        crate::convert::json_to_py(py, &serde_json::Value::Array(rows))
    }

    /// Records the lifecycle events due since the scheduler's last run and returns what it did.
    fn run_scheduler<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (runtime, keyring) = self.process(py)?;
        let run = py.detach(|| runtime.block_on(keyring.run_scheduler())).map_err(to_py)?;
        crate::convert::json_to_py(py, &keyturn::json::schedule_run_json(&run))
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let (runtime, keyring) = self.process(py)?;
        py.detach(|| runtime.block_on(keyring.flush())).map_err(to_py)
    }

    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let (runtime, keyring) = self.process(py)?;
        py.detach(|| runtime.block_on(keyring.sync_cache())).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            let Some(state) = state else { return };
            if state.generation == fork::generation() {
                state.runtime.block_on(state.keyring.shutdown());
            }
        });
    }

    fn __repr__(&self) -> String {
        format!("Keyring(database={}, pepper={})", self.options.database, self.options.pepper.describe())
    }
}

impl Keyring {
    /// Authenticates a request from the values of its WSGI environ, with the client address
    /// that `client_addr` returns.
    pub(crate) fn authenticate_headers(
        &self,
        py: Python<'_>,
        headers: &WsgiHeaders<'_>,
        query: &[(&str, &str)],
        required: &Scopes,
    ) -> PyResult<AuthResult> {
        let trusted_proxies = &self.options.config.trusted_proxies;
        let client_addr = headers.remote_addr.map(|remote_addr| {
            // Without trusted proxies the client address is the peer address as given, so this
            // common case copies nothing.
            if trusted_proxies.is_empty() {
                return Cow::Borrowed(remote_addr);
            }
            let forwarded_for: &[&str] = match &headers.forwarded_for {
                Some(value) => std::slice::from_ref(value),
                None => &[],
            };
            Cow::Owned(trusted_proxies.client_addr(remote_addr, forwarded_for))
        });
        let request = AuthRequest {
            authorization: headers.authorization.as_slice(),
            api_key: headers.api_key.as_slice(),
            query,
            client_addr: client_addr.as_deref(),
        };
        self.authenticate_request(py, &request, required)
    }

    /// Revokes a selection of keys, or lists them with `dry_run`, and returns the report.
    fn revoke_selected<'py>(
        &self,
        py: Python<'py>,
        selection: KeySelection,
        reason: Option<String>,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (runtime, keyring) = self.process(py)?;
        let now = keyring.now();
        let value = py
            .detach(|| {
                runtime.block_on(async {
                    if dry_run {
                        let (views, missing) = keyring.select_keys(&selection).await?;
                        let keys: Vec<_> = views.into_iter().map(|view| (view.record, None)).collect();
                        Ok(keyturn::json::bulk_revocation_json(&keys, &missing, true, now))
                    } else {
                        let report = keyring.revoke_selection(&selection, reason.as_deref(), &Caller::cli()).await?;
                        let keys: Vec<_> = report.keys.into_iter().map(|key| (key.record, Some(key.outcome))).collect();
                        Ok::<_, keyturn::Error>(keyturn::json::bulk_revocation_json(&keys, &report.missing, false, now))
                    }
                })
            })
            .map_err(to_py)?;
        json_to_py(py, &value)
    }

    fn authenticate_request(
        &self,
        py: Python<'_>,
        request: &AuthRequest<'_>,
        required: &Scopes,
    ) -> PyResult<AuthResult> {
        let (runtime, keyring) = match self.process(py) {
            Ok(process) => process,
            Err(error) => {
                // A request must get 503, never a 500, when the store cannot be opened; the cause
                // is logged and the next request tries to open it again.
                tracing::error!(target: "keyturn::store", error = %error, "cannot open the key store");
                let response = self.options.config.responses.store_unavailable();
                return Ok(AuthResult::rejected(response, None));
            }
        };
        // A cache hit finishes here, holding the GIL: it takes well under a microsecond, less
        // than releasing the GIL and entering the runtime would. Only a store read leaves it.
        let result = match keyring.authenticate_cached(request, required) {
            Some(result) => result,
            None => py.detach(|| runtime.block_on(keyring.authenticate(request, required))),
        };
        Ok(match result {
            Authentication::Allowed { decision, headers } => AuthResult::allowed(decision, headers),
            Authentication::Rejected { response, decision } => AuthResult::rejected(response, decision),
        })
    }

    /// Returns this process's runtime and keyring, creating them on first use and after a fork.
    ///
    /// The fast path only tries the lock, so it never waits while holding the GIL. The slow path
    /// releases the GIL before it takes the lock and creates no Python object while holding it,
    /// because a thread that holds the lock and waits for the GIL deadlocks with a thread that
    /// holds the GIL and waits for the lock.
    fn process(&self, py: Python<'_>) -> PyResult<(Arc<tokio::runtime::Runtime>, Arc<keyturn::Keyring>)> {
        let generation = fork::generation();
        let fast = match self.state.try_lock() {
            Ok(state) => current_process(&state, generation),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => current_process(&poisoned.into_inner(), generation),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(found) = fast {
            return Ok(found);
        }
        py.detach(|| self.open_process(generation)).map_err(|error| match error {
            OpenError::Runtime(error) => configuration(format!("cannot start the keyturn runtime: {error}")),
            OpenError::Keyring(error) => to_py(error),
        })
    }

    // NOTE: a child forked while the parent was writing to SQLite (such as the first use of a
    // key) could not open the store within OPEN_TIMEOUT and returned 503 for several seconds.
    // SQLite's lock bookkeeping copied by the fork is a likely cause, not confirmed. Forking
    // while the parent writes nothing avoids it.
    fn open_process(
        &self,
        generation: u64,
    ) -> Result<(Arc<tokio::runtime::Runtime>, Arc<keyturn::Keyring>), OpenError> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = current_process(&state, generation) {
            return Ok(found);
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyturn")
            .enable_all()
            .build()
            .map_err(OpenError::Runtime)?;
        let runtime = Arc::new(runtime);
        let mut failed_open = self.failed_open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((failed_generation, at, message)) = failed_open.as_ref() {
            if *failed_generation == generation && at.elapsed() < OPEN_RETRY_AFTER {
                return Err(OpenError::Keyring(keyturn::Error::StoreUnavailable(message.clone())));
            }
        }
        let opened = runtime.block_on(async {
            tokio::time::timeout(OPEN_TIMEOUT, keyturn::open(self.options.clone(), Arc::clone(&self.clock)))
                .await
                .unwrap_or_else(|_| {
                    Err(keyturn::Error::StoreUnavailable(format!(
                        "opening {} took longer than {} s",
                        self.options.database,
                        OPEN_TIMEOUT.as_secs()
                    )))
                })
        });
        let keyring = match opened {
            Ok(keyring) => keyring,
            Err(error) => {
                if let keyturn::Error::StoreUnavailable(message) = &error {
                    *failed_open = Some((generation, std::time::Instant::now(), message.clone()));
                }
                return Err(OpenError::Keyring(error));
            }
        };
        *failed_open = None;
        drop(failed_open);
        {
            let _entered = runtime.enter();
            keyring.start_background();
        }
        *state = Some(ProcessState { generation, runtime: Arc::clone(&runtime), keyring: Arc::clone(&keyring) });
        Ok((runtime, keyring))
    }
}

/// The values of a request's WSGI environ that authentication reads. A WSGI server joins repeated
/// headers into one value, so each header has at most one.
pub(crate) struct WsgiHeaders<'a> {
    pub(crate) authorization: Option<&'a str>,
    /// The value of the configured API key header (`X-API-Key` by default).
    pub(crate) api_key: Option<&'a str>,
    pub(crate) remote_addr: Option<&'a str>,
    pub(crate) forwarded_for: Option<&'a str>,
}

/// The reason this process's native state could not be created.
enum OpenError {
    Runtime(std::io::Error),
    Keyring(keyturn::Error),
}

fn current_process(
    state: &Option<ProcessState>,
    generation: u64,
) -> Option<(Arc<tokio::runtime::Runtime>, Arc<keyturn::Keyring>)> {
    state
        .as_ref()
        .filter(|current| current.generation == generation)
        .map(|current| (Arc::clone(&current.runtime), Arc::clone(&current.keyring)))
}

/// Creates the database and, unless `KEYTURN_PEPPER` is set, the pepper file with mode 0600.
#[pyfunction]
#[pyo3(signature = (database_url = None, *, pepper_file = None))]
pub(crate) fn init(
    py: Python<'_>,
    database_url: Option<&str>,
    pepper_file: Option<String>,
) -> PyResult<(String, Option<String>, bool)> {
    let database = settings::resolve_database_url(database_url).map_err(|e| configuration(e.to_string()))?;
    let (pepper_value, pepper_file_var) = settings::pepper_from_env().map_err(|e| configuration(e.to_string()))?;
    let pepper_path = pepper_file.map(std::path::PathBuf::from).or(pepper_file_var).or_else(|| {
        if pepper_value.is_some() {
            None
        } else {
            settings::default_pepper_file(&database)
        }
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| configuration(format!("cannot start the keyturn runtime: {error}")))?;
    let result = py.detach(|| {
        runtime.block_on(async {
            let store = keyturn::open_store(&database, true).await?;
            if let Some(path) = &pepper_path {
                settings::check_pepper_not_lost(store.as_ref(), path).await?;
            }
            let status = pepper_path.as_deref().map(settings::create_pepper_file).transpose()?;
            if let Some(path) = settings::audit_key_file_to_create(&database)? {
                settings::create_audit_key_file(&path)?;
            }
            Ok::<_, keyturn::Error>((store.location(), status))
        })
    });
    match result.map_err(to_py)? {
        (location, None) => Ok((location, None, false)),
        (location, Some(settings::PepperFileStatus::Created(path))) => {
            Ok((location, Some(path.display().to_string()), true))
        }
        (location, Some(settings::PepperFileStatus::AlreadyExists(path))) => {
            Ok((location, Some(path.display().to_string()), false))
        }
    }
}

fn optional_duration(
    value: Option<&Bound<'_, PyAny>>,
    field: &str,
    default: std::time::Duration,
) -> PyResult<std::time::Duration> {
    value.map(|value| to_std_duration(value, field)).transpose().map(|value| value.unwrap_or(default))
}

/// Builds the guard's limits, raising ConfigurationError for a value out of range.
fn guard_config(
    max_failures: i64,
    window: Option<&Bound<'_, PyAny>>,
    cooldown: Option<&Bound<'_, PyAny>>,
) -> PyResult<GuardConfig> {
    let window = optional_duration(window, "guard_window", GuardConfig::DEFAULT_WINDOW)?;
    let cooldown = optional_duration(cooldown, "guard_cooldown", GuardConfig::DEFAULT_COOLDOWN)?;
    let max_failures = u32::try_from(max_failures).map_err(|_| {
        configuration(format!(
            "invalid guard max failures: {max_failures} must be 1 to {}",
            GuardConfig::MAX_FAILURES_LIMIT
        ))
    })?;
    GuardConfig::new(max_failures, window, cooldown).map_err(|e| configuration(e.to_string()))
}

pub(crate) fn parse_scopes(scopes: &[String]) -> PyResult<Scopes> {
    Scopes::parse(scopes.iter().map(String::as_str)).map_err(|error| invalid(error.to_string()))
}

fn parse_key_id(key_id: &str) -> PyResult<KeyId> {
    KeyId::parse(key_id).map_err(|error| invalid(error.to_string()))
}

fn parse_outcome(state: &str) -> PyResult<Outcome> {
    Outcome::ALL.into_iter().find(|outcome| outcome.as_str() == state).ok_or_else(|| {
        invalid(format!(
            "unknown state {state:?}; use one of active, expiring, grace, superseded, expired, rotated, revoked"
        ))
    })
}
