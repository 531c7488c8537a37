"""Generated scenarios: a random world and incident from a seed, for game days and for
proving a diagnosis on incidents nobody wrote by hand.

:func:`generate` draws a world — tenants, connectors with their families, buckets with
roles, regions and weights, chunk sizes per connector, the job size and throughput
models, the traffic (``volume`` over ``days``) and the history's ``baseline_success`` —
and an incident of 0 to :data:`MAX_FAULTS` faults of distinct kinds with random scopes,
and renders them as a scenario file (TOML, ``docs/scenarios.md``) that
:func:`~exportnb.sandbox.scenario.load_scenario` reads. The same seed and options give
the same file, byte for byte: every draw comes from ``random.Random(seed).random()``,
whose sequence Python keeps from version to version.

The worlds are small on purpose: :data:`WINDOW_JOBS` jobs run through the real export
worker in the incident window at the day's average load (about twice as many at the
busiest hour, half as many at the quietest), so that ``exportnb sandbox up`` takes
seconds.

A fault nobody could diagnose is not drawn. Each one is expected to strike at least
:data:`MIN_EXPECTED_HITS` jobs of the incident window even at the quietest hour of the day,
by the scenario's own traffic model (weights, chunk sizes, job sizes) and after the other
faults have taken their share: a throttle covers at least one bucket jobs write to; a
timeout's ``min_chunk`` lies between two of the world's chunk sizes, with
:data:`MIN_EXPECTED_TIMEOUTS` jobs expected on either side of it; corrupt and missing
segments strike jobs that can still succeed (not throttled, not timed out); the network
fault adds latency well above the network step's 100ms threshold. A healthy control
(``control=True``, or no faults drawn) has no faults at all.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from exportnb.core.errors import InvalidInput
from exportnb.sandbox.faults import FAULT_KINDS
from exportnb.sandbox.history import seasonal_factor
from exportnb.sandbox.scenario import load_scenario

GENERATOR_VERSION = 1
"""Bumped when the same seed would draw another file."""
MAX_FAULTS = 3
MAX_SEED = 2**63 - 1
"""The largest seed a scenario file (a TOML integer) can hold."""
MIN_EXPECTED_HITS = 3.0
"""Jobs each fault is expected to strike in the incident window at the quietest hour."""
MIN_EXPECTED_TIMEOUTS = 4.0
"""Jobs a timeout is expected to time out, and to spare, in that window: failures by chunk
size show only against enough of both."""
WINDOW_JOBS = (40.0, 60.0)
"""Jobs the incident window holds at the day's average load (range drawn from)."""
MIN_LOAD = float(seasonal_factor(np.arange(0.0, 86400.0, 60.0)).min())
"""The quietest minute's load relative to the day's average (the history's seasonality)."""
CONTROL_SHARE = 0.15
"""Share of seeds drawn as healthy controls when the number of faults is not given."""
MIB = 2**20
CHUNK_LADDER = (32 * MIB, 64 * MIB, 128 * MIB, 256 * MIB, 512 * MIB)
TIERS = ("enterprise", "business", "starter")
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ca-central-1",
    "sa-east-1",
)
CONNECTORS = (
    ("s3", "object"),
    ("gcs", "object"),
    ("azure-blob", "object"),
    ("snowflake", "warehouse"),
    ("bigquery", "warehouse"),
    ("redshift", "warehouse"),
    ("databricks", "warehouse"),
    ("sftp", "file-transfer"),
    ("ftps", "file-transfer"),
    ("kafka", "stream"),
    ("postgres", "database"),
    ("salesforce", "saas"),
)
"""Connectors a world picks from, with their families."""
_ADJECTIVES = (
    "amber",
    "blue",
    "bright",
    "cedar",
    "copper",
    "crystal",
    "delta",
    "ember",
    "golden",
    "granite",
    "harbor",
    "iron",
    "jade",
    "lunar",
    "maple",
    "north",
    "ocean",
    "pine",
    "quartz",
    "red",
    "silver",
    "solar",
    "stone",
    "summit",
    "tidal",
    "violet",
    "west",
    "willow",
)
_NOUNS = (
    "analytics",
    "bank",
    "foods",
    "freight",
    "games",
    "health",
    "labs",
    "logistics",
    "media",
    "motors",
    "pharma",
    "retail",
    "robotics",
    "systems",
    "telecom",
    "travel",
    "works",
)
_ORGS = ("acme", "contoso", "hooli", "initrode", "northwind", "tyrell", "umbra", "vandelay")
_TRIES = 40
_T = TypeVar("_T")


