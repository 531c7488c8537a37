"""Object Lock retention for records on S3: what is put can be neither changed nor deleted.

Where the archive's bucket has Object Lock enabled (``GetObjectLockConfiguration`` says
``ObjectLockEnabled: Enabled``), every object of a record, and its chain entry, is put
with ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` (now plus the retention period).
Configured in ``$EXPORTNB_HOME/config.toml``::

    [archive]
    url = "s3://audit-records/exportnb"
    object_lock_mode = "compliance"     # or "governance"
    object_lock_days = 2555             # about seven years

Unset, the mode and period are those of the bucket's default retention rule, else
governance for :data:`DEFAULT_DAYS` days. In governance mode a principal with
``s3:BypassGovernanceRetention`` can still remove a version; in compliance mode nobody can,
the account's root included, until the date has passed.

A bucket without Object Lock gets no retention (each put is still write-once, with
``If-None-Match: *``). Object Lock can only be enabled on a versioned bucket, so a delete
there leaves a delete marker over a version that is kept, which ``exportnb archive verify``
reports. If the lock configuration cannot be read (``AccessDenied``), no retention is asked
for: the bucket's default rule, if it has one, still applies on S3's side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from exportnb.core.errors import ConfigError
from exportnb.platform import storage

MODES = ("governance", "compliance")
DEFAULT_MODE = "governance"
DEFAULT_DAYS = 365
NOT_CONFIGURED = ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound")


@dataclass(frozen=True)
class RetentionSettings:
    """``[archive] object_lock_mode`` and ``object_lock_days``; None where not set."""

    mode: str | None = None
    days: int | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str = "config") -> RetentionSettings:
        mode, days = table.get("object_lock_mode"), table.get("object_lock_days")
        if mode is not None and (not isinstance(mode, str) or mode.lower() not in MODES):
            raise ConfigError(
                f"{source}: [archive] object_lock_mode must be one of "
                f"{', '.join(MODES)}, not {mode!r}"
            )
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise ConfigError(
                f"{source}: [archive] object_lock_days must be a whole number of "
                f"days, at least 1, not {days!r}"
            )
        return cls(mode.lower() if mode else None, days)


@dataclass(frozen=True)
class Retention:
    """The retention every put asks for: a mode and a period from the time of the put."""

    mode: str
    days: int

    def put_arguments(self, now: datetime | None = None) -> dict[str, Any]:
        until = (now or datetime.now(UTC)) + timedelta(days=self.days)
        return {"ObjectLockMode": self.mode.upper(), "ObjectLockRetainUntilDate": until}


def bucket_retention(s3: Any, bucket: str, settings: RetentionSettings) -> Retention | None:
    """The retention for puts into ``bucket``: None when the bucket has no Object Lock."""
    from botocore.exceptions import ClientError

    try:
        answer = s3.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        error = storage.storage_error(exc, f"GetObjectLockConfiguration {bucket}")
        if error.code in NOT_CONFIGURED or error.code in ("AccessDenied", "NotImplemented"):
            return None
        raise error from exc
    except Exception as exc:
        raise storage.storage_error(exc, f"GetObjectLockConfiguration {bucket}") from exc
    lock = answer.get("ObjectLockConfiguration", {})
    if lock.get("ObjectLockEnabled") != "Enabled":
        return None
    rule = lock.get("Rule", {}).get("DefaultRetention", {})
    rule_days = rule.get("Days") or (rule.get("Years") or 0) * 365 or None
    mode = settings.mode or str(rule.get("Mode") or DEFAULT_MODE).lower()
    return Retention(mode, settings.days or rule_days or DEFAULT_DAYS)
