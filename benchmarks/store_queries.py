"""Benchmark: the store's read queries on a week of 1,000,000 jobs.

    .venv/bin/python benchmarks/store_queries.py [--store PATH] [--volume 1000000] [--runs 20]

With ``--store`` naming an existing seeded store, that store is used; otherwise one is
seeded (into PATH when given, else a temporary file). Each query runs a few times to
warm the page cache, then ``--runs`` times; the table shows the median.

The history ends when the incident starts, so the latency queries read the last 10
minutes and the last hour *before the incident* (the busiest recent history). On a
store the sandbox has run, the same queries over the last minutes before now read the
worker's attempts, which are far fewer.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exportnb.platform.model import JobQuery
from exportnb.sandbox.history import seed_history
from exportnb.sandbox.scenario import load_scenario
from exportnb.sandbox.store import Store

WARM_UP = 3


def median_ms(query: Callable[[], Any], runs: int) -> tuple[float, Any]:
    result = None
    for _ in range(WARM_UP):
        result = query()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        query()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def seeded_store(path: Path, volume: int) -> Store:
    if path.exists():
        return Store(path)
    scenario = dataclasses.replace(load_scenario("default"), volume=volume)
    store = Store(path, create=True)
    report = seed_history(store, scenario, now=time.time())
    print(f"seeded {report.jobs:,} jobs into {path} in {report.seconds:.1f} s", file=sys.stderr)
    return store


def measure(store: Store, runs: int) -> list[tuple[str, float, float | None, str]]:
    """``(figure, median ms, target ms or None, what came back)`` for each query."""
    start, end = store.get_meta("history_start"), store.get_meta("seeded_at")
    incident = store.get_meta("incident_start")
    queries: list[tuple[str, Callable[[], Any], float | None]] = [
        ("status_counts, full history", lambda: store.status_counts(start, end), 100.0),
        (
            "list_jobs(status=failed, limit=20)",
            lambda: store.list_jobs(JobQuery(status="failed", limit=20)),
            20.0,
        ),
        (
            "latency, 10 min before incident",
            lambda: store.latency(incident - 600, incident, per_minute=False),
            None,
        ),
        (
            "latency, 1 h before incident, per minute",
            lambda: store.latency(incident - 3600, incident, per_minute=True),
            None,
        ),
    ]
    rows = []
    for name, query, target in queries:
        ms, result = median_ms(query, runs)
        rows.append((name, ms, target, describe(result)))
    return rows


def describe(result: Any) -> str:
    if isinstance(result, list) and result and hasattr(result[0], "p95"):
        counts = sum(r.count for r in result)
        return f"{len(result)} row(s), {counts:,} attempts"
    return f"{len(result):,} row(s)"


def print_table(rows: list[tuple[str, float, float | None, str]], jobs: int, runs: int) -> None:
    print(f"store: {jobs:,} jobs; median of {runs} runs after {WARM_UP} warm-up runs")
    print(f"{'figure':<42} {'median ms':>10} {'target':>9}  {'result':<6} returned")
    for name, ms, target, returned in rows:
        verdict = "-" if target is None else ("PASS" if ms <= target else "FAIL")
        shown = "-" if target is None else f"<= {target:g}"
        print(f"{name:<42} {ms:>10.2f} {shown:>9}  {verdict:<6} {returned}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a seeded store to reuse (seeded if missing)")
    parser.add_argument("--volume", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = seeded_store(args.store or Path(tmp) / "store.db", args.volume)
        jobs = store.db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        print_table(measure(store, args.runs), jobs, args.runs)
        store.close()


if __name__ == "__main__":
    main()
