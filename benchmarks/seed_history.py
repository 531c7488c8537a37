"""Benchmark: seed a sandbox store with a week of history (target: 1,000,000 jobs in 60 s).

.venv/bin/python benchmarks/seed_history.py [--volume 1000000] [--scenario default]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from exportnb.sandbox.history import seed_history
from exportnb.sandbox.scenario import load_scenario
from exportnb.sandbox.store import Store

TARGET_SECONDS = 60.0


def show_progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r  {done:>10,} / {total:,} jobs")
    if done == total:
        sys.stderr.write("\n")


def run(volume: int, scenario_name: str, keep: Path | None) -> None:
    scenario = dataclasses.replace(load_scenario(scenario_name), volume=volume)
    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "store.db"
        store = Store(path, create=True)
        began = time.perf_counter()
        report = seed_history(store, scenario, now=time.time(), progress=show_progress)
        seconds = time.perf_counter() - began
        store.close()
        size = path.stat().st_size / 1e6
    verdict = "PASS" if seconds <= TARGET_SECONDS else "FAIL"
    print(
        f"scenario {scenario.name}: {report.jobs:,} jobs, {report.attempts:,} attempts, "
        f"{report.logs:,} log lines, {size:,.0f} MB; statuses {report.by_status}"
    )
    print(f"{'figure':<40} {'value':>10} {'target':>10}  result")
    print(
        f"{'seed ' + format(volume, ',') + ' jobs (s)':<40} {seconds:>10.1f} "
        f"{'<= ' + format(TARGET_SECONDS, 'g'):>10}  {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=int, default=1_000_000)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--keep", type=Path, help="write the store here (a new file) and keep it")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"{args.keep} exists; --keep needs a new file")
    run(args.volume, args.scenario, args.keep)


if __name__ == "__main__":
    main()
