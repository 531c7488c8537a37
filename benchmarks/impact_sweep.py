"""Benchmark: the impact sweep against raw HeadObject calls, and a notebook run with it.

Targets (the impact sweep, ``exportnb.incident.steps.impact``):

1. **Throughput.** In a real sandbox (``exportnb sandbox up --scenario FILE``, the file
   written here: a world whose incident window holds at least ``--deliveries`` deliveries
   of about 12 segments each, some of them corrupt), ``impact_sweep`` over that window (at
   least 2,000 deliveries and 20,000 segments: listing the deliveries, reading their
   manifests, checking every segment) reaches at least 0.8x the segments per second of raw
   concurrent HeadObject calls (checksum mode) on the same segments: same endpoint (the
   sandbox's moto server behind its fault proxy), same concurrency (8 threads), one boto3
   client. Alternated over rounds, in this process; the figures are medians. Live traffic
   is held (its jobs are bulk exports, and bulk exports are paused) so that nothing else
   writes to the endpoint while it is measured.
2. **Run overhead.** On the built-in ``customer-checksums`` scenario, the wall time of
   ``exportnb run`` with the customer-reported job IDs (so the sweep runs) is at most 1.3x
   that of the same command with ``-p impact_sweep never``. Alternated over rounds after a
   warm-up run of each; medians.

A workload that fails (a sandbox that does not start, a run that fails or whose sweep did
not run as asked, a sweep that did not verify its whole window) prints ERROR and exits 2,
and no PASS is printed for it. A missed target exits 1.

Run: ``python benchmarks/impact_sweep.py [--rounds 3] [--run-rounds 5] [--deliveries 2400]``
(``--skip-throughput`` or ``--skip-run`` for one half)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exportnb.incident.steps.impact import impact_sweep, print_progress
from exportnb.platform.model import JobQuery, Manifest
from exportnb.sandbox.control import env_values
from exportnb.sandbox.history import expected_jobs
from exportnb.sandbox.platform import SandboxPlatform
from exportnb.sandbox.scenario import load_scenario
from exportnb.sandbox.state import read_state

THROUGHPUT_TARGET = 0.8
RUN_TARGET = 1.3
WORKERS = 8
MIN_DELIVERIES, MIN_SEGMENTS = 2000, 20_000
INCIDENT_MINUTES = 20
BIN = Path(sys.executable).parent
WORLD = """\
extends = "base"
description = "impact sweep benchmark: a busy incident window of bulk exports, some corrupt"
days = 0.1
volume = {volume}
chunk_sizes = [{{ size = "32MiB" }}]

[kinds]
scheduled = 0
adhoc = 0
bulk = 1

[job_size]
median = "400MB"
sigma = 0.1
min = "360MB"
max = "440MB"
bulk_factor = 1.0

