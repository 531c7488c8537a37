"""A userspace path emulator: latency, jitter and loss on the path to EXPORT_TARGET_HOST.

The kernel the sandbox runs on has no ``netem`` and no packet filter, so the ``network``
fault is built from parts that do exist: a network namespace, a veth pair and a TUN device.
``PathEmulator.start()`` creates, for an emulator with index ``N`` (1..254, derived from its
``instance`` string, moved on if taken)::

    root namespace                      namespace enb-<8 hex>                 this process
    10.213.N.1/30  ==== veth pair ====  10.213.N.2/30   (forwards IPv4)
    route 10.214.N.0/30 via 10.213.N.2  enbt0: 10.214.N.1/30  ---- TUN fd ---> reader thread
                                                      (target host 10.214.N.2 lives here)

A probe from the root namespace to the target host crosses one real router (the namespace's
kernel, which answers TTL-expired probes itself, unimpaired) and reaches the TUN device. A
reader thread answers as a host at 10.214.N.2 would: ICMP echo gets an echo reply, a TCP SYN
to any port gets a SYN-ACK (so ``connect()`` completes), a FIN or data gets a RST, UDP gets
ICMP port unreachable. Each answer is dropped with probability ``loss`` percent, or else
delayed by ``latency ± jitter`` on a timer thread. So ``mtr -r <host>`` shows hop 1 clean and
hop 2 (the target) impaired, and a TCP connect probe sees the same delay and loss.
Only answers are impaired (requests pass at once), so ``loss`` is the round-trip loss and
``latency`` is added once to each round trip. Jitter is uniform in ``[-jitter, +jitter]``,
clamped at zero, and may reorder answers as netem's does. The impairment belongs to the
emulator object: it can be set before ``start()`` and outlives a stop and restart.

The namespace has only its two connected routes, so nothing it sends can leave the
10.213.N.0/30 and 10.214.N.0/30 networks: the emulator never talks to any other address.

Stale state: each running emulator records its owner (pid and process start time) in
``/run/exportnb/netpath/<netns>.json`` before it creates anything. ``cleanup_stale()``
removes every namespace (and root-side veth) with our prefix whose owner is not a live
emulator; a namespace with our prefix and no state file counts as stale too. A normal
interpreter exit stops running emulators (``atexit``); a kill or crash leaves the namespace
and veth behind (the TUN device goes with the process) until ``cleanup_stale()`` runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import heapq
import ipaddress
import itertools
import json
import math
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from exportnb.core.errors import InvalidInput, PreconditionFailed, SandboxError

NETNS_PREFIX = "enb-"
STATE_DIR = Path("/run/exportnb/netpath")
TUN_NAME = "enbt0"

_T = TypeVar("_T")
_CLONE_NEWNET = 0x40000000
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_MIN_OVERLAP_PREFIX = 16
"""Existing routes broader than this (default, 10.0.0.0/8) do not make an index taken."""

_ICMP, _TCP, _UDP = 1, 6, 17
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_ICMP_ERROR_QUOTE = 548
"""Bytes of the offending packet quoted in ICMP errors (576 minus the two headers)."""

_running: weakref.WeakSet[PathEmulator] = weakref.WeakSet()


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class AddressPlan:
    """The addresses of emulator number ``index`` (1..254)."""

    index: int

    @property
    def root_addr(self) -> str:
        return f"10.213.{self.index}.1"

    @property
    def netns_addr(self) -> str:
        return f"10.213.{self.index}.2"

    @property
    def tun_addr(self) -> str:
        return f"10.214.{self.index}.1"

    @property
    def target(self) -> str:
        return f"10.214.{self.index}.2"

    def networks(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
        return (
            ipaddress.IPv4Network(f"10.213.{self.index}.0/30"),
            ipaddress.IPv4Network(f"10.214.{self.index}.0/30"),
        )


def _netns_name(instance: str, prefix: str = NETNS_PREFIX) -> str:
    return prefix + hashlib.blake2b(instance.encode(), digest_size=4).hexdigest()


def _preferred_index(instance: str) -> int:
    digest = hashlib.blake2b(b"index:" + instance.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 254 + 1


def _existing_networks() -> list[ipaddress.IPv4Network]:
    """Networks of the root namespace's IPv4 addresses and routes."""
    found: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            found.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show").splitlines():
        if line.startswith("unreachable"):
            continue  # our own guard routes (see _guard_ranges)
        for token in line.split()[:2]:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(token, strict=False))
                break
    return found


def _index_taken(plan: AddressPlan, existing: list[ipaddress.IPv4Network]) -> bool:
    for ours in plan.networks():
        for net in existing:
            if net.overlaps(ours) and net.prefixlen >= _MIN_OVERLAP_PREFIX:
                return True
    return False


