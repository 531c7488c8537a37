"""Faults the sandbox can inject, and how each one is scoped.

Each fault shows its real symptom somewhere a real platform would show it:

========  ===========================================================  ====================
kind      symptom                                                      where it happens
========  ===========================================================  ====================
throttle  every S3 request to the buckets answers ``503 SlowDown``      S3 fault proxy
timeout   PUTs of chunks of ``min_chunk`` or more answer                S3 fault proxy
          ``400 RequestTimeout`` after ``hold``
corrupt   one segment is stored with bytes that do not match the        export worker
          checksum in the manifest (the job still reports success)
missing   one segment listed in the manifest is never stored            export worker
stuck     the attempt stops heart-beating and stays ``running``         export worker
network   latency, jitter and packet loss on the path to                path emulator
          ``EXPORT_TARGET_HOST``
========  ===========================================================  ====================

Scope parameters (``tenants``, ``connectors``, ``buckets``) narrow a fault to some
jobs; ``rate`` is the share of matching jobs hit, chosen by a stable hash of the job
ID; ``max_attempt`` (default 1) limits worker faults to early attempts, so that a
retry or re-export after the cause is gone really succeeds.

What each fault actually hit is written down where it strikes, as a :class:`FaultHit`: the
export worker reports corrupt, missing and stuck hits (and jobs the impaired network path
failed), the S3 fault proxy its throttled and timed-out requests. Both hand them to a
:data:`HitSink`: in the sandbox daemon the store's ``record_fault_hit``, whose
``fault_hits`` table is the ground truth a diagnosis is scored against
(:mod:`exportnb.sandbox.truth`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exportnb.core.errors import InvalidInput
from exportnb.core.quantities import parse_size, parse_ttl

log = logging.getLogger(__name__)

STORAGE_SCALE = 16384
"""The sandbox stores one byte for every STORAGE_SCALE bytes of an export: a 64MB chunk is a
4KiB object. Sizes shown to users, and the timeout fault's ``min_chunk``, are logical sizes."""

WORKER_FAULTS = ("corrupt", "missing", "stuck")
FAULT_KINDS = ("throttle", "timeout", "corrupt", "missing", "stuck", "network")

_SCOPES = ("tenants", "connectors", "buckets")
_ALLOWED: dict[str, set[str]] = {
    "throttle": {"buckets"},
    "timeout": {"min_chunk", "buckets", "hold"},
    "corrupt": {*_SCOPES, "rate", "max_attempt"},
    "missing": {*_SCOPES, "rate", "max_attempt"},
    "stuck": {*_SCOPES, "rate", "max_attempt"},
    "network": {"latency", "jitter", "loss"},
}


@dataclass(frozen=True)
class Fault:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def in_scope(self, *, tenant: str, connector: str, bucket: str) -> bool:
        for scope, value in (("tenants", tenant), ("connectors", connector), ("buckets", bucket)):
            allowed = self.params.get(scope)
            if allowed and value not in allowed:
                return False
        return True

    def hits(self, *, job_id: str, tenant: str, connector: str, bucket: str, attempt: int) -> bool:
        """Whether this worker fault strikes the given attempt of a job."""
        if self.kind not in WORKER_FAULTS:
            return False
        if attempt > int(self.params.get("max_attempt", 1)):
            return False
        if not self.in_scope(tenant=tenant, connector=connector, bucket=bucket):
            return False
        return _share(f"{self.kind}:{job_id}") < float(self.params.get("rate", 1.0))

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}({shown})" if shown else self.kind


