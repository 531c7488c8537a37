"""Bring the sandbox up and down, report its status, print its environment, inject faults."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exportnb.core import config
from exportnb.core.errors import InvalidInput, PreconditionFailed, SandboxError
from exportnb.platform.model import JOB_KINDS
from exportnb.sandbox.faults import Fault, parse_fault
from exportnb.sandbox.scenario import load_scenario
from exportnb.sandbox.state import CREDENTIALS, SandboxState, read_state, sandbox_dir
from exportnb.sandbox.store import Store

STORAGE_FAULTS = ("throttle", "timeout")
COMMANDS = {
    "exportctl": "exportnb.sandbox.ctl.exportctl",
    "featurectl": "exportnb.sandbox.ctl.featurectl",
}


def _phase(folder: Path) -> str:
    try:
        return (folder / "phase").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8").splitlines()[-lines:])
    except OSError:
        return ""


def write_commands(folder: Path) -> Path:
    """The sandbox's own exportctl and featurectl, in a folder only ``sandbox env`` puts on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in COMMANDS.items():
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n', encoding="utf-8"
        )
        script.chmod(0o755)
    return bin_dir


def up(
    scenario: str = "default",
    *,
    home: Path | None = None,
    timeout: float = 600.0,
    workers: int = 8,
    s3_endpoint: str | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> SandboxState:
    """Start the sandbox in the background and wait until it is ready.

    With ``s3_endpoint`` the sandbox writes to that S3 endpoint (MinIO, AWS, ...) with the
    environment's credentials; without it, it starts moto server on loopback behind the
    fault proxy. Storage faults (throttle, timeout) need the embedded endpoint.
    """
    world = load_scenario(scenario)  # a bad name or file fails here, before anything starts
    storage_faults = [f.kind for f in world.incident.faults if f.kind in STORAGE_FAULTS]
    if s3_endpoint and storage_faults:
        raise PreconditionFailed(
            f"scenario {world.name} injects {', '.join(storage_faults)} faults, which need the "
            "embedded S3 endpoint; start it without an S3 endpoint"
        )
    folder = sandbox_dir(home)
    current = read_state(home)
    if current is not None and current.alive:
        raise PreconditionFailed(
            f"the sandbox is already running (pid {current.pid}, scenario {current.scenario}); "
            "`exportnb sandbox down` first"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "phase").write_text("starting", encoding="utf-8")
    write_commands(folder)
    env = dict(os.environ)
    if home is not None:
        env["EXPORTNB_HOME"] = str(home)
    with (folder / "daemon.log").open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exportnb.sandbox.daemon",
                "--scenario",
                scenario,
                "--workers",
                str(workers),
                *(["--home", str(home)] if home else []),
                *(["--s3-endpoint", s3_endpoint] if s3_endpoint else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return _wait_ready(folder, proc, home, timeout, on_phase)


def _wait_ready(
    folder: Path,
    proc: subprocess.Popen[bytes],
    home: Path | None,
    timeout: float,
    on_phase: Callable[[str], None] | None,
) -> SandboxState:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        state = read_state(home)
        if state is not None and state.pid == proc.pid:
            return state
        phase = _phase(folder)
        if phase != seen and on_phase is not None:
            on_phase(phase)
        seen = phase
        if proc.poll() is not None:
            raise SandboxError(
                f"the sandbox failed to start ({phase}); see {folder / 'daemon.log'}:\n"
                + _tail(folder / "daemon.log")
            )
        time.sleep(0.2)
    proc.terminate()
    raise SandboxError(f"the sandbox did not become ready in {timeout:.0f}s ({seen})")


def down(*, home: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the sandbox. Returns False when none was running."""
    state = read_state(home)
    if state is None or not state.alive:
        (sandbox_dir(home) / "state.json").unlink(missing_ok=True)
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state.alive:
        time.sleep(0.1)
    if state.alive:
        os.kill(state.pid, signal.SIGKILL)
    (sandbox_dir(home) / "state.json").unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Status:
    running: bool
    phase: str
    state: SandboxState | None
    jobs: dict[str, int] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)


def status(*, home: Path | None = None) -> Status:
    folder = sandbox_dir(home)
    state = read_state(home)
    running = state is not None and state.alive
    if state is None or not running:
        return Status(False, _phase(folder) or "not started", state)
    store = Store(Path(state.store))
    try:
        jobs = dict(store.db.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
        faults = [
            {"id": fid, "kind": kind, "params": params, "injected_at": at}
            for fid, kind, params, at in store.active_faults()
        ]
        flags = {f.key: f.value for f in store.flags(time.time())}
    finally:
        store.close()
    return Status(True, _phase(folder), state, jobs, faults, flags)


def env_values(*, home: Path | None = None) -> dict[str, str]:
    """The sandbox's environment: its bucket, target, S3 endpoint and credentials, and a
    PATH with its own exportctl and featurectl first."""
    state = read_state(home)
    if state is None or not state.alive:
        raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
    return {
        "EXPORTNB_HOME": str(home or config.home()),
        "EXPORT_BUCKET": state.export_bucket,
        "EXPORT_FALLBACK_BUCKET": state.fallback_bucket,
        "EXPORT_TARGET_HOST": state.target_host,
        "AWS_ENDPOINT_URL": state.s3_endpoint,
        **CREDENTIALS,
        "PATH": f"{sandbox_dir(home) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def env_exports(*, home: Path | None = None) -> str:
    """Shell exports that put the runbook's commands and the sandbox's S3 in reach."""
    values = env_values(home=home)
    bin_dir = values.pop("PATH").split(os.pathsep, 1)[0]
    lines = [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
    lines.append(f'export PATH={shlex.quote(bin_dir)}:"$PATH"')
    return "\n".join(lines)


def inject(kind: str, params: dict[str, Any], *, home: Path | None = None) -> Fault:
    """Inject a fault into the running sandbox. Validated before anything changes."""
    fault = parse_fault(kind, params)
    state = read_state(home)
    if state is None or not state.alive:
        raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
    store = Store(Path(state.store))
    try:
        buckets = {name for name, _, _ in store.buckets()}
        unknown = set(fault.params.get("buckets", [])) - buckets
        if unknown:
            raise InvalidInput(f"unknown bucket(s) {sorted(unknown)} (buckets: {sorted(buckets)})")
        if kind in STORAGE_FAULTS and not state.embedded_s3:
            raise PreconditionFailed(
                f"{kind} faults need the embedded S3 endpoint; this sandbox writes to "
                f"{state.s3_endpoint}"
            )
        if kind == "network" and not state.path_emulated:
            raise PreconditionFailed(
                "network faults need the path emulator, which needs CAP_NET_ADMIN (run the "
                "sandbox as root); this sandbox uses a plain loopback target"
            )
        fault_id = store.add_fault(fault.kind, fault.params, time.time())
    finally:
        store.close()
    return Fault(fault.kind, fault.params, fault_id)


def clear(fault_id: int | None = None, *, home: Path | None = None) -> int:
    """Clear one fault, or all of them. Returns how many were cleared."""
    state = read_state(home)
    if state is None:
        raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
    store = Store(Path(state.store))
    try:
        return store.clear_faults(time.time(), fault_id)
    finally:
        store.close()


def submit(
    *,
    count: int = 1,
    tenant: str | None = None,
    connector: str | None = None,
    bucket: str | None = None,
    kind: str = "adhoc",
    chunk_size: int = 64_000_000,
    size: int = 200_000_000,
    home: Path | None = None,
) -> list[str]:
    """Queue new export jobs in the running sandbox; the worker runs them. Returns their IDs."""
    import uuid

    state = read_state(home)
    if state is None or not state.alive:
        raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
    if count < 1 or kind not in JOB_KINDS or chunk_size <= 0 or size <= 0:
        raise InvalidInput(
            f"count, chunk size and size must be positive and kind one of {', '.join(JOB_KINDS)}"
        )
    store = Store(Path(state.store))
    try:
        tenant = _known("tenant", tenant, store.tenants())
        connector = _known("connector", connector, list(store.connectors()))
        bucket = _known("bucket", bucket or state.export_bucket, [b for b, _, _ in store.buckets()])
        ids = [f"job-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        now = time.time()
        for job_id in ids:
            store.create_job(
                job_id=job_id,
                tenant=tenant,
                connector=connector,
                bucket=bucket,
                kind=kind,
                chunk_size=chunk_size,
                size=size,
                created_at=now,
            )
    finally:
        store.close()
    return ids


def _known(what: str, value: str | None, known: list[str]) -> str:
    if value is None:
        return known[0]
    if value not in known:
        raise InvalidInput(f"unknown {what} {value!r} (known: {', '.join(known)})")
    return value


def local_environment(home: Path | None = None) -> tuple[dict[str, str], dict[str, Any]] | None:
    """``(environment, parameter defaults)`` of the running sandbox, or None if none runs.

    The ``exportnb.environments`` entry point of the sandbox: the environment is
    :func:`env_values`; the defaults are the customer-reported jobs (``job_ids``) and the
    target host and port, passed where the notebook declares them.
    """
    state = read_state(home)
    if state is None or not state.alive:
        return None
    defaults = {
        "job_ids": list(state.reported_jobs),
        "target_host": state.target_host,
        "target_port": state.target_port,
    }
    return env_values(home=home), defaults
