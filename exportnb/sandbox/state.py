"""Where a sandbox lives on disk, and the state file its daemon writes when it is ready.

``$EXPORTNB_HOME/sandbox/`` holds ``store.db`` (the job store), ``state.json``
(endpoints, buckets, credentials, pid), ``daemon.log`` and ``bin/`` (the sandbox's
own ``exportctl`` and ``featurectl``, put on PATH only by ``exportnb sandbox env``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exportnb.core import config
from exportnb.core.errors import SandboxError
from exportnb.platform.model import StorageAccess

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def sandbox_dir(home: Path | None = None) -> Path:
    return (home or config.home()) / "sandbox"


@dataclass(frozen=True)
class SandboxState:
    pid: int
    scenario: str
    store: str
    s3_endpoint: str
    metrics_url: str
    export_bucket: str
    fallback_bucket: str
    target_host: str
    target_port: int
    started_at: float
    region: str = "us-east-1"
    path_emulated: bool = False
    embedded_s3: bool = True
    reported_jobs: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def storage(self) -> StorageAccess:
        """The sandbox's S3 as a diagnostic reaches it: the endpoint, region and keys."""
        return StorageAccess(
            endpoint_url=self.s3_endpoint,
            region=self.region,
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(folder / "state.json")

    @property
    def alive(self) -> bool:
        """Whether the daemon runs: its process exists and has not exited. A daemon this
        process started and that exited is reaped here, so it does not linger as a zombie."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            reaped, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not ours: its parent reaps it
            return not _zombie(self.pid)
        return reaped == 0


def read_state(home: Path | None = None) -> SandboxState | None:
    path = sandbox_dir(home) / "state.json"
    if not path.exists():
        return None
    try:
        return SandboxState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise SandboxError(f"cannot read {path}: {exc}") from exc


def running_state(home: Path | None = None) -> SandboxState:
    """The state of the running sandbox, or SandboxError telling how to start one."""
    state = read_state(home)
    if state is None or not state.alive:
        raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
    return state


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for its parent to reap it (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
