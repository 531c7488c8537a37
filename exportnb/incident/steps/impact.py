"""The impact sweep: every delivery of the incident verified, not a sample.

Diagnostics 3 verifies the reported jobs and a few others (:mod:`.checksums`): enough to see
*whether* deliveries are damaged, not *which*. Once checksums are in question (customers
reported job IDs, a mismatch was found, or the sweep was asked for) :func:`impact_sweep`
verifies every delivery (an attempt of a job that wrote a manifest) made in
``[since, until)`` — in the notebook, from the estimated incident start less a margin to
the time the incident is judged at — across all tenants, buckets and connectors:

1. ``Platform.deliveries(since, until, limit=cap)`` lists them, oldest first, and says how
   many the window holds;
2. ``Platform.manifests`` reads their manifests in batches, one batch per worker, the first
   alone (:class:`~.checksums.FirstAlone`);
3. every segment's stored SHA-256 is compared with its manifest's (HeadObject in checksum
   mode, or a download with ``rehash``), all in one bounded thread pool with one S3 client,
   segments queued as each batch of manifests arrives (the pieces of :mod:`.checksums`).

Nothing is sampled, and nothing unverified is counted as passed. A delivery ends
``passed``, ``failed`` (a segment mismatched or missing: damaged, even where other segments
could not be checked) or ``unverified``: its manifest could not be read, storage answered
with errors (after :data:`BREAKER` errors in a row on a bucket its other segments are not
asked for), or the sweep ran out of time (``timeout``). At most ``cap`` deliveries are
verified, the oldest first; beyond that the sweep is *partial*, and so it is with any
delivery unverified: a finding (:data:`IMPACT_PARTIAL`) and the record say
"partial: N of M deliveries verified" and which deliveries are not.

``progress`` is called (from the calling thread, at most every :data:`PROGRESS_EVERY`
seconds, and once at the end) with a :class:`SweepProgress`; the notebook turns it into a
line that updates in place (:func:`exportnb.notebook.display.sweep_progress`), a command
line into a line on stderr (:func:`print_progress`).

The result (:class:`ImpactSweep`) lists the affected jobs, tenants, buckets and files
(``s3://bucket/key`` of each damaged segment), the first and last damaged delivery, where
the damage concentrates (by tenant, connector, bucket and attempt) and the verified,
unverified and total counts. Its findings are the checksum step's codes
(``checksum_mismatch``, ``missing_segments``) over every damaged delivery, so that the
re-export and notify-tenants recommendations cover them all.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any, ClassVar, TypedDict

from exportnb.core.codec import format_time, readable_time
from exportnb.core.errors import ExportnbError, InvalidInput, StorageError
from exportnb.core.findings import CHECKSUM_MISMATCH, MISSING_SEGMENTS, Finding
from exportnb.incident.steps.baseline import as_utc
from exportnb.incident.steps.checksums import (
    FirstAlone,
    SegmentChecker,
    SegmentOutcome,
    checksum_client,
    error_text,
    segment_check,
    tally,
)
from exportnb.platform import Platform
from exportnb.platform.base import Delivery, ManifestOutcome
from exportnb.platform.model import Manifest, Segment

STEP = "checksums"
IMPACT_PARTIAL = "impact_partial"
"""The sweep did not verify every delivery of its window (the cap, errors, a timeout)."""
IMPACT_UNSWEPT = "impact_unswept"
"""Checksums are in question but the sweep was turned off: the impact is unknown."""
DECISIONS = ("run", "not_needed", "turned_off")
"""Whether a sweep runs: it does; checksums are not in question; it was turned off."""
DEFAULT_CAP = 5000
"""The most deliveries a sweep verifies by default."""
MAX_CAP = 100_000
"""The most deliveries a sweep may be asked to verify."""
TIMEOUT = 600.0
"""Seconds a sweep may take by default; what is left then is unverified."""
BREAKER = 25
"""Storage errors in a row on one bucket after which its other segments are not asked for."""
PROGRESS_EVERY = 0.25
"""Seconds between progress reports."""
BATCH = 500
"""The most deliveries whose manifests are read in one ``Platform.manifests`` call."""
STATES = ("passed", "failed", "unverified")


# The result -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryCheck:
    """One delivery compared with what storage holds."""

    job_id: str
    attempt: int | None
    tenant: str
    connector: str
    bucket: str
    delivered_at: datetime | None
    state: str  # passed | failed | unverified
    segments: int = 0
    ok: int = 0
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    manifest_key: str | None = None

    @property
    def name(self) -> str:
        """``job#attempt`` (the job alone where the attempt is unknown)."""
        return self.job_id if self.attempt is None else f"{self.job_id}#{self.attempt}"

    @property
    def files(self) -> list[str]:
        """``s3://bucket/key`` of every mismatched or missing segment."""
        return [f"s3://{self.bucket}/{key}" for key in [*self.mismatched, *self.missing]]


