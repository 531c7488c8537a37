"""Benchmark: the incident notebook's analysis at a 1,000,000-job history against 50,000 jobs.

Target: the analysis (the diagnostics calls the template makes, through the library, in
its order, with its early probes: detection, the baseline and frames, bulk pause, job
state and capture, storage health, checksum verification, the network path, assessment,
the mitigation plan, recovery verification, the status update and the audit summary)
takes at most 1.5x as long on a week of 1,000,000 jobs as on a week of 50,000. Charts,
HTML and the kernel are left out: they do not depend on the history's size.

Two sandboxes are started one after the other, each in its own ``EXPORTNB_HOME``, from
scenario files that extend ``default`` with ``volume = 50000`` and ``volume = 1000000``.
Each gets a worker process that imports everything and warms up once; then the rounds
alternate between them. A round also times each step on its own, one after another
without the early probes, to show what grows with the history.

Run: ``python benchmarks/analysis_scaling.py [--rounds 5] [--small 50000] [--large 1000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 1.5
SCENARIO = 'extends = "default"\nvolume = {volume}\n'
STEPS = (
    "open",
    "detection",
    "baseline",
    "bulk_pause",
    "job_state",
    "storage_health",
    "checksums",
    "network_path",
    "assessment",
    "recovery",
    "communication",
)


# The worker: one sandbox, the analysis on request ---------------------------------------
def analysis(defaults: dict[str, Any], *, early: bool) -> dict[str, float]:
    """The template's diagnostics calls, in order; seconds per step (and ``total``)."""
    from exportnb.core import findings
    from exportnb.incident.model import open_incident
    from exportnb.incident.steps import baseline, comms, detection, jobstate
    from exportnb.incident.steps.checksums import verify_jobs
    from exportnb.incident.steps.network import network_path
    from exportnb.incident.steps.recovery import verify_recovery
    from exportnb.incident.steps.storagehealth import storage_health
    from exportnb.mitigation import assessment, response

    times: dict[str, float] = {}
    began = last = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times[step], last = now - last, now

    incident = open_incident(**defaults)
    if early:
        incident.start_probes()
    lap("open")
    found = incident.collect(detection.detect, incident.platform, **incident.detection_options())
    lap("detection")
    usual = baseline.baseline(
        incident.platform, incident.history_since, incident.now, days=incident.baseline_days
    )
    found.rates_frame(), usual.frame(), found.latency_frame(), incident.chart_options()
    lap("baseline")
    response.bulk_pause(incident.platform)
    lap("bulk_pause")
    jobs = incident.collect(jobstate.job_state, incident.platform, **incident.job_state_options())
    response.capture(jobs, incident.reported_jobs), jobs.frame()
    lap("job_state")
    storage = incident.collect(
        storage_health, incident.buckets_to_check(jobs), access=incident.storage_access
    )
    lap("storage_health")
    checks = incident.collect(verify_jobs, incident.platform, incident.checksum_jobs(jobs, found))
    lap("checksums")
    path = incident.collect(network_path, incident.target_host, **incident.network_options())
    lap("network_path")
    assessed = assessment.assess(
        found, jobs, storage, checks, path, context=incident.assessment_context()
    )
    response.mitigation_plan(assessed, mode=incident.mode)
    lap("assessment")
    recent = baseline.baseline(
        incident.platform, incident.recovery_since, incident.now, days=incident.baseline_days
    )
    recovered = verify_recovery(
        incident.platform,
        baseline=recent,
        affected_jobs=incident.affected_jobs(checks),
        **incident.recovery_options(),
    )
    recovered.rates_frame(), recent.frame()
    lap("recovery")
    every = findings.findings_of(found, jobs, storage, checks, path, recovered)
    comms.status_update(
        detection=found,
        recovery=recovered,
        assessment=assessed,
        findings=every,
        **incident.comms_options(),
    )
    comms.audit_summary(
        incident_id=incident.id,
        job_state=jobs,
        checksums=checks,
        recovery=recovered,
        actions=incident.audit_entries(),
    )
    lap("communication")
    times["total"] = time.perf_counter() - began
    incident.platform.close()
    return times