def _pick_plan(instance: str) -> AddressPlan:
    existing = _existing_networks()
    first = _preferred_index(instance)
    for step in range(254):
        plan = AddressPlan((first - 1 + step) % 254 + 1)
        if not _index_taken(plan, existing):
            return plan
    raise SandboxError("no free 10.213.N.0/30 and 10.214.N.0/30 networks for the path emulator")


# --------------------------------------------------------------------------- system helpers


def _ip(*args: str) -> str:
    """Run ``ip``; its stdout, or SandboxError with its stderr."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SandboxError(f"cannot run ip: {exc}") from exc
    if done.returncode != 0:
        raise SandboxError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _ip_quiet(*args: str) -> bool:
    """Run ``ip`` for teardown: True if it worked, never raises."""
    try:
        _ip(*args)
    except SandboxError:
        return False
    return True


def _netns_list() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _effective_caps() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _setns(fd: int) -> None:
    if _libc is None:
        raise OSError(errno.ENOSYS, "setns: network namespaces need Linux")
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _in_netns(netns: str, func: Callable[[], _T]) -> _T:
    """Run ``func`` in a short-lived thread that has joined namespace ``netns``."""
    box: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                box.append(func())
            finally:
                _setns(own)
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(own)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def _open_tun() -> int:
    """Create TUN device TUN_NAME in this thread's namespace; set it up to forward. Its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH22x", TUN_NAME.encode(), _IFF_TUN | _IFF_NO_PI)
        fcntl.ioctl(fd, _TUNSETIFF, request)
        for key, value in (("ip_forward", "1"), ("icmp_ratelimit", "0")):
            Path(f"/proc/sys/net/ipv4/{key}").write_text(value)
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


# --------------------------------------------------------------------------- owner records


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _state_path(netns: str) -> Path:
    return STATE_DIR / f"{netns}.json"


def _write_owner(netns: str, instance: str) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "start": _start_time(os.getpid()), "instance": instance}
    _state_path(netns).write_text(json.dumps(owner))


