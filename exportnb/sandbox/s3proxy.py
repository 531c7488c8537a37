"""S3 fault proxy: a keep-alive reverse proxy in front of the sandbox's moto server.

Requests are forwarded byte-for-byte (method, target, headers, body), so SigV4
headers, checksums and ``x-amz-*`` headers reach moto unchanged; only hop-by-hop
headers are dropped and a chunked request body is sent on with a Content-Length.
Two storage faults are injected here with their real S3 symptom:

* ``throttle``: every request addressed to a throttled bucket answers
  ``503 SlowDown`` (HEAD gets the status and headers, no body, as from S3).
* ``timeout``: a PutObject or UploadPart whose payload is ``min_chunk`` logical
  bytes or more (stored bytes x ``STORAGE_SCALE``) is held for ``hold`` seconds
  and answered ``400 RequestTimeout``.

The bucket comes from the path (path-style addressing) or from a Host header
``<bucket>.<endpoint-host>`` (virtual-host style). Upstream connections are kept
alive in a shared pool, so a request costs no connection setup.

Every request a fault strikes is reported as a :class:`~exportnb.sandbox.faults.FaultHit`
(``on_hit``; the daemon records them in its store; by default they are dropped):
its bucket and key, and the job, tenant, attempt and segment the key names when it is an
export's (:func:`~exportnb.sandbox.worker.parse_export_key`), the logical size of an
upload, and the timeout fault's ``min_chunk``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import secrets
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from urllib.parse import parse_qsl, unquote, urlsplit

from exportnb.core.errors import SandboxError
from exportnb.sandbox.faults import STORAGE_SCALE, Fault, FaultHit, FaultSet, HitSink
from exportnb.sandbox.worker import parse_export_key

log = logging.getLogger(__name__)


def _ignore(hit: FaultHit) -> None:
    """Where fault hits go when nobody records them."""


HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
"""Headers that describe one connection and are never forwarded."""

SLOW_DOWN = (503, "SlowDown", "Please reduce your request rate.")
REQUEST_TIMEOUT = (
    400,
    "RequestTimeout",
    "Your socket connection to the server was not read from or written to "
    "within the timeout period.",
)
BAD_GATEWAY_STATUS = 502

_CHUNK_QUERY = frozenset({"partNumber", "uploadId", "x-id"})
_SMALL_BODY = 64 * 1024
_COPY_BLOCK = 64 * 1024
_MAX_LINE = 65536
_IDLE_CLIENT_TIMEOUT = 120.0
_UPSTREAM_TIMEOUT = 60.0
_POOL_SIZE = 64


# --------------------------------------------------------------------------- routing


def _hostname(host_header: str) -> str:
    """``"b.localhost:9000"`` -> ``"b.localhost"``; ``"[::1]:9000"`` -> ``"::1"``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def bucket_and_key(
    target: str, host_header: str, endpoint_hosts: Collection[str]
) -> tuple[str, str]:
    """The bucket and key a request addresses; ``("", "")`` for service-level requests.

    ``target`` is the request target (``/bucket/key?query`` or an absolute URL);
    a Host of ``<bucket>.<endpoint>`` for an endpoint in ``endpoint_hosts`` selects
    virtual-host addressing, anything else path-style addressing.
    """
    path = urlsplit(target).path if "://" in target else target.partition("?")[0]
    hostname = _hostname(host_header)
    for endpoint in endpoint_hosts:
        suffix = "." + endpoint.lower()
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return hostname[: -len(suffix)], unquote(path.lstrip("/"))
    bucket, _, key = path.lstrip("/").partition("/")
    return unquote(bucket), unquote(key)


def _query(target: str) -> str:
    return urlsplit(target).query if "://" in target else target.partition("?")[2]


def is_chunk_upload(method: str, key: str, target: str, copy_source: bool) -> bool:
    """Whether a request uploads a chunk of export data: a PutObject or UploadPart of a
    segment (not a copy, a sub-resource PUT, or a manifest, which is metadata written at
    its real size rather than at the sandbox's storage scale)."""
    if method != "PUT" or not key or copy_source or key.endswith("manifest.json"):
        return False
    names = {name for name, _ in parse_qsl(_query(target), keep_blank_values=True)}
    return all(n in _CHUNK_QUERY or n.lower().startswith("x-amz-") for n in names)


def payload_length(decoded_header: str | None, body_length: int) -> int:
    """Payload bytes: ``x-amz-decoded-content-length`` if sent (aws-chunked), else the body's."""
    if decoded_header:
        with contextlib.suppress(ValueError):
            return int(decoded_header)
    return body_length


def fault_hit(
    fault: Fault, bucket: str, key: str, size: int | None, *, at: float | None = None
) -> FaultHit:
    """What the proxy reports of a request ``fault`` struck: the export the key names, if
    any, the logical ``size`` of an upload, and a timeout's ``min_chunk``."""
    export = parse_export_key(key)
    limit = fault.params.get("min_chunk") if fault.kind == "timeout" else None
    return FaultHit(
        fault.kind,
        "s3proxy",
        time.time() if at is None else at,
        bucket=bucket,
        key=key,
        job_id=export.job_id if export else None,
        tenant=export.tenant if export else None,
        attempt=export.attempt if export else None,
        segment=export.segment if export else None,
        size=size,
        limit=limit,
        fault_id=fault.id,
    )