[incident]
minutes = {minutes}
faults = [{{ kind = "corrupt", tenants = ["globex"], rate = 0.1 }}]
"""


class WorkloadFailed(Exception):
    """The benchmark could not measure what it set out to: no PASS, exit 2."""


def command(name: str, *args: str) -> list[str]:
    """The console script ``name`` of this environment."""
    script = BIN / name
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "exportnb.cli", *args]


def run(argv: Sequence[str], env: dict[str, str], what: str, timeout: float = 900) -> str:
    done = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise WorkloadFailed(f"{what} exited {done.returncode}:\n{tail}")
    return done.stdout


# Sandboxes ---------------------------------------------------------------------------------
@contextlib.contextmanager
def sandbox(home: Path, scenario: str) -> Iterator[dict[str, str]]:
    """A sandbox of ``scenario`` under ``home`` (the environment of its shell), stopped after."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EXPORTNB_HOME": str(home), "EXPORTNB_OPERATOR": "benchmark"}
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(name, None)
    began = time.perf_counter()
    print(f"starting a sandbox ({scenario}) ...", file=sys.stderr, flush=True)
    try:
        run(command("exportnb", "sandbox", "up", "--scenario", scenario), env, "sandbox up")
        print(f"  up in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        yield {**env, **env_values(home=home)}
    finally:
        subprocess.run(
            command("exportnb", "sandbox", "down"), env=env, capture_output=True, timeout=120
        )


def world_file(folder: Path, deliveries: int) -> Path:
    """The benchmark's scenario, its volume set for ``deliveries`` in the incident window at
    this hour (the model's load follows the hour of the day)."""
    path = folder / "impact-sweep-world.toml"
    path.write_text(WORLD.format(volume=10_000, minutes=INCIDENT_MINUTES))
    probe = load_scenario(str(path))
    now = time.time()
    expected = expected_jobs(probe, now - INCIDENT_MINUTES * 60, now)
    volume = int(10_000 * deliveries * 1.1 / max(expected, 1.0)) + 1
    path.write_text(WORLD.format(volume=volume, minutes=INCIDENT_MINUTES))
    return path


def hold_live_traffic(env: dict[str, str], platform: SandboxPlatform) -> None:
    """Pause bulk exports (all of this world's) and wait for the running ones to finish."""
    run(["exportctl", "pause", "bulk", "--reason", "benchmark"], env, "exportctl pause bulk")
    deadline = time.monotonic() + 120
    while platform.list_jobs(JobQuery(status="running", limit=1)):
        if time.monotonic() > deadline:
            raise WorkloadFailed("live jobs still running 120 s after bulk exports were paused")
        time.sleep(1)


# 1. Throughput ---------------------------------------------------------------------------------
@dataclass
class Window:
    since: datetime
    until: datetime
    keys: list[tuple[str, str]]  # (bucket, key) of every segment of every delivery


def window_of(home: Path, platform: SandboxPlatform) -> Window:
    state = read_state(home)
    if state is None:
        raise WorkloadFailed("the sandbox wrote no state")
    start = float(state.detail.get("incident_start") or 0)
    since = datetime.fromtimestamp(start, UTC) - timedelta(minutes=1)
    until = datetime.now(UTC)
    listed = platform.deliveries(since, until, limit=100_000)
    manifests = platform.manifests(listed.items)
    read = [m for m in manifests.values() if isinstance(m, Manifest)]
    if len(read) != len(listed.items) or not listed.complete:
        raise WorkloadFailed("the window's manifests could not all be read")
    keys = [(m.bucket, s.key) for m in read for s in m.segments]
    if len(read) < MIN_DELIVERIES or len(keys) < MIN_SEGMENTS:
        raise WorkloadFailed(
            f"the window holds {len(read)} deliveries and {len(keys)} segments: "
            f"at least {MIN_DELIVERIES} and {MIN_SEGMENTS} are needed (raise --deliveries)"
        )
    return Window(since, until, keys)


def raw_client(platform: SandboxPlatform) -> Any:
    """A bare boto3 client for the platform's endpoint, pooled for WORKERS threads."""
    import boto3
    from botocore.config import Config

    access = platform.info().storage
    if access is None or not access.endpoint_url:
        raise WorkloadFailed("the sandbox names no S3 endpoint")
    config = Config(max_pool_connections=WORKERS, s3={"addressing_style": "path"})
    return boto3.session.Session().client(
        "s3",
        endpoint_url=access.endpoint_url,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        region_name=access.region or "us-east-1",
        config=config,
    )


def raw_heads(s3: Any, keys: list[tuple[str, str]]) -> float:
    """Seconds for one HeadObject (checksum mode) per segment, WORKERS at a time."""

    def head(where: tuple[str, str]) -> None:
        s3.head_object(Bucket=where[0], Key=where[1], ChecksumMode="ENABLED")

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(head, keys))
    return time.perf_counter() - began


def sweep(
    platform: SandboxPlatform, window: Window, progress: Callable[..., None] | None = None
) -> tuple[float, int]:
    """Seconds for the sweep of the window, and the segments it checked."""
    began = time.perf_counter()
    found = impact_sweep(
        platform,
        since=window.since,
        until=window.until,
        cap=100_000,
        workers=WORKERS,
        timeout=3600,
        reason="benchmark",
        progress=progress,
    )
    elapsed = time.perf_counter() - began
    if found.partial or found.segments != len(window.keys):
        raise WorkloadFailed(f"the sweep did not verify its whole window: {found.coverage}")
    return elapsed, found.segments


def throughput(folder: Path, rounds: int, deliveries: int) -> tuple[float, bool]:
    home = folder / "throughput"
    with sandbox(home, str(world_file(folder, deliveries))) as env:
        platform = SandboxPlatform(home)
        hold_live_traffic(env, platform)
        window = window_of(home, platform)
        s3 = raw_client(platform)
        print(f"window: {len(window.keys):,} segments", file=sys.stderr, flush=True)
        raw_heads(s3, window.keys[:500])  # warm up: clients and connections
        sweep(platform, window, print_progress())
        base: list[float] = []
        ours: list[float] = []
        for n in range(rounds):
            measures = [lambda: base.append(raw_heads(s3, window.keys))]
            measures.append(lambda: ours.append(sweep(platform, window)[0]))
            for measure in measures if n % 2 == 0 else reversed(measures):
                measure()
        deliveries_found = len(platform.deliveries(window.since, window.until, limit=100_000).items)
        platform.close()
    return report_throughput(base, ours, len(window.keys), deliveries_found)


