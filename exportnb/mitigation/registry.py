"""Mitigations by name: one :class:`Mitigation` object per action, and the registry of them.

A mitigation is everything exportnb knows about one action that changes the platform
during an incident: its name, its parameters (:class:`Param`: name, label, kind, default,
help), how parameters as given become canonical ones (:meth:`Mitigation.normalize`,
:class:`~exportnb.core.errors.InvalidInput` when they are wrong), what it would change
(:meth:`Mitigation.plan`, reading the platform), how it is done (:meth:`Mitigation.apply`),
its runbook command, whether a revert undoes it, and the title of its card in the panel.
:mod:`exportnb.mitigation.lifecycle` plans and applies any of them the same way, with the
journal and the policy; the panel's cards and ``exportnb mitigate`` are made from them.

The actions are found by name, like papermill's engines. Every one -- the built-ins as
much as another package's -- is an entry point of the ``exportnb.mitigations`` group
naming a :class:`Mitigation` instance::

    [project.entry-points."exportnb.mitigations"]
    drain-queue = "acme_exports.mitigations:DRAIN_QUEUE"

:func:`register` adds one at run time (tests, notebooks); it wins over an entry point of
the same name. :func:`get` and :func:`names` look them up.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import ConfigError, InvalidInput
from exportnb.mitigation.journal import Journal
from exportnb.mitigation.model import By, Context, Draft, Progress

log = logging.getLogger(__name__)
GROUP = "exportnb.mitigations"
KINDS = ("ids", "text", "size", "duration", "int", "choice", "flag")
"""What a parameter holds: job IDs, text, a size (50MB), a duration (30m), a whole
number, one of some choices, or true/false."""
MAX_ROUND = 1000


# Parameters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """How a parameter reads at ``exportnb mitigate``: its option, help and metavar."""

    flag: str = ""  # default: --<name>, underscores as dashes
    help: str = ""  # default: the parameter's help
    metavar: str | None = None
    required: bool = False


@dataclass(frozen=True)
class Param:
    """One parameter of an action: what it is called, what it holds, its default."""

    name: str
    label: str  # the card's input label
    kind: str  # one of KINDS
    default: Any = None
    help: str = ""  # the card's hint
    choices: tuple[str, ...] = ()
    maximum: int | Callable[[Settings], int] | None = None  # whole numbers: the largest
    aliases: tuple[str, ...] = ()  # other names accepted for it (job_id for job_ids)
    prefill: str = ""  # the incident's attribute that fills it in the panel
    cli: Option = field(default_factory=Option)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def flag(self) -> str:
        return self.cli.flag or "--" + self.name.replace("_", "-")

    def top(self, settings: Settings) -> int | None:
        """The largest whole number it takes (the settings may decide)."""
        return self.maximum(settings) if callable(self.maximum) else self.maximum


ROUND = Param(
    "round",
    "Round",
    "int",
    1,
    "Raise it to apply the same action again on purpose.",
    maximum=MAX_ROUND,
    cli=Option(help="Do the same thing again on purpose: a new round is a new idempotency key."),
)
"""Every action that may be done again on purpose takes a round: a new round, a new key."""


def whole(value: Any, name: str, low: int, high: int, hint: str = "") -> int:
    """A whole number from ``low`` to ``high`` (digit strings welcome)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            f"{name} must be a whole number from {low} to {high}, not {value!r}{hint}"
        )
    return value