def error_document(code: str, message: str, request_id: str) -> bytes:
    """An S3 error body."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()


def forwarded_headers(
    items: Iterable[tuple[str, str]], content_length: int | None
) -> list[tuple[str, str]]:
    """Request headers minus hop-by-hop ones; a new Content-Length if the body was re-framed."""
    items = list(items)
    named = {
        token.strip().lower()
        for name, value in items
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out = [(n, v) for n, v in items if n.lower() not in HOP_BY_HOP and n.lower() not in named]
    if content_length is not None:
        out = [(n, v) for n, v in out if n.lower() != "content-length"]
        out.append(("Content-Length", str(content_length)))
    return out


def read_chunked(rfile: BufferedIOBase) -> bytes:
    """Read a ``Transfer-Encoding: chunked`` body (trailers are read and dropped)."""
    parts: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise ValueError("truncated chunk size line")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        data = rfile.read(size)
        if len(data) != size or rfile.read(2) != b"\r\n":
            raise ValueError("truncated chunk")
        parts.append(data)
    while rfile.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
        pass
    return b"".join(parts)


# --------------------------------------------------------------------------- upstream


class _UpstreamPool:
    """Keep-alive HTTP connections to the upstream, shared by all handler threads."""

    def __init__(self, host: str, port: int, size: int = _POOL_SIZE) -> None:
        self.host = host
        self.port = port
        self.size = size
        self._idle: deque[http.client.HTTPConnection] = deque()

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=_UPSTREAM_TIMEOUT)

    def exchange(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; retry once on a fresh connection if a pooled one went stale."""
        try:
            conn, reused = self._idle.pop(), True
        except IndexError:
            conn, reused = self._new(), False
        try:
            return conn, self._send(conn, method, target, headers, body)
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            if not reused:
                raise
        except BaseException:
            conn.close()
            raise
        conn = self._new()
        try:
            return conn, self._send(conn, method, target, headers, body)
        except BaseException:
            conn.close()
            raise

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> http.client.HTTPResponse:
        has_host = any(name.lower() == "host" for name, _ in headers)
        conn.putrequest(method, target, skip_host=has_host, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse()

    def release(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """Return a connection whose response was read to the end; close anything else."""
        if resp.isclosed() and not resp.will_close and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            with contextlib.suppress(IndexError):
                self._idle.pop().close()


# --------------------------------------------------------------------------- server


@dataclass
class _State:
    """What handler threads share: faults, upstream pool, counters, open client sockets."""

    faults: Callable[[], FaultSet]
    pool: _UpstreamPool
    endpoint_hosts: frozenset[str]
    on_hit: HitSink = _ignore
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    throttled: int = 0
    timed_out: int = 0
    clients: set[socket.socket] = field(default_factory=set)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def current_faults(self) -> FaultSet:
        try:
            return self.faults()
        except Exception:
            log.exception("s3proxy: reading the fault set failed; serving without faults")
            return FaultSet()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("s3proxy: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = _IDLE_CLIENT_TIMEOUT
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.clients.add(self.connection)

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.clients.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("s3proxy: " + format, *args)

    def proxy_request(self) -> None:
        """Serve one parsed request: inject a fault or forward it."""
        state = self.server.state
        state.count("requests")
        body, reframed = self._read_body()
        if body is None:
            return
        bucket, key = bucket_and_key(self.path, self.headers.get("Host", ""), state.endpoint_hosts)
        faults = state.current_faults() if bucket else FaultSet()
        if (throttle := faults.throttle_for(bucket) if faults.faults else None) is not None:
            state.count("throttled")
            state.on_hit(fault_hit(throttle, bucket, key, self._upload_size(key, len(body))))
            self._send_error(*SLOW_DOWN)
        elif (timeout := self._timeout(faults, bucket, key, len(body))) is not None:
            fault, size = timeout
            state.count("timed_out")
            state.on_hit(fault_hit(fault, bucket, key, size))
            state.stopping.wait(fault.params["hold"])
            self._send_error(*REQUEST_TIMEOUT)
        else:
            self._forward(body, reframed)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = proxy_request

    def _read_body(self) -> tuple[bytes | None, bool]:
        """The request body and whether it was de-chunked; ``None`` after a 400 reply."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return read_chunked(self.rfile), True
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                raise ValueError("body shorter than Content-Length")
            return body, False
        except ValueError as exc:
            self.close_connection = True
            self._send_error(400, "IncompleteBody", f"Could not read the request body: {exc}")
            return None, False

    def _upload_size(self, key: str, body_length: int) -> int | None:
        """The logical size of a chunk this request uploads; ``None`` if it uploads none."""
        copy = "x-amz-copy-source" in self.headers
        if not is_chunk_upload(self.command, key, self.path, copy):
            return None
        length = payload_length(self.headers.get("x-amz-decoded-content-length"), body_length)
        return length * STORAGE_SCALE

    def _timeout(
        self, faults: FaultSet, bucket: str, key: str, body_length: int
    ) -> tuple[Fault, int] | None:
        """The timeout fault that holds this upload before ``RequestTimeout``, and the
        upload's logical size; ``None`` if none strikes it."""
        fault = faults.timeout_for(bucket) if faults.faults else None
        if fault is None:
            return None
        size = self._upload_size(key, body_length)
        if size is None or size < fault.params["min_chunk"]:
            return None
        return fault, size

    def _send_error(self, status: int, code: str, message: str) -> None:
        request_id = secrets.token_hex(8).upper()
        document = error_document(code, message, request_id)
        headers = [
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", request_id),
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(document))),
            ("Server", "AmazonS3"),
        ]
        phrase = http.client.responses.get(status, "")
        self._write(
            self._head(status, phrase, headers), b"" if self.command == "HEAD" else document
        )

    def _forward(self, body: bytes, reframed: bool) -> None:
        pool = self.server.state.pool
        headers = forwarded_headers(self.headers.items(), len(body) if reframed else None)
        send_body = body if (body or "Content-Length" in self.headers or reframed) else None
        try:
            conn, resp = pool.exchange(self.command, self.path, headers, send_body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("s3proxy: upstream %s:%s failed: %s", pool.host, pool.port, exc)
            self._send_error(BAD_GATEWAY_STATUS, "BadGateway", "The sandbox S3 did not answer.")
            return
        try:
            self._relay(resp)
        except BaseException:
            self.close_connection = True
            conn.close()
            raise
        pool.release(conn, resp)

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        """Send the upstream response to the client, body streamed or in one write."""
        headers = forwarded_headers(resp.msg.items(), None)
        head = self._head(resp.status, resp.reason, headers)
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        if no_body:
            resp.read()
            self._write(head, b"")
        elif resp.length is not None and resp.length > _SMALL_BODY:
            self._write(head, b"")
            while block := resp.read(_COPY_BLOCK):
                self.wfile.write(block)
        elif resp.chunked and self.request_version == "HTTP/1.1":
            self._write(self._head(resp.status, resp.reason, [*headers, _CHUNKED]), b"")
            while block := resp.read1(_COPY_BLOCK):
                self.wfile.write(b"%x\r\n%b\r\n" % (len(block), block))
            self.wfile.write(b"0\r\n\r\n")
        else:
            data = resp.read()
            if resp.length is None and not _has(headers, "content-length"):
                headers = forwarded_headers(headers, len(data))
                head = self._head(resp.status, resp.reason, headers)
            self._write(head, data)

    def _head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, head: bytes, body: bytes) -> None:
        """Small responses go out in one write (one packet on loopback)."""
        if len(body) <= _SMALL_BODY:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)