# Drawing ------------------------------------------------------------------------


class _Draw:
    """Draws built on ``random.Random(seed).random()`` alone, so that they stay the same
    from one Python version to the next."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed).random

    def uniform(self, low: float, high: float, digits: int = 2) -> float:
        return round(low + (high - low) * self._random(), digits)

    def integer(self, low: int, high: int) -> int:
        """A whole number from ``low`` to ``high``, both included."""
        return low + min(int(self._random() * (high - low + 1)), high - low)

    def chance(self, p: float) -> bool:
        return self._random() < p

    def choice(self, items: Sequence[_T]) -> _T:
        return items[self.integer(0, len(items) - 1)]

    def sample(self, items: Sequence[_T], k: int) -> list[_T]:
        """``k`` distinct items, in the order drawn."""
        pool = list(items)
        for i in range(k):
            j = self.integer(i, len(pool) - 1)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def subset(self, items: Sequence[_T], least: int = 1, most: int | None = None) -> list[_T]:
        """Some of ``items`` (between ``least`` and ``most``), in their own order."""
        top = len(items) if most is None else min(most, len(items))
        chosen = set(map(id, self.sample(items, self.integer(least, top))))
        return [item for item in items if id(item) in chosen]


# The world ----------------------------------------------------------------------


@dataclass(frozen=True)
class _World:
    """The drawn world, in the shape of the scenario file's tables."""

    tenants: list[dict[str, Any]]
    connectors: list[dict[str, Any]]
    buckets: list[dict[str, Any]]
    chunk_sizes: list[dict[str, Any]]
    kinds: dict[str, float]
    job_size: dict[str, Any]
    throughput: dict[str, Any]

    @property
    def traffic_buckets(self) -> list[str]:
        return [b["name"] for b in self.buckets if b["weight"] > 0]

    @property
    def sizes(self) -> list[int]:
        return sorted({c["size"] for c in self.chunk_sizes})


def _tenants(draw: _Draw) -> list[dict[str, Any]]:
    adjectives = draw.sample(_ADJECTIVES, draw.integer(2, 6))
    tenants = []
    for adjective in adjectives:
        noun = draw.choice(_NOUNS)
        tenants.append(
            {
                "id": f"{adjective}-{noun}",
                "name": f"{adjective.title()} {noun.title()}",
                "tier": draw.choice(TIERS),
                "weight": draw.uniform(0.5, 5.0, 1),
            }
        )
    return tenants


def _connectors(draw: _Draw) -> list[dict[str, Any]]:
    chosen = draw.subset(CONNECTORS, 2, 6)
    return [
        {"name": name, "family": family, "weight": draw.uniform(0.5, 5.0, 1)}
        for name, family in chosen
    ]


def _buckets(draw: _Draw) -> list[dict[str, Any]]:
    org = draw.choice(_ORGS)
    secondaries = draw.choice((0, 1, 1, 2))
    fallback = draw.chance(0.8)
    regions = draw.sample(REGIONS, 1 + secondaries + int(fallback))
    buckets = [
        {
            "name": f"{org}-exports-{regions[0]}",
            "role": "primary",
            "region": regions[0],
            "weight": draw.uniform(0.5, 1.0),
        }
    ]
    for region in regions[1 : 1 + secondaries]:
        buckets.append(
            {
                "name": f"{org}-exports-{region}",
                "role": "secondary",
                "region": region,
                "weight": draw.uniform(0.05, 0.5),
            }
        )
    if fallback:
        region = regions[-1]
        buckets.append(
            {
                "name": f"{org}-exports-dr-{region}",
                "role": "fallback",
                "region": region,
                "weight": 0,
            }
        )
    return buckets


