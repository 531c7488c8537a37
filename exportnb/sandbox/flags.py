"""The feature flags the sandbox knows, what values they take, and which need a TTL.

Unknown flags are refused: a typo in an incident must not silently set nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG


@dataclass(frozen=True)
class FlagSpec:
    key: str
    description: str
    check: Callable[[Any, set[str]], Any]
    ttl_required: bool = False


def _bucket(value: Any, buckets: set[str]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{FALLBACK_FLAG} takes a bucket name, not {value!r}")
    if value not in buckets:
        known = ", ".join(sorted(buckets))
        raise PreconditionFailed(f"bucket {value!r} does not exist (buckets: {known})")
    return value


def _boolean(value: Any, _: set[str]) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInput(f"{BULK_PAUSE_FLAG} takes true or false, not {value!r}")


FLAGS: dict[str, FlagSpec] = {
    spec.key: spec
    for spec in (
        FlagSpec(
            FALLBACK_FLAG,
            "Write new exports and retries to this bucket instead of the job's own.",
            _bucket,
            ttl_required=True,
        ),
        FlagSpec(BULK_PAUSE_FLAG, "Hold new bulk exports in the queue.", _boolean),
    )
}


def check_flag(key: str, value: Any, ttl: float | None, buckets: set[str]) -> Any:
    """Validate a flag change; returns the value to store."""
    spec = FLAGS.get(key)
    if spec is None:
        raise InvalidInput(f"unknown flag {key!r} (known: {', '.join(sorted(FLAGS))})")
    if spec.ttl_required and ttl is None:
        raise InvalidInput(f"{key} needs a TTL, for example --ttl 30m")
    return spec.check(value, buckets)


def known_flag(key: str) -> FlagSpec:
    spec = FLAGS.get(key)
    if spec is None:
        raise InvalidInput(f"unknown flag {key!r} (known: {', '.join(sorted(FLAGS))})")
    return spec
