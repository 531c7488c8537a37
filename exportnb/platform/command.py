"""The ``command`` platform: an organisation's own exportctl/featurectl, through the contract.

Configured in ``config.toml``::

    [platform.command]
    exportctl = "/opt/acme/bin/exportctl"
    featurectl = "/opt/acme/bin/featurectl"
    timeout = "60s"

Every method runs one command as an argument list, never through a shell, with
``--output json`` appended, and reads one document of the JSON contract
(:mod:`exportnb.platform.contract`, ``docs/contract.md``) from its stdout. An Error document
is raised again as the matching exception of :mod:`exportnb.core.errors`. A missing
executable, a timeout, output that is not JSON or breaks the contract, or a failure
without an Error document is a :class:`~exportnb.core.errors.CommandError`. The acting
person is passed to the commands as ``$EXPORTNB_OPERATOR``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import CommandError, ConfigError, InvalidInput, NotFound
from exportnb.core.quantities import parse_ttl
from exportnb.platform import Platform, contract, current_actor
from exportnb.platform.model import (
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    JobQuery,
    LatencyPercentiles,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Verification,
)

OPERATOR_ENV = "EXPORTNB_OPERATOR"
CTL_PLATFORM_ENV = "EXPORTNB_CTL_PLATFORM"
"""The sandbox CLIs' test hook; not inherited, so a command cannot end up running itself."""
VERIFY_FAILED_EXIT = 10
STDERR_EXCERPT = 400


