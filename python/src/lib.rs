//! `keyturn._native`: the Python binding of the keyturn service layer, built with PyO3 (abi3).
//!
//! It owns the conversion between Python values and keyturn types and the per-process native
//! state; every decision is made by the `keyturn` crate. Errors map to Python exceptions in one
//! table ([`errors`]), and no exception message, `repr` or log line carries a token or pepper.

mod convert;
mod errors;
mod keyring;
mod values;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<keyring::Keyring>()?;
    m.add_class::<values::ManualClock>()?;
    m.add_class::<values::KeyInfo>()?;
    m.add_class::<values::IssuedKey>()?;
    m.add_class::<values::AuthResult>()?;
    m.add_class::<values::AuditEvent>()?;
    m.add_function(wrap_pyfunction!(keyring::init, m)?)?;
    Ok(())
}
