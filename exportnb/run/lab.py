"""JupyterLab for an investigation: a server on loopback with a token of its own."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from exportnb.core.errors import PreconditionFailed


class Lab:
    """A JupyterLab server on loopback, with a token of its own, in a session of its own."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    @classmethod
    def start(
        cls,
        notebook: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90.0,
    ) -> Lab:
        port = port or _free_port()
        token = secrets.token_urlsafe(24)
        log = notebook.parent.parent / ".logs" / f"{notebook.parent.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            f"--ServerApp.root_dir={notebook.parent}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0",
        ]
        if os.geteuid() == 0:  # containers and CI often run as root; JupyterLab refuses it
            args.append("--allow-root")
        with log.open("ab") as out:
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {}), "JUPYTER_TOKEN": token},
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        lab = cls(process, f"{base}/lab/tree/{quote(notebook.name)}?token={token}", log)
        lab.wait_ready(f"{base}/api/status?token={token}", timeout)
        return lab

    def wait_ready(self, status_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace").splitlines()[-10:]
                raise PreconditionFailed("JupyterLab exited:\n  " + "\n  ".join(tail))
            try:
                with urllib.request.urlopen(status_url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise PreconditionFailed(f"JupyterLab did not answer in {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 15.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