def _chunk_sizes(draw: _Draw, connectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """2 to 4 sizes; the smallest for every connector, larger ones now and then for some."""
    sizes = sorted(draw.sample(CHUNK_LADDER, draw.integer(2, 4)))
    names = [c["name"] for c in connectors]
    choices = []
    for i, size in enumerate(sizes):
        choice: dict[str, Any] = {"size": size, "weight": draw.uniform(0.5, 4.0, 1)}
        if i > 0 and len(names) > 1 and draw.chance(0.3):
            choice["connectors"] = draw.subset(names, 1, len(names) - 1)
        choices.append(choice)
    return choices


def _world(draw: _Draw) -> _World:
    connectors = _connectors(draw)
    return _World(
        tenants=_tenants(draw),
        connectors=connectors,
        buckets=_buckets(draw),
        chunk_sizes=_chunk_sizes(draw, connectors),
        kinds={
            "scheduled": draw.uniform(0.5, 0.8),
            "adhoc": draw.uniform(0.1, 0.3),
            "bulk": draw.uniform(0.0, 0.15),
        },
        job_size={
            "median": draw.integer(40, 150) * 10**6,
            "sigma": draw.uniform(0.4, 0.9),
            "min": 10**6,
            "max": draw.choice((1, 2)) * 10**9,
            "bulk_factor": draw.uniform(2.0, 4.0, 1),
        },
        throughput={
            "bytes_per_second": draw.integer(40, 100) * 10**6,
            "overhead": draw.uniform(1.0, 4.0, 1),
            "noise": draw.uniform(0.1, 0.4),
        },
    )


# Who a fault would strike ------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    """Jobs of one tenant, connector and bucket: their share of all jobs."""

    share: float
    tenant: str
    connector: str
    bucket: str


class _Traffic:
    """The window's jobs by the scenario's traffic model: the weights of tenants,
    connectors, buckets and chunk sizes, and the lognormal job sizes."""

    def __init__(self, world: _World) -> None:
        self.world = world
        tenant = _shares({t["id"]: t["weight"] for t in world.tenants})
        connector = _shares({c["name"]: c["weight"] for c in world.connectors})
        bucket = _shares({b["name"]: b["weight"] for b in world.buckets})
        self.cells = [
            _Cell(pt * pc * pb, t, c, b)
            for t, pt in tenant.items()
            for c, pc in connector.items()
            for b, pb in bucket.items()
            if pb > 0
        ]
        self.chunks = {
            name: _shares(
                {
                    c["size"]: c["weight"]
                    for c in world.chunk_sizes
                    if name in c.get("connectors", [name])
                }
            )
            for name in connector
        }
        self.bulk = world.kinds["bulk"] / sum(world.kinds.values())

    def size_at_least(self, size: int) -> float:
        """The share of jobs of at least ``size`` logical bytes."""
        model = self.world.job_size
        if size <= model["min"]:
            return 1.0
        if size > model["max"]:
            return 0.0
        plain = _tail(size, model["median"], model["sigma"])
        bulk = _tail(size, model["median"] * model["bulk_factor"], model["sigma"])
        return (1 - self.bulk) * plain + self.bulk * bulk

    def upload_at_least(self, size: int | None, connector: str) -> float:
        """The share of a connector's jobs whose largest upload is ``size`` or more."""
        if size is None:
            return 0.0
        chunks = sum(p for chunk, p in self.chunks[connector].items() if chunk >= size)
        return chunks * self.size_at_least(size)


def _shares(weights: dict[Any, float]) -> dict[Any, float]:
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def _tail(size: float, median: float, sigma: float) -> float:
    """P(X >= size) for a lognormal X around ``median``."""
    if sigma <= 0:
        return 1.0 if median >= size else 0.0
    return 0.5 * math.erfc(math.log(size / median) / (sigma * math.sqrt(2)))


def _in_scope(fault: dict[str, Any], cell: _Cell) -> bool:
    return all(
        value in fault.get(scope, [value])
        for scope, value in (
            ("tenants", cell.tenant),
            ("connectors", cell.connector),
            ("buckets", cell.bucket),
        )
    )


def _limit(fault: dict[str, Any]) -> int:
    return int(fault["min_chunk"].removesuffix("MiB")) * MIB


@dataclass(frozen=True)
class _Strikes:
    """How much of the window each fault of an incident is expected to strike, all of them
    at once: a job is throttled before anything else; a stuck attempt stalls before it
    writes its bad segment, which a missing one never writes and a corrupt one spoils; a
    chunk is only timed out if it is sent. Where an order is not known, the fault that
    strikes is assumed to be the other one, so the shares are lower bounds."""

    traffic: _Traffic
    faults: list[dict[str, Any]]

    def of_kind(self, kind: str) -> dict[str, Any] | None:
        return next((f for f in self.faults if f["kind"] == kind), None)

    def rate(self, kind: str, cell: _Cell) -> float:
        """The share of the cell's jobs a worker fault of ``kind`` picks."""
        fault = self.of_kind(kind)
        return fault["rate"] if fault is not None and _in_scope(fault, cell) else 0.0

    def throttled(self, cell: _Cell) -> bool:
        fault = self.of_kind("throttle")
        return fault is not None and cell.bucket in fault["buckets"]

    def limit(self, cell: _Cell) -> int | None:
        fault = self.of_kind("timeout")
        if fault is None or self.throttled(cell) or not _in_scope(fault, cell):
            return None
        return _limit(fault)

    def delivered(self, cell: _Cell) -> float:
        """The share of the cell's jobs whose uploads all go through."""
        if self.throttled(cell):
            return 0.0
        return 1.0 - self.traffic.upload_at_least(self.limit(cell), cell.connector)

    def share(self, kind: str) -> float:
        """The share of the window's jobs a fault of ``kind`` is expected to strike."""
        total = 0.0
        for cell in self.traffic.cells:
            stuck, missing = self.rate("stuck", cell), self.rate("missing", cell)
            struck = {
                "throttle": float(self.throttled(cell)),
                "timeout": self.traffic.upload_at_least(self.limit(cell), cell.connector)
                * max(0.0, 1.0 - stuck - missing),
                "stuck": stuck * self.delivered(cell),
                "missing": missing * (1 - stuck) * self.delivered(cell),
                "corrupt": self.rate("corrupt", cell)
                * (1 - stuck)
                * (1 - missing)
                * self.delivered(cell),
            }
            total += cell.share * struck.get(kind, 1.0)
        return total

    def spared(self) -> float:
        """The share of the window's jobs a timeout covers but whose uploads stay below it."""
        return sum(
            cell.share * (1.0 - self.traffic.upload_at_least(limit, cell.connector))
            for cell in self.traffic.cells
            if (limit := self.limit(cell)) is not None
        )


# Faults -------------------------------------------------------------------------


@dataclass
class _Incident:
    """Draws faults for a world, and keeps only sets whose faults each strike enough jobs of
    the quietest incident window (``quiet_jobs``), all of them together."""

    draw: _Draw
    world: _World
    traffic: _Traffic
    quiet_jobs: float

    def grown(self, faults: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        """``faults`` and one of ``kind`` if a drawn one lets every fault strike enough jobs;
        else ``faults`` as they were."""
        for _ in range(_TRIES // 4):
            grown = sorted([*faults, self.fault(kind)], key=lambda f: FAULT_KINDS.index(f["kind"]))
            if self.enough(grown):
                return grown
        return faults

    def enough(self, faults: list[dict[str, Any]]) -> bool:
        """Whether each fault strikes enough jobs of the quiet window, all together."""
        strikes = _Strikes(self.traffic, faults)
        for fault in faults:
            wanted = MIN_EXPECTED_HITS
            if fault["kind"] == "timeout":
                wanted = MIN_EXPECTED_TIMEOUTS
                if strikes.spared() * self.quiet_jobs < wanted:
                    return False
            if strikes.share(fault["kind"]) * self.quiet_jobs < wanted:
                return False
        return True

    def fault(self, kind: str) -> dict[str, Any]:
        builders = {"throttle": self.throttle, "timeout": self.timeout, "network": self.network}
        return builders.get(kind, lambda: self.worker(kind))()

    def throttle(self) -> dict[str, Any]:
        traffic = self.world.traffic_buckets
        buckets = self.draw.subset(traffic, 1, max(1, len(traffic) - 1))  # some left, if any
        fallbacks = [b["name"] for b in self.world.buckets if b["role"] == "fallback"]
        if fallbacks and self.draw.chance(0.25):
            buckets.append(fallbacks[0])  # the fallback is impaired too: redirecting won't help
        return {"kind": "throttle", "buckets": buckets}

    def timeout(self) -> dict[str, Any]:
        sizes = self.world.sizes
        low, high = self.draw.choice(list(itertools.pairwise(sizes)))
        limit = self.draw.integer(low // MIB + 1, high // MIB)
        fault: dict[str, Any] = {
            "kind": "timeout",
            "min_chunk": f"{limit}MiB",
            "hold": f"{self.draw.integer(5, 15) * 10}ms",
        }
        if self.draw.chance(0.5):
            fault["buckets"] = self.draw.subset(self.world.traffic_buckets)
        return fault

    def network(self) -> dict[str, Any]:
        latency = self.draw.integer(15, 30) * 10
        fault: dict[str, Any] = {"kind": "network", "latency": f"{latency}ms"}
        jitter = self.draw.integer(0, latency // 50) * 10
        loss = self.draw.choice((0, 0, 1, 2, 5))
        if jitter:
            fault["jitter"] = f"{jitter}ms"
        if loss:
            fault["loss"] = loss
        return fault

    def worker(self, kind: str) -> dict[str, Any]:
        tenants = [t["id"] for t in self.world.tenants]
        connectors = [c["name"] for c in self.world.connectors]
        fault: dict[str, Any] = {"kind": kind}
        if len(tenants) > 1 and self.draw.chance(0.6):
            fault["tenants"] = self.draw.subset(tenants, 1, len(tenants) - 1)
        if len(connectors) > 1 and self.draw.chance(0.4):
            fault["connectors"] = self.draw.subset(connectors, 1, len(connectors) - 1)
        if self.draw.chance(0.3):
            fault["buckets"] = self.draw.subset(self.world.traffic_buckets)
        fault["rate"] = self.draw.uniform(0.2, 1.0)
        return fault


def _faults(draw: _Draw, incident: _Incident, count: int) -> list[dict[str, Any]]:
    """``count`` faults of distinct kinds that each strike enough jobs, all together. Kinds
    are tried in a drawn order, each with a few drawn scopes, and kept when the set still
    holds (a throttle on the only bucket jobs use would leave a corrupt fault nothing to
    strike, say); the network fault always fits, since it strikes the path. The largest set
    found when no order reaches ``count``."""
    best: list[dict[str, Any]] = []
    for _ in range(_TRIES):
        faults: list[dict[str, Any]] = []
        for kind in draw.sample(FAULT_KINDS, len(FAULT_KINDS)):
            if len(faults) == count:
                return faults
            faults = incident.grown(faults, kind)
        if len(faults) == count:
            return faults
        best = max(best, faults, key=len)
    return best


# The scenario file --------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """A generated scenario: its file's text, its name, and the kinds of its faults."""

    seed: int
    name: str
    text: str
    kinds: tuple[str, ...]

    @property
    def control(self) -> bool:
        return not self.kinds


def generate(seed: int, *, faults: int | None = None, control: bool = False) -> Generated:
    """The scenario of ``seed``: with ``faults`` faults (default: drawn, 0 to 3), or none
    with ``control``. Raises InvalidInput for a seed that is not a whole number from 0 to
    :data:`MAX_SEED`, or a number of faults out of range."""
    _check(seed, faults, control)
    draw = _Draw(seed)
    world = _world(draw)
    minutes = draw.integer(6, 12)
    days = draw.choice((1, 2))
    window_jobs = draw.uniform(*WINDOW_JOBS, 1)
    count = 0 if control else faults if faults is not None else _fault_count(draw)
    incident = _Incident(draw, world, _Traffic(world), window_jobs * MIN_LOAD)
    drawn = _faults(draw, incident, count)
    reportable = any(f["kind"] in ("corrupt", "missing") for f in drawn)
    doc = _document(seed, world, draw, drawn)
    doc["days"] = days
    doc["volume"] = round(window_jobs / minutes * days * 1440)
    doc["incident"] = {
        "minutes": minutes,
        "reported_jobs": draw.integer(0, 3) if reportable else 0,
        "faults": drawn,
    }
    name = str(doc["name"])
    text = render(doc, header=_header(seed, faults, control))
    return Generated(seed, name, text, tuple(f["kind"] for f in drawn))


def _check(seed: Any, faults: Any, control: bool) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"the seed must be a whole number from 0 to {MAX_SEED}, not {seed!r}")
    if faults is None:
        return
    if isinstance(faults, bool) or not isinstance(faults, int) or not 0 <= faults <= MAX_FAULTS:
        raise InvalidInput(f"faults must be a whole number from 0 to {MAX_FAULTS}, not {faults!r}")
    if control and faults:
        raise InvalidInput("a control has no faults: give --control or --faults, not both")


def _fault_count(draw: _Draw) -> int:
    return 0 if draw.chance(CONTROL_SHARE) else draw.integer(1, MAX_FAULTS)


def _document(
    seed: int, world: _World, draw: _Draw, faults: list[dict[str, Any]]
) -> dict[str, Any]:
    kinds = [f["kind"] for f in faults]
    what = ", ".join(kinds) if kinds else "a healthy control, no faults"
    fallback = [b["name"] for b in world.buckets if b["role"] == "fallback"]
    secondary = [b["name"] for b in world.buckets if b["role"] == "secondary"]
    doc: dict[str, Any] = {
        "name": f"generated-{seed}",
        "description": f"Generated world {seed}: {what}",
        "seed": seed,
        "baseline_success": draw.uniform(0.985, 0.999, 3),
        "cancel_share": draw.uniform(0.0, 0.004, 3),
        "export_bucket": world.buckets[0]["name"],
    }
    if fallback or secondary:
        doc["fallback_bucket"] = (fallback or secondary)[0]
    doc["latency_slo"] = draw.choice(("60s", "90s", "2m"))
    doc["running_sla"] = draw.choice(("15m", "20m", "30m"))
    doc["tenants"] = world.tenants
    doc["connectors"] = world.connectors
    doc["buckets"] = world.buckets
    doc["chunk_sizes"] = [{**c, "size": f"{c['size'] // MIB}MiB"} for c in world.chunk_sizes]
    doc["kinds"] = world.kinds
    doc["job_size"] = {
        **world.job_size,
        "median": f"{world.job_size['median'] // 10**6}MB",
        "min": "1MB",
        "max": f"{world.job_size['max'] // 10**9}GB",
    }
    doc["throughput"] = {
        **world.throughput,
        "bytes_per_second": f"{world.throughput['bytes_per_second'] // 10**6}MB",
        "overhead": f"{world.throughput['overhead']}s",
    }
    return doc


def _header(seed: int, faults: int | None, control: bool) -> str:
    options = f" --faults {faults}" if faults is not None else ""
    options += " --control" if control else ""
    return (
        f"# Generated by `exportnb sandbox generate --seed {seed}{options}` "
        f"(generator version {GENERATOR_VERSION}).\n"
        "# A random world and incident for game days and diagnosis tests: "
        "see docs/scenarios.md.\n"
    )


# TOML ---------------------------------------------------------------------------

_TABLES = ("kinds", "job_size", "throughput", "incident")
_ARRAYS = ("tenants", "connectors", "buckets", "chunk_sizes")


def render(doc: dict[str, Any], *, header: str = "") -> str:
    """A scenario document as TOML: top-level keys, the arrays of tables one entry a line,
    then the tables; ``incident.faults`` one fault a line."""
    lines = [header.rstrip("\n")] if header else []
    plain = [k for k in doc if k not in _TABLES and k not in _ARRAYS]
    lines += [f"{key} = {_value(doc[key])}" for key in plain]
    for key in _ARRAYS:
        if key in doc:
            lines += ["", f"{key} = [", *(f"    {_value(item)}," for item in doc[key]), "]"]
    for key in _TABLES:
        if key in doc:
            lines += ["", f"[{key}]", *_table_lines(doc[key])]
    return "\n".join(lines) + "\n"


def _table_lines(table: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += [f"{key} = [", *(f"    {_value(v)}," for v in value), "]"]
        else:
            lines.append(f"{key} = {_value(value)}")
    return lines


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to a scenario file")


# Files --------------------------------------------------------------------------


def check(generated: Generated) -> None:
    """Load the generated file as the sandbox would; InvalidInput if it cannot be used."""
    with tempfile.TemporaryDirectory(prefix="exportnb-generate-") as folder:
        path = Path(folder) / f"{generated.name}.toml"
        path.write_text(generated.text, encoding="utf-8")
        load_scenario(str(path))


def save(generated: Generated, out: Path) -> Path:
    """Write the scenario to ``out`` (a ``.toml`` file), whole or not at all; checked first.

    Raises InvalidInput when ``out`` is not a ``.toml`` path or cannot be written.
    """
    if out.suffix != ".toml":
        raise InvalidInput(f"--out {out}: the scenario file must end in .toml")
    if out.is_dir():
        raise InvalidInput(f"--out {out}: is a folder; give a file name ending in .toml")
    check(generated)
    part = out.with_name(f".{out.name}.part")
    try:
        part.write_text(generated.text, encoding="utf-8")
        part.replace(out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InvalidInput(f"--out {out}: cannot write it: {exc.strerror or exc}") from exc
    return out
