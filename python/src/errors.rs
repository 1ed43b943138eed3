//! The Python exception classes of keyturn and the one table that maps service errors to them.
//! The classes are created at import with the standard library's `type`, so that, for example,
//! `InvalidInputError` is also a `ValueError` and `NotFoundError` also a `LookupError`.

use keyturn::store::StoreError;
use keyturn::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

struct Classes {
    base: Py<PyType>,
    configuration: Py<PyType>,
    invalid_input: Py<PyType>,
    not_found: Py<PyType>,
    conflict: Py<PyType>,
    store_unavailable: Py<PyType>,
}

/// The exception classes, as an index into [`Classes`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Base,
    Configuration,
    InvalidInput,
    NotFound,
    Conflict,
    StoreUnavailable,
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let builtins = py.import("builtins")?;
    let exception = builtins.getattr("Exception")?;
    let make = |name: &str, bases: Vec<Bound<'_, PyAny>>, doc: &str| -> PyResult<Py<PyType>> {
        let namespace = PyDict::new(py);
        namespace.set_item("__doc__", doc)?;
        namespace.set_item("__module__", "keyturn")?;
        let class = builtins.getattr("type")?.call1((name, PyTuple::new(py, bases)?, namespace))?;
        module.add(name, &class)?;
        Ok(class.cast_into::<PyType>()?.unbind())
    };

    let base = make("KeyturnError", vec![exception], "Base class of every keyturn error.")?;
    let base_bound = base.bind(py).clone().into_any();
    let classes = Classes {
        configuration: make(
            "ConfigurationError",
            vec![base_bound.clone()],
            "Invalid or missing configuration: database URL, pepper, token prefix, realm.",
        )?,
        invalid_input: make(
            "InvalidInputError",
            vec![base_bound.clone(), builtins.getattr("ValueError")?],
            "An argument was rejected: a duration, instant, scope, name or key id.",
        )?,
        not_found: make(
            "NotFoundError",
            vec![base_bound.clone(), builtins.getattr("LookupError")?],
            "No key has the given key id.",
        )?,
        conflict: make(
            "ConflictError",
            vec![base_bound.clone()],
            "The change conflicts with the key's state: already rotated, revoked or expired.",
        )?,
        store_unavailable: make(
            "StoreUnavailableError",
            vec![base_bound],
            "The key store could not be reached, and no cached answer was fresh enough.",
        )?,
        base,
    };
    let _ = CLASSES.set(py, classes);
    Ok(())
}

/// Creates a Python exception of `kind` with `message`.
pub(crate) fn raise(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let Some(classes) = CLASSES.get(py) else {
            return PyRuntimeError::new_err(message);
        };
        let class = match kind {
            Kind::Base => &classes.base,
            Kind::Configuration => &classes.configuration,
            Kind::InvalidInput => &classes.invalid_input,
            Kind::NotFound => &classes.not_found,
            Kind::Conflict => &classes.conflict,
            Kind::StoreUnavailable => &classes.store_unavailable,
        };
        PyErr::from_type(class.bind(py).clone(), message)
    })
}

/// Maps a service error to its exception: the one table of Rust errors to Python classes.
pub(crate) fn to_py(error: Error) -> PyErr {
    let kind = match &error {
        Error::Invalid(_) | Error::InvalidInput { .. } | Error::ReservedScope | Error::UnknownPolicy(_) => {
            Kind::InvalidInput
        }
        Error::NotFound(_) => Kind::NotFound,
        Error::NotRotatable { .. }
        | Error::AlreadyRotated { .. }
        | Error::SuccessorUsed { .. }
        | Error::AlreadyRevoked { .. } => Kind::Conflict,
        Error::Pepper(_) | Error::PepperFile { .. } | Error::AuditKey(_) | Error::AuditKeyFile { .. } => {
            Kind::Configuration
        }
        Error::StoreUnavailable(_) => Kind::StoreUnavailable,
        Error::Store(StoreError::InvalidUrl { .. } | StoreError::Open { .. }) => Kind::Configuration,
        Error::Store(StoreError::NotFound(_)) => Kind::NotFound,
        Error::Store(
            StoreError::Revoked(_)
            | StoreError::SuccessorMismatch { .. }
            | StoreError::PolicyInUse { .. }
            | StoreError::PolicyConflict { .. },
        ) => Kind::Conflict,
        _ => Kind::Base,
    };
    raise(kind, error.to_string())
}

pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    raise(Kind::InvalidInput, message)
}

pub(crate) fn configuration(message: impl Into<String>) -> PyErr {
    raise(Kind::Configuration, message)
}
