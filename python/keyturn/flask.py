"""Flask integration of keyturn: the ``KeyTurn`` extension that authenticates requests with API
keys, the ``key_verified`` and ``key_rejected`` signals, and the ``flask keys`` commands.

Every decision and every rejection response comes from ``keyturn._native``. This module only
reads the request, sends the native response byte for byte, and adds the lifecycle headers
(``API-Key-Status``, ``API-Key-Expires``) to allowed responses.

Configuration
-------------

``init_app`` reads the ``KEYTURN_*`` keys listed in ``CONFIG_KEYS`` from ``app.config``. Values
set before ``init_app`` win over the defaults. ``KEYTURN_DATABASE_URL``, ``KEYTURN_PEPPER`` and
``KEYTURN_PEPPER_FILE`` left at None fall back to the environment variables of the same names,
so the ``keyturn`` CLI and the Flask app can share one configuration.

Which requests are authenticated
--------------------------------

Every request, whatever its route, is first checked for a token in its query string. A URL is
kept in proxy and access logs, so a well-formed token in any query parameter is rejected with
400 ``invalid_request`` and audited as ``authn_token_exposed``, on public views and unknown paths
too.

With ``KEYTURN_PROTECT_ALL`` on (the default), a ``before_request`` hook authenticates every
request routed to a view, so a view that lacks a decorator is protected, not open. These
requests are not authenticated:

* views marked with ``@keyturn.public`` and endpoints listed in ``KEYTURN_PUBLIC_ENDPOINTS``;
  the ``static`` endpoint is protected like any other until the app lists it there;
* requests that match no route (404, 405, and the 308 redirect to the URL with a trailing
  slash), because there is no view to protect and Flask responds without calling one;
* ``OPTIONS`` requests that Flask handles itself by listing the route's allowed methods,
  because they run no view. A view that handles ``OPTIONS`` itself is authenticated.

With ``KEYTURN_PROTECT_ALL`` off, only views decorated with ``@keyturn.required`` are
authenticated. The decorator also authenticates when its view is called without the hook
having run, so a decorated view never runs unauthenticated.

The route decorator must be the outermost one, above ``@keyturn.required``. In the other order
the route registers the undecorated view, and its scope check would be lost, so the first
request to the app raises RuntimeError naming the view.

NOTE: WSGI servers join repeated headers into one value with commas, so a request with two
``Authorization`` headers is rejected as an invalid key (401), not as conflicting keys (400).
A key in ``Authorization`` and a different one in the API key header is a 400.

Register ``KeyTurn`` before other ``before_request`` hooks that read ``current_key()``, because
Flask runs the hooks in registration order.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar, overload

import blinker
import click
from flask import (
    Flask,
    Request,
    Response,
    after_this_request,
    current_app,
    has_request_context,
    request,
)
from flask.cli import AppGroup

from keyturn._native import (
    AuthResult,
    ConfigurationError,
    IssuedKey,
    KeyInfo,
    Keyring,
    KeyturnError,
    ManualClock,
    MigrationEntry,
    RequestHook,
    RouteRequirement,
)

__all__ = [
    "CONFIG_KEYS",
    "ConfigKey",
    "KeyTurn",
    "KeysCommandError",
    "current_key",
    "key_rejected",
    "key_verified",
    "keys_cli",
]

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., Any])

#: The key of the extension's state in ``app.extensions``.
EXTENSION_NAME = "keyturn"

# Attributes that the decorators set on a view function. ``functools.wraps`` copies them, so they
# survive other decorators applied on top.
_REQUIRED_SCOPES_ATTR = "_keyturn_required_scopes"
_PUBLIC_ATTR = "_keyturn_public"
# The wrappers that ``@keyturn.required`` made of a function, set on the function and on every
# function it wraps, so the first request can find a view that was registered without them.
_REQUIRED_WRAPPERS_ATTR = "_keyturn_required_wrappers"
# Bound on the ``__wrapped__`` chains followed, against a chain that loops.
_MAX_WRAPPER_DEPTH = 100
# The WSGI environ key of the Authorization header.
_AUTHORIZATION_ENVIRON_KEY = "HTTP_AUTHORIZATION"
# The attribute of the request object that contains the request's authentication.
_REQUEST_AUTHENTICATION = "_keyturn_authentication"


# Every keyring an app was given, so that keyturn.testing can close the ones on a throwaway
# database before it deletes the database's directory.
_KEYRINGS: list[Keyring] = []


def close_keyrings_under(directory: str | os.PathLike[str]) -> None:
    """Close every app keyring whose SQLite database lies under ``directory``.

    ``keyturn.testing`` calls this before it deletes a throwaway store, so that the final flush at
    interpreter exit does not find the database gone. A closed keyring reopens on its next use.
    """
    root = os.path.realpath(directory)
    for keyring in list(_KEYRINGS):
        path = keyring.database_path
        if path is not None and os.path.realpath(path).startswith(root + os.sep):
            keyring.close()
            _KEYRINGS.remove(keyring)
            atexit.unregister(keyring.close)


class ConfigKey(NamedTuple):
    """A Flask config key that keyturn reads, with its default and the types it accepts."""

    name: str
    default: Any
    types: tuple[type, ...]
    description: str


_DURATION = (str, timedelta)
_OPTIONAL_PATH = (str, os.PathLike, type(None))
_SEQUENCE = (list, tuple)

#: Every config key of the extension. Durations are strings such as "1s", "250ms" or "1h30m", or
#: ``datetime.timedelta`` values.
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "KEYTURN_DATABASE_URL",
        None,
        _OPTIONAL_PATH,
        "Database URL such as sqlite:///srv/app/keyturn.db or postgres://app@db/keyturn, or a "
        "SQLite file path. None reads the KEYTURN_DATABASE_URL environment variable, else uses "
        "keyturn.db in the working directory. The database must exist: create it with "
        "`keyturn init`.",
    ),
    ConfigKey(
        "KEYTURN_PEPPER",
        None,
        (str, type(None)),
        "Pepper ring as ID:BASE64 entries separated by commas, the first current. None reads the "
        "KEYTURN_PEPPER environment variable. Set this or KEYTURN_PEPPER_FILE, not both.",
    ),
    ConfigKey(
        "KEYTURN_PEPPER_FILE",
        None,
        _OPTIONAL_PATH,
        "File holding the pepper ring, readable by its owner only (mode 0600). None reads the "
        "KEYTURN_PEPPER_FILE environment variable, else uses the database path with the "
        "extension .pepper, which `keyturn init` creates.",
    ),
    ConfigKey(
        "KEYTURN_TOKEN_PREFIX",
        "kt_live",
        (str,),
        "Prefix of the tokens this app issues and accepts. The `keyturn` CLI must use the same "
        "prefix (its --token-prefix option or KEYTURN_TOKEN_PREFIX variable).",
    ),
    ConfigKey("KEYTURN_REALM", "api", (str,), "Realm named in WWW-Authenticate challenges."),
    ConfigKey(
        "KEYTURN_API_KEY_HEADER",
        "X-API-Key",
        (str,),
        "Header that carries a key as an alternative to Authorization: Bearer.",
    ),
    ConfigKey(
        "KEYTURN_QUERY_PARAMETERS",
        None,
        (*_SEQUENCE, type(None)),
        "Query parameter names under which a value that starts with the token prefix is rejected "
        "with 400 as a misplaced token, even when it is not a well-formed token. A well-formed "
        "token is rejected under any name. None checks api_key, apikey, key, token and "
        "access_token.",
    ),
    ConfigKey(
        "KEYTURN_PROTECT_ALL",
        True,
        (bool,),
        "Authenticate every routed request unless its view is public. False authenticates only "
        "views decorated with @keyturn.required.",
    ),
    ConfigKey(
        "KEYTURN_PUBLIC_ENDPOINTS",
        (),
        (*_SEQUENCE, set, frozenset),
        "Endpoint names served without a key, such as 'static' for the static folder.",
    ),
    ConfigKey(
        "KEYTURN_STRICT",
        False,
        (bool,),
        "Read every key from the database instead of the cache, so changes made by other "
        "processes apply to the next request, at the cost of one database read per request.",
    ),
    ConfigKey(
        "KEYTURN_MAX_STALENESS",
        "1s",
        _DURATION,
        "Longest time a cached key is trusted after the last successful check for changes; a "
        "revocation made by another process takes effect here within this bound.",
    ),
    ConfigKey(
        "KEYTURN_POLL_INTERVAL",
        "250ms",
        _DURATION,
        "How often each process checks the database for changes made by other processes.",
    ),
    ConfigKey(
        "KEYTURN_FLUSH_INTERVAL",
        "1s",
        _DURATION,
        "How often usage counters (first and last use of each key) are written.",
    ),
    ConfigKey(
        "KEYTURN_TRUSTED_PROXIES",
        (),
        _SEQUENCE,
        "Addresses or CIDR networks of the proxies in front of the app, such as "
        "['10.0.0.0/8']. When request.remote_addr is one of them, the client address is the "
        "right-most X-Forwarded-For entry that is not. Leave it empty behind Werkzeug's "
        "ProxyFix, which already sets remote_addr.",
    ),
    ConfigKey(
        "KEYTURN_GUARD",
        True,
        (bool,),
        "Answer the failed verifications of a client address with 429 and Retry-After once it "
        "fails more than KEYTURN_GUARD_MAX_FAILURES times within KEYTURN_GUARD_WINDOW. A "
        "request with a valid key is never throttled. Counts are kept per process.",
    ),
    ConfigKey(
        "KEYTURN_GUARD_MAX_FAILURES",
        20,
        (int,),
        "Failed verifications allowed per client address within the guard window, 1 to 100000.",
    ),
    ConfigKey(
        "KEYTURN_GUARD_WINDOW",
        "60s",
        _DURATION,
        "How long failures are counted from a client address's first failure, 1s to 24h in "
        "whole seconds.",
    ),
    ConfigKey(
        "KEYTURN_GUARD_COOLDOWN",
        "60s",
        _DURATION,
        "How long a blocked client address gets 429 for its failed verifications, 1s to 24h in "
        "whole seconds.",
    ),
    ConfigKey(
        "KEYTURN_CLOCK",
        None,
        (ManualClock, type(None)),
        "A ManualClock for tests, used when KeyTurn(clock=...) is not given. None uses the "
        "system clock. keyturn.testing sets it.",
    ),
)

_signals = blinker.Namespace()

#: Sent after a request's key was accepted, with ``sender`` the app and the keyword arguments
#: ``key`` (the ``KeyInfo``) and ``result`` (the ``AuthResult``). An exception raised by a
#: receiver propagates like one raised in a view, so Flask responds with a 500.
key_verified = _signals.signal(
    "keyturn.key-verified", doc="A request's API key was accepted; receives key and result."
)

#: Sent after a request was rejected, with ``sender`` the app and the keyword arguments ``result``
#: (the ``AuthResult``) and ``key`` (the ``KeyInfo`` when the secret matched, else None). An
#: exception raised by a receiver propagates, so Flask responds with a 500 instead of the rejection.
key_rejected = _signals.signal(
    "keyturn.key-rejected", doc="A request was rejected; receives result and key (or None)."
)


@dataclass
class _AppState:
    """The extension's state for one app, kept in ``app.extensions["keyturn"]``."""

    keyring: Keyring
    api_key_header: str
    protect_all: bool
    public_endpoints: frozenset[str]
    #: The app's before_request hook. It also remembers what each endpoint requires (see
    #: ``_route_requirement``) and whether every ``@keyturn.required`` view was found registered
    #: with its check. Flask rejects new routes after the first request, so one check is enough.
    hook: RequestHook
    #: The WSGI environ key of the API key header, such as ``HTTP_X_API_KEY``.
    api_key_environ_key: str = dataclasses.field(init=False)
    #: The number that ``hook.bind`` returned for this state. The hook remembers no decision made
    #: with an earlier state, which a request still running during ``init_app`` may use.
    binding: int = 0

    def __post_init__(self) -> None:
        self.api_key_environ_key = _environ_key(self.api_key_header)


