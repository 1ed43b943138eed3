//! `keyturn._native`: the Python binding of the keyturn service layer, built with PyO3 (abi3).
//!
//! It owns the conversion between Python values and keyturn types and the per-process native
//! state; every decision is made by the `keyturn` crate. Errors map to Python exceptions in one
//! table ([`errors`]), and no exception message, `repr` or log line carries a token or pepper.

mod convert;
mod errors;
mod fork;
mod hook;
mod keyring;
mod report;
mod values;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_log_subscriber();
    fork::register().map_err(|code| {
        pyo3::exceptions::PyMemoryError::new_err(format!(
            "registering the fork handler of keyturn failed (error {code}: out of memory); free memory and restart the process"
        ))
    })?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<keyring::Keyring>()?;
    m.add_class::<values::ManualClock>()?;
    m.add_class::<values::KeyInfo>()?;
    m.add_class::<values::IssuedKey>()?;
    m.add_class::<values::AuthResult>()?;
    m.add_class::<hook::RequestHook>()?;
    m.add_class::<hook::RouteRequirement>()?;
    m.add_class::<values::AuditEvent>()?;
    m.add_class::<report::MigrationEntry>()?;
    m.add_function(wrap_pyfunction!(keyring::init, m)?)?;
    Ok(())
}

/// Sends keyturn's own log events to stderr, where gunicorn and Flask's development server show
/// them. `KEYTURN_LOG` (or else `RUST_LOG`) sets the filter; by default warnings, errors and the
/// database path each process opens are shown. Does nothing when a subscriber is already set.
fn install_log_subscriber() {
    let filter = std::env::var("KEYTURN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn,keyturn::store=info".to_owned());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    // A constant directive always parses.
    let filter = filter.add_directive(keyturn::store::SILENCE_PGPASS_WARNING.parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}