def report_throughput(
    base: list[float], ours: list[float], segments: int, deliveries: int
) -> tuple[float, bool]:
    b, o = statistics.median(base), statistics.median(ours)
    ratio = b / o  # segments per second of the sweep / of the raw calls
    print(f"\n1. Throughput: {deliveries:,} deliveries, {segments:,} segments")
    print(f"{'figure':<62}{'median s':>10}{'segments/s':>12}")
    for label, seconds in (
        (f"raw HeadObject, {WORKERS} threads, one boto3 client", b),
        (f"impact_sweep, workers={WORKERS} (listing and manifests included)", o),
    ):
        print(f"{label:<62}{seconds:>10.2f}{segments / seconds:>12.0f}")
    print("rounds s (raw):   " + " ".join(f"{t:.2f}" for t in base))
    print("rounds s (sweep): " + " ".join(f"{t:.2f}" for t in ours))
    passed = ratio >= THROUGHPUT_TARGET
    verdict = "PASS" if passed else "FAIL"
    print(f"throughput ratio sweep / raw: {ratio:.2f}  (target >= {THROUGHPUT_TARGET})  {verdict}")
    return ratio, passed


# 2. Run overhead -------------------------------------------------------------------------------
def timed_run(env: dict[str, str], cwd: Path, incident: str, args: Sequence[str]) -> float:
    """Seconds for one ``exportnb run``; the run must succeed."""
    argv = command("exportnb", "run", "--incident", incident, "--json", *args)
    began = time.perf_counter()
    out = run(argv, {**env}, f"exportnb run {incident}")
    elapsed = time.perf_counter() - began
    outcome = json.loads(out)
    if outcome.get("status") != "succeeded":
        raise WorkloadFailed(f"{incident} {outcome.get('status')}: {outcome.get('error')}")
    record = json.loads(Path(outcome["record"]).read_text())
    swept = [r["result"] for r in record["results"] if r.get("kind") == "impact-sweep/v1"]
    wanted = "never" not in args
    if len(swept) != 1 or swept[0]["ran"] is not wanted:
        raise WorkloadFailed(f"{incident}: the sweep should {'' if wanted else 'not '}have run")
    if wanted and (swept[0]["verified"] != swept[0]["total"] or not swept[0]["damaged"]):
        raise WorkloadFailed(f"{incident}: the sweep did not verify its window or found nothing")
    return elapsed


def run_overhead(folder: Path, rounds: int) -> tuple[float, bool]:
    home = folder / "customer-checksums"
    with sandbox(home, "customer-checksums") as env:
        state = read_state(home)
        reported = list(state.reported_jobs) if state else []
        if not reported:
            raise WorkloadFailed("customer-checksums reported no jobs")
        jobs = [arg for job in reported for arg in ("--job-id", job)]
        variants = {"sweep": jobs, "never": [*jobs, "-p", "impact_sweep", "never"]}
        times: dict[str, list[float]] = {"sweep": [], "never": []}
        for name, args in variants.items():  # warm-up: caches, the first kernel
            timed_run(env, folder, f"INC-BENCH-WARM-{name.upper()}", args)
        for n in range(rounds):
            order = list(variants) if n % 2 == 0 else list(reversed(variants))
            for name in order:
                incident = f"INC-BENCH-{n}-{name.upper()}"
                times[name].append(timed_run(env, folder, incident, variants[name]))
    return report_run(times)


def report_run(times: dict[str, list[float]]) -> tuple[float, bool]:
    with_sweep, without = statistics.median(times["sweep"]), statistics.median(times["never"])
    ratio = with_sweep / without
    print("\n2. Run overhead: exportnb run on customer-checksums, the reported job IDs given")
    print(f"{'figure':<62}{'median s':>10}")
    print(f"{'with the impact sweep (impact_sweep auto)':<62}{with_sweep:>10.2f}")
    print(f"{'without it (-p impact_sweep never)':<62}{without:>10.2f}")
    print("rounds s (sweep): " + " ".join(f"{t:.2f}" for t in times["sweep"]))
    print("rounds s (never): " + " ".join(f"{t:.2f}" for t in times["never"]))
    passed = ratio <= RUN_TARGET
    verdict = "PASS" if passed else "FAIL"
    print(f"run time ratio with / without: {ratio:.2f}  (target <= {RUN_TARGET})  {verdict}")
    return ratio, passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--run-rounds", type=int, default=5, help="notebook runs of each kind")
    parser.add_argument("--deliveries", type=int, default=2400, help="deliveries to aim for")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    args = parser.parse_args()
    passed: list[bool] = []
    try:
        with tempfile.TemporaryDirectory(prefix="impact-sweep-bench-") as tmp:
            if not args.skip_throughput:
                passed.append(throughput(Path(tmp), args.rounds, args.deliveries)[1])
            if not args.skip_run:
                passed.append(run_overhead(Path(tmp), args.run_rounds)[1])
    except WorkloadFailed as exc:
        print(f"\nERROR: a workload failed, nothing is judged: {exc}")
        return 2
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
