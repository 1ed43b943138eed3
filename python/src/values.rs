//! The value classes returned to Python: `KeyInfo`, `IssuedKey`, `AuthResult`, `AuditEvent` and
//! the shared `ManualClock`. Instants are converted to `datetime` only when read, which keeps the
//! per-request cost of `AuthResult` low. Only `IssuedKey` holds a token, and its `repr` hides it.

use std::borrow::Cow;
use std::sync::Arc;

use keyturn::core::{self, Clock, HttpResponse, Instant, KeyRecord, KeyState};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::convert::{json_to_py, to_datetime, to_duration, to_instant, to_optional_datetime};

/// A clock that stands still until moved; clones share one instant with the keyring.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct ManualClock {
    pub(crate) inner: core::ManualClock,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start = None))]
    fn new(start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = match start {
            Some(value) => to_instant(value, "start")?,
            None => core::SystemClock.now(),
        };
        Ok(ManualClock { inner: core::ManualClock::new(start) })
    }

    fn now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.inner.now())
    }

    fn set(&self, instant: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set(to_instant(instant, "instant")?);
        Ok(())
    }

    fn advance(&self, duration: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.advance(to_duration(duration, "duration")?);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("ManualClock({})", self.inner.now())
    }
}

/// A key as stored, with its state at the instant it was read.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct KeyInfo {
    record: Arc<KeyRecord>,
    state: KeyState,
}

impl KeyInfo {
    pub(crate) fn new(record: Arc<KeyRecord>, state: KeyState) -> Self {
        KeyInfo { record, state }
    }
}

#[pymethods]
impl KeyInfo {
    #[getter]
    fn key_id(&self) -> &str {
        self.record.key_id.as_str()
    }
    #[getter]
    fn name(&self) -> &str {
        &self.record.name
    }
    #[getter]
    fn owner(&self) -> Option<&str> {
        self.record.owner.as_deref()
    }
    #[getter]
    fn scopes(&self) -> Vec<String> {
        self.record.scopes.iter().map(|scope| scope.as_str().to_owned()).collect()
    }
    #[getter]
    fn state(&self) -> &'static str {
        self.state.outcome.as_str()
    }
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.record.created_at)
    }
    #[getter]
    fn expires_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.expires_at)
    }
    #[getter]
    fn grace_ends_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.grace_ends_at())
    }
    #[getter]
    fn revoked_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.revoked_at)
    }
    #[getter]
    fn revocation_reason(&self) -> Option<&str> {
        self.record.revocation_reason.as_deref()
    }
    #[getter]
    fn rotated_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.rotated_at)
    }
    #[getter]
    fn overlap_ends_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.overlap_ends_at)
    }
    #[getter]
    fn rotation_requested_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.rotation_requested_at)
    }
    #[getter]
    fn rotation_deadline<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.rotation_deadline)
    }
    #[getter]
    fn successor_id(&self) -> Option<&str> {
        self.record.successor_id.as_ref().map(|id| id.as_str())
    }
    #[getter]
    fn predecessor_id(&self) -> Option<&str> {
        self.record.predecessor_id.as_ref().map(|id| id.as_str())
    }
    #[getter]
    fn first_used_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.first_used_at)
    }
    #[getter]
    fn last_used_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.record.last_used_at)
    }
    #[getter]
    fn self_rotation(&self) -> bool {
        self.record.self_rotation
    }
    #[getter]
    fn chain_ends_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.record.chain_ends_at())
    }
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &serde_json::Value::Object(self.record.metadata.clone()))
    }
    /// The name of the policy the key was created under.
    #[getter]
    fn policy(&self) -> &str {
        self.record.policy.as_str()
    }

    /// Returns the fields as JSON-ready values, instants as RFC 3339 strings in UTC.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &keyturn::json::key_json(&self.record, &self.state))
    }

    fn __repr__(&self) -> String {
        format!(
            "KeyInfo(key_id={:?}, name={:?}, state={:?})",
            self.record.key_id.as_str(),
            self.record.name,
            self.state()
        )
    }
}

/// A newly created or rotated key and its token, shown only this once.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct IssuedKey {
    #[pyo3(get)]
    key: Py<KeyInfo>,
    token: core::Token,
}

