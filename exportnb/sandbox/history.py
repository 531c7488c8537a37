"""Seeded history: the week of finished export jobs a sandbox starts with, and new traffic.

``seed_history`` fills an empty store with a scenario's tenants, connectors and
buckets and with ``scenario.volume`` finished jobs created over ``scenario.days``
before the incident starts (``now - incident.minutes``). The model:

* **Arrivals.** Jobs per minute are ``volume / (days * 1440)`` times a seasonal factor
  of the hour of day (UTC): quiet at night, peaking in business hours around 14:00
  UTC (``seasonal_factor``; it averages 1 over a day). ``plan_jobs`` uses the same
  rate for the incident window and for live traffic.
* **Jobs.** Tenant, connector, bucket and kind are drawn by the scenario's weights;
  the chunk size from the choices that apply to the connector; the logical size is
  lognormal around ``job_size.median`` (bulk jobs ``bulk_factor`` times larger).
* **Durations.** ``overhead + bytes / bytes_per_second`` with lognormal noise, after
  a few seconds in the queue.
* **Outcomes.** A first attempt fails with a probability chosen so that the share of
  finished attempts that succeed (what the per-minute counts show) is
  ``baseline_success``; it rises a little with load. The scheduler retries
  ``RETRY_SHARE`` of the failed jobs after a back-off; ``RETRY_SUCCESS`` of those
  retries succeed. ``cancel_share`` of the jobs are cancelled part-way. Failures carry
  a background mix of storage and connector errors (``BACKGROUND_ERRORS``), and every
  job with a failed attempt has 2–4 log lines.
* **Bounds.** Every history attempt finishes before the incident starts (a job that
  would still be running is moved earlier), so the incident window holds only what
  the export worker does under the scenario's faults.

History jobs have no manifests or segments: their objects have aged out of the
sandbox's storage, as old exports do on a real platform. ``exportctl verify`` on one
answers that no manifest exists.

Job IDs are ``job-`` and 12 hex digits: a keyed permutation (by the scenario's seed)
of a 48-bit number made of an 8-bit namespace and a 40-bit index. History uses
namespace ``00``; ``plan_jobs`` takes another (``id_prefix``), so planned IDs never
collide with history or with other namespaces. The same seed and ``now`` seed the same
history, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.quantities import format_size
from exportnb.sandbox.scenario import Scenario
from exportnb.sandbox.store import SCHEMA, Store

PEAK_HOUR = 14.0
"""Hour of the day (UTC) when the most jobs are created."""
PEAK_WIDTH = 3.5
"""Spread of the business-hours peak, in hours."""
NIGHT_LEVEL = 0.25
"""Night-time load relative to the height of the peak."""
FAILURE_LOAD_SHARE = 0.4
"""How much of the failure probability follows load (0: flat, 1: proportional)."""
RETRY_SHARE = 0.3
"""Share of failed first attempts the scheduler retried."""
RETRY_SUCCESS = 0.8
"""Share of those retries that succeeded."""
QUEUE_DELAY = 4.0
"""Mean seconds a job waits between being created and starting."""
RETRY_BACKOFF = (30.0, 600.0)
"""Seconds between a failed attempt and its retry (uniform)."""
MIN_DURATION = 0.05
"""The shortest attempt, in seconds (times are stored to the millisecond)."""
HISTORY_NAMESPACE = "00"

STATUSES = ("succeeded", "failed", "cancelled")
_SUCCEEDED, _FAILED, _CANCELLED = 0, 1, 2
_BATCH = 50_000
_MASK24 = (1 << 24) - 1
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_ID_INDEX_BITS = 40
_NAMESPACE_RE = re.compile(r"^[0-9a-f]{2}$")
_INDEX_RE = re.compile(r"CREATE INDEX IF NOT EXISTS (\w+) ON (\w+)[^;]*;")
_BULK_TABLES = ("jobs", "attempts", "logs")


@dataclass(frozen=True)
class BackgroundError:
    """An error history jobs fail with now and then; ``message`` is a format string."""

    code: str
    weight: float
    message: str


_PUT = "(PUT part {segment:05d} to s3://{bucket})"
BACKGROUND_ERRORS = (
    BackgroundError(
        "InternalError",
        0.26,
        f"500 InternalError: We encountered an internal error. Please try again. {_PUT}",
    ),
    BackgroundError("SlowDown", 0.20, f"503 SlowDown: Please reduce your request rate. {_PUT}"),
    BackgroundError(
        "RequestTimeout",
        0.16,
        "400 RequestTimeout: Your socket connection to the server was not read from "
        f"or written to within the timeout period. {_PUT}",
    ),
    BackgroundError(
        "ConnectionReset",
        0.16,
        "connection reset by peer while streaming from the {connector} connector "
        "(part {segment:05d})",
    ),
    BackgroundError(
        "ServiceUnavailable",
        0.10,
        f"503 ServiceUnavailable: Service is unable to handle request. {_PUT}",
    ),
    BackgroundError("AccessDenied", 0.07, f"403 AccessDenied: Access Denied {_PUT}"),
    BackgroundError(
        "ExpiredToken", 0.05, f"400 ExpiredToken: The provided token has expired. {_PUT}"
    ),
)


@dataclass(frozen=True)
class JobSpec:
    """A job to create: what ``Store.create_job`` takes."""

    id: str
    tenant: str
    connector: str
    bucket: str
    kind: str
    chunk_size: int
    bytes: int
    created_at: float


@dataclass(frozen=True)
class SeedReport:
    jobs: int
    attempts: int
    logs: int
    by_status: dict[str, int]
    attempts_by_status: dict[str, int]
    seconds: float
    history_start: float
    incident_start: float

    @property
    def success_rate(self) -> float:
        """Share of finished (succeeded or failed) attempts that succeeded."""
        ok, failed = self.attempts_by_status["succeeded"], self.attempts_by_status["failed"]
        return ok / (ok + failed) if ok + failed else 1.0


# Seasonality -------------------------------------------------------------------


def _peak_shape(hour: np.ndarray) -> np.ndarray:
    distance = np.abs(hour - PEAK_HOUR)
    distance = np.minimum(distance, 24 - distance)
    return NIGHT_LEVEL + np.exp(-0.5 * (distance / PEAK_WIDTH) ** 2)


_DAY = _peak_shape(np.arange(0, 24, 1 / 600))
_SHAPE_MEAN = float(_DAY.mean())
_LOAD_SQUARED_MEAN = float(((_DAY / _SHAPE_MEAN) ** 2).mean())


def seasonal_factor(at: np.ndarray | float) -> np.ndarray:
    """The load at Unix time(s) ``at`` relative to the daily average (which is 1)."""
    hour = (np.asarray(at, dtype=np.float64) % 86400) / 3600
    return _peak_shape(hour) / _SHAPE_MEAN


def _failure_factor(load: np.ndarray) -> np.ndarray:
    """How the failure probability scales with load; averages 1 over the jobs."""
    share = FAILURE_LOAD_SHARE
    return (1 - share + share * load) / (1 - share + share * _LOAD_SQUARED_MEAN)


def _minute_bins(start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges cutting ``[start, end)`` at whole minutes, and each piece's load x seconds."""
    inner = np.arange(math.floor(start / 60) + 1, math.ceil(end / 60), dtype=np.float64) * 60
    edges = np.concatenate(([start], inner, [end]))
    widths = np.diff(edges)
    return edges, seasonal_factor(edges[:-1] + widths / 2) * widths


