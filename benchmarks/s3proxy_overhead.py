"""Latency the S3 fault proxy adds: sequential HeadObject calls direct to moto vs through it.

Rounds alternate (direct, proxy, direct, ...) in one process so that both paths see
the same machine state. Run: ``python benchmarks/s3proxy_overhead.py``.
"""

from __future__ import annotations

import statistics
import time

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from exportnb.sandbox.faults import FaultSet
from exportnb.sandbox.s3proxy import FaultProxy
from exportnb.sandbox.s3server import MotoServer

ROUNDS = 5
CALLS = 100
BUCKET = "bench-s3proxy"
KEY = "segment-00000"


def client(url: str) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def timed_round(s3: BaseClient) -> float:
    """Seconds for CALLS sequential HeadObject calls."""
    started = time.perf_counter()
    for _ in range(CALLS):
        s3.head_object(Bucket=BUCKET, Key=KEY)
    return time.perf_counter() - started


def run() -> None:
    empty = FaultSet()
    with MotoServer() as moto, FaultProxy(moto.url, lambda: empty) as proxy:
        direct, proxied = client(moto.url), client(proxy.url)
        direct.create_bucket(Bucket=BUCKET)
        direct.put_object(Bucket=BUCKET, Key=KEY, Body=b"x" * 4096)
        for warm in (direct, proxied):
            timed_round(warm)
        times: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(ROUNDS):
            times["direct"].append(timed_round(direct))
            times["proxy"].append(timed_round(proxied))
        report(times)


def report(times: dict[str, list[float]]) -> None:
    for name, rounds in times.items():
        shown = " ".join(f"{t * 1000:.1f}" for t in rounds)
        median = statistics.median(rounds)
        per_call = median / CALLS * 1e6
        print(
            f"{name:>6}: median {median * 1000:.1f} ms / {CALLS} calls "
            f"({per_call:.0f} us/call); rounds ms: {shown}"
        )
    ratio = statistics.median(times["proxy"]) / statistics.median(times["direct"])
    print(f" ratio: proxy/direct = {ratio:.2f}")


if __name__ == "__main__":
    run()
