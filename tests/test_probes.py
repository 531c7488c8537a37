"""Early probes: started in the background, collected by the cell making the very same call,
in the kernel's own threads or handed over by the runner's probe process (a real process on
a constructed sandbox store; a real sandbox in the runner's test)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pickle
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_for
from constructed import FALLBACK, NOW, PRIMARY, make_world, minutes

from exportnb.incident import probes
from exportnb.incident.model import PARAMETERS, open_incident
from exportnb.incident.probes import EarlyProbes, Handed, HandedProbes, Opened, ProbeProcess
from exportnb.incident.steps.checksums import verify_jobs
from exportnb.incident.steps.detection import detect
from exportnb.incident.steps.jobstate import job_state
from exportnb.incident.steps.network import network_path
from exportnb.incident.steps.storagehealth import storage_health

AT = NOW.replace(second=0)


def measure(*args, **kwargs):
    """A probe: notes each call and answers with a new object."""
    measure.calls.append((args, kwargs))
    return object()


@pytest.fixture
def early():
    measure.calls = []
    return EarlyProbes()


# In the kernel: threads --------------------------------------------------------------------
def test_the_same_call_gets_the_early_result_once(early):
    started = early.start(measure, lambda: ((1,), {"y": 2}))
    result = started.result()[1]
    assert early.collect(measure, 1, y=2) is result
    assert measure.calls == [((1,), {"y": 2})]  # not called again
    assert early.collect(measure, 1, y=2) is not result  # asked again: measured again
    assert len(measure.calls) == 2


def test_a_different_call_is_made_by_the_cell_itself(early):
    early.start(measure, lambda: ((["exports-primary"],), {}))
    early.collect(measure, ["exports-primary", "exports-eu"])
    assert measure.calls[-1] == ((["exports-primary", "exports-eu"],), {})
    assert early.collect(len, "abc") == 3  # never started: made there and then


def test_an_early_failure_is_met_by_the_cells_own_call(early):
    answers = iter([TimeoutError("the early call failed"), "measured in the cell"])

    def flaky():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    early.start(flaky, lambda: ((), {}))
    assert early.collect(flaky) == "measured in the cell"
    early.start(measure, lambda: 1 / 0)  # preparing the arguments failed
    early.collect(measure, 7)
    assert measure.calls == [((7,), {})]


def test_arguments_may_wait_for_another_probe(early):
    first = early.start(measure, lambda: ((1,), {}))
    early.start(str, lambda: ((first.result()[1],), {}))
    assert early.collect(str, first.result()[1]).startswith("<object object")


def test_the_probes_run_concurrently(early):
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    began = time.perf_counter()
    early.start(time.sleep, lambda: ((0.3,), {}))
    early.start(nap, lambda: ((0.3,), {}))
    assert early.collect(time.sleep, 0.3) is None and early.collect(nap, 0.3) == 0.3
    assert time.perf_counter() - began < 0.55


def test_each_started_call_is_reported_as_it_finishes(early):
    early.start(time.sleep, lambda: ((0.2,), {}))
    early.start(measure, lambda: ((1,), {}))
    assert early.started() == [probes.name_of(time.sleep), probes.name_of(measure)]
    finished = [function for function, _ in early.finished()]
    assert finished == [measure, time.sleep]


# Handed over through a folder --------------------------------------------------------------
def hand(folder, function, args=(), kwargs=None, result=None, ok=True):
    """Leave what a probe process leaves for one call (pickled, named by the function)."""
    key = probes.call_key(function, tuple(args), kwargs or {}) if ok else None
    handed = Handed(key, result, ok)
    (folder / f"{probes.name_of(function)}.pickle").write_bytes(pickle.dumps(handed))


@pytest.fixture
def folder(tmp_path):
    where = tmp_path / "probes"
    where.mkdir()
    (where / probes.ALIVE).touch()
    return where


def test_a_handed_result_is_used_for_the_very_same_call_only(folder):
    measure.calls = []
    hand(folder, measure, (1,), {"y": 2}, result="measured early")
    hand(folder, len, ("abc",), result=99)
    hand(folder, sorted, ok=False)  # the early call failed
    handed = HandedProbes(folder, [probes.name_of(f) for f in (measure, len, sorted)])
    assert handed.collect(measure, 1, y=2) == "measured early"
    assert measure.calls == []
    assert handed.collect(len, "abcd") == 4  # another call: made by the cell
    assert handed.collect(sorted, [2, 1]) == [1, 2]
    assert handed.collect(measure, 1, y=2) is not None and len(measure.calls) == 1  # again
    assert handed.collect(max, [1, 3]) == 3  # never started


def test_a_result_on_its_way_is_waited_for_and_a_dead_process_is_not(folder):
    with (folder / probes.ALIVE).open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a probe process, alive
        threading.Timer(0.3, hand, (folder, measure, (1,)), {"result": "late"}).start()
        handed = HandedProbes(folder, [probes.name_of(measure), probes.name_of(len)])
        began = time.perf_counter()
        assert handed.collect(measure, 1) == "late"
        assert time.perf_counter() - began >= 0.25
    began = time.perf_counter()  # the lock is released: the process is gone
    assert handed.collect(len, "ab") == 2 and time.perf_counter() - began < 0.2


def test_a_platform_is_compared_by_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    world = make_world(tmp_path)
    try:
        key = probes.call_key(measure, (world.platform, ["job-1"]), {"now": NOW})
        assert key == (probes.name_of(measure), (("platform", "sandbox"), ["job-1"]), {"now": NOW})
    finally:
        world.platform.close()


def test_an_incident_is_adopted_only_for_the_same_parameters(folder, monkeypatch):
    opened = Opened({**PARAMETERS, "incident_id": "INC-1"}, NOW, NOW - minutes(30), True, ())
    (folder / probes.OPENED).write_bytes(pickle.dumps(opened))
    assert probes.handed_over({**PARAMETERS, "incident_id": "INC-1"}) is None  # no $EXPORTNB_PROBES
    monkeypatch.setenv(probes.ENV, str(folder))
    found = probes.handed_over({**PARAMETERS, "incident_id": "INC-1"})
    assert found is not None and found[0] == opened
    assert probes.handed_over({**PARAMETERS, "incident_id": "INC-2"}) is None
    monkeypatch.setenv(probes.ENV, str(folder.parent / "nothing-here"))
    assert probes.handed_over({**PARAMETERS, "incident_id": "INC-1"}) is None


# A real probe process ------------------------------------------------------------------------
@pytest.fixture
def world(tmp_path, monkeypatch):
    """A constructed sandbox store with an hour of exports, some failing, and a deadline."""
    for name in (
        "EXPORT_BUCKET",
        "EXPORT_FALLBACK_BUCKET",
        "EXPORT_TARGET_HOST",
        "EXPORTNB_PLATFORM",
        probes.ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    monkeypatch.setenv("EXPORTNB_OPERATOR", "alice")
    w = make_world(tmp_path)
    for m in range(60, 0, -1):
        w.many(AT - minutes(m) + timedelta(seconds=10), 10, tenant="acme")
    for m in range(8, 0, -1):
        w.many(
            AT - minutes(m) + timedelta(seconds=20),
            3,
            status="failed",
            tenant="globex",
            bucket=PRIMARY,
            error_code="SlowDown",
        )
    yield w
    w.platform.close()


GIVEN = {
    "incident_id": "INC-7",
    "now": NOW.isoformat(),
    "buckets": [FALLBACK],
    "probe_count": 2,
    "probe_interval": 0.05,
    "probe_grace": 0.1,
}


def test_the_kernel_collects_what_the_probe_process_measured(world, tmp_path, monkeypatch):
    early = ProbeProcess.launch(tmp_path / "probes", GIVEN, dict(os.environ))
    try:
        assert early.process.wait(timeout=60) == 0, (tmp_path / "probes" / probes.LOG).read_text()
        monkeypatch.setenv(probes.ENV, str(early.folder))
        incident = open_incident(**GIVEN).start_probes()
        assert isinstance(incident.probes, HandedProbes)
        asked = datetime.now(UTC)
        detection = incident.collect(detect, incident.platform, **incident.detection_options())
        jobs = incident.collect(job_state, incident.platform, **incident.job_state_options())
        storage = incident.collect(
            storage_health, incident.buckets_to_check(jobs), access=incident.storage_access
        )
        checks = incident.collect(
            verify_jobs, incident.platform, incident.checksum_jobs(jobs, detection)
        )
        path = incident.collect(network_path, incident.target_host, **incident.network_options())
    finally:
        early.stop()
    assert max(storage.checked_at, checks.checked_at, path.measured_at) < asked
    assert detection == detect(incident.platform, **incident.detection_options())
    assert jobs == job_state(incident.platform, **incident.job_state_options())
    assert detection.breached and jobs.total_failed == 24 and incident.breach_found
    assert [c.bucket for c in storage.checks] == [PRIMARY, FALLBACK]
    assert [j.job_id for j in checks.jobs] == incident.checksum_jobs(jobs, detection)
    assert path.destination is not None and path.destination.sent == 2
    again = incident.collect(network_path, incident.target_host, **incident.network_options())
    assert again.measured_at > asked  # asked again: measured in the cell


def test_the_incident_is_judged_at_the_time_the_probe_process_opened_it(
    world, tmp_path, monkeypatch
):
    given = {name: value for name, value in GIVEN.items() if name != "now"}
    early = ProbeProcess.launch(tmp_path / "probes", given, dict(os.environ))
    try:
        monkeypatch.setenv(probes.ENV, str(early.folder))
        wait_for(lambda: (early.folder / probes.OPENED).exists(), timeout=30, every=0.01)
        time.sleep(0.1)
        incident = open_incident(**given)
        assert isinstance(incident.probes, HandedProbes)
        assert incident.now < datetime.now(UTC) - timedelta(seconds=0.1)
        opened = pickle.loads((early.folder / probes.OPENED).read_bytes())
        assert (incident.now, incident.incident_start) == (opened.now, opened.incident_start)
    finally:
        early.stop()


def test_an_incident_with_other_parameters_probes_for_itself(world, tmp_path, monkeypatch):
    early = ProbeProcess.launch(tmp_path / "probes", GIVEN, dict(os.environ))
    try:
        monkeypatch.setenv(probes.ENV, str(early.folder))
        incident = open_incident(**{**GIVEN, "window_minutes": 15}).start_probes()
        assert isinstance(incident.probes, EarlyProbes)
        assert len(incident.probes.started()) == 6
    finally:
        early.stop()
    assert early.process.returncode is not None


def test_stopping_ends_the_process_and_what_it_started(world, tmp_path):
    slow = {**GIVEN, "probe_count": 50, "probe_interval": 0.2, "probe_grace": 5.0}
    early = ProbeProcess.launch(tmp_path / "probes", slow, dict(os.environ))
    time.sleep(0.5)  # the network path is being measured, for seconds
    began = time.perf_counter()
    early.stop()
    assert time.perf_counter() - began < 2 and early.process.returncode == -9
    assert not probes.alive(early.folder)
    wait_for(lambda: not session_alive(early.process.pid), timeout=5, every=0.05)


def session_alive(sid: int) -> bool:
    """Whether a process of session ``sid`` is still running (zombies are not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            return True
    return False


def test_the_probes_stand_without_the_incident_and_their_process_is_a_module_of_its_own():
    check = "import sys, exportnb.incident.probes; print('exportnb.incident.model' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr
    assert probes.PROCESS == "exportnb.incident.probe_process"
    assert importlib.util.find_spec(probes.PROCESS) is not None


def test_an_incident_notebook_is_one_that_declares_every_incident_parameter():
    assert probes.applies_to([*PARAMETERS, "extra"])
    assert not probes.applies_to([name for name in PARAMETERS if name != "now"])