@dataclass(frozen=True)
class Concentration:
    """How many deliveries of one tenant (connector, bucket, attempt) were damaged, of those
    verified."""

    dimension: str  # tenant | connector | bucket | attempt
    value: str
    damaged: int
    verified: int

    @property
    def share(self) -> float:
        return self.damaged / self.verified if self.verified else 0.0


@dataclass(frozen=True)
class ImpactSweep:
    """Every delivery of a window verified: what is damaged, where, and what is not known."""

    KIND: ClassVar[str] = "impact-sweep/v1"
    ran: bool
    reason: str
    since: datetime | None = None
    until: datetime | None = None
    cap: int = DEFAULT_CAP
    total: int = 0  # deliveries the window holds (at least this many if not total_exact)
    total_exact: bool = True
    listed: int = 0  # deliveries taken for verification: at most cap
    verified: int = 0  # passed or damaged
    passed: int = 0
    segments: int = 0  # segments checked
    capped: bool = False
    timed_out: bool = False
    damaged: list[DeliveryCheck] = field(default_factory=list)
    unverified: list[DeliveryCheck] = field(default_factory=list)
    affected_jobs: list[str] = field(default_factory=list)
    affected_tenants: list[str] = field(default_factory=list)
    affected_buckets: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    first_damaged: DeliveryCheck | None = None
    last_damaged: DeliveryCheck | None = None
    concentration: list[Concentration] = field(default_factory=list)
    verified_until: datetime | None = None  # the newest delivery taken, when capped
    mode: str = "checksum"
    elapsed: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def partial(self) -> bool:
        """Whether some delivery of the window is not verified."""
        return self.ran and (self.verified < self.total or not self.total_exact)

    @property
    def coverage(self) -> str:
        """``N of M deliveries verified`` (``partial: `` first when it is)."""
        total = f"{self.total:,}" if self.total_exact else f"at least {self.total:,}"
        text = f"{self.verified:,} of {total} deliveries verified"
        return f"partial: {text}" if self.partial else text

    def counts(self, dimension: str) -> dict[str, int]:
        """Damaged deliveries by tenant, connector, bucket or attempt, most first."""
        return {c.value: c.damaged for c in self.concentration if c.dimension == dimension}


@dataclass(frozen=True)
class SweepProgress:
    """How far a sweep is: deliveries done (of ``total``), damaged and unverified so far."""

    done: int
    total: int
    damaged: int
    unverified: int
    segments: int
    elapsed: float

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def line(self) -> str:
        """One line for people: ``Impact sweep: 1,200 of 2,000 deliveries ...``."""
        state = "done" if self.finished else "running"
        return (
            f"Impact sweep {state}: {self.done:,} of {self.total:,} deliveries checked "
            f"({self.segments:,} segments), {self.damaged:,} damaged, "
            f"{self.unverified:,} unverified, {self.elapsed:.1f} s"
        )


Progress = Callable[[SweepProgress], None]


class SweepOptions(TypedDict):
    """What :func:`impact_sweep` is told of an incident: its window, the cap, whether to run
    and why (``Incident.sweep_options``)."""

    since: datetime
    until: datetime
    cap: int
    decision: str
    reason: str


def print_progress(stream: IO[str] | None = None) -> Progress:
    """Progress as one line on ``stream`` (stderr), rewritten in place; a new line at the end."""
    out = stream or sys.stderr

    def show(progress: SweepProgress) -> None:
        end = "\n" if progress.finished else ""
        out.write("\r" + progress.line() + end)
        out.flush()

    return show


