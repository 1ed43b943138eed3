//! The `before_request` hook of the Flask extension, as a native callable.
//!
//! The hook runs on every request, and in Python its attribute lookups and calls cost more than
//! the verification of a cached key. [`RequestHook`] decides the common case here: a request
//! without a query string, routed to a view whose requirement is known, authenticated with a key
//! that needs no lifecycle headers and no receiver of `key_verified`. It hands every other
//! request to the Python function `slow`, which contains the whole logic, and every other outcome
//! to the Python function `finish`, which adds the headers, sends the signals and builds the
//! rejection. It owns no decision of its own: the same request gives the same outcome either way.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use keyturn::core::Scopes;
use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyString, PyTuple};

use crate::keyring::{parse_scopes, Keyring, WsgiHeaders};

/// The requirement of the hook for requests to one endpoint, as the Python side decided it.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct RouteRequirement {
    /// The view this was decided for; a view replaced in `app.view_functions` is decided again.
    #[pyo3(get)]
    view: Py<PyAny>,
    /// Whether requests to the endpoint are authenticated.
    #[pyo3(get)]
    protected: bool,
    #[pyo3(get)]
    scopes: Py<PyTuple>,
    #[pyo3(get)]
    scope_set: Py<PyFrozenSet>,
    parsed: Scopes,
}

#[pymethods]
impl RouteRequirement {
    /// Raises InvalidInputError for a scope name that is not valid.
    #[new]
    fn new(py: Python<'_>, view: Py<PyAny>, protected: bool, scopes: Vec<String>) -> PyResult<Self> {
        let parsed = parse_scopes(&scopes)?;
        let scope_set = PyFrozenSet::new(py, &scopes)?.unbind();
        let scopes = PyTuple::new(py, &scopes)?.unbind();
        Ok(RouteRequirement { view, protected, scopes, scope_set, parsed })
    }
}

/// The keyring and settings the hook authenticates with, replaced when the app is initialised
/// again.
struct Binding {
    keyring: Py<Keyring>,
    /// The WSGI environ key of the API key header, such as `HTTP_X_API_KEY`.
    api_key_environ_key: Py<PyString>,
}

/// The `before_request` hook of one Flask app.
#[pyclass(module = "keyturn._native", frozen)]
pub(crate) struct RequestHook {
    app: Py<PyAny>,
    /// Returns the current request: `flask.request._get_current_object`.
    current_request: Py<PyAny>,
    /// The `key_verified` signal, whose receivers the hook checks.
    key_verified: Py<PyAny>,
    /// `slow(request)` authenticates a request the hook does not decide here.
    slow: Py<PyAny>,
    /// `finish(result)` returns the response of an authentication the hook does not finish.
    finish: Py<PyAny>,
    binding: Mutex<Option<Binding>>,
    /// Each endpoint's [`RouteRequirement`], filled by `slow`.
    routes: Py<PyDict>,
    /// Set by `slow` once it has checked the order of the app's decorators.
    ready: AtomicBool,
    /// The number of the current binding, raised by every `bind`. A decision that `slow` made
    /// with the config of an earlier binding is not remembered.
    generation: AtomicU64,
}

/// Whether the hook decided a request here.
enum Fast {
    Done(Option<Py<PyAny>>),
    Slow,
}

#[pymethods]
impl RequestHook {
    #[new]
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        current_request: Py<PyAny>,
        key_verified: Py<PyAny>,
        slow: Py<PyAny>,
        finish: Py<PyAny>,
    ) -> Self {
        RequestHook {
            app,
            current_request,
            key_verified,
            slow,
            finish,
            binding: Mutex::new(None),
            routes: PyDict::new(py).unbind(),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// Authenticates with `keyring` from now on, and clears the routes and the decorator check.
    /// Returns the binding's number, which `remember_route` and `mark_ready` take.
    fn bind(&self, py: Python<'_>, keyring: Py<Keyring>, api_key_environ_key: Py<PyString>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.binding.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Binding { keyring, api_key_environ_key });
        self.ready.store(false, Ordering::Release);
        self.routes.bind(py).clear();
        generation
    }

    /// Returns the requirement remembered for `endpoint`, or None.
    fn route(&self, py: Python<'_>, endpoint: &Bound<'_, PyAny>) -> PyResult<Option<Py<RouteRequirement>>> {
        let route = self.routes.bind(py).get_item(endpoint)?;
        Ok(route.map(|route| route.cast_into::<RouteRequirement>()).transpose()?.map(Bound::unbind))
    }

    /// Remembers `route` for `endpoint` unless the hook was bound again since the binding
    /// `binding`, whose config the route was decided with.
    fn remember_route(
        &self,
        py: Python<'_>,
        endpoint: &Bound<'_, PyAny>,
        route: Py<RouteRequirement>,
        binding: u64,
    ) -> PyResult<()> {
        let routes = self.routes.bind(py);
        if self.generation.load(Ordering::Acquire) != binding {
            return Ok(());
        }
        routes.set_item(endpoint, route)?;
        // Storing an item can run a garbage collection, which lets other threads run. A `bind`
        // that ran meanwhile cleared the routes before this item went in, so it is removed.
        if self.generation.load(Ordering::Acquire) != binding {
            routes.del_item(endpoint).or_else(|error| {
                if error.is_instance_of::<PyKeyError>(py) {
                    Ok(())
                } else {
                    Err(error)
                }
            })?;
        }
        Ok(())
    }

    /// Returns whether the order of the app's decorators was checked since the last `bind`.
    #[getter]
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records that the decorator order was checked under the binding `binding`.
    fn mark_ready(&self, binding: u64) {
        if self.generation.load(Ordering::Acquire) == binding {
            self.ready.store(true, Ordering::Release);
        }
    }

    fn __call__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let request = self.current_request.bind(py).call0()?;
        match self.authenticate(py, &request)? {
            Fast::Done(response) => Ok(response),
            Fast::Slow => Ok(Some(self.slow.bind(py).call1((request,))?.unbind())),
        }
    }
}

