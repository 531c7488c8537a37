"""Tests of the path emulator behind the ``network`` fault (exportnb.sandbox.netpath).

Everything here is real: namespaces, veths, a TUN device, TCP connects, raw ICMP echoes and
``mtr``. Without CAP_NET_ADMIN the emulator tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import need

from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.sandbox import netpath
from exportnb.sandbox.netpath import (
    PathEmulator,
    cleanup_stale,
    emulator_available,
    tcp_connect_time,
)

pytestmark = pytest.mark.netpath

INSTANCE = f"test-netpath-{os.getpid()}"


def _require_emulator() -> None:
    ok, reason = emulator_available()
    need(ok, reason)


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _link_names() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip() for line in out.stdout.splitlines()]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping(host: str, timeout: float = 1.0) -> float:
    """Seconds for one ICMP echo round trip over a raw socket (needs root)."""
    ident, seq = random.getrandbits(16), random.getrandbits(16)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"exportnb-netpath"
    request = header[:2] + struct.pack("!H", _checksum(header + payload)) + header[4:] + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        started = time.perf_counter()
        deadline = started + timeout
        sock.sendto(request, (host, 0))
        while (left := deadline - time.perf_counter()) > 0:
            sock.settimeout(left)
            data, addr = sock.recvfrom(2048)
            icmp = data[(data[0] & 0x0F) * 4 :]
            if addr[0] == host and icmp[0] == 0 and icmp[4:8] == request[4:8]:
                return time.perf_counter() - started
    raise TimeoutError(f"no echo reply from {host}")


def _mtr(host: str, cycles: int = 10) -> dict[str, float]:
    """Loss percent per hop address from ``mtr -r -n``, in hop order."""
    need(shutil.which("mtr") is not None, "mtr is not installed (apt-get install mtr-tiny)")
    cmd = ["mtr", "-r", "-n", "-c", str(cycles), "-i", "0.2", "-G", "1", host]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    hops = re.findall(r"^\s*\d+\.\|--\s+(\S+)\s+([\d.]+)%?", out, flags=re.MULTILINE)
    assert hops, out
    return {addr: float(loss) for addr, loss in hops}


@pytest.fixture(scope="module")
def running() -> Iterator[PathEmulator]:
    _require_emulator()
    with PathEmulator(INSTANCE) as emulator:
        yield emulator
    assert emulator.netns not in _netns_names()


@pytest.fixture
def emu(running: PathEmulator) -> Iterator[PathEmulator]:
    running.clear()
    yield running
    running.clear()


# --------------------------------------------------------------------------- without root


def test_impairment_is_validated() -> None:
    emulator = PathEmulator("validation")
    for bad in ({"loss": 101}, {"loss": -1}, {"latency": -0.1}, {"jitter": float("nan")}):
        with pytest.raises(InvalidInput):
            emulator.set_impairment(**bad)
    emulator.set_impairment(latency=0.2, jitter=0.05, loss=10)
    assert emulator.impairment.latency == 0.2
    emulator.clear()
    assert emulator.impairment.loss == 0
    with pytest.raises(PreconditionFailed):
        _ = emulator.target_host
    with pytest.raises(InvalidInput):
        PathEmulator("")


def test_availability_explains_itself() -> None:
    ok, reason = emulator_available()
    assert isinstance(ok, bool)
    assert reason
    if not ok:
        assert "path emulator" in reason


def test_answers_have_correct_checksums() -> None:
    src, dst = socket.inet_aton("10.213.7.1"), socket.inet_aton("10.214.7.2")

    def ip_packet(proto: int, body: bytes) -> bytes:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 2, proto, 0, src, dst)
        return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + body

    echo = struct.pack("!BBHHH", 8, 0, 0, 77, 5) + b"ping"
    syn = struct.pack("!HHIIBBHHH", 40000, 443, 1000, 0, 5 << 4, 0x02, 1024, 0, 0)
    udp = struct.pack("!HHHH", 40000, 33434, 12, 0) + b"mtr!"
    for proto, body, expect_proto in ((1, echo, 1), (6, syn, 6), (17, udp, 1)):
        reply = netpath._reply_for(ip_packet(proto, body), dst, b"secret")
        assert reply is not None
        assert _checksum(reply[:20]) == 0
        assert reply[9] == expect_proto
        assert reply[12:16] == dst and reply[16:20] == src
        payload = reply[20:]
        if expect_proto == 6:
            pseudo = dst + src + struct.pack("!BBH", 0, 6, len(payload))
            assert _checksum(pseudo + payload) == 0
            assert payload[13] == 0x12  # SYN|ACK
            assert struct.unpack_from("!I", payload, 8)[0] == 1001
        else:
            assert _checksum(payload) == 0
    assert netpath._reply_for(ip_packet(1, echo), src, b"secret") is None  # not the target


# --------------------------------------------------------------------------- with the emulator


def test_no_impairment_is_fast(emu: PathEmulator) -> None:
    host = emu.target_host
    assert host.startswith("10.214.")
    assert max(tcp_connect_time(host, port, 1.0) for port in (22, 443, 5432)) < 0.05
    assert max(_ping(host) for _ in range(3)) < 0.05


def test_data_after_connect_is_reset(emu: PathEmulator) -> None:
    with socket.create_connection((emu.target_host, 8080), timeout=1.0) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)


def test_latency_delays_connect_and_ping(emu: PathEmulator) -> None:
    emu.set_impairment(latency=0.1)
    times = [tcp_connect_time(emu.target_host, 443, 1.0) for _ in range(7)]
    assert 0.095 <= statistics.median(times) <= 0.16, times
    assert 0.095 <= _ping(emu.target_host) <= 0.16


def test_jitter_spreads_delays(emu: PathEmulator) -> None:
    emu.set_impairment(latency=0.05, jitter=0.04)
    times = [tcp_connect_time(emu.target_host, 443, 1.0) for _ in range(10)]
    assert all(0.005 <= t <= 0.12 for t in times), times
    assert max(times) - min(times) > 0.01, times


def test_loss_fails_about_half_the_connects(emu: PathEmulator) -> None:
    emu.set_impairment(loss=50)
    failures = 0
    for _ in range(40):
        try:
            tcp_connect_time(emu.target_host, 443, 0.2)
        except TimeoutError:
            failures += 1
    assert 8 <= failures <= 32, failures
    emu.clear()
    tcp_connect_time(emu.target_host, 443, 0.5)


def test_mtr_sees_loss_on_the_last_hop_only(emu: PathEmulator) -> None:
    emu.set_impairment(loss=50)
    hops = _mtr(emu.target_host)
    index = emu.target_host.split(".")[2]
    assert list(hops) == [f"10.213.{index}.2", emu.target_host]
    first, last = hops.values()
    assert first == 0.0
    assert last > 0.0


def test_mtr_sees_no_loss_without_impairment(emu: PathEmulator) -> None:
    hops = _mtr(emu.target_host, cycles=5)
    assert list(hops)[-1] == emu.target_host
    assert all(loss == 0.0 for loss in hops.values()), hops


def test_second_emulator_coexists(emu: PathEmulator) -> None:
    with PathEmulator(f"{INSTANCE}-second") as other:
        assert other.target_host != emu.target_host
        other.set_impairment(latency=0.05)
        assert tcp_connect_time(other.target_host, 443, 1.0) >= 0.045
        assert tcp_connect_time(emu.target_host, 443, 1.0) < 0.05


def test_same_instance_twice_is_refused(emu: PathEmulator) -> None:
    assert emu.start() == emu.target_host  # starting again is a no-op
    with pytest.raises(PreconditionFailed):
        PathEmulator(INSTANCE).start()


def test_restart_and_stop_from_another_thread() -> None:
    _require_emulator()
    emulator = PathEmulator(f"{INSTANCE}-restart")
    for latency in (0.0, 0.05):  # the impairment set in round 1 outlives the restart
        host = emulator.start()
        assert emulator.netns in _netns_names()
        assert latency <= tcp_connect_time(host, 443, 1.0) < latency + 0.04
        emulator.set_impairment(latency=0.05)
        worker = threading.Thread(target=emulator.stop)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive()
        emulator.stop()
        assert emulator.netns not in _netns_names()
        # No probe to the old address: without our route it would leave by the default route.
        cmd = ["ip", "-4", "route", "show", "to", "match", host]
        route = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert "via 10.213." not in route
        assert emulator.netns not in {link.split("@")[0] for link in _link_names()}


def test_cleanup_stale_removes_a_crashed_emulator(running: PathEmulator) -> None:
    crashed = f"{INSTANCE}-crashed"
    script = (
        "import os\n"
        "from exportnb.sandbox.netpath import PathEmulator\n"
        f"PathEmulator({crashed!r}).start()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=20)
    netns = PathEmulator(crashed).netns
    assert netns in _netns_names()
    removed = cleanup_stale()
    assert netns in removed
    assert running.netns not in removed
    assert netns not in _netns_names()
    assert running.netns in _netns_names()
    assert tcp_connect_time(running.target_host, 443, 1.0) < 0.05
