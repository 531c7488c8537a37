"""Scenarios: the world a sandbox simulates, and the incident that strikes it.

A scenario names the tenants, connectors and buckets of a small export platform,
how much history it has (``days``, ``volume``, ``baseline_success``), the models
that size and time its jobs, and an ``incident``: the faults in force during the
last ``incident.minutes`` before the sandbox starts.

Scenarios are TOML (or JSON) files; the built-in ones ship in
``exportnb/sandbox/scenarios``. A file may say ``extends = "base"`` (a built-in name,
or a path relative to the file) to start from another file: tables are merged key
by key, everything else (arrays such as ``tenants`` or ``incident.faults``) is
replaced. ``name`` and ``description`` are never inherited. ``docs/scenarios.md``
describes every key.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.quantities import format_size, parse_size, parse_ttl
from exportnb.platform.model import JOB_KINDS
from exportnb.sandbox.faults import FAULT_KINDS, WORKER_FAULTS, Fault, parse_fault

BUCKET_ROLES = ("primary", "secondary", "fallback")
KNOWN_FAMILIES = {
    "s3": "object",
    "gcs": "object",
    "azure-blob": "object",
    "snowflake": "warehouse",
    "bigquery": "warehouse",
    "redshift": "warehouse",
    "databricks": "warehouse",
    "sftp": "file-transfer",
    "ftps": "file-transfer",
}
"""The family of well-known connector names; other connectors must give ``family``."""

DEFAULT_KINDS = {"scheduled": 0.7, "adhoc": 0.2, "bulk": 0.1}
"""Share of each job kind when a scenario does not say."""

MAX_VOLUME = 20_000_000
"""The most history jobs a scenario may ask for (about 7 GB of store)."""

_REQUIRED = object()
_MAX_EXTENDS = 8
_SCENARIO_SUFFIXES = (".toml", ".json")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    tier: str
    weight: float = 1.0


@dataclass(frozen=True)
class Connector:
    name: str
    family: str
    weight: float = 1.0


@dataclass(frozen=True)
class Bucket:
    """A bucket exports land in. ``weight`` is its share of new jobs (fallbacks get none)."""

    name: str
    role: str
    region: str
    weight: float = 0.0


@dataclass(frozen=True)
class ChunkChoice:
    """A chunk size (logical bytes) jobs may use; ``connectors`` narrows it (empty: all)."""

    size: int
    weight: float = 1.0
    connectors: tuple[str, ...] = ()

    def applies_to(self, connector: str) -> bool:
        return not self.connectors or connector in self.connectors


@dataclass(frozen=True)
class JobSizeModel:
    """Logical job sizes: lognormal around ``median``, clipped to ``[minimum, maximum]``."""

    median: int = 200_000_000
    sigma: float = 1.0
    minimum: int = 1_000_000
    maximum: int = 20_000_000_000
    bulk_factor: float = 4.0


@dataclass(frozen=True)
class ThroughputModel:
    """How long an export takes: ``overhead + bytes / bytes_per_second``, with lognormal noise."""

    bytes_per_second: float = 40_000_000.0
    overhead: float = 3.0
    noise: float = 0.25

    def seconds(self, size: float) -> float:
        """The expected duration of a whole export of ``size`` logical bytes, without noise."""
        return self.overhead + size / self.bytes_per_second


@dataclass(frozen=True)
class Incident:
    """The faults in force during the last ``minutes`` before the sandbox starts."""

    minutes: float = 30.0
    faults: tuple[Fault, ...] = ()
    reported_jobs: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    tenants: tuple[Tenant, ...]
    connectors: tuple[Connector, ...]
    buckets: tuple[Bucket, ...]
    export_bucket: str
    fallback_bucket: str | None
    chunk_sizes: tuple[ChunkChoice, ...]
    days: float = 7.0
    volume: int = 50_000
    baseline_success: float = 0.995
    cancel_share: float = 0.001
    kinds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    job_size: JobSizeModel = JobSizeModel()
    throughput: ThroughputModel = ThroughputModel()
    incident: Incident = Incident()
    latency_slo: float = 60.0
    running_sla: float = 1200.0
    source: str = ""

    @property
    def jobs_per_minute(self) -> float:
        """The average rate of new jobs, before the hour-of-day seasonality."""
        return self.volume / (self.days * 1440)

    def incident_start(self, now: float) -> float:
        return now - self.incident.minutes * 60

    def bucket(self, name: str) -> Bucket:
        for bucket in self.buckets:
            if bucket.name == name:
                return bucket
        raise NotFound(f"scenario {self.name}: no bucket {name!r}")

    def chunk_choices(self, connector: str) -> list[ChunkChoice]:
        return [c for c in self.chunk_sizes if c.applies_to(connector)]


# Reading -------------------------------------------------------------------------


class _Table:
    """One table of a scenario file; every error names the file and the field."""

    def __init__(self, raw: Any, source: str, where: str = "") -> None:
        self.source = source
        self.where = where
        if not isinstance(raw, dict):
            raise self.error("", f"must be a table, not {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> InvalidInput:
        field_name = self.path(key) if key else self.where or "(top level)"
        return InvalidInput(f"scenario {self.source}: {field_name}: {message}")

    def take(self, key: str, default: Any = _REQUIRED) -> Any:
        self.seen.add(key)
        if key in self.raw:
            return self.raw[key]
        if default is _REQUIRED:
            raise self.error(key, "is required")
        return default

    def convert(self, key: str, default: Any, parse: Callable[[Any], Any]) -> Any:
        """Read ``key`` and pass it through ``parse``, reporting its errors against the field."""
        value = self.take(key, default)
        if value is default and default is not _REQUIRED:
            return value
        try:
            return parse(value)
        except InvalidInput as exc:
            raise self.error(key, exc.message) from exc

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        value = self.take(key, default)
        if not isinstance(value, str) or (not value and default is _REQUIRED):
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return value

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        low: float,
        high: float = math.inf,
        integer: bool = False,
        open_low: bool = True,
    ) -> Any:
        value = self.take(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            wanted = "a whole number" if integer else "a number"
            raise self.error(key, f"must be {wanted}, not {value!r}")
        below = value <= low if open_low else value < low
        if below or value > high:
            low_text = f"greater than {low:g}" if open_low else f"at least {low:g}"
            high_text = f" and at most {high:g}" if high != math.inf else ""
            raise self.error(key, f"must be {low_text}{high_text}, not {value!r}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.take(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a list of names")
        return tuple(value)

    def table(self, key: str) -> _Table:
        return _Table(self.take(key, {}), self.source, self.path(key))

    def tables(self, key: str) -> list[_Table]:
        value = self.take(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list of tables")
        return [_Table(item, self.source, f"{self.path(key)}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        """Refuse keys nobody read: they are typos or keys of another version."""
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise self.error("", f"unknown key(s) {', '.join(unknown)}")


def _seconds(value: Any) -> float:
    """A duration: a number of seconds or a string such as ``90s`` or ``20m``."""
    return parse_ttl(value)


def _seconds_or_zero(value: Any) -> float:
    """A duration that may be zero."""
    if value in (0, "0", "0s"):
        return 0.0
    return parse_ttl(value)


def _tenant(t: _Table) -> Tenant:
    tenant = Tenant(
        id=t.text("id"),
        name=t.text("name"),
        tier=t.text("tier", "standard"),
        weight=float(t.number("weight", 1.0, low=0)),
    )
    t.done()
    return tenant


def _connector(t: _Table) -> Connector:
    name = t.text("name")
    family = t.text("family", KNOWN_FAMILIES.get(name, ""))
    if not family:
        raise t.error("family", f"is required for connector {name!r} (e.g. object, warehouse)")
    connector = Connector(name, family, float(t.number("weight", 1.0, low=0)))
    t.done()
    return connector


def _bucket(t: _Table) -> Bucket:
    name, role = t.text("name"), t.text("role")
    if role not in BUCKET_ROLES:
        raise t.error("role", f"must be one of {', '.join(BUCKET_ROLES)}, not {role!r}")
    default_weight = 1.0 if role == "primary" else 0.0
    bucket = Bucket(
        name,
        role,
        t.text("region", "us-east-1"),
        float(t.number("weight", default_weight, low=0, open_low=False)),
    )
    t.done()
    return bucket


def _chunk_choice(t: _Table) -> ChunkChoice:
    choice = ChunkChoice(
        size=t.convert("size", _REQUIRED, parse_size),
        weight=float(t.number("weight", 1.0, low=0)),
        connectors=t.names("connectors"),
    )
    t.done()
    return choice


def _unique(t: _Table, key: str, read: Callable[[_Table], Any], attr: str) -> tuple[Any, ...]:
    """The list of tables under ``key``, each read by ``read``; no two may share ``attr``."""
    items = [read(x) for x in t.tables(key)]
    names = [getattr(item, attr) for item in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise t.error(key, f"{attr} must be unique; repeated: {', '.join(twice)}")
    return tuple(items)


def _job_size(t: _Table) -> JobSizeModel:
    d = JobSizeModel()
    model = JobSizeModel(
        median=t.convert("median", d.median, parse_size),
        sigma=float(t.number("sigma", d.sigma, low=0, high=4, open_low=False)),
        minimum=t.convert("min", d.minimum, parse_size),
        maximum=t.convert("max", d.maximum, parse_size),
        bulk_factor=float(t.number("bulk_factor", d.bulk_factor, low=0)),
    )
    t.done()
    if not model.minimum <= model.median <= model.maximum:
        raise t.error("median", "must lie between min and max")
    return model


def _throughput(t: _Table) -> ThroughputModel:
    d = ThroughputModel()
    model = ThroughputModel(
        bytes_per_second=float(t.convert("bytes_per_second", d.bytes_per_second, parse_size)),
        overhead=float(t.convert("overhead", d.overhead, _seconds_or_zero)),
        noise=float(t.number("noise", d.noise, low=0, high=2, open_low=False)),
    )
    t.done()
    return model


def _kinds(t: _Table) -> dict[str, float]:
    kinds = {k: float(t.number(k, 0.0, low=0, open_low=False)) for k in list(t.raw)}
    unknown = sorted(set(kinds) - set(JOB_KINDS))
    if unknown:
        raise t.error(unknown[0], f"unknown job kind (known: {', '.join(JOB_KINDS)})")
    if not any(kinds.values()):
        raise t.error("", "give at least one job kind a positive weight")
    return kinds


def _fault(t: _Table, world: _World) -> Fault:
    kind = t.text("kind")
    if kind not in FAULT_KINDS:
        raise t.error("kind", f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    params = {k: v for k, v in t.raw.items() if k != "kind"}
    t.seen.update(params)
    try:
        fault = parse_fault(kind, params)
    except InvalidInput as exc:
        raise t.error("", exc.message) from exc
    for scope, known in world.scopes().items():
        for name in fault.params.get(scope, []):
            if name not in known:
                raise t.error(
                    scope,
                    f"{name!r} is not one of the scenario's {scope} ({', '.join(sorted(known))})",
                )
    return fault


@dataclass(frozen=True)
class _World:
    tenants: tuple[Tenant, ...]
    connectors: tuple[Connector, ...]
    buckets: tuple[Bucket, ...]

    def scopes(self) -> dict[str, set[str]]:
        return {
            "tenants": {t.id for t in self.tenants},
            "connectors": {c.name for c in self.connectors},
            "buckets": {b.name for b in self.buckets},
        }


def _world(t: _Table) -> _World:
    world = _World(
        tenants=_unique(t, "tenants", _tenant, "id"),
        connectors=_unique(t, "connectors", _connector, "name"),
        buckets=_unique(t, "buckets", _bucket, "name"),
    )
    for key, items in (("tenants", world.tenants), ("connectors", world.connectors)):
        if not any(item.weight > 0 for item in items):
            raise t.error(key, "give at least one a positive weight")
    if not any(b.weight > 0 for b in world.buckets):
        raise t.error("buckets", "give at least one bucket a positive weight")
    return world


def _incident(t: _Table, world: _World, days: float) -> Incident:
    faults = t.take("faults", [])
    if not isinstance(faults, list):
        raise t.error("faults", "must be a list of tables")
    incident = Incident(
        minutes=float(t.number("minutes", 30.0, low=0, high=days * 1440)),
        faults=tuple(
            _fault(_Table(f, t.source, f"{t.path('faults')}[{i}]"), world)
            for i, f in enumerate(faults)
        ),
        reported_jobs=int(t.number("reported_jobs", 0, low=0, integer=True, open_low=False)),
    )
    t.done()
    reportable = any(f.kind in ("corrupt", "missing") for f in incident.faults)
    if incident.reported_jobs and not reportable:
        raise t.error("reported_jobs", "needs a corrupt or missing fault to report jobs of")
    return incident


def _chunk_sizes(t: _Table, world: _World) -> tuple[ChunkChoice, ...]:
    choices = tuple(_chunk_choice(x) for x in t.tables("chunk_sizes"))
    known = world.scopes()["connectors"]
    for i, choice in enumerate(choices):
        for name in choice.connectors:
            if name not in known:
                raise t.error(f"chunk_sizes[{i}].connectors", f"unknown connector {name!r}")
    for connector in world.connectors:
        if not any(c.applies_to(connector.name) for c in choices):
            raise t.error("chunk_sizes", f"no chunk size applies to connector {connector.name!r}")
    return choices


def _role_bucket(t: _Table, world: _World, key: str, roles: tuple[str, ...]) -> str | None:
    """The bucket named by ``key``, else the only bucket with the first role that has one."""
    names = {b.name: b.role for b in world.buckets}
    if key in t.raw:
        name = t.text(key)
        if name not in names:
            raise t.error(
                key, f"{name!r} is not one of the scenario's buckets ({', '.join(sorted(names))})"
            )
        return name
    t.seen.add(key)
    for role in roles:
        found = [b.name for b in world.buckets if b.role == role]
        if len(found) == 1:
            return found[0]
        if found:
            raise t.error(key, f"several {role} buckets; say which one")
    return None


def _scenario(t: _Table, name: str) -> Scenario:
    days = float(t.number("days", 7, low=0, high=366))
    world = _world(t)
    export_bucket = _role_bucket(t, world, "export_bucket", ("primary",))
    if export_bucket is None:
        raise t.error("export_bucket", "is required: no bucket has role primary")
    scenario = Scenario(
        name=t.text("name", name),
        description=t.text("description", ""),
        seed=int(t.number("seed", 1, low=0, integer=True, open_low=False)),
        tenants=world.tenants,
        connectors=world.connectors,
        buckets=world.buckets,
        export_bucket=export_bucket,
        fallback_bucket=_role_bucket(t, world, "fallback_bucket", ("fallback", "secondary")),
        chunk_sizes=_chunk_sizes(t, world),
        days=days,
        volume=int(t.number("volume", 50_000, low=0, high=MAX_VOLUME, integer=True)),
        baseline_success=float(t.number("baseline_success", 0.995, low=0.5, high=1)),
        cancel_share=float(t.number("cancel_share", 0.001, low=0, high=0.5, open_low=False)),
        kinds=_kinds(t.table("kinds")) if "kinds" in t.raw else dict(DEFAULT_KINDS),
        job_size=_job_size(t.table("job_size")),
        throughput=_throughput(t.table("throughput")),
        incident=_incident(t.table("incident"), world, days),
        latency_slo=float(t.convert("latency_slo", 60.0, _seconds)),
        running_sla=float(t.convert("running_sla", 1200.0, _seconds)),
        source=t.source,
    )
    t.seen.add("kinds")
    t.done()
    return scenario


# Files ---------------------------------------------------------------------------


def _scenario_dir() -> Traversable:
    return resources.files("exportnb.sandbox").joinpath("scenarios")


def _builtin_file(name: str) -> Traversable:
    path = _scenario_dir().joinpath(f"{name}.toml")
    if not path.is_file():
        known = ", ".join(builtin_scenarios())
        raise NotFound(
            f"unknown scenario {name!r} (built-in: {known}); "
            "or give the path of a .toml or .json scenario file"
        )
    return path


def _parse(text: str, source: str, suffix: str) -> dict[str, Any]:
    try:
        raw = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"scenario {source}: not valid {suffix[1:].upper()}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput(f"scenario {source}: must hold a table of keys at the top level")
    return raw


def _is_path(name_or_path: str) -> bool:
    return name_or_path.endswith(_SCENARIO_SUFFIXES) or "/" in name_or_path or "\\" in name_or_path


@dataclass(frozen=True)
class _Source:
    """A scenario file read but not yet checked."""

    raw: dict[str, Any]
    name: str  # the file's stem: the scenario's name unless it says otherwise
    label: str  # how messages name the file
    folder: Path | None  # where a relative ``extends`` is found (None: built-in)


def _read(name_or_path: str, base: Path | None) -> _Source:
    if not _is_path(name_or_path):
        label = f"{name_or_path} (built-in)"
        text = _builtin_file(name_or_path).read_text(encoding="utf-8")
        return _Source(_parse(text, label, ".toml"), name_or_path, label, None)
    path = Path(name_or_path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix not in _SCENARIO_SUFFIXES:
        raise InvalidInput(f"scenario {path}: use a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFound(f"no scenario file at {path}") from exc
    except OSError as exc:
        raise InvalidInput(f"scenario {path}: cannot read it: {exc}") from exc
    return _Source(_parse(text, str(path), path.suffix), path.stem, str(path), path.parent)


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: tables merge key by key, anything else is replaced."""
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(name_or_path: str, base: Path | None = None, depth: int = 0) -> _Source:
    """A scenario file with every ``extends`` applied."""
    source = _read(name_or_path, base)
    parent = source.raw.pop("extends", None)
    if parent is None:
        return source
    if not isinstance(parent, str) or not parent:
        raise InvalidInput(f"scenario {source.label}: extends: must be a scenario name or path")
    if depth >= _MAX_EXTENDS:
        raise InvalidInput(
            f"scenario {source.label}: extends: more than {_MAX_EXTENDS} levels (is there a loop?)"
        )
    inherited = dict(_resolve(parent, source.folder, depth + 1).raw)
    for own in ("name", "description"):
        inherited.pop(own, None)
    label = f"{source.label} (extends {parent})"
    return _Source(_merge(inherited, source.raw), source.name, label, source.folder)


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario from a ``.toml`` or ``.json`` file.

    Raises NotFound for an unknown name or a missing file, InvalidInput (naming the
    file and the field) for a file that cannot be used.
    """
    source = _resolve(name_or_path)
    return _scenario(_Table(source.raw, source.label), source.name)


def builtin_scenarios() -> dict[str, str]:
    """Name -> description of every scenario shipped with exportnb."""
    found: dict[str, str] = {}
    for entry in sorted(_scenario_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            raw = tomllib.loads(entry.read_text(encoding="utf-8"))
            found[entry.name.removesuffix(".toml")] = str(raw.get("description", ""))
    return found


def describe(scenario: Scenario) -> str:
    """A few lines about a scenario, for ``exportnb sandbox scenarios`` and notebooks."""
    faults = ", ".join(f.describe() for f in scenario.incident.faults) or "none"
    chunks = ", ".join(format_size(c.size) for c in scenario.chunk_sizes)
    worker = [f.kind for f in scenario.incident.faults if f.kind in WORKER_FAULTS]
    return "\n".join(
        [
            f"{scenario.name}: {scenario.description}",
            f"  history: {scenario.volume:,} jobs over {scenario.days:g} days, "
            f"baseline success {scenario.baseline_success:.1%}",
            f"  export bucket {scenario.export_bucket}, "
            f"fallback {scenario.fallback_bucket or '-'}; "
            f"chunk sizes {chunks}",
            f"  incident: last {scenario.incident.minutes:g} min; faults: {faults}"
            + (f" (worker faults: {', '.join(worker)})" if worker else ""),
        ]
    )