#: The authentication of a request: the native result and the scopes it checked.
_Authentication = tuple[AuthResult, frozenset[str]]


class KeyTurn:
    """Flask extension that authenticates requests with keyturn API keys.

    Use ``KeyTurn(app)``, or ``keyturn = KeyTurn()`` at module level and ``keyturn.init_app(app)``
    in an app factory. One instance may serve several apps, since each app keeps its own state.
    ``clock`` replaces the system clock, for tests; ``keyturn.testing`` passes one through the
    ``KEYTURN_CLOCK`` config key instead, so app factories need no change.
    """

    def __init__(self, app: Flask | None = None, *, clock: ManualClock | None = None) -> None:
        self._clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the app's keyring from its config and register the hooks and ``flask keys``.

        Raises ConfigurationError when a config value is invalid or the pepper is missing, so
        nothing serves requests without a pepper. The database is opened on first use in each
        process, which is what lets gunicorn fork workers after ``--preload``. Calling this again
        on the same app, such as from ``keyturn.testing``, replaces the keyring and closes the
        old one; the hooks are registered only once.
        """
        for key in CONFIG_KEYS:
            app.config.setdefault(key.name, key.default)
        config = {key.name: _checked_config_value(app, key) for key in CONFIG_KEYS}

        clock = self._clock if self._clock is not None else config["KEYTURN_CLOCK"]
        query_parameters = config["KEYTURN_QUERY_PARAMETERS"]
        keyring = Keyring(
            database_url=_optional_path(config["KEYTURN_DATABASE_URL"]),
            pepper=config["KEYTURN_PEPPER"],
            pepper_file=_optional_path(config["KEYTURN_PEPPER_FILE"]),
            token_prefix=config["KEYTURN_TOKEN_PREFIX"],
            realm=config["KEYTURN_REALM"],
            api_key_header=config["KEYTURN_API_KEY_HEADER"],
            query_parameters=None if query_parameters is None else list(query_parameters),
            strict=config["KEYTURN_STRICT"],
            max_staleness=config["KEYTURN_MAX_STALENESS"],
            poll_interval=config["KEYTURN_POLL_INTERVAL"],
            flush_interval=config["KEYTURN_FLUSH_INTERVAL"],
            clock=clock,
            trusted_proxies=list(config["KEYTURN_TRUSTED_PROXIES"]),
            guard=config["KEYTURN_GUARD"],
            guard_max_failures=config["KEYTURN_GUARD_MAX_FAILURES"],
            guard_window=config["KEYTURN_GUARD_WINDOW"],
            guard_cooldown=config["KEYTURN_GUARD_COOLDOWN"],
        )
        previous = app.extensions.get(EXTENSION_NAME)
        hook = previous.hook if isinstance(previous, _AppState) else _request_hook(app)
        state = _AppState(
            keyring=keyring,
            api_key_header=config["KEYTURN_API_KEY_HEADER"],
            protect_all=config["KEYTURN_PROTECT_ALL"],
            public_endpoints=frozenset(config["KEYTURN_PUBLIC_ENDPOINTS"]),
            hook=hook,
        )
        # Binding clears the routes and the decorator check made with the previous config.
        state.binding = hook.bind(keyring, state.api_key_environ_key)

        app.extensions[EXTENSION_NAME] = state
        # close() flushes the usage counters that the background writer has not written yet.
        atexit.register(keyring.close)
        _KEYRINGS.append(keyring)
        if isinstance(previous, _AppState):
            atexit.unregister(previous.keyring.close)
            if previous.keyring in _KEYRINGS:
                _KEYRINGS.remove(previous.keyring)
            previous.keyring.close()
            return

        app.before_request(_before_request_function(hook))
        if "keys" not in app.cli.commands:
            app.cli.add_command(keys_cli)

    @property
    def keyring(self) -> Keyring:
        """The keyring of the current app, for managing keys from the app's own code."""
        return _app_state(current_app).keyring

    @overload
    def required(self, view: ViewFunction, /) -> ViewFunction: ...

    @overload
    def required(self, *, scopes: Iterable[str] = ()) -> Callable[[ViewFunction], ViewFunction]: ...

    def required(self, view: Any = None, *, scopes: Iterable[str] = ()) -> Any:
        """Require a valid API key for a view, and with ``scopes`` every listed scope.

        Use as ``@keyturn.required`` or ``@keyturn.required(scopes=["orders:read"])`` below
        ``@app.route``, ``@app.get`` or ``@blueprint.route``, never above them, because the route
        decorator registers the function it receives. Above it, this decorator would wrap a view
        that is already registered without the check. The first request to the app raises
        RuntimeError when it finds a view registered that way. Scopes are checked when a request
        arrives, so an invalid scope name raises InvalidInputError on the view's first request.
        """
        if isinstance(scopes, str):
            raise TypeError(
                f"scopes={scopes!r} is a string; pass a list such as scopes=[{scopes!r}]"
            )
        required_scopes = tuple(scopes)
        for scope in required_scopes:
            if not isinstance(scope, str):
                raise TypeError(f"scope {scope!r} is not a string; pass scope names as strings")

        if view is not None:
            if not callable(view):
                raise TypeError(
                    f"@keyturn.required got {view!r}; pass scopes by keyword, as in "
                    "@keyturn.required(scopes=['orders:read'])"
                )
            return _require_key(view, required_scopes)
        return lambda view: _require_key(view, required_scopes)

    def public(self, view: ViewFunction) -> ViewFunction:
        """Mark a view as public, so ``KEYTURN_PROTECT_ALL`` does not authenticate it."""
        if hasattr(view, _REQUIRED_SCOPES_ATTR):
            raise TypeError(
                f"view {view.__name__!r} is already marked @keyturn.required; remove one of the "
                "two decorators"
            )
        setattr(view, _PUBLIC_ATTR, True)
        return view

    def current_key(self) -> KeyInfo | None:
        """Return the key of the current request, or None on a public route."""
        return current_key()