def worker(home: Path) -> None:
    """Serve ``run`` requests on stdin for the sandbox in ``home``: one JSON line each."""
    from exportnb.platform.registry import local_environment

    found = local_environment(home)
    if found is None:
        raise SystemExit(f"no sandbox runs in {home}")
    env, defaults = found
    os.environ.update(env)
    analysis(defaults, early=True), analysis(defaults, early=False)  # imports, caches
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            result = {
                "early": analysis(defaults, early=True),
                "steps": analysis(defaults, early=False),
            }
            print(json.dumps(result), flush=True)


# The driver -------------------------------------------------------------------------------
def exportnb(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPORTNB_HOME": str(home)}
    for name in ("AWS_ENDPOINT_URL", "EXPORT_BUCKET", "EXPORT_TARGET_HOST"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "exportnb.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )


class Sandbox:
    """A sandbox of ``volume`` jobs in its own home, with its analysis worker."""

    def __init__(self, folder: Path, volume: int) -> None:
        self.volume, self.home = volume, folder / f"home-{volume}"
        self.home.mkdir(parents=True)
        self.scenario = folder / f"volume-{volume}.toml"
        self.scenario.write_text(SCENARIO.format(volume=volume))
        self.process: subprocess.Popen[str] | None = None

    def up(self) -> float:
        began = time.perf_counter()
        done = exportnb(self.home, "sandbox", "up", "--scenario", str(self.scenario))
        if done.returncode != 0:
            raise SystemExit(f"sandbox of {self.volume} jobs did not start:\n{done.stderr}")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(self.home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # "ready"
        return time.perf_counter() - began

    def run(self) -> dict[str, dict[str, float]]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        result: dict[str, dict[str, float]] = json.loads(self._read())
        return result

    def _read(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the worker of the {self.volume}-job sandbox stopped")
        return line

    def down(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        exportnb(self.home, "sandbox", "down")


def median_of(rounds: list[dict[str, dict[str, float]]], mode: str, step: str) -> float:
    return statistics.median(r[mode][step] for r in rounds)


def report(small: Sandbox, large: Sandbox, results: dict[int, list[Any]]) -> None:
    a, b = results[small.volume], results[large.volume]
    print(f"rounds: {len(a)} per sandbox, alternated; medians in seconds")
    print(
        f"{'step (each on its own, no early probes)':<42}{small.volume:>10,}{large.volume:>12,}"
        f"{'ratio':>8}"
    )
    for step in STEPS:
        x, y = median_of(a, "steps", step), median_of(b, "steps", step)
        print(f"{step:<42}{x:>10.3f}{y:>12.3f}{y / x if x else float('nan'):>8.2f}")
    rest = [s for s in STEPS if s != "network_path"]
    x = statistics.median(sum(r["steps"][s] for s in rest) for r in a)
    y = statistics.median(sum(r["steps"][s] for s in rest) for r in b)
    print(f"{'all steps but the network path (constant)':<42}{x:>10.3f}{y:>12.3f}{y / x:>8.2f}")
    x, y = median_of(a, "early", "total"), median_of(b, "early", "total")
    print(f"{'the analysis as the template runs it':<42}{x:>10.3f}{y:>12.3f}{y / x:>8.2f}")
    verdict = "PASS" if y / x <= TARGET else "FAIL"
    print(
        f"ratio {large.volume:,} / {small.volume:,} jobs: {y / x:.2f}  "
        f"(target <= {TARGET})  {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    with tempfile.TemporaryDirectory(prefix="exportnb-scaling-") as tmp:
        sandboxes = [Sandbox(Path(tmp), args.small), Sandbox(Path(tmp), args.large)]
        try:
            for box in sandboxes:  # one after the other
                print(f"sandbox of {box.volume:,} jobs up in {box.up():.0f}s", flush=True)
            results: dict[int, list[Any]] = {box.volume: [] for box in sandboxes}
            for _ in range(args.rounds):
                for box in sandboxes:
                    results[box.volume].append(box.run())
        finally:
            for box in sandboxes:
                box.down()
        report(*sandboxes, results)


if __name__ == "__main__":
    main()