# The action ---------------------------------------------------------------------------
class Mitigation(ABC):
    """One runbook mitigation: its parameters, its plan, how it is applied, its command.

    Subclass it, set the attributes, implement :meth:`plan`, :meth:`apply` and
    :meth:`command` (and :meth:`canonical` when it takes parameters), and make an instance
    an entry point of the ``exportnb.mitigations`` group."""

    name: str = ""  # the action's name: CLI subcommand, journal, policy, idempotency key
    label: str = ""  # the title of its card in the panel
    help: str = ""  # `exportnb mitigate NAME --help`: a first line, then more if needed
    gist: str = ""  # what it changes, one sentence, for a run's mitigation plan
    params: tuple[Param, ...] = ()
    revertible: bool = False  # a revert undoes the changes it made
    undoes: bool = False  # it undoes the incident's changes: never applied from a recommendation
    order: int = 100  # where its card comes among the cards not recommended
    sets_flag: str = ""  # the platform flag it turns on, if that is how it works

    def params_from_flag(self, value: Any) -> dict[str, Any]:
        """The parameters it was applied with, read back from the value of its flag as the
        platform shows it (the review finds mitigations applied outside exportnb so)."""
        return {}

    # Parameters -----------------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if p.default is not None}

    def params_for(self, journal: Journal, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The parameters to normalize for the incident of ``journal``: those given."""
        return dict(given or {})

    def form_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters from a form's values (a card's inputs, the CLI's options)."""
        return dict(values)

    def normalize(self, given: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
        """The canonical parameters (they make the idempotency key): sizes in bytes, TTLs
        in seconds, job IDs sorted and unique, defaults filled in; InvalidInput if wrong."""
        accepted = {p.name for p in self.params} | {a for p in self.params for a in p.aliases}
        unknown = sorted(set(given) - accepted)
        if unknown:
            known = ", ".join(sorted(p.name for p in self.params)) or "none"
            raise InvalidInput(
                f"{self.name} takes no parameter {', '.join(unknown)} (takes: {known})"
            )
        values = {**self.defaults(), **{k: v for k, v in given.items() if v is not None}}
        canonical = self.canonical(values, settings)
        if ROUND in self.params:
            canonical["round"] = whole(values["round"], "round", 1, MAX_ROUND)
        return canonical

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
        """The action's own parameters in canonical form (``round`` aside)."""
        return {}

    def replan_params(self, params: dict[str, Any], jobs: list[str]) -> dict[str, Any]:
        """The parameters to plan with again just before applying a plan that reached
        ``jobs``: what the engineer saw. The canonical parameters, by default."""
        return params

    # Planning and applying ------------------------------------------------------------
    @abstractmethod
    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        """What it would change now (reads the platform); NotFound/PreconditionFailed when
        it cannot run. Changes nothing."""

    @abstractmethod
    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        """Carry out ``draft``; every change made goes into ``progress``, even if this raises."""

    @abstractmethod
    def command(self, params: Mapping[str, Any]) -> str:
        """The runbook command(s) for canonical ``params``, one per line."""


# The registry -------------------------------------------------------------------------
_added: dict[str, Mitigation] = {}
_broken: dict[str, str] = {}


def register(mitigation: Mitigation) -> Mitigation:
    """Make ``mitigation`` available under its name (over an entry point of that name)."""
    if not isinstance(mitigation, Mitigation) or not mitigation.name:
        raise InvalidInput(f"{mitigation!r} is not a Mitigation with a name")
    _added[mitigation.name] = mitigation
    return mitigation


def unregister(name: str) -> None:
    """Forget a mitigation added with :func:`register` (entry points stay)."""
    _added.pop(name, None)


@functools.cache
def _entry_points() -> dict[str, Mitigation]:
    """The mitigations of the entry-point group; one that does not load is left out."""
    found: dict[str, Mitigation] = {}
    for entry in entry_points(group=GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # another package's plugin: say so, keep the others
            _broken[entry.name] = f"{entry.value} does not load ({exc})"
            log.warning("mitigation %s: %s", entry.name, _broken[entry.name])
            continue
        if not isinstance(loaded, Mitigation) or loaded.name != entry.name:
            _broken[entry.name] = f"{entry.value} is not a Mitigation named {entry.name!r}"
            log.warning("mitigation %s: %s", entry.name, _broken[entry.name])
            continue
        found[entry.name] = loaded
    return found


def mitigations() -> list[Mitigation]:
    """Every mitigation, in the order of the panel's cards."""
    everything = {**_entry_points(), **_added}
    return sorted(everything.values(), key=lambda m: (m.order, m.name))


def names() -> tuple[str, ...]:
    """The names of every mitigation, in the order of the panel's cards."""
    return tuple(m.name for m in mitigations())


def find(name: str) -> Mitigation | None:
    """The mitigation called ``name``, or None."""
    return _added.get(name) or _entry_points().get(name)


def setting(flag: str) -> Mitigation | None:
    """The mitigation that turns ``flag`` on, or None."""
    return next((m for m in mitigations() if m.sets_flag and m.sets_flag == flag), None)


def get(name: str) -> Mitigation:
    """The mitigation called ``name``; InvalidInput when there is none."""
    found = find(name)
    if found is not None:
        return found
    if name in _broken:
        raise ConfigError(f"mitigation {name!r} cannot be used: {_broken[name]}")
    raise InvalidInput(f"unknown mitigation {name!r} (known: {', '.join(names())})")
