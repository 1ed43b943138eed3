//! The fork generation of this process: a counter that `os.fork()` raises in the child. Native
//! state records the generation that created it. A verification compares two integers to find
//! whether the state is its worker's own or was inherited through a fork, where comparing
//! process ids would cost a system call on every request.
//!
//! Python runs the `after_in_child` functions of `os.register_at_fork` after every `os.fork()`,
//! which gunicorn and `multiprocessing` use, and after a C extension's fork that hands control
//! back to Python (`PyOS_AfterFork_Child`). A child that never runs Python again needs no state.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Returns the fork generation of this process: 0 in the process that imported the module, and
/// one more in each child than in its parent.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

#[pyfunction]
fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Registers the function that raises the generation in every child of `os.fork()`.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let hook = wrap_pyfunction!(after_fork_in_child, module)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", hook)?;
    py.import("os")?.call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}
