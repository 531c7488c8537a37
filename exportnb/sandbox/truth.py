"""Ground truth: what an incident's faults actually struck, read from the sandbox's records.

A diagnosis is judged against what happened, not against what the scenario meant to
happen: a fault scoped to a tenant that ran no job in the window struck nothing, and a
segment spoilt on a job that then failed on a throttled bucket was never delivered.
:func:`read_truth` reads the store's ``fault_hits`` — written where each fault struck, by
the export worker and the S3 fault proxy (:class:`~exportnb.sandbox.faults.FaultHit`) — its
manifests and attempts, and the faults in force, into a :class:`Truth`:

====================  ==========================================================================
``kinds``             the fault kinds that struck anything; ``network`` when a network fault
                      was in force while the path emulator ran (it impairs the path itself)
``jobs``, ``tenants``, what the hits on exports name: every job a fault struck, and its tenant,
``buckets``,          bucket and connector; ``struck``: the jobs each kind struck
``connectors``
``damaged``           the damaged deliveries: ``(job, attempt)`` that wrote a manifest while
                      some of its segments were corrupt or missing, with their ``s3://`` URIs
``timed_out``         per bucket, the chunk sizes of the attempts whose uploads timed out
``timeout_limits``    per bucket, the smallest ``min_chunk`` the proxy held an upload from
``succeeded``         per bucket, the chunk sizes of the attempts that succeeded there since
                      the incident started
``throttled``         the buckets the proxy throttled, or a throttle in force covers
``network``           the network fault's latency, jitter (seconds) and loss (percent)
====================  ==========================================================================

``until`` (a Unix time: when the run being scored started) leaves out what struck later,
since live traffic goes on while a notebook runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exportnb.sandbox.faults import FaultHit
from exportnb.sandbox.state import running_state
from exportnb.sandbox.store import Store

DAMAGE_KINDS = ("corrupt", "missing")
"""The kinds of fault that damage a delivery rather than fail it."""


@dataclass(frozen=True)
class Delivery:
    """One damaged delivery: an attempt of a job that wrote its manifest with corrupt or
    missing segments (``uris``: ``s3://bucket/key`` of each)."""

    job_id: str
    attempt: int
    tenant: str
    connector: str
    bucket: str
    kinds: tuple[str, ...]
    uris: tuple[str, ...]


@dataclass(frozen=True)
class NetworkImpairment:
    """The network fault in force: latency and jitter in seconds, loss in percent."""

    latency: float
    jitter: float
    loss: float


@dataclass(frozen=True)
class Truth:
    """What an incident's faults struck (see the module's table)."""

    kinds: frozenset[str] = frozenset()
    jobs: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    buckets: frozenset[str] = frozenset()
    connectors: frozenset[str] = frozenset()
    struck: dict[str, frozenset[str]] = field(default_factory=dict)
    damaged: tuple[Delivery, ...] = ()
    timed_out: dict[str, tuple[int, ...]] = field(default_factory=dict)
    timed_out_jobs: dict[str, str] = field(default_factory=dict)  # job -> bucket
    timeout_limits: dict[str, int] = field(default_factory=dict)
    succeeded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    throttled: frozenset[str] = frozenset()
    known_buckets: frozenset[str] = frozenset()
    network: NetworkImpairment | None = None
    hits: int = 0
    until: float | None = None

    @property
    def control(self) -> bool:
        """Whether nothing was struck: a healthy control."""
        return not self.kinds

    def scope(self, dimension: str) -> frozenset[str]:
        """The ``buckets``, ``tenants`` or ``connectors`` the faults struck."""
        found: frozenset[str] = getattr(self, dimension)
        return found

    def smallest_timeout(self, buckets: Iterable[str] | None = None) -> int | None:
        """The smallest chunk size that timed out on these buckets (default: any)."""
        chosen = (
            self.timed_out if buckets is None else {b: self.timed_out.get(b, ()) for b in buckets}
        )
        sizes = [size for found in chosen.values() for size in found]
        return min(sizes) if sizes else None

    def describe(self) -> str:
        """One line: what struck, and how widely."""
        if self.control:
            return "nothing struck (a healthy control)"
        return (
            f"{', '.join(sorted(self.kinds))} struck {len(self.jobs)} job(s) of "
            f"{len(self.tenants)} tenant(s) on {len(self.buckets)} bucket(s); "
            f"{len(self.damaged)} damaged deliveries"
        )


def read_truth(store: Store, *, until: float | None = None, path_emulated: bool = False) -> Truth:
    """The truth of the incident in ``store``, up to ``until`` (default: everything so far).

    ``path_emulated``: whether the sandbox's path emulator ran, without which a network
    fault impairs nothing (the sandbox state says, :func:`truth_of`).
    """
    hits = store.fault_hits(until)
    since = float(store.get_meta("incident_start", 0.0))
    in_force = _in_force(store.all_faults(), since, until)
    exports = [h for h in hits if h.job_id]
    network = _network(in_force) if path_emulated else None
    kinds = {h.kind for h in hits} | ({"network"} if network else set())
    timeouts = [h for h in exports if h.kind == "timeout"]
    return Truth(
        kinds=frozenset(kinds),
        jobs=frozenset(str(h.job_id) for h in exports),
        tenants=frozenset(h.tenant for h in exports if h.tenant),
        buckets=frozenset(h.bucket for h in exports if h.bucket),
        connectors=frozenset(h.connector for h in exports if h.connector),
        struck={
            kind: frozenset(str(h.job_id) for h in exports if h.kind == kind)
            for kind in sorted({h.kind for h in exports})
        },
        damaged=_damaged(store, exports),
        timed_out=_sizes_by_bucket((h.bucket, h.chunk_size) for h in timeouts),
        timed_out_jobs={str(h.job_id): h.bucket for h in timeouts},
        timeout_limits=_limits(timeouts),
        succeeded={
            bucket: tuple(sizes)
            for bucket, sizes in store.succeeded_chunk_sizes(since, until or float("inf")).items()
        },
        throttled=_throttled(hits, in_force),
        known_buckets=frozenset(name for name, _, _ in store.buckets()),
        network=network,
        hits=len(hits),
        until=until,
    )


def truth_of(home: Path | None = None, *, until: float | None = None) -> Truth:
    """The truth of the running sandbox of ``home`` (default: ``$EXPORTNB_HOME``)."""
    state = running_state(home)
    store = Store(Path(state.store))
    try:
        return read_truth(store, until=until, path_emulated=state.path_emulated)
    finally:
        store.close()


Injected = tuple[int, str, dict[str, Any], float, float | None]


def _in_force(faults: list[Injected], since: float, until: float | None) -> list[Injected]:
    """The faults injected by ``until`` and not cleared before the incident started."""
    return [
        f for f in faults if (until is None or f[3] <= until) and (f[4] is None or f[4] >= since)
    ]


def _network(faults: list[Injected]) -> NetworkImpairment | None:
    """The network fault the path emulator applies: the last one (``FaultSet.network``)."""
    found = [params for _, kind, params, _, _ in faults if kind == "network"]
    if not found:
        return None
    params = found[-1]
    return NetworkImpairment(
        float(params.get("latency", 0.0)),
        float(params.get("jitter", 0.0)),
        float(params.get("loss", 0.0)),
    )


def _throttled(hits: list[FaultHit], faults: list[Injected]) -> frozenset[str]:
    struck = {h.bucket for h in hits if h.kind == "throttle" and h.bucket}
    covered = {
        b for _, kind, params, _, _ in faults if kind == "throttle" for b in params["buckets"]
    }
    return frozenset(struck | covered)


def _damaged(store: Store, exports: list[FaultHit]) -> tuple[Delivery, ...]:
    """Deliveries with corrupt or missing segments, in the order they were struck."""
    struck: dict[tuple[str, int], list[FaultHit]] = {}
    for hit in exports:
        if hit.kind in DAMAGE_KINDS and hit.attempt is not None:
            struck.setdefault((str(hit.job_id), hit.attempt), []).append(hit)
    delivered = store.delivered(struck)
    return tuple(
        Delivery(
            job_id,
            attempt,
            hits[0].tenant or "",
            hits[0].connector or "",
            hits[0].bucket,
            tuple(sorted({h.kind for h in hits})),
            tuple(f"s3://{h.bucket}/{h.key}" for h in hits if h.key),
        )
        for (job_id, attempt), hits in struck.items()
        if (job_id, attempt) in delivered
    )


def _sizes_by_bucket(pairs: Iterable[tuple[str, int | None]]) -> dict[str, tuple[int, ...]]:
    found: dict[str, set[int]] = {}
    for bucket, size in pairs:
        if size is not None:
            found.setdefault(bucket, set()).add(size)
    return {bucket: tuple(sorted(sizes)) for bucket, sizes in sorted(found.items())}


def _limits(timeouts: list[FaultHit]) -> dict[str, int]:
    found: dict[str, int] = {}
    for hit in timeouts:
        if hit.limit is not None:
            found[hit.bucket] = min(hit.limit, found.get(hit.bucket, hit.limit))
    return found
