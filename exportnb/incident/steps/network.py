"""Runbook Diagnostics 4, network path: ``mtr -r $EXPORT_TARGET_HOST``.

"Expected: No packet loss or high latency spikes." :func:`network_path` measures the path
to the export target host in one of two ways:

* ``mtr`` (where it is installed): ``mtr --raw -n -c COUNT -i INTERVAL -G GRACE ADDRESS``,
  run with an argument list (no shell). Per hop, the raw probe lines give the probes sent
  and answered, the loss and the p50/p95/average round trip. The interval is 0.2s for root
  unless one is given (mtr refuses intervals under 1s to others, who get at least 1s); an
  answer later than ``grace`` seconds after the last probe counts as lost. The probe takes
  about ``count * interval + grace`` seconds. ``command`` is the equivalent ``mtr -r``
  line, for people to run themselves.
* ``tcp``: COUNT TCP connects to ``host:port``, one after another, each given ``timeout``
  seconds. A completed or refused connect is an answer (the host sent SYN-ACK or RST); a
  timeout or an ICMP error is a loss. The default timeout of 0.9s stays under the kernel's
  first SYN retransmission (1s), so each probe is exactly one SYN.

``method="auto"`` uses mtr where it is installed and works, else tcp. Findings, from the
destination's figures: NETWORK_LOSS (loss above ``loss_threshold`` percent),
NETWORK_LATENCY (p95 above ``latency_threshold_ms``), NETWORK_UNREACHABLE (no answer at all,
no route, or the name does not resolve). An unreachable host is a finding, not an exception.

Each finding's evidence names the hop where the loss starts (``loss_onset``: ``index``,
``host``, ``loss_pct``; :func:`loss_onset`): the first hop whose loss exceeds
``loss_threshold`` and stays above it at every hop after it, up to the destination. A hop
that drops probes while the hops after it answer (a router that rate-limits its own
answers) is not where the loss starts. ``None`` where no hop loses more than the threshold
all the way. With the ``tcp`` method the destination is the only hop.
"""

from __future__ import annotations

import errno
import math
import os
import shlex
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, TypedDict

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.findings import NETWORK_LATENCY, NETWORK_LOSS, NETWORK_UNREACHABLE, Finding

STEP = "network_path"
METHODS = ("auto", "mtr", "tcp")
ROOT_INTERVAL = 0.2
USER_INTERVAL = 1.0
GRACE = 2.0
"""Seconds mtr waits for answers after its last probe; a later answer counts as lost."""
MAX_PACE = 60.0
"""The longest interval and grace accepted, in seconds."""
SEVERE_LOSS = 20.0
"""Destination loss (percent) from which NETWORK_LOSS is critical rather than a warning."""
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


@dataclass(frozen=True)
class Hop:
    """One hop of the path: probes sent and answered, loss and round trips (ms)."""

    index: int
    host: str
    sent: int
    received: int
    loss_pct: float
    p50_ms: float | None
    p95_ms: float | None
    avg_ms: float | None


@dataclass(frozen=True)
class NetworkPath:
    """The measured path to a host; the last hop is the destination."""

    KIND: ClassVar[str] = "network-path/v1"
    host: str
    port: int
    method: str  # mtr | tcp
    command: str
    hops: list[Hop]
    loss_pct: float
    p50_ms: float | None
    p95_ms: float | None
    findings: list[Finding]
    address: str | None = None
    argv: list[str] = field(default_factory=list)
    error: str | None = None
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def destination(self) -> Hop | None:
        return self.hops[-1] if self.hops else None

    def frame(self) -> Any:
        """The hops as a DataFrame, the way ``mtr -r`` shows them."""
        import pandas as pd  # deferred: pandas is heavy

        return pd.DataFrame([codec.encode(h) for h in self.hops], columns=list(Hop.__annotations__))


class NetworkOptions(TypedDict):
    """How :func:`network_path` probes an incident's target, after the host: its port, and
    the cycles, their interval and the grace mtr waits for late answers."""

    port: int
    count: int
    interval: float
    grace: float


