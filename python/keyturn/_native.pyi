"""Type stubs of ``keyturn._native``, the compiled core of keyturn (Rust, built with PyO3).

Every decision (token parsing, key state, problem responses) is computed in Rust so that the Flask
extension, the ``keyturn`` CLI and ``keyturn serve`` return identical results. Native state (the
tokio runtime, the database pool, background threads) is created lazily on first use in each
process, so a ``Keyring`` built before ``gunicorn`` forks its workers works in every worker.
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

__version__: str

class KeyturnError(Exception):
    """Base class of every keyturn error."""

class ConfigurationError(KeyturnError):
    """Invalid or missing configuration: database URL, pepper, token prefix, realm."""

class InvalidInputError(KeyturnError, ValueError):
    """An argument was rejected: a duration, instant, scope, name or key id."""

class NotFoundError(KeyturnError, LookupError):
    """No key has the given key id."""

class ConflictError(KeyturnError):
    """The change conflicts with the key's state: already rotated, revoked, expired."""

class StoreUnavailableError(KeyturnError):
    """The key store could not be reached, and no cached answer was fresh enough."""

class ManualClock:
    """A clock that stays still until moved. Share one between a Keyring and a test."""

    def __init__(self, start: datetime | None = None) -> None: ...
    def now(self) -> datetime: ...
    def set(self, instant: datetime) -> None: ...
    def advance(self, duration: timedelta | str) -> None: ...

class KeyInfo:
    """A key as stored, with its state at the instant it was read. It never contains a token."""

    key_id: str
    name: str
    owner: str | None
    scopes: list[str]
    state: str
    created_at: datetime
    expires_at: datetime | None
    grace_ends_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None
    rotated_at: datetime | None
    overlap_ends_at: datetime | None
    rotation_requested_at: datetime | None
    rotation_deadline: datetime | None
    successor_id: str | None
    predecessor_id: str | None
    first_used_at: datetime | None
    last_used_at: datetime | None
    #: Whether the key may rotate itself with its own token.
    self_rotation: bool
    #: When its rotation chain ends: self-rotation is rejected from then on.
    chain_ends_at: datetime
    metadata: dict[str, Any]
    policy: str
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready values, instants as RFC 3339 strings in UTC."""

class IssuedKey:
    """A newly created or rotated key and its token, which is shown only this once."""

    key: KeyInfo
    token: str

class AuthResult:
    """The outcome of authenticating one request, with the exact response to send when rejected."""

    allowed: bool
    #: active, expiring, grace, superseded, expired, rotated, revoked, invalid, or the request-level
    #: codes missing_credentials, invalid_request, insufficient_scope, too_many_requests,
    #: store_unavailable.
    code: str
    #: The key's state when a key was verified (including insufficient_scope), else None.
    outcome: str | None
    #: 200 when allowed, else the status of the problem response.
    status: int
    #: Lifecycle headers to add when allowed; the full problem headers when rejected.
    headers: list[tuple[str, str]]
    #: The problem+json body when rejected; empty when allowed.
    body: bytes
    #: The key when its secret matched, else None.
    key: KeyInfo | None

class RouteRequirement:
    """The requirement of the Flask hook for requests to one endpoint."""

    def __init__(self, view: Any, protected: bool, scopes: list[str]) -> None: ...
    #: The view this was decided for.
    view: Any
    protected: bool
    scopes: tuple[str, ...]
    scope_set: frozenset[str]

class RequestHook:
    """The Flask extension's before_request hook, with its common case in native code."""

    def __init__(
        self,
        app: Any,
        current_request: Callable[[], Any],
        key_verified: Any,
        slow: Callable[[Any], Any],
        finish: Callable[[AuthResult], Any],
    ) -> None: ...
    def bind(self, keyring: Keyring, api_key_environ_key: str) -> int: ...
    def route(self, endpoint: str) -> RouteRequirement | None: ...
    def remember_route(self, endpoint: str, route: RouteRequirement, binding: int) -> None: ...
    @property
    def ready(self) -> bool: ...
    def mark_ready(self, binding: int) -> None: ...
    def __call__(self) -> Any: ...

class AuditEvent:
    seq: int
    at: datetime
    event: str
    key_id: str | None
    actor: str
    client_addr: str | None
    reason: str | None
    details: dict[str, Any]
    def to_dict(self) -> dict[str, Any]: ...