def current_key() -> KeyInfo | None:
    """Return the key of the current request, or None when no key was accepted.

    That is the case on public routes, on rejected requests and outside a request context.
    """
    if not has_request_context():
        return None
    authentication: _Authentication | None = getattr(request, _REQUEST_AUTHENTICATION, None)
    if authentication is None or not authentication[0].allowed:
        return None
    return authentication[0].key


def _require_key(view: ViewFunction, scopes: tuple[str, ...]) -> ViewFunction:
    """Wrap a view so it runs only for a request whose key was accepted with ``scopes``."""
    if getattr(view, _PUBLIC_ATTR, False):
        raise TypeError(
            f"view {view.__name__!r} is already marked @keyturn.public; remove one of the two "
            "decorators"
        )
    required = frozenset(scopes)

    @functools.wraps(view)
    def authenticated_view(*args: Any, **kwargs: Any) -> Any:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        authentication: _Authentication | None = getattr(req, _REQUEST_AUTHENTICATION, None)
        # The before_request hook normally authenticated this request already. It did not when
        # the app lists the endpoint as public, when KeyTurn was never initialised on the app
        # (then _app_state raises), or when another view calls this one directly.
        covered = (
            authentication is not None
            and authentication[0].allowed
            and required <= authentication[1]
        )
        if not covered:
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            state = _app_state(app)
            rejection = _authenticate(state, app, req, _query_items(req), scopes, required)
            if rejection is not None:
                return rejection
        return view(*args, **kwargs)

    setattr(authenticated_view, _REQUIRED_SCOPES_ATTR, scopes)
    for wrapped in _wrapper_chain(view):
        wrappers = (*getattr(wrapped, _REQUIRED_WRAPPERS_ATTR, ()), authenticated_view)
        # NOTE: a callable that takes no attributes, such as a bound method, is left out of the
        # decorator order check.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(wrapped, _REQUIRED_WRAPPERS_ATTR, wrappers)
    return authenticated_view  # type: ignore[return-value]