# The sweep ------------------------------------------------------------------------------
def impact_sweep(
    platform: Platform,
    *,
    since: datetime,
    until: datetime,
    cap: int = DEFAULT_CAP,
    decision: str = "run",
    reason: str = "",
    workers: int = 8,
    rehash: bool = False,
    timeout: float = TIMEOUT,
    progress: Progress | None = None,
    s3: Any = None,
) -> ImpactSweep:
    """Verify every delivery made in ``[since, until)``, at most ``cap`` (the oldest first).

    ``decision`` (:data:`DECISIONS`) says whether it runs, ``reason`` why (or why not).
    ``workers`` bounds the requests in flight, ``timeout`` the seconds it may take; ``s3``
    is a client to use instead of the one made for the platform's storage. Raises
    InvalidInput for a bad argument (a cap below 1, naive or reversed times, ...).
    """
    since, until = _window(since, until)
    _check(cap, decision, workers, timeout)
    mode = "rehash" if rehash else "checksum"
    if decision != "run":
        return _not_run(decision, reason, since, until, cap, mode)
    began = time.monotonic()
    window = platform.deliveries(since, until, limit=cap)
    run = _Run(platform, s3, workers, rehash, began + timeout, progress)
    checks = run.verify(window.items)
    found = _Found(since, until, cap, window.total, window.exact, checks, run.timed_out, mode)
    return found.result(reason, time.monotonic() - began)


def _window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    since, until = as_utc(since, "since"), as_utc(until, "until")
    if since >= until:
        raise InvalidInput(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
        )
    return since, until