class MigrationEntry:
    """One key of the migration report: a rotated key in its overlap window and its successor.

    Usage is written behind the verify path, so the report lags each process's clients by up to
    one flush interval (1 s by default).
    """

    key_id: str
    name: str
    owner: str | None
    rotated_at: datetime
    overlap_ends_at: datetime
    #: The old key's latest use.
    last_used_at: datetime | None
    #: The client address of the old key's latest use that a usage flush recorded.
    last_client_addr: str | None
    #: Allowed verifications of the old key after its rotation, counted per flush interval.
    uses_since_rotation: int
    successor_id: str
    #: The successor's first use; None while no client has moved to it.
    successor_first_used_at: datetime | None
    #: moved, both (the old key was used at or after the successor's first use) or not_moved.
    status: str
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready values, instants as RFC 3339 strings in UTC."""

class Keyring:
    """The keyturn service over one database and one pepper ring.

    Unset arguments fall back to the environment (``KEYTURN_DATABASE_URL``, ``KEYTURN_PEPPER``,
    ``KEYTURN_PEPPER_FILE``) and then to ``keyturn.db`` in the working directory with the pepper
    file next to it. The pepper is loaded here, so a missing pepper raises ConfigurationError at
    construction; the database is opened on first use in each process.
    """

    def __init__(
        self,
        *,
        database_url: str | None = None,
        pepper: str | None = None,
        pepper_file: str | None = None,
        token_prefix: str = "kt_live",
        realm: str = "api",
        api_key_header: str = "X-API-Key",
        query_parameters: Sequence[str] | None = None,
        strict: bool = False,
        max_staleness: timedelta | str = "1s",
        poll_interval: timedelta | str = "250ms",
        flush_interval: timedelta | str = "1s",
        create_if_missing: bool = False,
        clock: ManualClock | None = None,
        trusted_proxies: Sequence[str] | None = None,
        guard: bool = True,
        guard_max_failures: int = 20,
        guard_window: timedelta | str = "60s",
        guard_cooldown: timedelta | str = "60s",
    ) -> None: ...
    @property
    def database_path(self) -> str | None:
        """The absolute path of the SQLite database."""
    @property
    def pepper_source(self) -> str:
        """The pepper file's absolute path, or the variable name when given as a value."""
    def authenticate(
        self,
        authorization: Sequence[str],
        api_key: Sequence[str],
        query: Sequence[tuple[str, str]],
        scopes: Sequence[str] = (),
        client_addr: str | None = None,
    ) -> AuthResult:
        """Authenticate a request from its header values and query parameters.

        A failed verification counts against ``client_addr`` in the brute-force guard, which may
        reject it with 429; pass the address that ``client_addr()`` returns.
        """
    def authenticate_wsgi(
        self,
        authorization: str | None,
        api_key: str | None,
        query: Sequence[tuple[str, str]],
        scopes: Sequence[str],
        remote_addr: str | None,
        forwarded_for: str | None,
    ) -> AuthResult:
        """Authenticate a request from the values of a WSGI environ, which holds one value per
        header: the same as ``authenticate`` with the address ``client_addr()`` returns."""
    def client_addr(self, remote_addr: str | None, forwarded_for: Sequence[str] = ()) -> str | None:
        """Return the client address of a request from ``remote_addr`` with these
        ``X-Forwarded-For`` values: ``remote_addr`` itself unless it is one of
        ``trusted_proxies``, else the right-most forwarded address that is not."""
    def check_query(
        self, query: Sequence[tuple[str, str]], client_addr: str | None = None
    ) -> AuthResult | None:
        """Return the 400 result when the query string carries a token, else None.

        The exposed key is audited as ``authn_token_exposed``. Call it for every request, public
        routes and unknown paths included, because URLs end up in proxy and access logs.
        """
    def verify(self, token: str, scopes: Sequence[str] = ()) -> AuthResult:
        """Verify a bare token; raises StoreUnavailableError when the store is needed and down."""
    def create(
        self,
        name: str,
        *,
        owner: str | None = None,
        scopes: Sequence[str] = (),
        expires_in: timedelta | str | None = None,
        expires_at: datetime | str | None = None,
        no_expiry: bool = False,
        grace: timedelta | str | None = None,
        warn_before: timedelta | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        self_rotation: bool | None = None,
        max_chain_lifetime: timedelta | str | None = None,
        policy: str | None = None,
    ) -> IssuedKey: ...
    def rotate(
        self,
        key_id: str,
        *,
        overlap: timedelta | str | None = None,
        replace_unused_successor: bool = False,
        overlap_after_first_use: timedelta | str | None = None,
    ) -> IssuedKey: ...
    def revoke(self, key_id: str, *, reason: str | None = None) -> KeyInfo: ...
    def revoke_owner(
        self, owner: str, *, reason: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Revoke every key of ``owner`` in one transaction, or list them with ``dry_run``.

        Returns the form of ``keyturn keys revoke --owner --json``: ``keys`` (key id, name,
        owner, state and result of each), ``revoked``, ``already_revoked`` and ``dry_run``.
        """
    def revoke_policy(
        self, policy: str, *, reason: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Revoke every key of the named policy ``policy`` in one transaction, or list them with
        ``dry_run``. Returns the form of ``revoke_owner``. Raises ``ValueError`` when no such
        policy exists.
        """
    def get(self, key_id: str) -> KeyInfo: ...
    def list(self, *, owner: str | None = None, state: str | None = None) -> list[KeyInfo]: ...
    def audit(self, *, key_id: str | None = None, event: str | None = None) -> list[AuditEvent]: ...
    def migration_report(self, *, owner: str | None = None) -> list[MigrationEntry]:
        """List the keys in their overlap window now, the soonest to end first.

        Raises KeyturnError when more than 100,000 keys match; filter by owner then.
        """
    def request_rotation(
        self,
        *,
        by: datetime | timedelta | str,
        owner: str | None = None,
        policy: str | None = None,
        key_ids: list[str] | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Ask keys, by owner, by policy or by key id, to be rotated by ``by``: an aware datetime, a
        timedelta or duration string from now, or an RFC 3339 string. Keys already rotated, revoked
        or expired are reported in the result, not raised."""
    def run_scheduler(self) -> dict[str, Any]:
        """Record the lifecycle events that time alone caused since the scheduler last ran, once per
        key and event, request the rotation of keys that reached their policy's ``rotate_every``,
        and return the range it looked at, the events it recorded and the rotations it requested."""
    def flush(self) -> None:
        """Write queued usage counters, rehashes, exposure reports and guard events now."""
    def sync(self) -> None:
        """Apply changes made by other processes to this process's cache now."""
    def close(self) -> None:
        """Stop background work in this process after a final flush; later calls reopen."""

def init(
    database_url: str | None = None, *, pepper_file: str | None = None
) -> tuple[str, str | None, bool]:
    """Create the database and, unless KEYTURN_PEPPER is set, the pepper file (mode 0600).

    Returns the database path, the pepper file path (None when the pepper comes from
    KEYTURN_PEPPER) and whether the pepper file was created now.
    """
