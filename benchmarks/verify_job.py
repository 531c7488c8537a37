"""Benchmark: verifying a job of 100 segments against 100 sequential HeadObject calls.

Target: ``verify`` (read the manifest, then check every segment's stored SHA-256 with
HeadObject in checksum mode) takes at most 1.25x the time of 100 sequential HeadObject
calls to the same endpoint. Both run in the same process against the sandbox's endpoint
(moto server behind the fault proxy, over HTTP on loopback), alternated over rounds.

Run: ``python benchmarks/verify_job.py [--rounds 7] [--segments 100]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from exportnb.platform import storage
from exportnb.platform.model import Manifest, Segment
from exportnb.sandbox.faults import FaultSet
from exportnb.sandbox.s3proxy import FaultProxy
from exportnb.sandbox.s3server import MotoServer
from exportnb.sandbox.state import CREDENTIALS
from exportnb.sandbox.worker import segment_body

TARGET = 1.25
BUCKET = "bench-verify"


def write_job(s3, segments: int) -> Manifest:
    parts = []
    for index in range(segments):
        key = f"job-bench/part-{index:05d}.bin"
        body = segment_body("job-bench", 1, index, 4096)
        parts.append(Segment(index, key, 64 * 2**20, storage.put_object(s3, BUCKET, key, body)))
    manifest = Manifest(
        "job-bench", BUCKET, "job-bench/manifest.json", 1, 0, parts, datetime.now(UTC)
    )
    storage.put_object(s3, BUCKET, manifest.key, storage.manifest_document(manifest))
    return manifest


def sequential_heads(s3, manifest: Manifest) -> float:
    began = time.perf_counter()
    for segment in manifest.segments:
        s3.head_object(Bucket=BUCKET, Key=segment.key, ChecksumMode="ENABLED")
    return time.perf_counter() - began


def verify(s3, manifest: Manifest) -> float:
    began = time.perf_counter()
    result = storage.verify_manifest(s3, storage.read_manifest(s3, BUCKET, manifest.key))
    elapsed = time.perf_counter() - began
    assert result.passed, "benchmark job failed verification"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--segments", type=int, default=100)
    args = parser.parse_args()
    with MotoServer() as moto, FaultProxy(moto.url, FaultSet) as proxy:
        s3 = storage.client(proxy.url, credentials=CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        manifest = write_job(s3, args.segments)
        verify(s3, manifest), sequential_heads(s3, manifest)  # warm up
        base, ours = [], []
        for _ in range(args.rounds):
            base.append(sequential_heads(s3, manifest))
            ours.append(verify(s3, manifest))
    b, o = statistics.median(base), statistics.median(ours)
    ratio = o / b
    print(f"{'figure':<48}{'median ms':>10}")
    print(f"{f'{args.segments} sequential HeadObject (baseline)':<48}{b * 1000:>10.1f}")
    print(f"{f'verify job of {args.segments} segments':<48}{o * 1000:>10.1f}")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"ratio verify / baseline: {ratio:.2f}  (target <= {TARGET})  {verdict}")


if __name__ == "__main__":
    main()
