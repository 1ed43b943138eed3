//! Conversions between Python values and keyturn types: instants to aware UTC `datetime`s and
//! back, durations from `timedelta` or text such as `90d`, and JSON values through the standard
//! library's `json` module. Naive datetimes are rejected because their time zone is a guess.

use keyturn::core::{Duration, Instant};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use serde_json::{Map, Value};

use crate::errors::invalid;

static EPOCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TIMEDELTA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Converts an instant to an aware `datetime` in UTC: the epoch plus a whole number of
/// milliseconds, so no floating-point rounding is involved.
pub(crate) fn to_datetime<'py>(py: Python<'py>, instant: Instant) -> PyResult<Bound<'py, PyAny>> {
    let epoch = EPOCH.get_or_try_init(py, || -> PyResult<_> {
        let module = py.import("datetime")?;
        let utc = module.getattr("timezone")?.getattr("utc")?;
        Ok(module.getattr("datetime")?.call1((1970, 1, 1, 0, 0, 0, 0, utc))?.unbind())
    })?;
    let timedelta = TIMEDELTA
        .get_or_try_init(py, || -> PyResult<_> { Ok(py.import("datetime")?.getattr("timedelta")?.unbind()) })?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("milliseconds", instant.as_millis())?;
    let offset = timedelta.bind(py).call((), Some(&kwargs))?;
    epoch.bind(py).add(offset)
}

pub(crate) fn to_optional_datetime<'py>(
    py: Python<'py>,
    instant: Option<Instant>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    instant.map(|instant| to_datetime(py, instant)).transpose()
}

/// Reads an instant from an aware `datetime` or an RFC 3339 string.
pub(crate) fn to_instant(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Instant> {
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_cow()?;
        return Instant::parse_rfc3339(&text).map_err(|error| invalid(format!("{field}: {error}")));
    }
    let tzinfo =
        value.getattr("tzinfo").map_err(|_| invalid(format!("{field} must be a datetime or an RFC 3339 string")))?;
    if tzinfo.is_none() {
        return Err(invalid(format!(
            "{field} is a naive datetime; pass an aware one, such as datetime.now(timezone.utc)"
        )));
    }
    let seconds: f64 = value.call_method0("timestamp")?.extract()?;
    Ok(Instant::from_millis((seconds * 1000.0).round() as i64))
}

/// Reads a duration from a `timedelta` or text such as `90d`, `1h30m` or `250ms`.
/// Reads the deadline of a rotation request: an aware datetime, a timedelta from `now`, or a
/// string holding an RFC 3339 instant or a duration such as "14d".
pub(crate) fn to_deadline(value: &Bound<'_, PyAny>, now: Instant) -> PyResult<Instant> {
    if let Ok(text) = value.cast::<PyString>() {
        return keyturn::parse_deadline(&text.to_cow()?, now).map_err(|error| invalid(error.to_string()));
    }
    if value.hasattr("total_seconds")? {
        let duration = to_duration(value, "by")?;
        if duration.is_zero() {
            return Err(invalid("by must be a positive timedelta"));
        }
        return Ok(now.saturating_add(duration));
    }
    to_instant(value, "by")
}

pub(crate) fn to_duration(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Duration> {
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_cow()?;
        return Duration::parse(&text).map_err(|error| invalid(format!("{field}: {error}")));
    }
    let seconds: f64 = value
        .call_method0("total_seconds")
        .and_then(|seconds| seconds.extract())
        .map_err(|_| invalid(format!("{field} must be a timedelta or a string such as \"90d\"")))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(invalid(format!("{field} must not be negative")));
    }
    Ok(Duration::from_millis((seconds * 1000.0).round() as i64))
}

pub(crate) fn to_std_duration(value: &Bound<'_, PyAny>, field: &str) -> PyResult<std::time::Duration> {
    let millis = to_duration(value, field)?.as_millis();
    Ok(std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0)))
}

/// Converts JSON to Python objects with `json.loads`.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// Converts a Python mapping to a JSON object with `json.dumps`.
pub(crate) fn py_to_json_object(value: &Bound<'_, PyAny>, field: &str) -> PyResult<Map<String, Value>> {
    let text: String = value
        .py()
        .import("json")?
        .call_method1("dumps", (value,))
        .and_then(|text| text.extract())
        .map_err(|error| invalid(format!("{field} must be JSON-serialisable: {error}")))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid(format!("{field} must be a mapping of strings to JSON values"))),
    }
}