impl RequestHook {
    /// Authenticates `request` when it is the common case that the module documentation names.
    fn authenticate(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<Fast> {
        if !self.ready.load(Ordering::Acquire) {
            return Ok(Fast::Slow);
        }
        // A dict subclass may override `get`, which the C API would bypass, so only a plain dict
        // is read here.
        let environ = request.getattr(intern!(py, "environ"))?;
        let Ok(environ) = environ.cast_exact::<PyDict>() else { return Ok(Fast::Slow) };
        // A query string may carry a token, which the slow path rejects and audits.
        if let Some(query) = environ.get_item(intern!(py, "QUERY_STRING"))? {
            if query.is_truthy()? {
                return Ok(Fast::Slow);
            }
        }

        let rule = request.getattr(intern!(py, "url_rule"))?;
        if rule.is_none() {
            // Routing failed (404, 405 or a redirect), so Flask responds without calling a view.
            return Ok(Fast::Done(None));
        }
        if request.getattr(intern!(py, "method"))?.eq(intern!(py, "OPTIONS"))? {
            return Ok(Fast::Slow);
        }
        let endpoint = rule.getattr(intern!(py, "endpoint"))?;
        let Some(route) = self.routes.bind(py).get_item(&endpoint)? else { return Ok(Fast::Slow) };
        let route = route.cast_into::<RouteRequirement>()?;
        let route = route.get();
        let view_functions = self.app.bind(py).getattr(intern!(py, "view_functions"))?;
        let Ok(view_functions) = view_functions.cast_exact::<PyDict>() else { return Ok(Fast::Slow) };
        let view = view_functions.get_item(&endpoint)?;
        if view.is_none_or(|view| view.as_ptr() != route.view.as_ptr()) {
            return Ok(Fast::Slow);
        }
        if !route.protected {
            return Ok(Fast::Done(None));
        }

        let Some((keyring, api_key_environ_key)) = self.binding(py) else { return Ok(Fast::Slow) };
        let authorization = environ_text(environ, intern!(py, "HTTP_AUTHORIZATION"))?;
        let api_key = environ_text(environ, api_key_environ_key.bind(py))?;
        let remote_addr = environ_text(environ, intern!(py, "REMOTE_ADDR"))?;
        let forwarded_for = environ_text(environ, intern!(py, "HTTP_X_FORWARDED_FOR"))?;
        let (Some(authorization), Some(api_key), Some(remote_addr), Some(forwarded_for)) =
            (authorization, api_key, remote_addr, forwarded_for)
        else {
            return Ok(Fast::Slow);
        };
        // A string that is not valid UTF-8, such as one with a lone surrogate, goes to the slow
        // path, which reports it.
        let (Ok(authorization), Ok(api_key), Ok(remote_addr), Ok(forwarded_for)) =
            (text(&authorization), text(&api_key), text(&remote_addr), text(&forwarded_for))
        else {
            return Ok(Fast::Slow);
        };
        let headers = WsgiHeaders {
            authorization: authorization.as_deref(),
            api_key: api_key.as_deref(),
            remote_addr: remote_addr.as_deref(),
            forwarded_for: forwarded_for.as_deref(),
        };
        let result = keyring.get().authenticate_headers(py, &headers, &[], &route.parsed)?;

        let finished = result.is_allowed() && result.response_headers().is_empty();
        let result = Bound::new(py, result)?;
        let authentication = PyTuple::new(py, [result.as_any(), route.scope_set.bind(py).as_any()])?;
        // keyturn.flask reads the attribute as `_REQUEST_AUTHENTICATION`.
        request.setattr(intern!(py, "_keyturn_authentication"), authentication)?;
        if finished && !self.key_verified.bind(py).getattr(intern!(py, "receivers"))?.is_truthy()? {
            return Ok(Fast::Done(None));
        }
        Ok(Fast::Done(Some(self.finish.bind(py).call1((result,))?.unbind())))
    }

    fn binding(&self, py: Python<'_>) -> Option<(Py<Keyring>, Py<PyString>)> {
        let binding = self.binding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        binding.as_ref().map(|binding| (binding.keyring.clone_ref(py), binding.api_key_environ_key.clone_ref(py)))
    }
}

/// Returns the value under `key` in the environ: `Some(None)` when the key is absent or None,
/// and None when the value is not a string, which the slow path reports.
fn environ_text<'py>(
    environ: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Option<Bound<'py, PyString>>>> {
    let Some(value) = environ.get_item(key)? else { return Ok(Some(None)) };
    if value.is_none() {
        return Ok(Some(None));
    }
    Ok(value.cast_into::<PyString>().ok().map(Some))
}

fn text<'a>(value: &'a Option<Bound<'_, PyString>>) -> PyResult<Option<Cow<'a, str>>> {
    value.as_ref().map(|value| value.to_cow()).transpose()
}
