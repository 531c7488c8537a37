"""Benchmark: verify 10,000 records against the time of hashing their bytes (target: <= 2x).

    .venv/bin/python benchmarks/archive_verify.py [--records 10000] [--corpus DIR] [--rounds 3]

The archive is built as for ``archive_search.py`` (the same records, through the save
path; ``--corpus DIR`` reuses or keeps one). In the same run, alternating, ``--rounds``
times each:

- the baseline: read every file of every record and sha256 it, one after the other in one
  thread (the paths listed beforehand, outside the timing);
- ``exportnb.archive.integrity.verify_archive``, what ``exportnb archive verify`` runs: it lists
  the records, reads and checks the whole chain, compares it with the index's witness,
  hashes every file once and checks it against ``record.json`` and the chain entry, on a
  pool of threads.

The figure is the ratio of the medians. The same hashing spread over the verifier's
threads is shown too, for what threads alone buy on this machine. Files are in the page
cache for both (a warm-up pass of the baseline runs first).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from archive_search import corpus

TARGET_RATIO = 2.0


def record_files(archive: Path) -> list[Path]:
    from exportnb.archive.store import LocalArchive
    from exportnb.record.model import FILES

    store = LocalArchive(archive)
    return [archive / rid / name for rid in store.record_ids() for name in FILES]


def hash_all(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        total += len(data)
    return total


def hash_threaded(paths: list[Path], workers: int) -> int:
    def one(path: Path) -> int:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        return len(data)

    chunks = [paths[i : i + 96] for i in range(0, len(paths), 96)]
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda chunk: sum(map(one, chunk)), chunks))


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--corpus", help="Build (or reuse) the archive here, and keep it.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root, temporary = corpus(args.corpus, args.records)
    try:
        return measure(root / "archive", args.rounds)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def measure(archive: Path, rounds: int) -> int:
    from exportnb.archive import integrity

    workers = min(8, (os.cpu_count() or 1) * 2)
    paths = record_files(archive)
    size = hash_all(paths)  # warm-up: the page cache
    baseline, threaded, verify = [], [], []
    found = None
    for _ in range(rounds):
        baseline.append(timed(lambda: hash_all(paths)))
        threaded.append(timed(lambda: hash_threaded(paths, workers)))
        began = time.perf_counter()
        found = integrity.verify_archive(str(archive))
        verify.append(time.perf_counter() - began)
    assert found is not None
    if not found.ok:
        print(f"FAIL: verify found {len(found.problems)} problem(s) in the corpus")
        return 1
    base, threads, checked = (statistics.median(t) for t in (baseline, threaded, verify))
    ratio = checked / base
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(
        f"verify of {found.records:,} records ({len(paths):,} files, {size / 1e9:.2f} GB, "
        f"chain of {found.chain_length:,}): {checked:.2f} s; hashing their bytes in one "
        f"thread: {base:.2f} s ({size / base / 1e9:.2f} GB/s); ratio {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:.0f}x): {verdict}"
    )
    print(
        f"  for reference: hashing on {workers} threads: {threads:.2f} s; verify against "
        f"that: {checked / threads:.2f}x; medians of {rounds} rounds, cores: "
        f"{os.cpu_count()}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
