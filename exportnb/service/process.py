"""``exportnb serve`` as a process you can drive: for tests, benchmarks and game days.

:class:`ServeProcess` starts the real command on loopback under a given ``$EXPORTNB_HOME``,
waits for ``/healthz``, makes authenticated requests with the standard library, and stops
it gently or with ``kill -9``. :func:`write_quick_notebook` writes a tiny notebook that
declares the incident parameters, sleeps ``$EXPORTNB_QUICK_SLEEP`` seconds, and shows a
``StatusUpdate`` result like the template's communication step: runs that cost a kernel
start and little else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from exportnb.core.errors import PreconditionFailed
from exportnb.core.findings import RESULT_MIMETYPE

SLEEP_ENV = "EXPORTNB_QUICK_SLEEP"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServeProcess:
    """``exportnb serve --host 127.0.0.1 --port PORT`` in a session of its own."""

    def __init__(
        self,
        home: Path,
        *,
        token: str | None = "test-token",
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.home, self.token, self.port = home, token, port or free_port()
        self.env = {**os.environ, "EXPORTNB_HOME": str(home), **(env or {})}
        if token:
            self.env["EXPORTNB_WEBHOOK_TOKEN"] = token
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServeProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "exportnb.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PreconditionFailed(f"exportnb serve exited: {self.tail()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PreconditionFailed(f"exportnb serve did not answer in {timeout:g}s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """``(status, JSON answer or text)``; ``body`` goes as JSON, ``raw`` as it is."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={**sent, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, _parsed(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _parsed(exc.read())

    def post_alert(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return self.request("POST", "/alerts/alertmanager", payload)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, and wait (the worker lets its runs finish); SIGKILL after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()

    def kill(self) -> None:
        """``kill -9`` the service (its worker dies with it)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        """Make sure nothing of the session is left (a worker, a kernel)."""
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return


def _parsed(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def write_quick_notebook(path: Path) -> Path:
    """A notebook with the incident parameters that sleeps ``$EXPORTNB_QUICK_SLEEP`` seconds
    and shows a status update (see the module docstring)."""
    import nbformat

    parameters = 'incident_id = "INC-unset"\njob_ids = []\nalert = {}\noperator = ""'
    sleep = f"import os, time\ntime.sleep(float(os.environ.get({SLEEP_ENV!r}, '0')))"
    show = (
        "from IPython.display import display\n"
        "names = sorted({a.get('labels', {}).get('alertname', '') for a in alert.get('alerts', [])})\n"  # noqa: E501
        'update = f\'**Export incident {incident_id}**: {alert.get("status", "no alert")} \'\\\n'
        '    f\'{", ".join(names)}; jobs {job_ids or "from the platform"}\'\n'
        f"display({{{RESULT_MIMETYPE!r}: {{'schema': 1, 'step': 'communication', "
        "'type': 'StatusUpdate', 'result': {'markdown': update, 'text': update}}, "
        "'text/markdown': update}, raw=True)"
    )
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Quick incident"),
        cell,
        nbformat.v4.new_code_cell(sleep),
        nbformat.v4.new_code_cell(show),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
