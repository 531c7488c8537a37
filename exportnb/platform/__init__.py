"""The platform: the one boundary through which exportnb reads export state and acts on it.

A platform is found by name::

    platform = get_platform("sandbox")
    failed = platform.list_jobs(JobQuery(status="failed", limit=20))

Built-in names are ``sandbox`` (the reference platform) and ``command`` (an
organisation's own exportctl/featurectl through the JSON contract). Third parties
register more through the ``exportnb.platforms`` entry-point group, or at run time
with :func:`register`.
"""

from exportnb.platform.base import Platform, current_actor
from exportnb.platform.registry import available_platforms, get_platform, register

__all__ = ["Platform", "available_platforms", "current_actor", "get_platform", "register"]