def _share(text: str) -> float:
    """A stable number in [0, 1) for a string."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _names(kind: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"fault {kind}: {key} must be a non-empty list of names")
    return list(value)


def parse_fault(kind: str, params: dict[str, Any] | None = None) -> Fault:
    """Validate a fault's parameters and normalize them (sizes to bytes, durations to seconds)."""
    if kind not in FAULT_KINDS:
        raise InvalidInput(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    raw = dict(params or {})
    unknown = set(raw) - _ALLOWED[kind]
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED[kind]))
        raise InvalidInput(
            f"fault {kind}: unknown parameter(s) {sorted(unknown)} (allowed: {allowed})"
        )
    out: dict[str, Any] = {}
    for scope in _SCOPES:
        if scope in raw:
            out[scope] = _names(kind, scope, raw[scope])
    if kind == "throttle" and "buckets" not in out:
        raise InvalidInput("fault throttle: buckets is required")
    if kind == "timeout":
        if "min_chunk" not in raw:
            raise InvalidInput("fault timeout: min_chunk is required, for example 64MB")
        out["min_chunk"] = parse_size(raw["min_chunk"])
        out["hold"] = parse_ttl(raw.get("hold", "1s"))
    if kind in WORKER_FAULTS:
        rate = raw.get("rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise InvalidInput(f"fault {kind}: rate must be a number in (0, 1]")
        attempt = raw.get("max_attempt", 1)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise InvalidInput(f"fault {kind}: max_attempt must be a whole number of at least 1")
        out["rate"] = float(rate)
        out["max_attempt"] = attempt
    if kind == "network":
        out["latency"] = parse_ttl(raw["latency"]) if "latency" in raw else 0.0
        out["jitter"] = parse_ttl(raw["jitter"]) if "jitter" in raw else 0.0
        loss = raw.get("loss", 0)
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss <= 100:
            raise InvalidInput("fault network: loss must be a percentage from 0 to 100")
        out["loss"] = float(loss)
        if out["latency"] == 0 and out["loss"] == 0:
            raise InvalidInput("fault network: give latency, loss or both")
    return Fault(kind, out)


@dataclass(frozen=True)
class FaultSet:
    """The faults in force at one moment."""

    faults: tuple[Fault, ...] = ()

    def of_kind(self, kind: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind]

    def throttled_buckets(self) -> set[str]:
        return {b for f in self.of_kind("throttle") for b in f.params["buckets"]}

    def timeout_threshold(self, bucket: str) -> tuple[int, float] | None:
        """``(min_chunk, hold)`` of the strictest timeout fault covering ``bucket``."""
        hits = [
            (f.params["min_chunk"], f.params["hold"])
            for f in self.of_kind("timeout")
            if not f.params.get("buckets") or bucket in f.params["buckets"]
        ]
        return min(hits) if hits else None

    def throttle_for(self, bucket: str) -> Fault | None:
        """The first throttle fault covering ``bucket``."""
        found = [f for f in self.of_kind("throttle") if bucket in f.params["buckets"]]
        return found[0] if found else None

    def timeout_for(self, bucket: str) -> Fault | None:
        """The strictest timeout fault covering ``bucket`` (the one :meth:`timeout_threshold`
        reads)."""
        found = [
            f
            for f in self.of_kind("timeout")
            if not f.params.get("buckets") or bucket in f.params["buckets"]
        ]
        return min(found, key=lambda f: (f.params["min_chunk"], f.params["hold"]), default=None)

    def worker_faults(
        self, *, job_id: str, tenant: str, connector: str, bucket: str, attempt: int
    ) -> list[Fault]:
        """The worker faults that strike the given attempt of a job, in order."""
        return [
            f
            for f in self.faults
            if f.hits(
                job_id=job_id, tenant=tenant, connector=connector, bucket=bucket, attempt=attempt
            )
        ]

    def worker_hits(
        self, *, job_id: str, tenant: str, connector: str, bucket: str, attempt: int
    ) -> set[str]:
        return {
            f.kind
            for f in self.worker_faults(
                job_id=job_id, tenant=tenant, connector=connector, bucket=bucket, attempt=attempt
            )
        }

    def network(self) -> Fault | None:
        found = self.of_kind("network")
        return found[-1] if found else None


# What faults hit ----------------------------------------------------------------


@dataclass(frozen=True)
class FaultHit:
    """One thing a fault struck, as the component that struck it saw it.

    ``source`` is ``worker`` or ``s3proxy``. A hit on an export names its ``job_id``,
    ``tenant``, ``attempt`` and ``segment`` (the segment index, for a request or segment of
    it), and ``bucket`` and ``key``; a request the S3 fault proxy throttled that is not an
    export's (a HeadBucket, say) names only its bucket. ``size`` is the logical size of the
    segment or request; ``limit`` the ``min_chunk`` of the timeout fault that held it.
    ``connector`` and ``chunk_size`` are the store's for the attempt when not given.
    """

    kind: str
    source: str
    at: float
    bucket: str = ""
    key: str = ""
    job_id: str | None = None
    tenant: str | None = None
    attempt: int | None = None
    segment: int | None = None
    size: int | None = None
    limit: int | None = None
    fault_id: int | None = None
    connector: str | None = None
    chunk_size: int | None = None


HitSink = Callable[[FaultHit], None]
"""Where hits go: the store's ``record_fault_hit`` in the sandbox daemon."""
