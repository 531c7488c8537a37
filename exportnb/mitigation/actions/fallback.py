"""Fallback bucket: redirect exports for a TTL (``featurectl set export.fallback_bucket``).

New exports and retries land in ``bucket`` until the TTL (30m by default, never absent,
at most ``[limits] max_flag_ttl``) ends. A revert unsets the flag, or puts back the value
it had before the incident set it, with the time that value has left.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from exportnb.core import codec
from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.quantities import format_duration, parse_ttl
from exportnb.mitigation.actions.common import count, flag_state, queued, reach
from exportnb.mitigation.model import By, Change, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation, Option, Param
from exportnb.platform.model import FALLBACK_FLAG, PlatformInfo


class FallbackBucket(Mitigation):
    """``fallback-bucket``: new exports and retries land in another bucket for a while."""

    name = "fallback-bucket"
    sets_flag = FALLBACK_FLAG

    def params_from_flag(self, value: Any) -> dict[str, Any]:
        return {"bucket": value}

    label = "Redirect exports to the fallback bucket"
    help = (
        "Redirect exports to a fallback bucket for a TTL (featurectl set export.fallback_bucket)."
    )
    gist = (
        "Set export.fallback_bucket with a TTL: new exports land in the fallback bucket; "
        "the audit trail records the change."
    )
    revertible = True
    order = 40
    params = (
        Param(
            "bucket",
            "Bucket",
            "text",
            help="The fallback bucket new exports land in.",
            prefill="fallback_bucket",
            cli=Option(help="The bucket new exports and retries go to.", required=True),
        ),
        Param(
            "ttl",
            "TTL",
            "duration",
            "30m",
            "Mandatory, e.g. 30m; at most [limits] max_flag_ttl.",
            cli=Option(
                help="How long the redirect lasts (required > 0, at most [limits] max_flag_ttl)."
            ),
        ),
        ROUND,
    )

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
        bucket = given.get("bucket")
        if not isinstance(bucket, str) or not bucket.strip():
            raise InvalidInput("fallback-bucket needs a bucket name (--bucket)")
        ttl = parse_ttl(given["ttl"])
        if ttl > settings.max_flag_ttl:
            raise InvalidInput(
                f"TTL of {format_duration(ttl)} is above the configured maximum of "
                f"{format_duration(settings.max_flag_ttl)} ([limits] max_flag_ttl)"
            )
        return {"bucket": bucket.strip(), "ttl": int(ttl) if ttl == int(ttl) else ttl}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        platform, bucket, ttl = context.platform, params["bucket"], params["ttl"]
        info = platform.info()
        if bucket not in info.buckets:
            raise PreconditionFailed(
                f"bucket {bucket!r} does not exist (buckets: "
                f"{', '.join(info.buckets)}); nothing was changed"
            )
        warnings = _bucket_warnings(bucket, info)
        current = platform.get_flag(FALLBACK_FLAG)
        if current is not None:
            warnings.append(
                f"{FALLBACK_FLAG} is {current.value} now (set by {current.set_by}); "
                "this replaces it, and revert puts it back while it lasts"
            )
        ids, tenants, sources = reach([j for j in queued(platform) if j.bucket != bucket])
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        new = {"value": bucket, "ttl": ttl, "expires_at": codec.format_time(expires)}
        summary = (
            f"Set {FALLBACK_FLAG} = {bucket} for {format_duration(ttl)} (until "
            f"{codec.format_time(expires.replace(microsecond=0))}): new exports and "
            f"retries land in {bucket}; {count(len(ids), 'queued job')} of "
            f"{count(len(tenants), 'tenant')} would go there."
        )
        changes = [Change("flag", FALLBACK_FLAG, flag_state(current), new)]
        buckets = sorted({*sources, info.export_bucket, bucket})
        return Draft(summary, changes, ids, tenants, buckets, [self.command(params)], warnings)

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        flag = context.platform.set_flag(
            FALLBACK_FLAG, params["bucket"], ttl=params["ttl"], actor=by.actor, reason=by.reason
        )
        progress.response = flag
        progress.changes.append(
            Change("flag", FALLBACK_FLAG, draft.changes[0].old, flag_state(flag))
        )

    def command(self, params: Mapping[str, Any]) -> str:
        ttl = params["ttl"]  # seconds when canonical, as written ("30m") in a recommendation
        ttl = format_duration(parse_ttl(ttl) if isinstance(ttl, str) else ttl)
        bucket = shlex.quote(params["bucket"])
        return f"featurectl set {FALLBACK_FLAG} {bucket} --ttl {ttl}"


def _bucket_warnings(bucket: str, info: PlatformInfo) -> list[str]:
    if bucket == info.export_bucket:
        return [f"{bucket} is the export bucket itself: redirecting to it avoids nothing"]
    if bucket not in info.fallback_buckets:
        return [
            f"{bucket} is not one of the platform's fallback buckets "
            f"({', '.join(info.fallback_buckets) or 'none'})"
        ]
    return []


FALLBACK_BUCKET = FallbackBucket()
