//! The `MigrationEntry` class of `keyturn._native`: one key of the migration report, a rotated
//! key in its overlap window with the usage that shows whether its clients moved to the
//! successor. Instants are converted to `datetime` only when read.

use pyo3::prelude::*;

use crate::convert::{json_to_py, to_datetime, to_optional_datetime};

/// One key of the migration report.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct MigrationEntry {
    entry: keyturn::MigrationEntry,
}

impl MigrationEntry {
    pub(crate) fn new(entry: keyturn::MigrationEntry) -> Self {
        MigrationEntry { entry }
    }
}

#[pymethods]
impl MigrationEntry {
    #[getter]
    fn key_id(&self) -> &str {
        self.entry.key_id.as_str()
    }
    #[getter]
    fn name(&self) -> &str {
        &self.entry.name
    }
    #[getter]
    fn owner(&self) -> Option<&str> {
        self.entry.owner.as_deref()
    }
    #[getter]
    fn rotated_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.entry.rotated_at)
    }
    #[getter]
    fn overlap_ends_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_datetime(py, self.entry.overlap_ends_at)
    }
    #[getter]
    fn last_used_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.entry.last_used_at)
    }
    #[getter]
    fn last_client_addr(&self) -> Option<&str> {
        self.entry.last_client_addr.as_deref()
    }
    #[getter]
    fn uses_since_rotation(&self) -> u64 {
        self.entry.uses_since_rotation
    }
    #[getter]
    fn successor_id(&self) -> &str {
        self.entry.successor_id.as_str()
    }
    #[getter]
    fn successor_first_used_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        to_optional_datetime(py, self.entry.successor_first_used_at)
    }
    #[getter]
    fn status(&self) -> &'static str {
        self.entry.status.as_str()
    }

    /// Returns the fields as JSON-ready values, instants as RFC 3339 strings in UTC.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &keyturn::json::migration_entry_json(&self.entry))
    }

    fn __repr__(&self) -> String {
        format!("MigrationEntry(key_id={:?}, status={:?})", self.entry.key_id.as_str(), self.status())
    }
}