impl IssuedKey {
    pub(crate) fn new(py: Python<'_>, issued: keyturn::Issued, now: Instant) -> PyResult<Self> {
        let state = issued.record.state_at(now);
        let key = Py::new(py, KeyInfo::new(Arc::new(issued.record), state))?;
        Ok(IssuedKey { key, token: issued.token })
    }
}

#[pymethods]
impl IssuedKey {
    #[getter]
    fn token(&self) -> &str {
        self.token.expose()
    }

    fn __repr__(&self) -> String {
        format!("IssuedKey(key_id={:?}, token=<redacted>)", self.key.get().record.key_id.as_str())
    }
}

/// The result of authenticating a request or verifying a token. Its `KeyInfo` is created on
/// first access, because most requests never read it.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct AuthResult {
    #[pyo3(get)]
    allowed: bool,
    code: Cow<'static, str>,
    #[pyo3(get)]
    outcome: Option<&'static str>,
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The verified key and its state, when the secret matched.
    verified: Option<(Arc<KeyRecord>, KeyState)>,
    key: PyOnceLock<Option<Py<KeyInfo>>>,
}

impl AuthResult {
    /// Returns whether the request may proceed.
    pub(crate) fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Returns the lifecycle headers of an allowed request, or the headers of the rejection.
    pub(crate) fn response_headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    pub(crate) fn allowed(decision: core::Decision, headers: Vec<(&'static str, String)>) -> Self {
        AuthResult {
            allowed: true,
            code: Cow::Borrowed(decision.code()),
            outcome: Some(decision.outcome.as_str()),
            status: 200,
            headers,
            body: Vec::new(),
            verified: verified_key(&decision),
            key: PyOnceLock::new(),
        }
    }

    pub(crate) fn rejected(response: HttpResponse, decision: Option<core::Decision>) -> Self {
        let code = match &decision {
            Some(decision) => Cow::Borrowed(decision.code()),
            None => Cow::Owned(problem_code(&response.body)),
        };
        AuthResult {
            allowed: false,
            code,
            outcome: decision.as_ref().filter(|d| d.key.is_some()).map(|d| d.outcome.as_str()),
            status: response.status,
            headers: response.headers,
            body: response.body,
            verified: decision.as_ref().and_then(verified_key),
            key: PyOnceLock::new(),
        }
    }
}

#[pymethods]
impl AuthResult {
    #[getter]
    fn code(&self) -> &str {
        &self.code
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// The key when its secret matched, the same object on every access.
    #[getter]
    fn key(&self, py: Python<'_>) -> PyResult<Option<Py<KeyInfo>>> {
        let key = self.key.get_or_try_init(py, || match &self.verified {
            Some((record, state)) => Py::new(py, KeyInfo::new(Arc::clone(record), *state)).map(Some),
            None => Ok(None),
        })?;
        Ok(key.as_ref().map(|key| key.clone_ref(py)))
    }

    fn __repr__(&self) -> String {
        format!("AuthResult(allowed={}, code={:?}, status={})", self.allowed, self.code, self.status)
    }
}

fn verified_key(decision: &core::Decision) -> Option<(Arc<KeyRecord>, KeyState)> {
    let record = decision.key.as_ref()?;
    Some((Arc::clone(record), KeyState { outcome: decision.outcome, deadline: decision.deadline }))
}

fn problem_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("code").and_then(|code| code.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// One row of the audit trail.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct AuditEvent {
    row: core::AuditEvent,
}

impl AuditEvent {
    pub(crate) fn new(row: core::AuditEvent) -> Self {
        AuditEvent { row }
    }
}

#[pymethods]
impl AuditEvent {
    #[getter]
    fn seq(&self) -> i64 {
        self.row.seq
    }
    #[getter]
    fn at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.row.event.at)
    }
    #[getter]
    fn event(&self) -> &'static str {
        self.row.event.event.as_str()
    }
    #[getter]
    fn key_id(&self) -> Option<&str> {
        self.row.event.key_id.as_ref().map(|id| id.as_str())
    }
    #[getter]
    fn actor(&self) -> String {
        self.row.event.actor.to_stored()
    }
    #[getter]
    fn client_addr(&self) -> Option<&str> {
        self.row.event.client_addr.as_deref()
    }
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.row.event.reason.as_deref()
    }
    #[getter]
    fn details<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.row.event.details)
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &keyturn::json::audit_event_json(&self.row))
    }

    fn __repr__(&self) -> String {
        format!("AuditEvent(seq={}, event={:?})", self.row.seq, self.event())
    }
}
