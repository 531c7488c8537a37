"""Network path (runbook Diagnostics 4) over the sandbox's emulated path to EXPORT_TARGET_HOST:
a real namespace, router and TUN host, made lossy and slow by the ``network`` fault.

Only loopback and the sandbox's own 10.213/10.214 emulator ranges are ever probed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest
from conftest import exportnb_cmd, need

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.findings import NETWORK_LATENCY, NETWORK_LOSS, NETWORK_UNREACHABLE
from exportnb.incident.steps.network import (
    Hop,
    loss_onset,
    mtr_hops,
    network_path,
    onset_index,
    percentile,
)
from exportnb.sandbox.state import read_state

pytestmark = pytest.mark.netpath


@pytest.fixture(scope="module")
def target(sandbox) -> str:
    state = read_state(sandbox.home)
    need(state is not None and state.path_emulated, "the path emulator needs CAP_NET_ADMIN (root)")
    return state.target_host


@pytest.fixture(scope="module")
def impaired(sandbox, target) -> Iterator[str]:
    """The target host behind 150ms of latency and 30% loss, for the tests that ask for it."""
    out = sandbox.run(
        *exportnb_cmd(
            "sandbox", "fault", "inject", "--json", "network", "--latency", "150ms", "--loss", "30"
        ),
        check=True,
    )
    time.sleep(0.6)  # the daemon re-reads faults every 0.25s
    yield target
    fault = str(json.loads(out.stdout)["id"])
    sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", fault), check=True)


def _need_mtr() -> None:
    need(shutil.which("mtr") is not None, "mtr is not installed (apt-get install mtr-tiny)")


def _unrouted(target: str) -> str:
    """An address in the guarded 10.213.0.0/16 that no emulator of this sandbox uses."""
    index = int(target.split(".")[2])
    return f"10.213.{250 if index != 250 else 251}.2"


def test_a_clean_path_has_no_findings_with_mtr(target):
    _need_mtr()
    path = network_path(target, count=8, method="mtr")
    assert path.method == "mtr" and path.findings == []
    assert path.command == f"mtr -r -n -c 8 -i 0.2 {target}"
    assert path.argv[:2] == ["mtr", "--raw"] and path.argv[-1] == target
    router, destination = path.hops
    assert (router.index, destination.index, destination.host) == (1, 2, target)
    assert (destination.sent, destination.received, path.loss_pct) == (8, 8, 0.0)
    assert path.p95_ms is not None and path.p95_ms < 50


def test_mtr_is_paced_by_interval_and_grace(target):
    _need_mtr()
    began = time.perf_counter()
    path = network_path(target, count=10, method="mtr", interval=0.05, grace=0.5)
    took = time.perf_counter() - began
    assert path.command == f"mtr -r -n -c 10 -i 0.05 {target}"
    assert path.argv[3:9] == ["-c", "10", "-i", "0.05", "-G", "0.5"]
    assert (path.destination.sent, path.destination.received) == (10, 10)
    assert took < 10 * 0.2 + 2.0  # quicker than the default pace


def test_mtr_sees_the_injected_loss_and_latency_at_the_destination(impaired):
    _need_mtr()
    path = network_path(impaired, count=20, method="mtr")
    router, destination = path.hops
    assert router.loss_pct == 0.0 and (router.p95_ms or 0) < 50  # only the target is impaired
    assert destination.sent == 20 and 0 < destination.received < 20
    assert path.loss_pct == destination.loss_pct > 1.0
    assert path.p50_ms is not None and 140 < path.p50_ms < 400
    codes = {f.code: f for f in path.findings}
    assert set(codes) == {NETWORK_LOSS, NETWORK_LATENCY}
    loss = codes[NETWORK_LOSS]
    assert loss.evidence["host"] == impaired and loss.evidence["loss_pct"] == path.loss_pct
    # only the target is impaired: the loss starts at the destination, not at the router
    onset = {"index": destination.index, "host": impaired, "loss_pct": destination.loss_pct}
    assert loss.evidence["loss_onset"] == onset == codes[NETWORK_LATENCY].evidence["loss_onset"]
    assert loss.evidence["threshold_pct"] == 1.0 and loss.step == "network_path"
    assert codes[NETWORK_LATENCY].evidence["p95_ms"] == path.p95_ms


def test_tcp_connects_see_the_same_impairment(impaired):
    path = network_path(impaired, port=443, count=20, method="tcp")
    assert path.method == "tcp" and path.command == f"tcp connect {impaired}:443 x20"
    (destination,) = path.hops
    assert destination.sent == 20 and 0 < destination.received < 20
    assert path.p50_ms is not None and 140 < path.p50_ms < 400
    assert {f.code for f in path.findings} == {NETWORK_LOSS, NETWORK_LATENCY}


def test_thresholds_are_parameters(impaired):
    path = network_path(
        impaired, count=6, method="tcp", loss_threshold=100, latency_threshold_ms=2000
    )
    assert path.findings == []


def test_an_unrouted_host_is_unreachable_not_an_error(target):
    host = _unrouted(target)
    for method in ("tcp", "mtr") if shutil.which("mtr") else ("tcp",):
        path = network_path(host, count=3, method=method)
        (finding,) = path.findings
        assert finding.code == NETWORK_UNREACHABLE and finding.severity == "critical"
        assert finding.evidence["reason"] == "no route", method
        assert path.loss_pct == 100.0 and path.p95_ms is None


def test_a_name_that_does_not_resolve_is_unreachable():
    path = network_path("export..target", count=3)
    (finding,) = path.findings
    assert (finding.code, finding.evidence["reason"]) == (NETWORK_UNREACHABLE, "dns")
    assert path.address is None and path.hops == [] and path.error


def test_a_refused_connect_is_an_answer():
    path = network_path("127.0.0.1", port=9, count=4, method="tcp")
    assert path.hops[0].received == 4 and path.findings == []


def test_auto_falls_back_to_tcp_without_mtr(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = network_path("127.0.0.1", port=9, count=2)
    assert path.method == "tcp"
    with pytest.raises(PreconditionFailed, match="mtr is not installed"):
        network_path("127.0.0.1", count=2, method="mtr")


def test_the_result_encodes_to_json_and_frames():
    path = network_path("127.0.0.1", port=9, count=2, method="tcp")
    doc = json.loads(json.dumps(codec.encode(path)))
    assert doc["method"] == "tcp" and doc["hops"][0]["sent"] == 2
    assert list(path.frame()["host"]) == ["127.0.0.1"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": "-n"},
        {"port": 0},
        {"count": 0},
        {"method": "icmp"},
        {"loss_threshold": -1},
        {"timeout": 0},
        {"interval": 0},
        {"interval": 61},
        {"interval": "0.1"},
        {"grace": 0},
        {"grace": True},
    ],
)
def test_bad_input_is_refused(kwargs):
    args = {"host": "127.0.0.1", **kwargs}
    with pytest.raises(InvalidInput):
        network_path(args.pop("host"), **args)


RAW = """\
x 0 33000
h 0 10.213.7.2
p 0 287 33000
x 1 33001
x 2 33002
h 1 10.214.7.2
p 1 150561 33001
h 2 10.214.7.2
p 2 150512 33002
x 0 33003
p 0 69 33003
x 1 33004
garbage line
x 1 33005
p 1 150400 33005
"""


def test_mtr_raw_lines_end_at_the_first_hop_the_target_answers_from():
    router, target = mtr_hops(RAW, "10.214.7.2", 3)
    assert (router.host, router.sent, router.received, router.loss_pct) == ("10.213.7.2", 2, 2, 0)
    assert (target.index, target.sent, target.received) == (2, 3, 2)
    assert target.loss_pct == pytest.approx(33.3)
    assert target.p50_ms == pytest.approx(150.4805, abs=0.001)  # rounded to microseconds


def test_mtr_raw_lines_without_an_answer_end_in_a_silent_destination():
    hops = mtr_hops("x 0 1\nh 0 10.213.7.2\np 0 100 1\nx 1 2\nx 1 3\n", "10.214.7.2", 2)
    assert [(h.host, h.received, h.loss_pct) for h in hops] == [
        ("10.213.7.2", 1, 0.0),
        ("???", 0, 100.0),
    ]
    assert mtr_hops("", "10.214.7.2", 4)[0].sent == 4


def test_percentiles_interpolate():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(v) for v in range(1, 21)], 95) == pytest.approx(19.05)


def hops(*losses: float) -> list[Hop]:
    return [
        Hop(i, f"10.214.0.{i}", 10, 10, loss, 1.0, 2.0, 1.5) for i, loss in enumerate(losses, 1)
    ]


@pytest.mark.parametrize(
    ("losses", "onset"),
    [
        ((0.0, 0.0, 30.0), 3),  # only the destination loses
        ((0.0, 40.0, 30.0, 35.0), 2),  # from hop 2 on
        ((100.0, 0.0, 20.0, 25.0), 3),  # hop 1 drops its own answers, hop 2 does not lose
        ((0.0, 50.0, 0.0, 0.0), None),  # a lossy hop the path recovers from
        ((0.0, 0.5, 0.8), None),  # never above the threshold
        ((), None),
    ],
)
def test_the_loss_starts_at_the_first_hop_above_the_threshold_all_the_way(losses, onset):
    found = loss_onset(hops(*losses), 1.0)
    assert (found.index if found else None) == onset
    assert onset_index(list(losses), 1.0) == (None if onset is None else onset - 1)


def test_the_threshold_decides_where_the_loss_starts():
    path = hops(0.0, 2.0, 30.0)
    assert loss_onset(path, 1.0).index == 2 and loss_onset(path, 5.0).index == 3


def test_a_silent_destination_names_where_the_answers_stop():
    path = mtr_hops("x 0 1\nh 0 10.213.7.2\np 0 100 1\nx 1 2\nx 1 3\n", "10.214.7.2", 2)
    assert loss_onset(path, 1.0).index == 2  # the router answered, the target did not


def test_unreachable_and_loss_findings_name_the_onset():
    path = network_path("127.0.0.1", port=9, count=2, method="tcp")
    assert path.findings == []  # a refused connect is an answer: nothing to name
    unroutable = network_path("export..target", count=2)
    (finding,) = unroutable.findings
    assert finding.evidence["loss_onset"] is None and finding.evidence["threshold_pct"] == 1.0
