"""The sandbox's S3: moto's threaded server on loopback, on a free port.

``MotoServer().start()`` returns the endpoint URL once the server answers an S3
request. moto keeps its state per process: every ``MotoServer`` in one process
sees the same buckets.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time

from moto.server import ThreadedMotoServer

from exportnb.core.errors import SandboxError

START_TIMEOUT = 10.0
"""Seconds to wait for the server to bind and answer before giving up."""


def silence_request_log() -> None:
    """Hide werkzeug's one-line-per-request log; warnings and errors still show."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


class MotoServer:
    """moto's S3 (and every other moto service) served over HTTP on ``host``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: ThreadedMotoServer | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._url is None:
            raise SandboxError("the sandbox S3 server is not running")
        return self._url

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server, wait until it answers, and return its URL."""
        if self._url is not None:
            return self._url
        silence_request_log()
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        _start_within(server, timeout)
        self._server = server
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        try:
            _wait_until_answers(host, port, timeout)
        except SandboxError:
            self._shutdown(server)
            self._server = None
            raise
        self.port = port
        self._url = url
        return url

    def stop(self) -> None:
        """Stop the server and close its socket. Safe to call twice."""
        server, self._server, self._url = self._server, None, None
        if server is not None:
            self._shutdown(server)

    @staticmethod
    def _shutdown(server: ThreadedMotoServer) -> None:
        try:
            server.stop()
            wsgi = getattr(server, "_server", None)
            if wsgi is not None:
                wsgi.server_close()
        except Exception as exc:  # moto/werkzeug internals; report as ours
            raise SandboxError(f"could not stop the sandbox S3 server: {exc}") from exc

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _start_within(server: ThreadedMotoServer, timeout: float) -> None:
    """``ThreadedMotoServer.start`` blocks forever if binding fails; bound it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # re-raised below in the caller's thread
            errors.append(exc)

    starter = threading.Thread(target=run, name="moto-start", daemon=True)
    starter.start()
    starter.join(timeout)
    if errors:
        raise SandboxError(f"the sandbox S3 server failed to start: {errors[0]}") from errors[0]
    if starter.is_alive():
        raise SandboxError(
            f"the sandbox S3 server did not start within {timeout:g}s "
            "(is the address already in use?)"
        )


def _wait_until_answers(host: str, port: int, timeout: float) -> None:
    """Poll ``GET /`` (ListBuckets) until the server answers with any HTTP status."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.05)
        finally:
            conn.close()
    raise SandboxError(f"the sandbox S3 server at {host}:{port} did not answer: {last}")