def _wrapper_chain(function: Any) -> list[Any]:
    """Return ``function`` and the functions it wraps, following ``__wrapped__``."""
    chain = [function]
    while len(chain) < _MAX_WRAPPER_DEPTH:
        wrapped = getattr(chain[-1], "__wrapped__", None)
        if wrapped is None or any(wrapped is seen for seen in chain):
            break
        chain.append(wrapped)
    return chain


def _check_decorator_order(app: Flask) -> None:
    """Raise RuntimeError for a view registered without the ``@keyturn.required`` wrapper of it.

    That happens when ``@keyturn.required`` sits above the route decorator: the route registers
    the plain function, and the wrapper with the key and scope check is never called.
    """
    registered = {
        id(function) for view in app.view_functions.values() for function in _wrapper_chain(view)
    }
    for endpoint, view in app.view_functions.items():
        for wrapper in getattr(view, _REQUIRED_WRAPPERS_ATTR, ()):
            wraps_view = any(function is view for function in _wrapper_chain(wrapper))
            if wraps_view and id(wrapper) not in registered:
                name = getattr(view, "__qualname__", repr(view))
                raise RuntimeError(
                    f"view {name!r} of endpoint {endpoint!r} is registered without its "
                    "@keyturn.required check, because @keyturn.required is above the route "
                    "decorator; put the route decorator (@app.route, @app.get, @blueprint.route) "
                    "above @keyturn.required"
                )


def _request_hook(app: Flask) -> RequestHook:
    """Return the before_request hook of ``app``.

    The hook runs on every request, and in Python its lookups would cost more than verifying a
    cached key. So the native hook decides a request without a query string to a view whose
    requirement is already remembered. It hands every other request to
    ``_authenticate_before_request``, and every outcome that needs lifecycle headers, a signal
    or a rejection response to ``_respond``.
    """
    return RequestHook(
        app,
        request._get_current_object,  # type: ignore[attr-defined]
        key_verified,
        functools.partial(_authenticate_before_request, app),
        functools.partial(_respond, app),
    )


def _before_request_function(hook: RequestHook) -> Callable[[], Response | None]:
    """Return the function registered with ``app.before_request``, which calls ``hook``.

    Flask checks on every request whether each such function is a coroutine function. On the
    benchmark machine that check took 0.25 µs for a Python function and 0.44 µs for a native
    callable, more than the extra Python call costs.
    """

    def authenticate_request() -> Response | None:
        return hook()  # type: ignore[no-any-return]

    return authenticate_request


def _authenticate_before_request(app: Flask, req: Request) -> Response | None:
    """Reject a token in the query string on any request, then authenticate the request unless
    its view is public; return the rejection, if any."""
    state = _app_state(app)
    # A URL is kept in proxy and access logs, so a token in it is rejected and audited as exposed
    # before routing decides anything, on public views and unknown paths too.
    query = _query_items(req)
    if query:
        exposed = state.keyring.check_query(query, _client_addr(state, req))
        if exposed is not None:
            key_rejected.send(app, result=exposed, key=None)
            return Response(exposed.body, status=exposed.status, headers=exposed.headers)

    hook = state.hook
    if not hook.ready:
        _check_decorator_order(app)
        hook.mark_ready(state.binding)

    rule = req.url_rule
    if rule is None:
        # Routing failed (404, 405 or a redirect), so Flask responds without calling a view.
        return None
    if req.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
        # Flask lists the allowed methods for this OPTIONS request itself, and no view runs.
        return None

    endpoint = rule.endpoint
    view = app.view_functions.get(endpoint)
    route = hook.route(endpoint)
    if route is None or route.view is not view:
        route = _route_requirement(state, endpoint, view)
        hook.remember_route(endpoint, route, state.binding)
    if not route.protected:
        return None
    return _authenticate(state, app, req, query, route.scopes, route.scope_set)