def expected_jobs(scenario: Scenario, start: float, end: float) -> float:
    """How many jobs the model creates on average in ``[start, end)``."""
    if end <= start:
        return 0.0
    _, weight = _minute_bins(start, end)
    return float(weight.sum()) * scenario.jobs_per_minute / 60


def _arrivals(rng: np.random.Generator, edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    lows = np.repeat(edges[:-1], counts)
    widths = np.repeat(np.diff(edges), counts)
    return np.sort(lows + rng.random(lows.size) * widths)


# Job IDs -----------------------------------------------------------------------


def _id_keys(seed: int) -> np.ndarray:
    digest = hashlib.blake2b(f"exportnb.job-ids:{seed}".encode(), digest_size=32).digest()
    return np.frombuffer(digest, dtype=">u8").astype(np.uint64)


def _scramble(half: np.ndarray, key: np.uint64) -> np.ndarray:
    """A pseudo-random 24-bit function of a 24-bit half (the splitmix64 finaliser)."""
    z: np.ndarray = half + key
    z = (z ^ (z >> 30)) * _MIX1
    z = (z ^ (z >> 27)) * _MIX2
    return (z ^ (z >> 31)) & _MASK24


def _permute(numbers: np.ndarray, seed: int) -> np.ndarray:
    """A keyed bijection of 48-bit numbers (a four-round Feistel network)."""
    left: np.ndarray = numbers >> 24
    right: np.ndarray = numbers & _MASK24
    for key in _id_keys(seed):
        left, right = right, left ^ _scramble(right, key)
    return (left << 24) | right


def _namespace(id_prefix: str) -> int:
    if not isinstance(id_prefix, str) or not _NAMESPACE_RE.match(id_prefix):
        raise InvalidInput(f"id_prefix {id_prefix!r}: use two lowercase hex digits, e.g. 'a1'")
    return int(id_prefix, 16)


def _id_numbers(seed: int, namespace: int, first: int, count: int) -> np.ndarray:
    if first < 0 or first + count > 1 << _ID_INDEX_BITS:
        raise InvalidInput(f"job index {first}..{first + count} is out of range")
    index = np.arange(first, first + count, dtype=np.uint64)
    return _permute(index | np.uint64(namespace << _ID_INDEX_BITS), seed)


def _format_ids(numbers: np.ndarray) -> list[str]:
    text = numbers.astype(">u8").tobytes().hex()
    return ["job-" + text[i + 4 : i + 16] for i in range(0, len(text), 16)]


def job_ids(
    seed: int, count: int, *, id_prefix: str = HISTORY_NAMESPACE, first: int = 0
) -> list[str]:
    """The IDs of jobs ``first .. first + count - 1`` of a namespace (``00``: history)."""
    return _format_ids(_id_numbers(seed, _namespace(id_prefix), first, count))


# Drawing jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class _Jobs:
    """New jobs as columns; tenant, connector, bucket and kind index the scenario's lists."""

    numbers: np.ndarray
    created: np.ndarray
    tenant: np.ndarray
    connector: np.ndarray
    bucket: np.ndarray
    kind: np.ndarray
    chunk: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return int(self.created.size)

    def take(self, order: np.ndarray) -> _Jobs:
        return _Jobs(*(getattr(self, f)[order] for f in self.__dataclass_fields__))


def _pick(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(p.size, size=n, p=p / p.sum()).astype(np.int32)


def _chunks(rng: np.random.Generator, scenario: Scenario, connector: np.ndarray) -> np.ndarray:
    out = np.empty(connector.size, dtype=np.int64)
    for i, c in enumerate(scenario.connectors):
        mask = connector == i
        choices = scenario.chunk_choices(c.name)
        sizes = np.array([x.size for x in choices], dtype=np.int64)
        out[mask] = sizes[_pick(rng, [x.weight for x in choices], int(mask.sum()))]
    return out


def _sizes(rng: np.random.Generator, scenario: Scenario, bulk: np.ndarray) -> np.ndarray:
    model = scenario.job_size
    size = model.median * np.exp(model.sigma * rng.standard_normal(bulk.size))
    size[bulk] *= model.bulk_factor
    return np.clip(size, model.minimum, model.maximum).astype(np.int64)


def _draw_jobs(
    rng: np.random.Generator, scenario: Scenario, created: np.ndarray, numbers: np.ndarray
) -> _Jobs:
    n = created.size
    connector = _pick(rng, [c.weight for c in scenario.connectors], n)
    kinds = list(scenario.kinds)
    kind = _pick(rng, [scenario.kinds[k] for k in kinds], n)
    bulk = kind == kinds.index("bulk") if "bulk" in kinds else np.zeros(n, dtype=bool)
    return _Jobs(
        numbers=numbers,
        created=created,
        tenant=_pick(rng, [t.weight for t in scenario.tenants], n),
        connector=connector,
        bucket=_pick(rng, [b.weight for b in scenario.buckets], n),
        kind=kind,
        chunk=_chunks(rng, scenario, connector),
        size=_sizes(rng, scenario, bulk),
    )


def _durations(rng: np.random.Generator, scenario: Scenario, size: np.ndarray) -> np.ndarray:
    model = scenario.throughput
    base = model.overhead + size / model.bytes_per_second
    return np.maximum(base * np.exp(model.noise * rng.standard_normal(size.size)), MIN_DURATION)


# Planned jobs ------------------------------------------------------------------


def plan_jobs(
    scenario: Scenario,
    start: float,
    end: float,
    *,
    rng_seed: int,
    id_prefix: str,
    first_index: int = 0,
) -> list[JobSpec]:
    """New jobs created in ``[start, end)`` by the history's volume and seasonality model.

    The number of jobs in each minute is Poisson around ``jobs_per_minute`` times the
    seasonal factor. IDs come from namespace ``id_prefix`` (two hex digits, not
    ``00``, which is history's), numbered from ``first_index``: calls that share a
    namespace must not overlap in index (pass ``first_index`` = jobs planned so far).
    """
    namespace = _namespace(id_prefix)
    if namespace == int(HISTORY_NAMESPACE, 16):
        raise InvalidInput("id_prefix '00' is reserved for history jobs")
    if isinstance(rng_seed, bool) or not isinstance(rng_seed, int) or rng_seed < 0:
        raise InvalidInput(f"rng_seed {rng_seed!r}: use a whole number of at least 0")
    if end <= start:
        return []
    rng = np.random.default_rng([scenario.seed, namespace, rng_seed, 1])
    edges, weight = _minute_bins(start, end)
    counts = rng.poisson(weight * scenario.jobs_per_minute / 60)
    created = _arrivals(rng, edges, counts)
    numbers = _id_numbers(scenario.seed, namespace, first_index, created.size)
    return _specs(scenario, _draw_jobs(rng, scenario, created, numbers))


def _specs(scenario: Scenario, jobs: _Jobs) -> list[JobSpec]:
    names = _Names(scenario)
    return [
        JobSpec(*row)
        for row in zip(
            _format_ids(jobs.numbers),
            names.tenant[jobs.tenant].tolist(),
            names.connector[jobs.connector].tolist(),
            names.bucket[jobs.bucket].tolist(),
            names.kind[jobs.kind].tolist(),
            jobs.chunk.tolist(),
            jobs.size.tolist(),
            jobs.created.tolist(),
            strict=True,
        )
    ]


class _Names:
    """The scenario's names as object arrays, to turn index columns into text columns."""

    def __init__(self, scenario: Scenario) -> None:
        self.tenant = np.array([t.id for t in scenario.tenants], dtype=object)
        self.connector = np.array([c.name for c in scenario.connectors], dtype=object)
        self.bucket = np.array([b.name for b in scenario.buckets], dtype=object)
        self.kind = np.array(list(scenario.kinds), dtype=object)
        self.status = np.array(STATUSES, dtype=object)
        self.error = np.array([e.code for e in BACKGROUND_ERRORS] + [None], dtype=object)


# History outcomes --------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What happened to each history job: a first attempt and, for some, a retry."""

    status: np.ndarray  # the job's final status (index into STATUSES)
    first: np.ndarray  # the first attempt's status
    retried: np.ndarray  # bool: a second attempt ran
    created: np.ndarray
    start1: np.ndarray
    end1: np.ndarray
    start2: np.ndarray
    end2: np.ndarray
    error1: np.ndarray  # index into BACKGROUND_ERRORS, len(BACKGROUND_ERRORS) for none
    error2: np.ndarray
    segment1: np.ndarray  # the part an attempt failed on
    segment2: np.ndarray

    @property
    def second(self) -> np.ndarray:
        return np.where(self.status == _SUCCEEDED, _SUCCEEDED, _FAILED)

    @property
    def started(self) -> np.ndarray:
        return np.where(self.retried, self.start2, self.start1)

    @property
    def finished(self) -> np.ndarray:
        return np.where(self.retried, self.end2, self.end1)


def first_failure_probability(scenario: Scenario) -> float:
    """The first-attempt failure probability that makes attempts succeed at the baseline."""
    failed, r, s = 1 - scenario.baseline_success, RETRY_SHARE, RETRY_SUCCESS
    return failed / (1 + r * (1 - s) - failed * r)


@dataclass(frozen=True)
class _Fates:
    cancelled: np.ndarray
    failed1: np.ndarray
    retried: np.ndarray
    retry_ok: np.ndarray


def _fates(rng: np.random.Generator, scenario: Scenario, created: np.ndarray) -> _Fates:
    n = created.size
    p_fail = first_failure_probability(scenario) * _failure_factor(seasonal_factor(created))
    cancelled = rng.random(n) < scenario.cancel_share
    failed1 = ~cancelled & (rng.random(n) < p_fail)
    retried = failed1 & (rng.random(n) < RETRY_SHARE)
    return _Fates(cancelled, failed1, retried, retried & (rng.random(n) < RETRY_SUCCESS))


def _errors(rng: np.random.Generator, failed: np.ndarray) -> np.ndarray:
    none = len(BACKGROUND_ERRORS)
    picked = _pick(rng, [e.weight for e in BACKGROUND_ERRORS], failed.size)
    return np.where(failed, picked, none)


def _segments(rng: np.random.Generator, jobs: _Jobs) -> np.ndarray:
    parts = np.maximum(1, -(-jobs.size // jobs.chunk))
    return (rng.random(parts.size) * parts).astype(np.int64)


def _simulate(
    rng: np.random.Generator, scenario: Scenario, jobs: _Jobs, incident_start: float
) -> _Outcome:
    n, fate = len(jobs), _fates(rng, scenario, jobs.created)
    full = _durations(rng, scenario, jobs.size)
    start1 = jobs.created + rng.exponential(QUEUE_DELAY, n)
    partial1 = fate.failed1 | fate.cancelled
    end1 = start1 + np.where(partial1, full * rng.uniform(0.05, 0.9, n), full)
    start2 = end1 + rng.uniform(*RETRY_BACKOFF, n)
    end2 = start2 + np.where(fate.retry_ok, full, full * rng.uniform(0.05, 0.9, n))
    last = np.where(fate.retried, end2, end1)
    over = last - incident_start
    shift = np.where(over >= 0, over + rng.uniform(1.0, 60.0, n), 0.0)
    first = np.select([fate.cancelled, fate.failed1], [_CANCELLED, _FAILED], _SUCCEEDED)
    status = np.where(fate.retried, np.where(fate.retry_ok, _SUCCEEDED, _FAILED), first)
    created, start1, end1, start2, end2 = (
        np.round(t - shift, 3) for t in (jobs.created, start1, end1, start2, end2)
    )
    return _Outcome(
        status,
        first,
        fate.retried,
        created,
        start1,
        end1,
        start2,
        end2,
        error1=_errors(rng, fate.failed1),
        error2=_errors(rng, fate.retried & ~fate.retry_ok),
        segment1=_segments(rng, jobs),
        segment2=_segments(rng, jobs),
    )


# Rows --------------------------------------------------------------------------


def _messages(jobs: _Jobs, errors: np.ndarray, segments: np.ndarray, names: _Names) -> np.ndarray:
    """Error messages, None where the attempt did not fail."""
    out = np.full(errors.size, None, dtype=object)
    for i in np.flatnonzero(errors < len(BACKGROUND_ERRORS)).tolist():
        out[i] = BACKGROUND_ERRORS[errors[i]].message.format(
            segment=int(segments[i]),
            bucket=names.bucket[jobs.bucket[i]],
            connector=names.connector[jobs.connector[i]],
        )
    return out


@dataclass(frozen=True)
class _Rows:
    """History as lists of row tuples, ordered by job ID (the tables' key order)."""

    jobs: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]
    attempt_job: np.ndarray  # the job (row index) of each attempt row
    logs: list[tuple[Any, ...]]


def _only(mask: np.ndarray, values: np.ndarray) -> list[Any]:
    """``values`` where ``mask`` holds, None elsewhere."""
    out = np.full(values.size, None, dtype=object)
    out[mask] = values[mask]
    return out.tolist()


def _job_rows(
    ids: list[str], jobs: _Jobs, out: _Outcome, names: _Names, message: np.ndarray
) -> list[tuple[Any, ...]]:
    failed = out.status == _FAILED
    error = np.where(failed, np.where(out.retried, out.error2, out.error1), len(BACKGROUND_ERRORS))
    bucket = names.bucket[jobs.bucket]
    columns = (
        ids,
        names.tenant[jobs.tenant].tolist(),
        names.connector[jobs.connector].tolist(),
        bucket.tolist(),
        names.kind[jobs.kind].tolist(),
        names.status[out.status].tolist(),
        (1 + out.retried).tolist(),
        jobs.chunk.tolist(),
        jobs.size.tolist(),
        out.created.tolist(),
        out.started.tolist(),
        out.finished.tolist(),
        names.error[error].tolist(),
        _only(failed, message),
        _only(out.status == _SUCCEEDED, bucket),
    )
    return list(zip(*columns, strict=True))


def _attempt_rows(
    ids: list[str], jobs: _Jobs, out: _Outcome, names: _Names, messages: tuple[np.ndarray, ...]
) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    second = np.flatnonzero(out.retried)
    job = np.concatenate((np.arange(len(jobs)), second))
    order = np.argsort(job * 2 + (np.arange(job.size) >= len(jobs)), kind="stable")
    job = job[order]

    def column(first: np.ndarray, retry: np.ndarray) -> list[Any]:
        return np.concatenate((first, retry[second]))[order].tolist()

    columns = (
        np.array(ids, dtype=object)[job].tolist(),
        column(np.ones(len(jobs), np.int64), np.full(len(jobs), 2)),
        names.status[column(out.first, out.second)].tolist(),
        column(out.start1, out.start2),
        column(out.end1, out.end2),
        names.bucket[jobs.bucket[job]].tolist(),
        jobs.chunk[job].tolist(),
        names.error[column(out.error1, out.error2)].tolist(),
        column(*messages),
    )
    return list(zip(*columns, strict=True)), job


def _log_rows(
    ids: list[str], jobs: _Jobs, out: _Outcome, names: _Names, messages: tuple[np.ndarray, ...]
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i in np.flatnonzero(out.first == _FAILED).tolist():
        rows.extend(_job_log(ids[i], i, jobs, out, names, messages))
    return rows


def _job_log(
    job_id: str,
    i: int,
    jobs: _Jobs,
    out: _Outcome,
    names: _Names,
    messages: tuple[np.ndarray, ...],
) -> list[tuple[Any, ...]]:
    """2–4 log lines of a job whose first attempt failed."""
    size, chunk = int(jobs.size[i]), int(jobs.chunk[i])
    start1, end1 = float(out.start1[i]), float(out.end1[i])
    route = f"via {names.connector[jobs.connector[i]]} to s3://{names.bucket[jobs.bucket[i]]}"
    plan = f"{format_size(size)} in {-(-size // chunk)} part(s) of {format_size(chunk)}"
    code = BACKGROUND_ERRORS[out.error1[i]].code
    lines = [(job_id, 1, start1, "info", f"attempt 1 started: {plan} {route}")]
    if not out.retried[i] and i % 2 == 0:
        retrying = f"part {int(out.segment1[i]):05d}: {code}; retrying the request (2 of 3)"
        lines.append((job_id, 1, round((start1 + end1) / 2, 3), "warning", retrying))
    lines.append((job_id, 1, end1, "error", f"attempt 1 failed: {code}: {messages[0][i]}"))
    if out.retried[i]:
        lines.extend(_retry_log(job_id, i, out, messages[1]))
    return lines


def _retry_log(job_id: str, i: int, out: _Outcome, message: np.ndarray) -> list[tuple[Any, ...]]:
    start2, end2 = float(out.start2[i]), float(out.end2[i])
    backoff = start2 - float(out.end1[i])
    started = (job_id, 2, start2, "info", f"attempt 2 started (retry after {backoff:.0f}s)")
    if out.status[i] == _SUCCEEDED:
        return [started, (job_id, 2, end2, "info", f"attempt 2 succeeded in {end2 - start2:.1f}s")]
    code = BACKGROUND_ERRORS[out.error2[i]].code
    return [started, (job_id, 2, end2, "error", f"attempt 2 failed: {code}: {message[i]}")]


def _history_rows(scenario: Scenario, jobs: _Jobs, out: _Outcome) -> _Rows:
    names, ids = _Names(scenario), _format_ids(jobs.numbers)
    messages = (
        _messages(jobs, out.error1, out.segment1, names),
        _messages(jobs, out.error2, out.segment2, names),
    )
    final = np.where(out.retried, messages[1], messages[0])
    attempts, attempt_job = _attempt_rows(ids, jobs, out, names, messages)
    return _Rows(
        _job_rows(ids, jobs, out, names, final),
        attempts,
        attempt_job,
        _log_rows(ids, jobs, out, names, messages),
    )


# Seeding -----------------------------------------------------------------------


def _draw_history(scenario: Scenario, start: float, end: float) -> tuple[_Jobs, _Outcome]:
    rng = np.random.default_rng([scenario.seed, 0])
    edges, weight = _minute_bins(start, end)
    counts = rng.multinomial(scenario.volume, weight / weight.sum())
    created = _arrivals(rng, edges, counts)
    numbers = _id_numbers(scenario.seed, 0, 0, scenario.volume)
    jobs = _draw_jobs(rng, scenario, created, numbers)
    out = _simulate(rng, scenario, jobs, end)
    out = replace(out, created=np.maximum(out.created, start))
    order = np.argsort(jobs.numbers, kind="stable")
    return jobs.take(order), _Outcome(*(getattr(out, f)[order] for f in out.__dataclass_fields__))


def _bulk_indexes() -> list[tuple[str, str]]:
    """``(name, CREATE INDEX statement)`` of the store's indexes on the bulk-loaded tables."""
    return [
        (m.group(1), m.group(0)) for m in _INDEX_RE.finditer(SCHEMA) if m.group(2) in _BULK_TABLES
    ]


def _ensure_empty(db: sqlite3.Connection, store: Store) -> None:
    for table in ("jobs", "attempts", "tenants", "connectors", "buckets", "minute_counts"):
        if db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]:
            raise PreconditionFailed(
                f"the store at {store.path} already holds {table}; seed history into an empty "
                "store (Store(path, create=True) on a new file)"
            )


def _reference_rows(db: sqlite3.Connection, scenario: Scenario) -> None:
    db.executemany(
        "INSERT INTO tenants VALUES (?, ?, ?)", [(t.id, t.name, t.tier) for t in scenario.tenants]
    )
    db.executemany(
        "INSERT INTO connectors VALUES (?, ?)", [(c.name, c.family) for c in scenario.connectors]
    )
    db.executemany(
        "INSERT INTO buckets VALUES (?, ?, ?)",
        [(b.name, b.role, b.region) for b in scenario.buckets],
    )


def _meta_rows(db: sqlite3.Connection, values: dict[str, Any]) -> None:
    db.executemany(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, json.dumps(v)) for k, v in values.items()],
    )


_JOB_INSERT = (
    "INSERT INTO jobs (id, tenant, connector, bucket, kind, status, attempts, chunk_size, bytes, "
    "created_at, started_at, finished_at, error_code, error_message, delivered_bucket) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ATTEMPT_INSERT = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LOG_INSERT = "INSERT INTO logs (job_id, attempt, at, level, message) VALUES (?, ?, ?, ?, ?)"
_MINUTE_ROLLUP = (
    "INSERT INTO minute_counts (minute, status, n) "
    "SELECT CAST(finished_at / 60 AS INTEGER) * 60, status, count(*) FROM attempts "
    "WHERE finished_at IS NOT NULL GROUP BY 1, 2"
)


def _load(db: sqlite3.Connection, rows: _Rows, progress: Callable[[int, int], None] | None) -> None:
    """Insert jobs and their attempts batch by batch, in key order, then the logs."""
    total = len(rows.jobs)
    bounds = np.searchsorted(rows.attempt_job, np.arange(0, total + _BATCH, _BATCH))
    for n, lo in enumerate(range(0, total, _BATCH)):
        db.executemany(_JOB_INSERT, rows.jobs[lo : lo + _BATCH])
        db.executemany(_ATTEMPT_INSERT, rows.attempts[bounds[n] : bounds[n + 1]])
        if progress is not None:
            progress(min(lo + _BATCH, total), total)
    db.executemany(_LOG_INSERT, rows.logs)


@dataclass
class _BulkMode:
    """Pragmas for one big load into a fresh store: no fsync, a large page cache."""

    db: sqlite3.Connection

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-1048576")
        self.db.execute("PRAGMA temp_store=MEMORY")
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-2000")
        self.db.execute("PRAGMA temp_store=DEFAULT")


def _count(values: np.ndarray) -> dict[str, int]:
    counts = np.bincount(values, minlength=len(STATUSES))
    return {name: int(counts[i]) for i, name in enumerate(STATUSES)}


def seed_history(
    store: Store,
    scenario: Scenario,
    *,
    now: float,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """Fill an empty store with the scenario's world and its history before the incident.

    ``progress(done, total)`` is called after every batch of jobs (with their attempts)
    is written. Raises PreconditionFailed when the store is not empty.
    """
    began = time.perf_counter()
    _ensure_empty(store.db, store)
    incident_start = scenario.incident_start(now)
    history_start = now - scenario.days * 86400
    jobs, outcome = _draw_history(scenario, history_start, incident_start)
    rows = _history_rows(scenario, jobs, outcome)
    with _BulkMode(store.db), store.transaction() as db:
        _ensure_empty(db, store)
        _write(db, scenario, rows, progress)
        _meta_rows(
            db,
            {
                "scenario": scenario.name,
                "scenario_seed": scenario.seed,
                "seeded_at": now,
                "history_start": history_start,
                "incident_start": incident_start,
                "history_jobs": len(jobs),
            },
        )
    return SeedReport(
        jobs=len(jobs),
        attempts=len(rows.attempts),
        logs=len(rows.logs),
        by_status=_count(outcome.status),
        attempts_by_status=_count(np.concatenate((outcome.first, outcome.second[outcome.retried]))),
        seconds=time.perf_counter() - began,
        history_start=history_start,
        incident_start=incident_start,
    )


def _write(
    db: sqlite3.Connection,
    scenario: Scenario,
    rows: _Rows,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Reference rows, then the bulk tables without their indexes, then indexes and rollup."""
    _reference_rows(db, scenario)
    indexes = _bulk_indexes()
    for name, _ in indexes:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    _load(db, rows, progress)
    for _, create in indexes:
        db.execute(create)
    db.execute(_MINUTE_ROLLUP)
