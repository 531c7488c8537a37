"""Where exportnb keeps its state, and the settings read from ``$EXPORTNB_HOME/config.toml``.

All state lives under one folder, ``$EXPORTNB_HOME``. When it is not set it is
``$XDG_DATA_HOME/exportnb``, which is ``~/.local/share/exportnb`` on most machines.

Example ``config.toml``::

    [platform]
    name = "command"                      # "sandbox" (default) or a registered name

    [platform.command]
    exportctl = "/opt/acme/bin/exportctl"
    featurectl = "/opt/acme/bin/featurectl"
    timeout = "60s"

    [limits]
    max_retry_concurrency = 8             # retries above this are refused
    max_flag_ttl = "24h"                  # flags with a longer TTL are refused
    stale_heartbeat = "30s"               # a running job silent this long may be retried

    [policy]
    auto_apply = ["pause-bulk"]           # mitigations an automatic run may apply (default none)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from exportnb.core.errors import ConfigError, InvalidInput
from exportnb.core.quantities import parse_ttl


def home() -> Path:
    """The folder that holds every piece of exportnb state."""
    explicit = os.environ.get("EXPORTNB_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "exportnb"


@dataclass(frozen=True)
class Settings:
    platform: str = "sandbox"
    platform_options: dict[str, Any] = field(default_factory=dict)
    max_retry_concurrency: int = 8
    max_flag_ttl: float = 24 * 3600.0
    stale_heartbeat: float = 30.0
    auto_apply: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or home() / "config.toml"
        if not path.exists():
            return cls(platform=os.environ.get("EXPORTNB_PLATFORM", "sandbox"))
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> Settings:
        platform = raw.get("platform", {})
        limits = raw.get("limits", {})
        name = os.environ.get("EXPORTNB_PLATFORM") or platform.get("name", "sandbox")
        options = platform.get(name, {})
        try:
            concurrency = int(limits.get("max_retry_concurrency", cls.max_retry_concurrency))
            max_ttl = parse_ttl(limits.get("max_flag_ttl", "24h"))
            stale = parse_ttl(limits.get("stale_heartbeat", "30s"))
        except (InvalidInput, ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: [limits] {exc}") from exc
        if concurrency < 1:
            raise ConfigError(f"{source}: [limits] max_retry_concurrency must be at least 1")
        try:
            auto_apply = _mitigation_names(raw.get("policy", {}).get("auto_apply", []))
        except (InvalidInput, AttributeError) as exc:
            raise ConfigError(f"{source}: [policy] {exc}") from exc
        return cls(
            platform=name,
            platform_options=dict(options),
            max_retry_concurrency=concurrency,
            max_flag_ttl=max_ttl,
            stale_heartbeat=stale,
            auto_apply=auto_apply,
        )


def _mitigation_names(actions: object) -> tuple[str, ...]:
    """``[policy] auto_apply``: a list of mitigation names, each registered.

    The names are those of the ``exportnb.mitigations`` entry-point group, read from the
    installed metadata without importing any action.
    """
    if isinstance(actions, str) or not isinstance(actions, (list, tuple)):
        raise InvalidInput(f"auto_apply must be a list of mitigation names, not {actions!r}")
    known = sorted({entry.name for entry in entry_points(group="exportnb.mitigations")})
    for action in actions:
        if not isinstance(action, str):
            raise InvalidInput(f"auto_apply holds {action!r}, not a mitigation name")
        if action not in known:
            raise InvalidInput(f"unknown mitigation {action!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(actions))