def _check(cap: int, decision: str, workers: int, timeout: float) -> None:
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_CAP:
        raise InvalidInput(f"the cap must be a whole number from 1 to {MAX_CAP:,}, not {cap!r}")
    if decision not in DECISIONS:
        raise InvalidInput(f"decision {decision!r}: use one of {', '.join(DECISIONS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"workers must be a whole number of at least 1, not {workers!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidInput(f"timeout must be a number of seconds above 0, not {timeout!r}")


def _not_run(
    decision: str, reason: str, since: datetime, until: datetime, cap: int, mode: str
) -> ImpactSweep:
    findings = []
    if decision == "turned_off":
        findings.append(
            Finding(
                IMPACT_UNSWEPT,
                "warning",
                f"Impact not swept: {reason}. Only the jobs verified above were checked: "
                "other deliveries, tenants and files may be damaged too",
                STEP,
                {"since": format_time(since), "until": format_time(until), "reason": reason},
            )
        )
    return ImpactSweep(False, reason, since, until, cap, mode=mode, findings=findings)


# One sweep's work: manifests in batches, segments in one pool -------------------------
class _Pending:
    """One delivery whose segment checks are under way: the outcomes as they come in."""

    def __init__(self, delivery: Delivery, manifest: Manifest, done: queue.Queue[Any]) -> None:
        self.delivery, self.manifest, self._done = delivery, manifest, done
        self.outcomes: list[SegmentOutcome] = []
        self._lock = threading.Lock()

    def check(self) -> DeliveryCheck:
        return delivery_check(self.delivery, self.manifest, self.outcomes)

    def add(self, outcome: SegmentOutcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            finished = len(self.outcomes) == len(self.manifest.segments)
        if finished:
            self._done.put(self)


class _Breaker:
    """Counts storage errors in a row per bucket; past :data:`BREAKER`, asks no more."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self._lock = limit or BREAKER, threading.Lock()
        self._errors: dict[str, int] = {}
        self._open: dict[str, StorageError] = {}

    def wrap(self, bucket: str, check: SegmentChecker) -> SegmentChecker:
        def guarded(segment: Segment) -> SegmentOutcome:
            opened = self._open.get(bucket)
            if opened is not None:
                return StorageError(
                    f"not checked: {self.limit} requests in a row to {bucket} failed "
                    f"({opened.message})",
                    code="Skipped",
                )
            outcome = check(segment)
            self._count(bucket, outcome)
            return outcome

        return guarded

    def _count(self, bucket: str, outcome: SegmentOutcome) -> None:
        with self._lock:
            if not isinstance(outcome, StorageError):
                self._errors[bucket] = 0
                return
            self._errors[bucket] = self._errors.get(bucket, 0) + 1
            if self._errors[bucket] >= self.limit:
                self._open.setdefault(bucket, outcome)


class _Run:
    """The work of one sweep: one pool, one client, one queue of what has finished (a batch
    of manifests read, or a delivery's segments all checked)."""

    def __init__(
        self,
        platform: Platform,
        s3: Any,
        workers: int,
        rehash: bool,
        deadline: float,
        progress: Progress | None,
    ) -> None:
        self.platform, self.s3, self.workers, self.rehash = platform, s3, workers, rehash
        self.deadline, self.progress = deadline, progress
        self.finished: queue.Queue[Any] = queue.Queue()
        self.breaker = _Breaker()
        self.timed_out = False
        self.checks: dict[Delivery, DeliveryCheck] = {}
        self._states: Counter[str] = Counter()
        self._segments = 0
        self._began, self._reported = time.monotonic(), 0.0

    def verify(self, deliveries: list[Delivery]) -> list[DeliveryCheck]:
        """Each delivery's check, in the order given."""
        if deliveries and self.s3 is None:
            self.s3 = checksum_client(self.platform, pool=self.workers)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sweep")
        try:
            self._collect(pool, deliveries)
        finally:
            pool.shutdown(wait=not self.timed_out, cancel_futures=True)
        return [self.checks[d] for d in deliveries]

    def _collect(self, pool: ThreadPoolExecutor, deliveries: list[Delivery]) -> None:
        pending: dict[Delivery, _Pending] = {}
        first = FirstAlone()
        for batch in _batches(deliveries, self.workers):
            pool.submit(self._load, batch, first)
        total = len(deliveries)
        self._report(total)
        while len(self.checks) < total:
            event = self._next()
            if event is None:
                break
            if isinstance(event, _Pending):
                del pending[event.delivery]
                self._done(event.delivery, event.check())
            else:
                self._queue(pool, event, pending)
            self._report(total)
        for delivery in deliveries:
            if delivery not in self.checks:
                self._done(delivery, _timed_out(delivery, pending.get(delivery)))
        self._report(total, final=True)

    def _next(self) -> Any:
        """The next thing finished; None when the time is up."""
        left = self.deadline - time.monotonic()
        try:
            return self.finished.get(timeout=left) if left > 0 else self.finished.get_nowait()
        except queue.Empty:
            self.timed_out = True
            return None

    def _load(self, batch: list[Delivery], first: FirstAlone) -> None:
        """Read a batch's manifests (an error is each delivery's) and hand them over."""
        try:
            found = first(lambda: self.platform.manifests(batch))
        except ExportnbError as exc:
            found = {d: exc for d in batch}
        except Exception as exc:  # unexpected: the batch is unverified, never passed
            found = {d: ExportnbError(f"{type(exc).__name__}: {exc}") for d in batch}
        unanswered = ExportnbError("the platform returned no manifest for it")
        self.finished.put({d: found.get(d, unanswered) for d in batch})

    def _queue(
        self,
        pool: ThreadPoolExecutor,
        found: dict[Delivery, ManifestOutcome],
        pending: dict[Delivery, _Pending],
    ) -> None:
        """Queue the segment checks of a batch; a delivery without a manifest is done."""
        for delivery, manifest in found.items():
            if not isinstance(manifest, Manifest):
                self._done(delivery, _unread(delivery, manifest))
            elif not manifest.segments:
                self._done(delivery, delivery_check(delivery, manifest, []))
            else:
                waiting = pending[delivery] = _Pending(delivery, manifest, self.finished)
                bucket = manifest.bucket
                check = self.breaker.wrap(bucket, segment_check(self.s3, bucket, self.rehash))
                for segment in manifest.segments:
                    pool.submit(_check_into, check, segment, waiting)

    def _done(self, delivery: Delivery, check: DeliveryCheck) -> None:
        self.checks[delivery] = check
        self._states[check.state] += 1
        self._segments += check.ok + len(check.mismatched) + len(check.missing)

    def _report(self, total: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None or (not final and now - self._reported < PROGRESS_EVERY):
            return
        self._reported = now
        done, states = len(self.checks), self._states
        elapsed = now - self._began
        found = SweepProgress(
            done, total, states["failed"], states["unverified"], self._segments, elapsed
        )
        self.progress(found)


def _batches(deliveries: list[Delivery], workers: int) -> list[list[Delivery]]:
    """The deliveries in one batch per worker (at most :data:`BATCH` each), in order."""
    size = max(1, min(BATCH, -(-len(deliveries) // workers)))
    return [deliveries[i : i + size] for i in range(0, len(deliveries), size)]


def _check_into(check: SegmentChecker, segment: Segment, pending: _Pending) -> None:
    """Check one segment and hand the outcome to its delivery, whatever happens."""
    try:
        outcome = check(segment)
    except Exception as exc:  # never lose a segment: it is unverified, not passed
        outcome = StorageError(f"s3://{pending.manifest.bucket}/{segment.key}: {exc}")
    pending.add(outcome)


def delivery_check(
    delivery: Delivery, manifest: Manifest, outcomes: Sequence[SegmentOutcome]
) -> DeliveryCheck:
    """A delivery's state from its segment checks: damaged wins over unchecked segments."""
    found = tally(outcomes)
    damaged = bool(found.mismatched or found.missing)
    state = "failed" if damaged else "unverified" if found.failures else "passed"
    return DeliveryCheck(
        delivery.job_id,
        manifest.attempt,
        delivery.tenant,
        delivery.connector,
        manifest.bucket,
        delivery.delivered_at or manifest.created_at,
        state,
        len(manifest.segments),
        found.ok,
        found.mismatched,
        found.missing,
        error_text(found.failures),
        manifest.key,
    )


def _unread(delivery: Delivery, error: ExportnbError) -> DeliveryCheck:
    return _unverified(delivery, f"manifest not read: {error.message}")


def _timed_out(delivery: Delivery, pending: _Pending | None) -> DeliveryCheck:
    if pending is None:
        return _unverified(delivery, "timed out before its manifest was read")
    outcomes = list(pending.outcomes)  # what has come in so far
    checked = delivery_check(delivery, pending.manifest, outcomes)
    why = f"timed out with {len(outcomes)} of {len(pending.manifest.segments)} segments checked"
    if checked.state == "failed":  # damaged, whatever the other segments hold
        return replace(checked, error=why)
    return replace(checked, state="unverified", error=why)


def _unverified(delivery: Delivery, why: str) -> DeliveryCheck:
    return DeliveryCheck(
        delivery.job_id,
        delivery.attempt,
        delivery.tenant,
        delivery.connector,
        delivery.bucket,
        delivery.delivered_at,
        "unverified",
        error=why,
        manifest_key=delivery.manifest_key,
    )


# What the checks show -----------------------------------------------------------------
@dataclass(frozen=True)
class _Found:
    """A sweep's checks and its window, turned into the result and its findings."""

    since: datetime
    until: datetime
    cap: int
    total: int
    exact: bool
    checks: list[DeliveryCheck]
    timed_out: bool
    mode: str

    def result(self, reason: str, elapsed: float) -> ImpactSweep:
        damaged = [c for c in self.checks if c.state == "failed"]
        by_time = sorted(damaged, key=_when)
        sweep = ImpactSweep(
            ran=True,
            reason=reason,
            since=self.since,
            until=self.until,
            cap=self.cap,
            total=max(self.total, len(self.checks)),
            total_exact=self.exact,
            listed=len(self.checks),
            verified=sum(1 for c in self.checks if c.state != "unverified"),
            passed=sum(1 for c in self.checks if c.state == "passed"),
            segments=sum(c.ok + len(c.mismatched) + len(c.missing) for c in self.checks),
            capped=len(self.checks) < self.total or not self.exact,
            timed_out=self.timed_out,
            damaged=damaged,
            unverified=[c for c in self.checks if c.state == "unverified"],
            affected_jobs=list(dict.fromkeys(c.job_id for c in damaged)),
            affected_tenants=sorted({c.tenant for c in damaged if c.tenant}),
            affected_buckets=sorted({c.bucket for c in damaged if c.bucket}),
            files=[f for c in damaged for f in c.files],
            first_damaged=by_time[0] if by_time else None,
            last_damaged=by_time[-1] if by_time else None,
            concentration=concentration(self.checks),
            verified_until=_when(self.checks[-1]) if self.checks else None,
            mode=self.mode,
            elapsed=elapsed,
        )
        return _with_findings(sweep)


def _when(check: DeliveryCheck) -> datetime:
    return check.delivered_at or datetime.min.replace(tzinfo=UTC)


def concentration(checks: Sequence[DeliveryCheck]) -> list[Concentration]:
    """Per tenant, connector, bucket and attempt: damaged deliveries of those verified, the
    most damaged first (values with no damage left out)."""
    verified = [c for c in checks if c.state != "unverified"]
    rows: list[Concentration] = []
    for dimension, value_of in DIMENSIONS.items():
        seen = Counter(value_of(c) for c in verified)
        damaged = Counter(value_of(c) for c in verified if c.state == "failed")
        ranked = sorted(damaged, key=lambda v: (-damaged[v], v))
        rows += [Concentration(dimension, v, damaged[v], seen[v]) for v in ranked]
    return rows


DIMENSIONS: dict[str, Callable[[DeliveryCheck], str]] = {
    "tenant": lambda c: c.tenant,
    "connector": lambda c: c.connector,
    "bucket": lambda c: c.bucket,
    "attempt": lambda c: "?" if c.attempt is None else str(c.attempt),
}
"""Where damage may concentrate, and how a delivery names its place there."""


# Findings ---------------------------------------------------------------------------------
def _with_findings(sweep: ImpactSweep) -> ImpactSweep:
    found = [
        _damage(sweep, CHECKSUM_MISMATCH, "mismatched"),
        _damage(sweep, MISSING_SEGMENTS, "missing"),
        _partial(sweep),
    ]
    return replace(sweep, findings=[f for f in found if f is not None])


def _damage(sweep: ImpactSweep, code: str, attr: str) -> Finding | None:
    hit = [c for c in sweep.damaged if getattr(c, attr)]
    if not hit:
        return None
    keys = [key for c in hit for key in getattr(c, attr)]
    files = [f"s3://{c.bucket}/{key}" for c in hit for key in getattr(c, attr)]
    tenants = sorted({c.tenant for c in hit if c.tenant})
    jobs = list(dict.fromkeys(c.job_id for c in hit))
    what = "do not match their manifest checksums" if attr == "mismatched" else "are missing"
    summary = (
        f"Impact sweep: {len(files)} segment(s) of {len(hit)} deliveries ({len(jobs)} jobs) "
        f"since {readable_time(sweep.since or sweep.checked_at)} {what} "
        f"(tenants: {', '.join(tenants) or 'unknown'})"
    )
    if sweep.partial:
        summary += f"; {sweep.coverage}"
    evidence = {
        "job_ids": jobs,
        "deliveries": [c.name for c in hit],
        "tenants": tenants,
        "buckets": sorted({c.bucket for c in hit if c.bucket}),
        "connectors": sorted({c.connector for c in hit if c.connector}),
        "keys": keys,
        "files": files,
        "mode": sweep.mode,
        "sweep": {"verified": sweep.verified, "total": sweep.total, "partial": sweep.partial},
    }
    return Finding(code, "critical", summary, STEP, evidence)


def _partial(sweep: ImpactSweep) -> Finding | None:
    if not sweep.partial:
        return None
    why = []
    if sweep.capped:
        after = (
            f" delivered after {readable_time(sweep.verified_until)}"
            if sweep.verified_until
            else ""
        )
        why.append(
            f"the cap of {sweep.cap:,} deliveries was reached: the rest,{after}, not verified"
        )
    if sweep.unverified:
        shown = ", ".join(c.name for c in sweep.unverified[:5])
        more = f" and {len(sweep.unverified) - 5} more" if len(sweep.unverified) > 5 else ""
        cause = "a timeout" if sweep.timed_out else "storage or manifest errors"
        why.append(f"{len(sweep.unverified)} unverified after {cause}: {shown}{more}")
    summary = f"Impact sweep {sweep.coverage} ({'; '.join(why)}): more may be damaged"
    evidence = {
        "verified": sweep.verified,
        "total": sweep.total,
        "total_exact": sweep.total_exact,
        "cap": sweep.cap,
        "capped": sweep.capped,
        "timed_out": sweep.timed_out,
        "verified_until": format_time(sweep.verified_until) if sweep.verified_until else None,
        "unverified": [c.name for c in sweep.unverified],
        "unverified_job_ids": list(dict.fromkeys(c.job_id for c in sweep.unverified)),
        "tenants": sorted({c.tenant for c in sweep.unverified if c.tenant}),
        "errors": {c.name: c.error for c in sweep.unverified[:50]},
    }
    return Finding(IMPACT_PARTIAL, "warning", summary, STEP, evidence)