def _route_requirement(state: _AppState, endpoint: str, view: Any) -> RouteRequirement:
    """Decide whether the hook authenticates requests to ``endpoint`` and with which scopes.
    Raises InvalidInputError for a required scope name that is not valid."""
    scopes: tuple[str, ...] | None = getattr(view, _REQUIRED_SCOPES_ATTR, None)
    public = getattr(view, _PUBLIC_ATTR, False) or endpoint in state.public_endpoints
    protected = not public and (scopes is not None or state.protect_all)
    return RouteRequirement(view, protected, list(scopes or ()))


def _authenticate(
    state: _AppState,
    app: Flask,
    req: Request,
    query: Sequence[tuple[str, str]],
    scopes: tuple[str, ...],
    scope_set: frozenset[str],
) -> Response | None:
    """Authenticate ``req`` against ``scopes`` (also given as the set ``scope_set``) and return
    the problem response if rejected. ``query`` contains the request's query items.

    When a verification cannot reach the store, the native call returns a 503 result with
    Retry-After.
    """
    # The WSGI environ contains one value per header name, so a header has none or one value.
    # Reading the environ directly takes a fifth of the time of ``headers.get``, whereas
    # ``headers.getlist`` scans the whole environ and cost more per request than the verification.
    environ = req.environ

    # NOTE: keyturn._native raises StoreUnavailableError instead when the store cannot be opened
    # on the first request in a process (such as a database locked by another process), so Flask
    # responds with a 500 until the native call returns the 503 result in that case too.
    result = state.keyring.authenticate_wsgi(
        environ.get(_AUTHORIZATION_ENVIRON_KEY),
        environ.get(state.api_key_environ_key),
        query,
        scopes,
        environ.get("REMOTE_ADDR"),
        environ.get("HTTP_X_FORWARDED_FOR"),
    )
    # A plain tuple, because one is built per request and a named tuple takes eight times as long.
    # The native hook sets the same attribute.
    setattr(req, _REQUEST_AUTHENTICATION, (result, scope_set))
    return _respond(app, result)


def _respond(app: Flask, result: AuthResult) -> Response | None:
    """Send the signal of ``result`` and return its rejection response, or None when allowed."""
    if result.allowed:
        if result.headers:
            # Registered per request rather than as an app-wide after_request function, so a
            # request whose key needs no lifecycle headers, the usual case, pays nothing for it.
            after_this_request(_add_lifecycle_headers)
        # blinker's send costs a call chain even without receivers, and this runs per request.
        if key_verified.receivers:
            key_verified.send(app, key=result.key, result=result)
        return None
    key_rejected.send(app, result=result, key=result.key)
    return Response(result.body, status=result.status, headers=result.headers)


def _client_addr(state: _AppState, req: Request) -> str | None:
    """Return the request's client address: ``remote_addr``, or the client that a proxy listed
    in ``KEYTURN_TRUSTED_PROXIES`` forwarded in ``X-Forwarded-For``. The header is read from the
    environ, which contains one value per header name, because ``headers.getlist`` scans it all."""
    environ = req.environ
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    return state.keyring.client_addr(
        environ.get("REMOTE_ADDR"), [] if forwarded is None else [forwarded]
    )


def _query_items(req: Request) -> Sequence[tuple[str, str]]:
    """Return the decoded query parameters of ``req``, without parsing an empty query string."""
    if not req.environ.get("QUERY_STRING"):
        return ()
    return list(req.args.items(multi=True))


def _environ_key(header: str) -> str:
    """Return the WSGI environ key of an HTTP request header, as PEP 3333 and Werkzeug name it."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _add_lifecycle_headers(response: Response) -> Response:
    """Add API-Key-Status and API-Key-Expires to the response of an accepted request. Flask runs
    it before the app's own ``after_request`` functions, which therefore see the headers."""
    authentication: _Authentication | None = getattr(request, _REQUEST_AUTHENTICATION, None)
    if authentication is not None and authentication[0].allowed:
        for name, value in authentication[0].headers:
            response.headers[name] = value
    return response


def _app_state(app: Flask) -> _AppState:
    state = app.extensions.get(EXTENSION_NAME)
    if not isinstance(state, _AppState):
        raise RuntimeError(
            f"keyturn is not initialised on app {app.name!r}; call KeyTurn(app) or "
            "keyturn.init_app(app) when creating the app"
        )
    return state


