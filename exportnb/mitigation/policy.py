"""When a mitigation may be applied: the ``[policy]`` table of ``config.toml``.

Two modes, the notebook's ``mode`` parameter:

* ``interactive`` -- an engineer in JupyterLab or at the ``exportnb mitigate`` prompt.
  Every action may be applied, after the engineer confirmed its plan.
* ``auto`` -- papermill on an alert, or any run nobody watches. Only the actions named
  in ``[policy] auto_apply`` are applied; for the others the plan is shown instead::

      [policy]
      auto_apply = ["pause-bulk"]     # default: nothing is applied automatically

The actions are those of :mod:`exportnb.mitigation.registry` (:func:`known`); the
configuration checks ``auto_apply`` against the names of its entry-point group.

``$EXPORTNB_MODE=auto`` in the environment (a runner may set it for the kernels it
starts) forces ``auto`` whatever mode a caller asks for, so that a notebook executed
without a person never applies what policy does not allow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput
from exportnb.mitigation import registry

MODES: tuple[str, ...] = ("auto", "interactive")
MODE_ENV = "EXPORTNB_MODE"


@dataclass(frozen=True)
class Decision:
    """Whether an action may be applied now, and why (or why not)."""

    allowed: bool
    mode: str
    reason: str


def known() -> tuple[str, ...]:
    """The mitigations policy knows: every one in the registry, by its CLI name."""
    return registry.names()


def check_action(action: str) -> str:
    """``action`` if it is a known mitigation; InvalidInput naming the known ones if not."""
    registry.get(action)
    return action


def check_actions(actions: object) -> tuple[str, ...]:
    """``[policy] auto_apply``: a list of mitigation names, each known."""
    if isinstance(actions, str) or not isinstance(actions, (list, tuple)):
        raise InvalidInput(f"auto_apply must be a list of mitigation names, not {actions!r}")
    for action in actions:
        if not isinstance(action, str):
            raise InvalidInput(f"auto_apply holds {action!r}, not a mitigation name")
        check_action(action)
    return tuple(dict.fromkeys(actions))


def effective_mode(mode: str) -> str:
    """``mode``, or ``auto`` when the environment says nobody is watching."""
    if mode not in MODES:
        raise InvalidInput(f"mode {mode!r}: use one of {', '.join(MODES)}")
    return "auto" if os.environ.get(MODE_ENV) == "auto" else mode


def allows(action: str, mode: str, settings: Settings | None = None) -> bool:
    """May ``action`` be applied in ``mode`` (interactive: once confirmed)?"""
    check_action(action)
    if effective_mode(mode) == "interactive":
        return True
    return action in _settings(settings).auto_apply


def decide(
    action: str, mode: str, *, confirmed: bool = False, settings: Settings | None = None
) -> Decision:
    """The decision for one apply: interactive needs a confirmation, auto the policy."""
    check_action(action)
    mode = effective_mode(mode)
    if mode == "interactive":
        if confirmed:
            return Decision(True, mode, "confirmed by the operator")
        return Decision(False, mode, "not confirmed: apply asks for a confirmation first")
    if action in _settings(settings).auto_apply:
        return Decision(True, mode, f"[policy] auto_apply allows {action}")
    return Decision(
        False, mode, f"automatic run: [policy] auto_apply does not allow {action}; plan only"
    )


def _settings(settings: Settings | None) -> Settings:
    return settings or Settings.load()
