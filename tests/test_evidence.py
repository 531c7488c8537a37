"""Recommended values chosen from the evidence, end to end: the template run under papermill
against a real sandbox whose scenario the test writes, and each value checked against what
the same record measured (never against what a sample happened to show).

* Small chunks: PUTs of 32MiB or more time out, 16MiB chunks succeed; the fallback bucket
  is throttled; the path to the export target loses packets. The chunk size recommended is
  at most 16MiB (not the runbook's 50MB), the fallback is not recommended, and
  escalate-network names the hop where the loss starts.
* Every size times out: the world's smallest chunk size, 32MiB, times out too, and the EU
  bucket is throttled. No chunk size is recommended ("no safe chunk size is known"); the
  healthy fallback is, with a TTL that follows the incident's duration, within the maximum;
  failed jobs are retried in batches of 20, the reason saying how many remain.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Sandbox, exportnb_cmd, need, start_sandbox

from exportnb.core.quantities import parse_ttl
from exportnb.platform.registry import local_environment
from exportnb.run.runner import run
from exportnb.sandbox.state import read_state

MIB = 2**20
RUNBOOK_CHUNK = 50_000_000

SMALL_CHUNKS = """
extends = "base"
description = "uploads of 32MiB or more time out, 16MiB pass; fallback throttled; lossy path"
days = 2
volume = 40000
chunk_sizes = [
    { size = "16MiB", weight = 2 },
    { size = "32MiB", weight = 1 },
    { size = "64MiB", weight = 1 },
]
[incident]
minutes = 30
faults = [
    { kind = "timeout", min_chunk = "32MiB", hold = "1s" },
    { kind = "throttle", buckets = ["exports-fallback"] },
    { kind = "network", loss = 60 },
]
"""

EVERY_SIZE = """
extends = "base"
description = "uploads of 32MiB, the smallest chunk size, or more time out; EU throttled"
days = 2
volume = 40000
[incident]
minutes = 30
faults = [
    { kind = "timeout", min_chunk = "32MiB", hold = "1s" },
    { kind = "throttle", buckets = ["exports-eu"] },
]
"""


def incident(tmp_path: Path, scenario: str, name: str) -> Iterator[tuple[Sandbox, object]]:
    path = tmp_path / f"{name}.toml"
    path.write_text(scenario)
    home = tmp_path / name
    sandbox = start_sandbox(home, str(path))
    try:
        found = local_environment(home)
        assert found is not None
        env, defaults = found
        record = run(
            incident_id=f"INC-{name}",
            env=env,
            defaults=defaults,
            archive=str(tmp_path / "archive"),
            cell_timeout=300,
        )
        assert record.status == "succeeded", record.error
        yield sandbox, record
    finally:
        sandbox.run(*exportnb_cmd("sandbox", "down"))


def step(record, name: str) -> dict:
    (found,) = [r["result"] for r in record.results if r["step"] == name]
    return found


def recommended(record) -> list[dict]:
    return step(record, "assessment")["recommendations"]


def of_action(record, action: str) -> list[dict]:
    return [r for r in recommended(record) if r["action"] == action]


def test_small_chunks_a_throttled_fallback_and_a_lossy_path(tmp_path):
    for sandbox, record in incident(tmp_path, SMALL_CHUNKS, "small-chunks"):
        changes = of_action(record, "chunk-size")
        assert changes, [r["action"] for r in recommended(record)]
        for change in changes:
            size = change["params"]["chunk_size"]
            assert size <= 16 * MIB and size != RUNBOOK_CHUNK
            assert "--chunk-size 16MiB" in change["command"] and "50MB" not in change["command"]
            # the evidence is recorded with the recommendation, and the reason shows it
            assert change["evidence"]["window"]["since"] and change["evidence"]["chunk_sizes"]
            for bucket, sizes in change["evidence"]["chunk_sizes"].items():
                assert sizes["largest_succeeded"] == 16 * MIB == sizes["chosen"]
                assert sizes["smallest_timed_out"] >= 32 * MIB
                assert f"on {bucket} to 16MiB" in change["reason"]
                assert f"was 16MiB ({sizes['largest_succeeded_jobs']} jobs)" in change["reason"]
        assert not of_action(record, "fallback-bucket")  # the fallback is throttled too
        assert "exports-fallback" in " ".join(r["reason"] for r in of_action(record, "retry"))
        path = step(record, "network_path")
        if read_state(sandbox.home).path_emulated and path["findings"]:
            (escalate,) = of_action(record, "escalate-network")
            hops = path["hops"]  # the hop named is the one this very measurement shows
            first_lossy = next(
                (h for i, h in enumerate(hops) if all(x["loss_pct"] > 1 for x in hops[i:])),
                {"index": None, "host": None},
            )
            assert escalate["params"].get("hop") == first_lossy["index"]
            assert escalate["params"].get("hop_host") == first_lossy["host"]
            if first_lossy["index"] is not None:
                assert f"the loss starts at hop {first_lossy['index']}" in escalate["reason"]


def test_every_chunk_size_times_out_and_the_fallback_is_healthy(tmp_path):
    for _, record in incident(tmp_path, EVERY_SIZE, "every-size"):
        assert not of_action(record, "chunk-size")
        assert all("--chunk-size" not in r["command"] for r in recommended(record))
        unknown = [r for r in of_action(record, "investigate") if "No safe chunk" in r["reason"]]
        assert unknown and "exports-primary" in unknown[0]["reason"]
        assert unknown[0]["evidence"]["chunk_sizes"]["exports-primary"]["chosen"] is None

        checks = {c["bucket"]: c["verdict"] for c in step(record, "storage_health")["checks"]}
        assert checks["exports-fallback"] == "ok" and checks["exports-eu"] == "throttled"
        (fallback,) = of_action(record, "fallback-bucket")
        jobs = step(record, "job_state")
        ttl = parse_ttl(fallback["params"]["ttl"])
        evidence = fallback["evidence"]["ttl"]
        expected = max(evidence["elapsed_s"], evidence["drain_s"] or 0)
        assert ttl == min(max(900, math.ceil(expected / 900) * 900), evidence["max_s"])
        assert ttl <= 24 * 3600 and evidence["failed_jobs"] == jobs["total_failed"]
        assert "HeadBucket on exports-fallback answered 200" in fallback["reason"]

        (retry,) = [r for r in of_action(record, "retry") if "status" in r["params"]]
        failed = jobs["total_failed"]
        assert retry["params"]["limit"] == min(20, failed)
        assert retry["params"]["concurrency"] == 1  # exports-eu is throttled
        if failed > 20:
            assert f"{failed - 20} remain" in retry["reason"]


@pytest.fixture(autouse=True)
def _components():
    need(shutil.which("mtr") is not None, "mtr is not installed (make test installs mtr-tiny)")
