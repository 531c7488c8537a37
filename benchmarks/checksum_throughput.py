"""Benchmark: checksum verification of 20 jobs x 50 segments against 1000 raw HeadObject calls.

Target: ``exportnb.incident.steps.checksums.verify_jobs``
(look up each job, read its manifest from S3,
check every segment's stored SHA-256 with HeadObject in checksum mode, all through one
bounded pool) reaches at least 0.8x the throughput (segments per second) of the same 1000
HeadObject calls issued bare, with the same concurrency, through a thread pool and one
shared client. Both run against moto server behind the sandbox's fault proxy on loopback,
in this process, alternated over rounds; the figures are medians.

The jobs live in a real sandbox store (SQLite) read by the real ``SandboxPlatform``, and
``verify_jobs`` is called as the notebook calls it: it makes its own client.

Run: ``python benchmarks/checksum_throughput.py [--rounds 7] [--jobs 20] [--segments 50]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from exportnb.incident.steps.checksums import verify_jobs
from exportnb.platform import storage
from exportnb.platform.model import Manifest, Segment
from exportnb.sandbox.faults import FaultSet
from exportnb.sandbox.platform import SandboxPlatform
from exportnb.sandbox.s3proxy import FaultProxy
from exportnb.sandbox.s3server import MotoServer
from exportnb.sandbox.state import CREDENTIALS, SandboxState, sandbox_dir
from exportnb.sandbox.store import Store
from exportnb.sandbox.worker import segment_body

TARGET = 0.8
BUCKET = "bench-checksums"
WORKERS = 8


def write_jobs(s3, store: Store, jobs: int, segments: int) -> tuple[list[str], list[str]]:
    """``jobs`` delivered jobs of ``segments`` segments each: job IDs and every segment key."""
    ids, keys = [], []
    for j in range(jobs):
        job_id = f"job-bench-{j:03d}"
        store.create_job(
            job_id=job_id,
            tenant=f"tenant-{j % 4}",
            connector="s3",
            bucket=BUCKET,
            kind="adhoc",
            chunk_size=64 * 2**20,
            size=segments * 64 * 2**20,
            created_at=time.time(),
        )
        parts = []
        for index in range(segments):
            key = f"exports/{job_id}/attempt-1/part-{index:05d}.bin"
            body = segment_body(job_id, 1, index, 4096)
            parts.append(Segment(index, key, 64 * 2**20, storage.put_object(s3, BUCKET, key, body)))
            keys.append(key)
        manifest = Manifest(
            job_id,
            BUCKET,
            f"exports/{job_id}/attempt-1/manifest.json",
            1,
            sum(p.size for p in parts),
            parts,
            datetime.now(UTC),
        )
        storage.put_object(s3, BUCKET, manifest.key, storage.manifest_document(manifest))
        store.record_manifest(job_id, 1, BUCKET, manifest.key, parts, time.time())
        ids.append(job_id)
    return ids, keys


def sandbox_home(root: Path, endpoint: str) -> Path:
    """A sandbox home whose state names this process and the benchmark's S3 endpoint."""
    folder = sandbox_dir(root)
    folder.mkdir(parents=True)
    state = SandboxState(
        pid=os.getpid(),
        scenario="benchmark",
        store=str(folder / "store.db"),
        s3_endpoint=endpoint,
        metrics_url="",
        export_bucket=BUCKET,
        fallback_bucket="",
        target_host="127.0.0.1",
        target_port=0,
        started_at=time.time(),
    )
    state.write(folder)
    return root


def raw_heads(s3, keys: list[str]) -> float:
    """Seconds for one HeadObject (checksum mode) per key, WORKERS at a time."""
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(lambda k: s3.head_object(Bucket=BUCKET, Key=k, ChecksumMode="ENABLED"), keys))
    return time.perf_counter() - began


def verify(platform: SandboxPlatform, ids: list[str], segments: int) -> float:
    began = time.perf_counter()
    report = verify_jobs(platform, ids, workers=WORKERS)
    elapsed = time.perf_counter() - began
    assert [j.state for j in report.jobs] == ["passed"] * len(ids), "benchmark jobs must pass"
    assert sum(j.ok for j in report.jobs) == len(ids) * segments
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--segments", type=int, default=50)
    args = parser.parse_args()
    os.environ.pop("AWS_ENDPOINT_URL", None)
    n = args.jobs * args.segments
    with (
        tempfile.TemporaryDirectory() as tmp,
        MotoServer() as moto,
        FaultProxy(moto.url, FaultSet) as proxy,
    ):
        s3 = storage.client(proxy.url, credentials=CREDENTIALS, pool=WORKERS)
        s3.create_bucket(Bucket=BUCKET)
        home = sandbox_home(Path(tmp), proxy.url)
        store = Store(sandbox_dir(home) / "store.db", create=True)
        ids, keys = write_jobs(s3, store, args.jobs, args.segments)
        platform = SandboxPlatform(home)
        raw_heads(s3, keys), verify(platform, ids, args.segments)  # warm up
        base, ours = [], []
        for _ in range(args.rounds):
            base.append(raw_heads(s3, keys))
            ours.append(verify(platform, ids, args.segments))
        platform.close()
        store.close()
    report(base, ours, n, args)


def report(base: list[float], ours: list[float], n: int, args: argparse.Namespace) -> None:
    b, o = statistics.median(base), statistics.median(ours)
    ratio = b / o  # throughput of verify / throughput of raw calls
    print(f"{'figure':<58}{'median ms':>10}{'segments/s':>12}")
    print(
        f"{f'{n} raw HeadObject, {WORKERS} threads, shared client':<58}"
        f"{b * 1000:>10.1f}{n / b:>12.0f}"
    )
    print(
        f"{f'verify_jobs: {args.jobs} jobs x {args.segments} segments, workers={WORKERS}':<58}"
        f"{o * 1000:>10.1f}{n / o:>12.0f}"
    )
    print("rounds ms (raw):    " + " ".join(f"{t * 1000:.0f}" for t in base))
    print("rounds ms (verify): " + " ".join(f"{t * 1000:.0f}" for t in ours))
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"throughput ratio verify / raw: {ratio:.2f}  (target >= {TARGET})  {verdict}")


if __name__ == "__main__":
    main()
