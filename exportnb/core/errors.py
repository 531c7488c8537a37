"""The one exception tree of exportnb.

    ExportnbError
    ├── InvalidInput          bad input from a user: sizes, TTLs, parameters, flags
    ├── NotFound              a job, flag, scenario or record that does not exist
    ├── PreconditionFailed    an action that cannot run in the current state
    ├── ConfigError           a configuration file or setting that cannot be used
    ├── SandboxError          the reference platform is not running, or failed to start
    └── PlatformError         a platform could not answer
        ├── StorageError      S3 said no (throttled, denied, missing bucket, unreachable)
        └── CommandError      an organisation's exportctl/featurectl failed or broke the contract

Vendor errors (botocore, sqlite3, subprocess) are translated at the adapter
boundary with ``raise ... from exc``. The CLI prints ``Error: <message>`` and
exits with ``exit_code``.
"""

from __future__ import annotations


class ExportnbError(Exception):
    """Base of every error exportnb raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ExportnbError):
    """Input that is malformed or out of range. Nothing was changed."""

    exit_code = 2


class NotFound(ExportnbError):
    """Something named by the user does not exist. Nothing was changed."""

    exit_code = 3


class PreconditionFailed(ExportnbError):
    """The action cannot run in the current state. Nothing was changed."""

    exit_code = 4


class ConfigError(ExportnbError):
    """Configuration that cannot be used."""

    exit_code = 2


class SandboxError(ExportnbError):
    """The sandbox is not running, or could not be started or stopped."""

    exit_code = 5


class PlatformError(ExportnbError):
    """A platform could not answer."""

    exit_code = 6


class StorageError(PlatformError):
    """An S3 request failed. ``code`` is the S3 error code, ``status`` the HTTP status."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class CommandError(PlatformError):
    """An external exportctl/featurectl failed or answered outside the JSON contract."""