class CommandPlatform(Platform):
    """A platform answered by running ``exportctl``/``featurectl`` executables."""

    name = "command"

    def __init__(
        self,
        exportctl: str,
        featurectl: str,
        timeout: float | str = 60,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.exportctl = _executable("exportctl", exportctl)
        self.featurectl = _executable("featurectl", featurectl)
        self.timeout = _timeout(timeout)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}

    # Running commands -------------------------------------------------------
    def run(
        self,
        tool: str,
        args: Sequence[str],
        kinds: str | Iterable[str],
        *,
        operands: Sequence[str] = (),
        actor: str | None = None,
        ok_codes: Sequence[int] = (0,),
    ) -> Any:
        """Run ``tool args --output json [-- operands]``; return the payload of its document."""
        argv = [tool, *args, "--output", "json", *(["--", *operands] if operands else [])]
        proc = self._spawn(argv, actor)
        command = shlex.join(argv)
        stdout = proc.stdout.decode("utf-8", errors="replace").strip()
        if not stdout:
            raise CommandError(
                f"{command} exited with {proc.returncode} and printed no document"
                f"{_excerpt(proc.stderr)}"
            )
        try:
            doc = contract.loads(stdout)
            if doc.get("kind") != contract.ERROR_KIND and proc.returncode not in ok_codes:
                raise CommandError(f"exited with {proc.returncode}")
            return contract.read_document(doc, kinds)[1]
        except CommandError as exc:
            raise CommandError(f"{command}: {exc.message}{_excerpt(proc.stderr)}") from exc

    def _spawn(self, argv: list[str], actor: str | None) -> subprocess.CompletedProcess[bytes]:
        inherited = {k: v for k, v in os.environ.items() if k != CTL_PLATFORM_ENV}
        env = {**inherited, **self.env, OPERATOR_ENV: actor or current_actor()}
        try:
            return subprocess.run(
                argv, shell=False, capture_output=True, timeout=self.timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                f"{shlex.join(argv)} timed out after {self.timeout:g}s{_excerpt(exc.stderr)}"
            ) from exc
        except OSError as exc:
            raise CommandError(f"cannot run {shlex.join(argv)}: {exc.strerror or exc}") from exc

    def export(self, args: Sequence[str], kinds: str | Iterable[str], **how: Any) -> Any:
        return self.run(self.exportctl, args, kinds, **how)

    def feature(self, args: Sequence[str], kinds: str | Iterable[str], **how: Any) -> Any:
        return self.run(self.featurectl, args, kinds, **how)

    # Platform -----------------------------------------------------------------
    def info(self) -> PlatformInfo:
        """``exportctl info``. The storage endpoint and region are the tool's ``storage``,
        if it names one; otherwise (an older tool) boto3's default chain finds them
        (``AWS_ENDPOINT_URL``, profiles). Keys are never taken from a document."""
        return self.export(["info"], "PlatformInfo")

    def list_jobs(self, query: JobQuery) -> list[Job]:
        args = ["list", f"--limit={query.limit}"]
        for option in ("status", "connector", "bucket", "tenant"):
            value = getattr(query, option)
            if value is not None:
                args.append(f"--{option}={value}")
        for option in ("since", "until"):
            moment = getattr(query, option)
            if moment is not None:
                args.append(f"--{option}={codec.format_time(moment)}")
        return self.export(args, "JobList")

    def get_job(self, job_id: str) -> JobDetail:
        return self.export(["show", f"--job={job_id}"], "JobDetail")

    def manifest(self, job_id: str) -> Manifest:
        return self.export(["manifest", f"--job={job_id}"], "Manifest")

    def verify(self, job_id: str, *, rehash: bool = False) -> Verification:
        args = ["verify", f"--job={job_id}", *(["--rehash"] if rehash else [])]
        found = self.export(
            args, ("VerificationList", "Verification"), ok_codes=(0, VERIFY_FAILED_EXIT)
        )
        return _one_verification(found, job_id)

    def status_counts(self, since: datetime, until: datetime) -> list[MinuteCount]:
        return self.export(["stats", "counts", *_window(since, until)], "MinuteCounts")

    def latency(
        self, since: datetime, until: datetime, *, per_minute: bool = False
    ) -> list[LatencyPercentiles]:
        args = ["stats", "latency", *_window(since, until)]
        return self.export([*args, *(["--per-minute"] if per_minute else [])], "Latency")

    def retry(
        self,
        *,
        job_ids: Sequence[str] = (),
        status: str | None = None,
        limit: int = 20,
        concurrency: int = 2,
        actor: str | None = None,
        reason: str = "",
    ) -> RetryResult:
        args = ["retry", *[f"--job={job_id}" for job_id in job_ids]]
        if status is not None:
            args += [f"--status={status}", f"--limit={limit}"]
        args += [f"--concurrency={concurrency}", *_reason(reason)]
        return self.export(args, "RetryResult", actor=actor)

    def set_chunk_size(
        self, job_id: str, size: int, *, actor: str | None = None, reason: str = ""
    ) -> ChunkSizeChange:
        args = ["update", f"--job={job_id}", f"--chunk-size={size}", *_reason(reason)]
        return self.export(args, "ChunkSizeChange", actor=actor)

    def pause_bulk(self, *, actor: str | None = None, reason: str = "") -> Flag:
        return self.export(["pause", "bulk", *_reason(reason)], "Flag", actor=actor)

    def resume_bulk(self, *, actor: str | None = None, reason: str = "") -> None:
        self.export(["resume", "bulk", *_reason(reason)], "Done", actor=actor)

    def set_flag(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None,
        actor: str | None = None,
        reason: str = "",
    ) -> Flag:
        args = ["set", *_ttl(ttl), *_reason(reason)]
        return self.feature(args, "Flag", operands=[key, _value(value)], actor=actor)

    def get_flag(self, key: str) -> Flag | None:
        try:
            return self.feature(["get"], "Flag", operands=[key])
        except NotFound:
            return None

    def list_flags(self) -> list[Flag]:
        return self.feature(["list"], "FlagList")

    def unset_flag(self, key: str, *, actor: str | None = None, reason: str = "") -> None:
        self.feature(["unset", *_reason(reason)], "Done", operands=[key], actor=actor)

    def flag_history(self, key: str) -> list[AuditEntry]:
        return self.feature(["history"], "AuditLog", operands=[key])

    def audit_log(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        args = ["audit", f"--limit={limit}"]
        if since is not None:
            args.append(f"--since={codec.format_time(since)}")
        return self.export(args, "AuditLog")


# Arguments -------------------------------------------------------------------------
def _executable(option: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[platform.command] {option} must be the path of an executable")
    return str(Path(value).expanduser()) if value.startswith("~") else value


def _timeout(value: float | str) -> float:
    try:
        return parse_ttl(float(value) if _is_number(value) else value)
    except InvalidInput as exc:
        raise ConfigError(f"[platform.command] timeout: {exc.message}") from exc


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _value(value: Any) -> str:
    """A flag value as the JSON text featurectl reads back to the same value."""
    try:
        return json.dumps(codec.encode(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"flag value {value!r} is not a JSON value: {exc}") from exc


def _window(since: datetime, until: datetime) -> list[str]:
    return [f"--since={codec.format_time(since)}", f"--until={codec.format_time(until)}"]


def _reason(reason: str) -> list[str]:
    return [f"--reason={reason}"] if reason else []


def _ttl(ttl: float | None) -> list[str]:
    if ttl is None:
        return []
    return [f"--ttl={f'{ttl:.3f}'.rstrip('0').rstrip('.')}s"]


def _one_verification(found: Any, job_id: str) -> Verification:
    if isinstance(found, Verification):
        return found
    matching = [v for v in found if v.job_id == job_id]
    if len(matching) != 1:
        raise CommandError(f"verify --job {job_id}: expected one verification of that job")
    return matching[0]


def _excerpt(stderr: bytes | str | None) -> str:
    if not stderr:
        return ""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    text = " ".join(text.split())
    if len(text) > STDERR_EXCERPT:
        text = "…" + text[-STDERR_EXCERPT:]
    return f" (stderr: {text})" if text else ""
