"""Platforms by name: the ``exportnb.platforms`` entry-point group, and :func:`register`.

The built-ins, ``sandbox`` (the reference platform) and ``command`` (an organisation's
own exportctl/featurectl through the JSON contract), are entry points of exportnb itself,
like any third party's, so that nothing here imports them::

    [project.entry-points."exportnb.platforms"]
    acme = "acme_exports.exportnb:AcmePlatform"

A platform that can run on this machine (the sandbox) may also say, through the
``exportnb.environments`` group, what environment and notebook defaults its kernels need
while it runs (:func:`local_environment`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import ConfigError, NotFound
from exportnb.platform.base import Platform

PlatformFactory = Callable[..., Platform]
Environment = tuple[dict[str, str], dict[str, Any]]
"""Variables for the kernel's environment, and parameter defaults for the notebook."""

_registry: dict[str, PlatformFactory] = {}


def register(name: str, factory: PlatformFactory) -> None:
    """Make a platform available under ``name`` (overrides entry points of the same name)."""
    _registry[name] = factory


def available_platforms() -> list[str]:
    return sorted(set(_registry) | {ep.name for ep in entry_points(group="exportnb.platforms")})


def get_platform(name: str | None = None, **options: Any) -> Platform:
    """The platform registered under ``name``; configuration decides when ``name`` is None."""
    settings = Settings.load()
    name = name or settings.platform
    if name == settings.platform:
        options = {**settings.platform_options, **options}
    factory = _registry.get(name) or _entry_point(name)
    if factory is None:
        known = ", ".join(available_platforms())
        raise NotFound(f"unknown platform {name!r} (known: {known})")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"platform {name!r}: {exc}") from exc


def _entry_point(name: str) -> PlatformFactory | None:
    for entry in entry_points(group="exportnb.platforms", name=name):
        factory: PlatformFactory = entry.load()
        return factory
    return None


def local_environment(home: Path | None = None) -> Environment | None:
    """The environment and notebook defaults of a platform running on this machine, if any.

    Each ``exportnb.environments`` entry point is a callable ``(home) -> Environment | None``;
    the first that answers wins (the sandbox answers while it runs).
    """
    for entry in entry_points(group="exportnb.environments"):
        found: Environment | None = entry.load()(home)
        if found is not None:
            return found
    return None