def network_path(
    host: str,
    *,
    port: int = 443,
    count: int = 10,
    method: str = "auto",
    loss_threshold: float = 1.0,
    latency_threshold_ms: float = 100.0,
    timeout: float = 0.9,
    interval: float | None = None,
    grace: float = GRACE,
) -> NetworkPath:
    """Probe the path to ``host`` ``count`` times with mtr or TCP connects; see the module doc.

    ``interval`` and ``grace`` pace mtr (seconds between cycles; how long it waits for late
    answers after the last one); the TCP probe connects one after another.
    """
    _check_input(host, port, count, method, loss_threshold, latency_threshold_ms, timeout)
    _check_pace(interval, grace)
    chosen = _choose(method)
    address, why = _resolve(host)
    if address is None:
        probe = Probe(chosen, _display(chosen, host, port, count), [], [], error=why)
    elif chosen == "mtr":
        pace = Pace(count, mtr_interval(interval), grace)
        probe = _mtr_or_tcp(method, host, address, port, pace, timeout)
    else:
        probe = tcp_probe(host, address, port, count, timeout)
    return _result(host, port, address, probe, loss_threshold, latency_threshold_ms)


def _check_input(
    host: str, port: int, count: int, method: str, loss: float, latency: float, timeout: float
) -> None:
    if not isinstance(host, str) or not host.strip() or host.startswith("-"):
        raise InvalidInput(f"invalid host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInput(f"invalid port {port!r}: must be 1..65535")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= 1000:
        raise InvalidInput(f"invalid count {count!r}: must be 1..1000")
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    for name, value in (("loss_threshold", loss), ("latency_threshold_ms", latency)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InvalidInput(f"{name} must be a number >= 0, not {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidInput(f"timeout must be a number > 0, not {timeout!r}")


def _check_pace(interval: float | None, grace: float) -> None:
    for name, value in (("interval", interval), ("grace", grace)):
        if value is None and name == "interval":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{name} must be a number of seconds, not {value!r}")
        if not 0 < value <= MAX_PACE:
            raise InvalidInput(
                f"{name} {value!r} is out of range: more than 0, at most {MAX_PACE:g} seconds"
            )


def mtr_interval(asked: float | None) -> float:
    """The interval mtr will accept: as asked (0.2s by default) for root, at least 1s else."""
    if os.geteuid() == 0:
        return ROOT_INTERVAL if asked is None else float(asked)
    return max(USER_INTERVAL, asked or USER_INTERVAL)


def _choose(method: str) -> str:
    if method == "tcp":
        return "tcp"
    if shutil.which("mtr") is None:
        if method == "mtr":
            raise PreconditionFailed("mtr is not installed (apt-get install mtr-tiny)")
        return "tcp"
    return "mtr"


def _resolve(host: str) -> tuple[str | None, str]:
    """The first address of ``host``, or None and why not."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return None, f"cannot resolve {host}: {exc}"
    return str(infos[0][4][0]), ""


def _display(method: str, host: str, port: int, count: int, interval: float = 1.0) -> str:
    if method == "mtr":
        pace = f" -i {interval:g}" if interval != 1.0 else ""
        return f"mtr -r -n -c {count}{pace} {shlex.quote(host)}"
    return f"tcp connect {host}:{port} x{count}"


# Probes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """What one measurement saw: per-hop counts and round trips, or why it saw nothing."""

    method: str
    command: str
    argv: list[str]
    hops: list[Hop]
    error: str | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pace:
    """How mtr probes: ``count`` cycles, ``interval`` seconds apart, ``grace`` to wait after."""

    count: int
    interval: float = ROOT_INTERVAL
    grace: float = GRACE


def _mtr_or_tcp(
    method: str, host: str, address: str, port: int, pace: Pace, timeout: float
) -> Probe:
    try:
        return mtr_probe(host, address, pace)
    except PreconditionFailed:
        if method == "mtr":
            raise
        return tcp_probe(host, address, port, pace.count, timeout)


def mtr_probe(host: str, address: str, pace: Pace) -> Probe:
    """Run ``mtr --raw`` to ``address`` and read per-hop figures from its probe lines."""
    count, interval, grace = pace.count, pace.interval, pace.grace
    argv = ["mtr", "--raw", "-n", "-c", str(count), "-i", f"{interval:g}", "-G", f"{grace:g}"]
    argv.append(address)
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=count * interval + grace + 30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreconditionFailed(f"mtr could not run: {exc}") from exc
    if done.returncode != 0:
        raise PreconditionFailed(f"mtr exited {done.returncode}: {done.stderr.strip()}")
    hops = mtr_hops(done.stdout, address, count)
    return Probe("mtr", _display("mtr", host, 0, count, interval), argv, hops)


def mtr_hops(raw: str, address: str, count: int) -> list[Hop]:
    """Hops 1..destination from mtr's raw lines (``x hop seq``, ``h hop addr``, ``p hop us seq``).

    The destination is the first hop the target address answered from; probes mtr sent past
    it (before it knew where the path ends) are ignored. When the target never answers, the
    hops that did answer are followed by a silent destination hop that got ``count`` probes.
    """
    sent, hosts, rtts = _raw_lines(raw)
    answered = sorted(h for h in hosts if address in hosts[h])
    if answered:
        last = answered[0]
        return [_hop(h, hosts.get(h, []), sent.get(h, 0), rtts.get(h, [])) for h in range(last + 1)]
    heard = sorted(hosts)
    hops = (
        [_hop(h, hosts[h], sent.get(h, 0), rtts.get(h, [])) for h in range(heard[-1] + 1)]
        if heard
        else []
    )
    return [*hops, _hop(len(hops), [], count, [])]


def _raw_lines(raw: str) -> tuple[dict[int, int], dict[int, list[str]], dict[int, list[float]]]:
    sent: dict[int, int] = {}
    hosts: dict[int, list[str]] = {}
    rtts: dict[int, list[float]] = {}
    for line in raw.splitlines():
        kind, *fields = line.split() or [""]
        if kind not in ("x", "h", "p") or len(fields) < 2 or not fields[0].isdigit():
            continue
        hop = int(fields[0])
        if kind == "x":
            sent[hop] = sent.get(hop, 0) + 1
        elif kind == "h" and fields[1] not in hosts.get(hop, []):
            hosts.setdefault(hop, []).append(fields[1])
        elif kind == "p" and fields[1].isdigit():
            rtts.setdefault(hop, []).append(int(fields[1]) / 1000)
    return sent, hosts, rtts


def tcp_probe(host: str, address: str, port: int, count: int, timeout: float) -> Probe:
    """``count`` TCP connects to ``address:port``, one after another."""
    rtts: list[float] = []
    reasons: list[str] = []
    for _ in range(count):
        elapsed, reason = tcp_connect(address, port, timeout)
        if elapsed is not None:
            rtts.append(elapsed * 1000)
        if reason:
            reasons.append(reason)
    hop = _hop(0, [address] if rtts else [], count, rtts)
    return Probe("tcp", _display("tcp", host, port, count), [], [hop], reasons=reasons)


def tcp_connect(address: str, port: int, timeout: float) -> tuple[float | None, str]:
    """Seconds one connect took (refused counts: the host answered) or None, and what happened.

    The socket is closed with a RST (SO_LINGER 0), leaving no TIME_WAIT behind.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        started = time.perf_counter()
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            return time.perf_counter() - started, "refused"
        except TimeoutError:
            return None, "timeout"
        except OSError as exc:
            return None, "no route" if exc.errno in _NO_ROUTE else f"error: {exc.strerror or exc}"
        return time.perf_counter() - started, ""


def has_route(address: str, port: int) -> bool:
    """Whether the kernel has a route to ``address`` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((address, port))
        except OSError as exc:
            return exc.errno not in _NO_ROUTE
    return True


# Figures --------------------------------------------------------------------------
def _hop(index: int, hosts: list[str], sent: int, rtts: list[float]) -> Hop:
    received = min(len(rtts), sent) if sent else len(rtts)
    sent = max(sent, received)
    loss = 100.0 * (sent - received) / sent if sent else 100.0
    return Hop(
        index + 1,
        hosts[0] if hosts else "???",
        sent,
        received,
        round(loss, 1),
        _rounded(percentile(rtts, 50)),
        _rounded(percentile(rtts, 95)),
        _rounded(sum(rtts) / len(rtts) if rtts else None),
    )


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Findings -------------------------------------------------------------------------
def _result(
    host: str, port: int, address: str | None, probe: Probe, loss_limit: float, p95_limit: float
) -> NetworkPath:
    dest = probe.hops[-1] if probe.hops else None
    loss = dest.loss_pct if dest else 100.0
    p50 = dest.p50_ms if dest else None
    p95 = dest.p95_ms if dest else None
    path = NetworkPath(
        host,
        port,
        probe.method,
        probe.command,
        probe.hops,
        loss,
        p50,
        p95,
        [],
        address,
        probe.argv,
        probe.error,
    )
    return replace(path, findings=_findings(path, probe, loss_limit, p95_limit))


def _findings(
    path: NetworkPath, probe: Probe, loss_limit: float, p95_limit: float
) -> list[Finding]:
    dest = path.destination
    base = {
        "host": path.host,
        "address": path.address,
        "port": path.port,
        "method": path.method,
        "command": path.command,
    }
    if dest is None or dest.received == 0:
        return [_unreachable(path, probe, {**base, "threshold_pct": loss_limit})]
    figures = {
        **base,
        "sent": dest.sent,
        "received": dest.received,
        "loss_pct": dest.loss_pct,
        "p50_ms": dest.p50_ms,
        "p95_ms": dest.p95_ms,
        "hops": _hop_evidence(path.hops),
        "loss_onset": _onset_evidence(path.hops, loss_limit),
    }
    found = []
    if dest.loss_pct > loss_limit:
        severity = "critical" if dest.loss_pct >= SEVERE_LOSS else "warning"
        summary = (
            f"{dest.loss_pct:g}% packet loss to {path.host} ({dest.received}/{dest.sent} "
            f"answered; threshold {loss_limit:g}%)"
        )
        found.append(
            Finding(NETWORK_LOSS, severity, summary, STEP, {**figures, "threshold_pct": loss_limit})
        )
    if dest.p95_ms is not None and dest.p95_ms > p95_limit:
        summary = (
            f"p95 round trip to {path.host} is {dest.p95_ms:.1f} ms (threshold {p95_limit:g} ms)"
        )
        found.append(
            Finding(
                NETWORK_LATENCY, "warning", summary, STEP, {**figures, "threshold_ms": p95_limit}
            )
        )
    return found


def onset_index(losses: Sequence[float], threshold: float) -> int | None:
    """The position of the first loss above ``threshold`` that stays above it to the end."""
    found = None
    for position in range(len(losses) - 1, -1, -1):  # from the destination back
        if not losses[position] > threshold:
            break
        found = position
    return found


def loss_onset(hops: Sequence[Hop], threshold: float) -> Hop | None:
    """The hop where the loss starts: the first whose loss exceeds ``threshold`` and stays
    above it at every later hop (the destination included); None when there is none."""
    position = onset_index([h.loss_pct for h in hops], threshold)
    return None if position is None else hops[position]


def _onset_evidence(hops: Sequence[Hop], threshold: float) -> dict[str, Any] | None:
    hop = loss_onset(hops, threshold)
    return None if hop is None else {"index": hop.index, "host": hop.host, "loss_pct": hop.loss_pct}


def _unreachable(path: NetworkPath, probe: Probe, base: dict[str, Any]) -> Finding:
    if path.address is None:
        reason = "dns"
    elif "no route" in probe.reasons or not has_route(path.address, path.port):
        reason = "no route"
    else:
        reason = "no answer"
    detail = probe.error or (
        f"no route to {path.address}"
        if reason == "no route"
        else f"none of {path.destination.sent if path.destination else 0} probes answered"
    )
    summary = f"{path.host} is unreachable ({reason}): {detail}"
    evidence = {
        **base,
        "reason": reason,
        "detail": detail,
        "hops": _hop_evidence(path.hops),
        "loss_onset": _onset_evidence(path.hops, base["threshold_pct"]),
    }
    return Finding(NETWORK_UNREACHABLE, "critical", summary, STEP, evidence)


def _hop_evidence(hops: list[Hop]) -> list[dict[str, Any]]:
    return [
        {"index": h.index, "host": h.host, "loss_pct": h.loss_pct, "p95_ms": h.p95_ms} for h in hops
    ]
