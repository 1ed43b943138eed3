"""keyturn: API key lifecycle for Flask applications.

This package re-exports the compiled core, ``keyturn._native``, which issues, verifies, rotates,
expires and revokes keys. The Flask extension lives in ``keyturn.flask``, and the testing support
for an application's own test suite lives in ``keyturn.testing``. Neither is imported here, so
importing ``keyturn`` alone loads neither Flask nor pytest.
"""

from keyturn._native import (
    AuditEvent,
    AuthResult,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    IssuedKey,
    KeyInfo,
    Keyring,
    KeyturnError,
    ManualClock,
    MigrationEntry,
    NotFoundError,
    StoreUnavailableError,
    __version__,
    init,
)

__all__ = [
    "AuditEvent",
    "AuthResult",
    "ConfigurationError",
    "ConflictError",
    "InvalidInputError",
    "IssuedKey",
    "KeyInfo",
    "Keyring",
    "KeyturnError",
    "ManualClock",
    "MigrationEntry",
    "NotFoundError",
    "StoreUnavailableError",
    "__version__",
    "init",
]