def _checked_config_value(app: Flask, key: ConfigKey) -> Any:
    """Return the app's value of ``key``, raising ConfigurationError for a wrong type."""
    value = app.config[key.name]
    # bool is a subclass of int, so a key that accepts int must reject bool explicitly.
    wrong_bool = isinstance(value, bool) and bool not in key.types
    if wrong_bool or not isinstance(value, key.types):
        accepted = " or ".join(_type_name(kind) for kind in key.types)
        # The pepper is a secret, so its value stays out of the message.
        value_text = "set" if key.name == "KEYTURN_PEPPER" else repr(value)
        raise ConfigurationError(
            f"{key.name} is {value_text}, of type {type(value).__name__}; set it to {accepted}"
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if not isinstance(item, str):
                raise ConfigurationError(
                    f"{key.name} contains {item!r}, which is not a string; list names as strings"
                )
    return value


def _type_name(kind: type) -> str:
    return "None" if kind is type(None) else kind.__name__


def _optional_path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


# ---------------------------------------------------------------------------------------------
# flask keys: the same key management as `keyturn keys`, against the app's configured keyring.
# JSON output carries the fields of KeyInfo.to_dict(), plus "token" for a newly issued key.
# ---------------------------------------------------------------------------------------------

keys_cli = AppGroup(
    "keys",
    help="Create, list, show, rotate and revoke API keys, and report on clients of rotated keys.",
)

# The states that ``flask keys list --state`` accepts.
_KEY_STATES = (
    "active",
    "expiring",
    "grace",
    "superseded",
    "rotation_requested",
    "expired",
    "rotated",
    "revoked",
)


class KeysCommandError(click.ClickException):
    """A failed ``flask keys`` command. It exits with code 2, as ``keyturn keys`` does for a
    usage, configuration or store error."""

    exit_code = 2


_TOKEN_WARNING = (
    "warning: this is the only time the token is shown; store it now, because keyturn keeps "
    "only a hash"
)


@contextmanager
def _keyring_for_command() -> Iterator[Keyring]:
    """Yield the app's keyring and turn keyturn errors into one-line ``Error:`` messages."""
    state = current_app.extensions.get(EXTENSION_NAME)
    if not isinstance(state, _AppState):
        raise KeysCommandError(
            f"keyturn is not initialised on app {current_app.name!r}; call KeyTurn(app) or "
            "keyturn.init_app(app) when creating the app"
        )
    try:
        yield state.keyring
    except KeyturnError as error:
        raise KeysCommandError(str(error)) from None


@keys_cli.command("create")
@click.option("--name", required=True, help="Name of the key, 1 to 128 characters.")
@click.option("--owner", help="Owner of the key, such as a team or a service.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="Scope the key grants, such as orders:read; repeat for several.",
)
@click.option(
    "--expires-in",
    metavar="DURATION",
    help="Lifetime counted from now, such as 90d, 12h or 1h30m [default: 90d].",
)
@click.option(
    "--expires-at",
    metavar="RFC3339",
    help="Fixed expiry instant in RFC 3339, such as 2027-01-31T12:00:00Z.",
)
@click.option("--no-expiry", is_flag=True, help="Create a key that never expires.")
@click.option(
    "--grace",
    metavar="DURATION",
    help="How long the key keeps working after it expires [default: 7d].",
)
@click.option(
    "--warn-before",
    metavar="DURATION",
    help="How long before expiry responses report the key as expiring [default: 14d].",
)
@click.option(
    "--no-self-rotation",
    is_flag=True,
    help="Forbid the key from rotating itself with its own token [default: allowed].",
)
@click.option(
    "--max-chain-lifetime",
    metavar="DURATION",
    help="How long the key and its successors may keep rotating themselves [default: 365d].",
)
@click.option(
    "--policy",
    metavar="NAME",
    help="Named policy the key is created under; the options above override its values "
    "[default: default].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def create_command(
    name: str,
    owner: str | None,
    scopes: tuple[str, ...],
    expires_in: str | None,
    expires_at: str | None,
    no_expiry: bool,
    grace: str | None,
    warn_before: str | None,
    no_self_rotation: bool,
    max_chain_lifetime: str | None,
    policy: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its token, which is shown only this once."""
    expiry_options = [
        option
        for option, value in (
            ("--expires-in", expires_in),
            ("--expires-at", expires_at),
            ("--no-expiry", no_expiry),
        )
        if value
    ]
    if len(expiry_options) > 1:
        raise KeysCommandError(
            f"{' and '.join(expiry_options)} were given together; use only one of --expires-in, "
            "--expires-at and --no-expiry"
        )

    with _keyring_for_command() as keyring:
        issued = keyring.create(
            name,
            owner=owner,
            scopes=list(scopes),
            expires_in=expires_in,
            expires_at=expires_at,
            no_expiry=no_expiry,
            grace=grace,
            warn_before=warn_before,
            self_rotation=False if no_self_rotation else None,
            max_chain_lifetime=max_chain_lifetime,
            policy=policy,
        )
    if as_json:
        click.echo(_json_text(_issued_dict(issued)))
        return
    click.echo(f"created {_issued_summary(issued.key)}")
    click.echo(issued.token)
    click.echo(_TOKEN_WARNING, err=True)


@keys_cli.command("list")
@click.option("--owner", help="Only keys of this owner.")
@click.option("--state", type=click.Choice(_KEY_STATES), help="Only keys in this state now.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def list_command(owner: str | None, state: str | None, as_json: bool) -> None:
    """List keys with their state now."""
    with _keyring_for_command() as keyring:
        keys = keyring.list(owner=owner, state=state)
    if as_json:
        click.echo(_json_text([key.to_dict() for key in keys]))
    else:
        click.echo(_key_table(keys), nl=False)


@keys_cli.command("show")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def show_command(key_id: str, as_json: bool) -> None:
    """Show one key; KEY_ID is the 12 characters after the token prefix."""
    with _keyring_for_command() as keyring:
        key = keyring.get(key_id)
    if as_json:
        click.echo(_json_text(key.to_dict()))
    else:
        click.echo(_key_details(key), nl=False)


@keys_cli.command("rotate")
@click.argument("key_id")
@click.option(
    "--overlap",
    metavar="DURATION",
    help="How long the old key keeps working at most, such as 1d or 0s "
    "[default: the default overlap of the key's policy, 1d for the default policy].",
)
@click.option(
    "--overlap-after-first-use",
    metavar="DURATION",
    help="End the overlap this long after the successor's first use, if that comes before "
    "the end set by --overlap, such as 1h [default: the key's policy's value, else none].",
)
@click.option(
    "--replace-unused-successor",
    is_flag=True,
    help="Replace an existing successor that was never used instead of failing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def rotate_command(
    key_id: str,
    overlap: str | None,
    overlap_after_first_use: str | None,
    replace_unused_successor: bool,
    as_json: bool,
) -> None:
    """Issue a successor; the old key keeps working until the end of the overlap window."""
    with _keyring_for_command() as keyring:
        issued = keyring.rotate(
            key_id,
            overlap=overlap,
            replace_unused_successor=replace_unused_successor,
            overlap_after_first_use=overlap_after_first_use,
        )
    # The rotation is committed, so a failed read of the old key must not hide the new token.
    predecessor: KeyInfo | None
    try:
        predecessor = keyring.get(key_id)
    except KeyturnError as error:
        click.echo(f"warning: reading rotated key {key_id} back failed: {error}", err=True)
        predecessor = None

    if as_json:
        value = _issued_dict(issued)
        if predecessor is not None:
            value["predecessor"] = predecessor.to_dict()
        click.echo(_json_text(value))
        return
    overlap_end = predecessor.to_dict().get("overlap_ends_at") if predecessor else None
    click.echo(
        f"rotated key {key_id}; it keeps working until "
        f"{overlap_end or 'the end of its overlap window'}"
    )
    click.echo(f"successor {_issued_summary(issued.key)}")
    click.echo(issued.token)
    click.echo(_TOKEN_WARNING, err=True)


@keys_cli.command("revoke")
@click.argument("key_id", required=False)
@click.option("--owner", help="Revoke every key of this owner that is not revoked yet, at once.")
@click.option(
    "--policy",
    metavar="NAME",
    help="Revoke every key of this named policy that is not revoked yet, at once.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --owner or --policy, list the keys that would be revoked and write nothing.",
)
@click.option(
    "--reason",
    metavar="TEXT",
    help="Reason recorded with the revocation and in the audit log.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def revoke_command(
    key_id: str | None,
    owner: str | None,
    policy: str | None,
    dry_run: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Revoke a key, or every key of an owner or a policy, at once; revocation is final."""
    if sum(value is not None for value in (key_id, owner, policy)) != 1:
        raise click.UsageError("give exactly one of a KEY_ID, --owner and --policy")
    if owner is not None or policy is not None:
        _revoke_selection(owner, policy, reason=reason, dry_run=dry_run, as_json=as_json)
        return
    if dry_run:
        raise click.UsageError(
            "--dry-run applies to --owner and --policy; use `keys show KEY_ID` to see one key"
        )
    with _keyring_for_command() as keyring:
        key = keyring.revoke(key_id, reason=reason)
    if as_json:
        click.echo(_json_text(key.to_dict()))
    else:
        revoked_at = key.to_dict().get("revoked_at") or "now"
        click.echo(f"revoked key {key.key_id} at {revoked_at}")


def _revoke_selection(
    owner: str | None, policy: str | None, *, reason: str | None, dry_run: bool, as_json: bool
) -> None:
    with _keyring_for_command() as keyring:
        if policy is not None:
            report = keyring.revoke_policy(policy, reason=reason, dry_run=dry_run)
        else:
            report = keyring.revoke_owner(owner or "", reason=reason, dry_run=dry_run)
    if as_json:
        click.echo(_json_text(report))
        return
    keys = report["keys"]
    if dry_run:
        live = sum(1 for key in keys if key["state"] != "revoked")
        click.echo(
            f"dry run: {len(keys)} key(s) selected, {live} would be revoked, "
            f"{len(keys) - live} already revoked; nothing was written"
        )
    else:
        click.echo(
            f"revoked {report['revoked']} key(s); {report['already_revoked']} were already revoked"
        )
    for key in keys:
        result = key["result"] or key["state"]
        click.echo(f"{key['key_id']}  {key['state']}  {result.replace('_', ' ')}")


@keys_cli.command("migration-report")
@click.option("--owner", help="Only keys of this owner.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def migration_report_command(owner: str | None, as_json: bool) -> None:
    """List the keys in their overlap window, the soonest to end first, with whether their
    clients moved to the successor: moved, both (old key still used) or not_moved."""
    with _keyring_for_command() as keyring:
        entries = keyring.migration_report(owner=owner)
    if as_json:
        click.echo(_json_text([entry.to_dict() for entry in entries]))
    else:
        click.echo(_migration_table(entries), nl=False)


@keys_cli.command("request-rotation")
@click.argument("key_ids", nargs=-1, metavar="[KEY_ID]...")
@click.option("--owner", help="Every key of this owner.")
@click.option("--policy", metavar="NAME", help="Every key of this named policy.")
@click.option(
    "--by",
    "deadline",
    required=True,
    metavar="INSTANT_OR_DURATION",
    help="Deadline: an RFC 3339 instant such as 2027-01-31T12:00:00Z, or a duration from now "
    "such as 14d. Keys not rotated by then enter their grace period there.",
)
@click.option("--reason", metavar="TEXT", help="Reason recorded in the audit log.")
@click.option(
    "--dry-run", is_flag=True, help="Show what the request would do without changing anything."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of text.")
def request_rotation_command(
    key_ids: tuple[str, ...],
    owner: str | None,
    policy: str | None,
    deadline: str,
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Ask keys to be rotated by a deadline: until they are, responses carry
    API-Key-Status: rotation-requested, and a key not rotated in time enters its grace period at
    the deadline."""
    if sum((owner is not None, policy is not None, bool(key_ids))) != 1:
        raise click.UsageError("give exactly one of --owner, --policy and one or more key ids")
    with _keyring_for_command() as keyring:
        entries = keyring.request_rotation(
            by=deadline,
            owner=owner,
            policy=policy,
            key_ids=list(key_ids) if key_ids else None,
            reason=reason,
            dry_run=dry_run,
        )
    if as_json:
        click.echo(_json_text(entries))
        return
    for entry in entries:
        click.echo(_request_line(entry, dry_run))
    requested = sum(1 for entry in entries if entry["status"] == "requested")
    verb = "would be requested" if dry_run else "requested"
    click.echo(f"{requested} of {len(entries)} keys {verb}")


def _request_line(entry: dict[str, Any], dry_run: bool) -> str:
    """Render one key of a rotation request as ``keyturn keys request-rotation`` does."""
    key_id = entry["key_id"]
    status = entry["status"]
    if status == "requested":
        verb = "would request" if dry_run else "requested"
        return f"{verb} rotation of key {key_id} by {entry['rotation_deadline']}"
    if status == "already_rotated":
        return f"skipped key {key_id}: already rotated; its successor is {entry['successor_id']}"
    reasons = {
        "revoked": "revoked",
        "expired": "expired or in its grace period",
        "not_found": "not found",
    }
    return f"skipped key {key_id}: {reasons.get(status, status)}"


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _issued_dict(issued: IssuedKey) -> dict[str, Any]:
    value = issued.key.to_dict()
    value["token"] = issued.token
    return value


def _text(value: Any) -> str:
    """Render a value of ``KeyInfo.to_dict()`` for people: escaped, or ``-`` when absent."""
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, list):
        return _escape_text(" ".join(str(item) for item in value))
    if isinstance(value, dict):
        return _escape_json_text(json.dumps(value, ensure_ascii=False))
    return _escape_text(str(value))


# Characters escaped in text output besides the control characters (category Cc): the line and
# paragraph separators and the bidirectional formatting characters, which can break or reorder
# a line in a terminal. The `keyturn` CLI escapes the same set.
_LAYOUT_CHARACTERS = frozenset(
    "\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _needs_escape(character: str) -> bool:
    return unicodedata.category(character) == "Cc" or character in _LAYOUT_CHARACTERS


def _escape_text(value: str) -> str:
    r"""Escape free text so it prints on one line and cannot forge output, as ``keyturn`` does:
    ``\\``, ``\n``, ``\r``, ``\t``, and ``\u{1b}`` for the other escaped characters."""
    return "".join(
        _SHORT_ESCAPES.get(character, f"\\u{{{ord(character):x}}}")
        if character == "\\" or _needs_escape(character)
        else character
        for character in value
    )


def _escape_json_text(text: str) -> str:
    """Escape, in JSON text, the characters that ``json.dumps`` leaves raw (DEL, C1 controls,
    separators and bidirectional formatting) as ``\\uXXXX``, so the text stays valid JSON."""
    return "".join(
        f"\\u{ord(character):04x}" if _needs_escape(character) else character for character in text
    )


def _issued_summary(key: KeyInfo) -> str:
    fields = key.to_dict()
    return (
        f"key {fields['key_id']} ({_text(fields['name'])}), owner {_text(fields.get('owner'))}, "
        f"scopes {_text(fields.get('scopes'))}, state {fields['state']}, "
        f"expires {_text(fields.get('expires_at'))}"
    )


# Labels of ``keys show``, in the order of the `keyturn keys show` output.
_DETAIL_LABELS = (
    ("key_id", "key id"),
    ("name", "name"),
    ("owner", "owner"),
    ("scopes", "scopes"),
    ("state", "state"),
    ("created_at", "created at"),
    ("expires_at", "expires at"),
    ("grace", "grace"),
    ("grace_ends_at", "grace ends at"),
    ("warn_before", "warn before"),
    ("revoked_at", "revoked at"),
    ("revocation_reason", "revocation reason"),
    ("rotated_at", "rotated at"),
    ("overlap_ends_at", "overlap ends at"),
    ("successor_id", "successor"),
    ("predecessor_id", "predecessor"),
    ("first_used_at", "first used at"),
    ("last_used_at", "last used at"),
    ("metadata", "metadata"),
)


def _key_details(key: KeyInfo) -> str:
    fields = key.to_dict()
    rows = []
    for field, label in _DETAIL_LABELS:
        if field not in fields:
            continue
        text = _text(fields[field])
        if field == "state" and fields.get("state_deadline"):
            text = f"{text} until {fields['state_deadline']}"
        if field == "metadata":
            text = _escape_json_text(json.dumps(fields[field] or {}, ensure_ascii=False))
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    return "".join(f"{label:<{width}}  {text}\n" for label, text in rows)


def _key_table(keys: list[KeyInfo]) -> str:
    if not keys:
        return "no keys found\n"
    header = ("KEY ID", "NAME", "OWNER", "STATE", "EXPIRES")
    rows = []
    for key in keys:
        fields = key.to_dict()
        rows.append(
            (
                fields["key_id"],
                _text(fields["name"]),
                _text(fields.get("owner")),
                fields["state"],
                _text(fields.get("expires_at")),
            )
        )
    return _table(header, rows)


# Columns of ``keys migration-report``: the fields of MigrationEntry.to_dict() and their titles,
# in the order of the `keyturn keys migration-report` table.
_MIGRATION_COLUMNS = (
    ("key_id", "KEY ID"),
    ("name", "NAME"),
    ("owner", "OWNER"),
    ("status", "STATUS"),
    ("rotated_at", "ROTATED AT"),
    ("overlap_ends_at", "OVERLAP ENDS AT"),
    ("last_used_at", "LAST USED AT"),
    ("last_client_addr", "LAST CLIENT"),
    ("uses_since_rotation", "USES SINCE ROTATION"),
    ("successor_id", "SUCCESSOR"),
    ("successor_first_used_at", "SUCCESSOR FIRST USED AT"),
)


def _migration_table(entries: list[MigrationEntry]) -> str:
    if not entries:
        return "no keys in their overlap window\n"
    header = tuple(title for _, title in _MIGRATION_COLUMNS)
    rows = []
    for entry in entries:
        fields = entry.to_dict()
        rows.append(tuple(_text(fields[field]) for field, _ in _MIGRATION_COLUMNS))
    return _table(header, rows)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Align ``rows`` under ``header`` with two spaces between columns, as ``keyturn`` does."""
    rows = [header, *rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines) + "\n"