_CHUNKED = ("Transfer-Encoding", "chunked")


def _has(headers: list[tuple[str, str]], name: str) -> bool:
    return any(n.lower() == name for n, _ in headers)


# --------------------------------------------------------------------------- public


class FaultProxy:
    """An S3 reverse proxy on ``host:port`` (0 = a free port) that injects storage faults.

    ``faults`` is called once per bucket-addressed request and must be cheap (the
    caller caches). ``on_hit`` is given every request a fault strikes (default: nobody);
    it must not block for long. ``requests``, ``throttled`` and ``timed_out`` count requests
    since ``start``.
    """

    def __init__(
        self,
        upstream_url: str,
        faults: Callable[[], FaultSet],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        endpoint_hosts: Iterable[str] = (),
        on_hit: HitSink | None = None,
    ) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise SandboxError(
                f"the S3 fault proxy needs an http:// upstream, not {upstream_url!r}"
            )
        self.upstream_url = upstream_url
        self.host = host
        self.port = port
        self._upstream = (parts.hostname, parts.port or 80)
        self._faults = faults
        self._on_hit = on_hit or _ignore
        self._endpoint_hosts = frozenset({host, "localhost", *endpoint_hosts})
        self._server: _ProxyServer | None = None
        self._state: _State | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running proxy."""
        if self._server is None:
            raise SandboxError("the S3 fault proxy is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> int:
        return self._state.requests if self._state else 0

    @property
    def throttled(self) -> int:
        return self._state.throttled if self._state else 0

    @property
    def timed_out(self) -> int:
        return self._state.timed_out if self._state else 0

    def start(self) -> str:
        """Listen, serve in a daemon thread, and return the proxy's URL."""
        if self._server is not None:
            return self.url
        state = _State(
            self._faults, _UpstreamPool(*self._upstream), self._endpoint_hosts, self._on_hit
        )
        try:
            server = _ProxyServer((self.host, self.port), state)
        except OSError as exc:
            raise SandboxError(
                f"the S3 fault proxy could not listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = server.server_port
        self._server, self._state = server, state
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="s3-fault-proxy",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop listening, drop open client connections and upstream connections."""
        server, state, thread = self._server, self._state, self._thread
        self._server = self._thread = None
        if server is None or state is None:
            return
        state.stopping.set()
        server.shutdown()
        server.server_close()
        with state.lock:
            clients = list(state.clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        state.pool.close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