def _owner_alive(netns: str) -> bool:
    """Whether a live emulator owns ``netns``."""
    if any(emu.netns == netns for emu in list(_running)):
        return True
    try:
        owner = json.loads(_state_path(netns).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid == os.getpid():
        return False
    return _start_time(pid) is not None and _start_time(pid) == owner.get("start")


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise setup and cleanup across processes."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


GUARD_RANGES = ("10.213.0.0/16", "10.214.0.0/16")
"""Kept unreachable in the root namespace, before, during and after any emulator runs.

The emulators' /30 routes are more specific and win while they exist; once an emulator
stops, a probe of its old target fails at once with "network unreachable" instead of
following the default route off this machine.
"""


def _guard_ranges() -> None:
    for network in GUARD_RANGES:
        _ip("route", "replace", "unreachable", network)


def _remove_topology(netns: str) -> None:
    """Delete the root-side veth (with it the peer and routes), the namespace, the record."""
    links = _ip("-o", "link", "show").splitlines()
    if any(line.split(":")[1].strip().split("@")[0] == netns for line in links):
        _ip_quiet("link", "del", netns)
    if Path(f"/run/netns/{netns}").exists():
        _ip_quiet("netns", "del", netns)
    _state_path(netns).unlink(missing_ok=True)


def cleanup_stale(prefix: str = NETNS_PREFIX) -> list[str]:
    """Remove namespaces and veths with ``prefix`` left by emulators that are gone.

    A namespace is stale unless its state file names a live process (pid and start time
    match) or it belongs to a running emulator in this process. Returns the names removed.
    """
    if not prefix:
        raise InvalidInput("cleanup_stale: prefix must not be empty")
    ok, why = emulator_available()
    if not ok:
        raise PreconditionFailed(why)
    removed: list[str] = []
    with _state_lock():
        names = set(_netns_list()) | {p.stem for p in STATE_DIR.glob(f"{prefix}*.json")}
        for netns in sorted(n for n in names if n.startswith(prefix)):
            if not _owner_alive(netns):
                _remove_topology(netns)
                removed.append(netns)
    return removed


# --------------------------------------------------------------------------- availability


def emulator_available() -> tuple[bool, str]:
    """Whether this process can create the path emulator, and if not, why not."""
    if not sys.platform.startswith("linux"):
        return False, "network faults need Linux (network namespaces and TUN) for the path emulator"
    caps = _effective_caps()
    missing = [
        name
        for bit, name in ((_CAP_NET_ADMIN, "CAP_NET_ADMIN"), (_CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
        if not caps >> bit & 1
    ]
    if missing:
        needed = " and ".join(missing)
        return False, f"network faults need {needed} (run as root) to create the path emulator"
    if shutil.which("ip") is None:
        return False, "network faults need the ip command (iproute2) to create the path emulator"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return False, f"network faults need /dev/net/tun for the path emulator ({exc.strerror})"
    return True, "the path emulator can run here"


# --------------------------------------------------------------------------- packets


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, body: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), random.getrandbits(16), 0, 64, proto, 0, src, dst
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + body


def _icmp(type_: int, code: int, rest: bytes) -> bytes:
    body = struct.pack("!BBH", type_, code, 0) + rest
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def _tcp(src: bytes, dst: bytes, fields: tuple[int, int, int, int, int], options: bytes) -> bytes:
    sport, dport, seq, ack, flags = fields
    offset = (20 + len(options)) // 4 << 4
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset, flags, 65535, 0, 0)
    segment += options
    pseudo = src + dst + struct.pack("!BBH", 0, _TCP, len(segment))
    return segment[:16] + struct.pack("!H", _checksum(pseudo + segment)) + segment[18:]


def _icmp_answer(payload: bytes) -> bytes | None:
    if len(payload) < 8 or payload[0] != 8 or payload[1] != 0:
        return None
    return _icmp(0, 0, payload[4:])


def _tcp_answer(src: bytes, dst: bytes, payload: bytes, secret: bytes) -> bytes | None:
    if len(payload) < 20:
        return None
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", payload)
    data_len = len(payload) - (offset >> 4) * 4
    if flags & _RST:
        return None
    if flags & _SYN and not flags & _ACK:
        key = secret + src + payload[:8]
        isn = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")
        mss = struct.pack("!BBH", 2, 4, 1460)
        return _tcp(dst, src, (dport, sport, isn, (seq + 1) & 0xFFFFFFFF, _SYN | _ACK), mss)
    if not (flags & _FIN or data_len > 0):
        return None
    if flags & _ACK:
        return _tcp(dst, src, (dport, sport, ack, 0, _RST), b"")
    end = (seq + data_len + (1 if flags & _FIN else 0)) & 0xFFFFFFFF
    return _tcp(dst, src, (dport, sport, 0, end, _RST | _ACK), b"")


def _reply_for(packet: bytes, target: bytes, secret: bytes) -> bytes | None:
    """The IPv4 packet a host at ``target`` sends back for ``packet``, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    fragment = struct.unpack_from("!H", packet, 6)[0] & 0x3FFF
    if ihl < 20 or total < ihl or len(packet) < total or fragment or packet[16:20] != target:
        return None
    proto, src, payload = packet[9], packet[12:16], packet[ihl:total]
    if proto == _ICMP:
        body = _icmp_answer(payload)
    elif proto == _TCP:
        body = _tcp_answer(src, target, payload, secret)
    elif proto == _UDP:
        body = _icmp(3, 3, b"\0\0\0\0" + packet[:total][:_ICMP_ERROR_QUOTE])
        proto = _ICMP
    else:
        body = None
    return None if body is None else _ipv4(target, src, proto, body)


# --------------------------------------------------------------------------- the emulator


@dataclass(frozen=True)
class Impairment:
    """What happens to every answer: ``latency ± jitter`` seconds of delay, ``loss`` percent."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "loss"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"network impairment: {name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise InvalidInput(f"network impairment: {name} must be a finite number >= 0")
        if self.loss > 100:
            raise InvalidInput("network impairment: loss must be a percentage from 0 to 100")

    def delay(self) -> float | None:
        """Seconds to hold one answer, or None to drop it."""
        if self.loss and random.random() * 100 < self.loss:
            return None
        if not self.jitter:
            return self.latency
        return max(0.0, self.latency + random.uniform(-self.jitter, self.jitter))


class _DelayLine:
    """Sends packets at their due time from one timer thread (a heap of due times)."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, packet: bytes, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), packet))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def run(self) -> None:
        while (packet := self._next_due()) is not None:
            self._send(packet)

    def _next_due(self) -> bytes | None:
        with self._cond:
            while not self._closed:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(wait)
            return None


class _Responder:
    """The TUN fd, the reader thread that answers as the target host and the delay line."""

    def __init__(self, tun_fd: int, target: str, emulator: PathEmulator) -> None:
        self._fd = tun_fd
        self._target = socket.inet_aton(target)
        self._secret = os.urandom(16)
        self._emulator = emulator
        self._wake_r, self._wake_w = os.pipe()
        self._line = _DelayLine(self._send)
        self._threads = [
            threading.Thread(target=self._read_loop, name=f"netpath-read-{target}", daemon=True),
            threading.Thread(target=self._line.run, name=f"netpath-timer-{target}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _send(self, packet: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, packet)

    def _read_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while all(key.fd == self._fd for key, _ in selector.select()):
                self._drain()

    def _drain(self) -> None:
        for _ in range(64):
            try:
                packet = os.read(self._fd, 65535)
            except OSError:  # BlockingIOError: drained; anything else: closing
                return
            reply = _reply_for(packet, self._target, self._secret)
            delay = None if reply is None else self._emulator.impairment.delay()
            if reply is None or delay is None:
                continue
            if delay <= 0:
                self._send(reply)
            else:
                self._line.put(reply, delay)

    def close(self) -> None:
        """Stop both threads, then close the TUN fd (which removes the device)."""
        self._line.close()
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class PathEmulator:
    """A target host behind an impairable path; see the module docstring for the topology."""

    def __init__(self, instance: str) -> None:
        if not isinstance(instance, str) or not instance:
            raise InvalidInput("path emulator: instance must be a non-empty string")
        self.instance = instance
        self.netns = _netns_name(instance)
        self.impairment = Impairment()
        self._lock = threading.RLock()
        self._plan: AddressPlan | None = None
        self._responder: _Responder | None = None

    @property
    def target_host(self) -> str:
        """The address of the emulated target host (only while started)."""
        plan = self._plan
        if plan is None:
            raise PreconditionFailed(f"path emulator {self.instance!r} is not started")
        return plan.target

    @property
    def running(self) -> bool:
        return self._plan is not None

    def set_impairment(self, latency: float = 0.0, jitter: float = 0.0, loss: float = 0.0) -> None:
        """Delay answers by ``latency ± jitter`` seconds and drop ``loss`` percent of them."""
        self.impairment = Impairment(latency, jitter, loss)

    def clear(self) -> None:
        """Remove any impairment: answers go back at once."""
        self.impairment = Impairment()

    def start(self) -> str:
        """Create the namespace, veth, TUN and routes; start answering. The target address."""
        with self._lock:
            if self._plan is not None:
                return self._plan.target
            ok, why = emulator_available()
            if not ok:
                raise PreconditionFailed(why)
            with _state_lock():
                self._claim_netns()
                try:
                    plan = _pick_plan(self.instance)
                    self._responder = self._build(plan)
                except BaseException:
                    _remove_topology(self.netns)
                    raise
                self._plan = plan
                _running.add(self)
            return plan.target

    def _claim_netns(self) -> None:
        if self.netns in _netns_list() or _state_path(self.netns).exists():
            if _owner_alive(self.netns):
                raise PreconditionFailed(
                    f"a path emulator for instance {self.instance!r} is already running"
                )
            _remove_topology(self.netns)
        _write_owner(self.netns, self.instance)

    def _build(self, plan: AddressPlan) -> _Responder:
        ns, target_net = self.netns, plan.networks()[1]
        _guard_ranges()
        _ip("netns", "add", ns)
        _ip("link", "add", ns, "type", "veth", "peer", "name", "veth0", "netns", ns)
        _ip("addr", "add", f"{plan.root_addr}/30", "dev", ns)
        _ip("link", "set", ns, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{plan.netns_addr}/30", "dev", "veth0")
        _ip("-n", ns, "link", "set", "veth0", "up")
        tun_fd = _in_netns(ns, _open_tun)
        try:
            _ip("-n", ns, "addr", "add", f"{plan.tun_addr}/30", "dev", TUN_NAME)
            _ip("-n", ns, "link", "set", TUN_NAME, "up")
            _ip(
                "route",
                "add",
                str(target_net),
                "via",
                plan.netns_addr,
                "dev",
                ns,
                "src",
                plan.root_addr,
            )
        except BaseException:
            os.close(tun_fd)
            raise
        return _Responder(tun_fd, plan.target, self)

    def stop(self) -> None:
        """Stop answering and remove the namespace, veth and routes. Safe to call twice."""
        with self._lock:
            responder, self._responder = self._responder, None
            if self._plan is None and responder is None:
                return
            self._plan = None
            _running.discard(self)
            if responder is not None:
                responder.close()
            with _state_lock():
                _remove_topology(self.netns)

    def __enter__(self) -> PathEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for emulator in list(_running):
        with contextlib.suppress(Exception):
            emulator.stop()


def tcp_connect_time(host: str, port: int, timeout: float) -> float:
    """Seconds one TCP connect to ``host:port`` takes; OSError (TimeoutError) if it fails.

    The probe socket is closed with a RST (SO_LINGER 0) so that no FIN handshake or
    TIME_WAIT state is left behind.
    """
    if not timeout > 0:
        raise InvalidInput("tcp_connect_time: timeout must be > 0 seconds")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        started = time.perf_counter()
        sock.connect((host, port))
        elapsed = time.perf_counter() - started
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return elapsed
