"""Benchmark: the Alertmanager receiver under load while runs execute.

1,000 webhook posts across 50 alert groups (20 notifications each: the first opens the
incident, two add a new alert to the group, the rest repeat it), interleaved and sent to a
real ``exportnb serve`` (uvicorn on loopback, its embedded worker with 2 threads) by 4
concurrent clients over keep-alive connections, paced evenly over 8 s: an open-loop
arrival rate of 125 posts/s (``--seconds 0`` sends them as fast as the clients can). The
runs execute a cheap notebook (a kernel start, no platform:
``exportnb.service.process.write_quick_notebook``), and they are executing while the posts
arrive.

Targets: all 1,000 posts acknowledged within 10 s; exactly 50 incidents; 0 posts lost
(every post answered 202 and counted by its incident); p99 acknowledgement at most 50 ms.
Shown for comparison: the p99 of ``GET /healthz`` on the same server just before (the
floor of one HTTP round trip on this machine, now), and the ratio of the two.

Run: ``python benchmarks/webhook_load.py [--posts 1000] [--groups 50] [--clients 4]
[--seconds 8]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from exportnb.service.incidents import stamp
from exportnb.service.process import ServeProcess, write_quick_notebook

TOKEN = "bench-token"
TARGET_SECONDS, TARGET_P99_MS = 10.0, 50.0


def alert(fingerprint: str) -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": "ExportFailureRate", "runbook": "export-failure"},
        "annotations": {"summary": "failure rate above 2%"},
        "startsAt": "2024-05-01T11:50:00Z",
        "fingerprint": fingerprint,
    }


def notifications(posts: int, groups: int, seed: int = 7) -> list[bytes]:
    """``posts`` payloads over ``groups`` groups; each group's own order kept, groups mixed."""
    per_group = posts // groups
    streams = []
    for g in range(groups):
        stream = []
        for n in range(per_group):
            fingerprints = [f"{g:04x}a"] + [f"{g:04x}b"] * (n >= 5) + [f"{g:04x}c"] * (n >= 12)
            doc = {
                "version": "4",
                "receiver": "exportnb",
                "status": "firing",
                "groupKey": f'{{}}:{{runbook="export-failure", cluster="c{g}"}}',
                "alerts": [alert(f) for f in fingerprints],
                "truncatedAlerts": 0,
            }
            stream.append(json.dumps(doc).encode())
        streams.append(stream)
    order = [g for g in range(groups) for _ in range(per_group)]
    random.Random(seed).shuffle(order)
    cursors = [0] * groups
    mixed = []
    for g in order:
        mixed.append(streams[g][cursors[g]])
        cursors[g] += 1
    return mixed


class Client:
    """One keep-alive connection, like one Alertmanager notifier."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
        began = time.perf_counter()
        self.connection.request(method, path, body=body, headers=self.headers)
        answer = self.connection.getresponse()
        answer.read()
        return answer.status, (time.perf_counter() - began) * 1000


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def send_all(
    port: int, bodies: list[bytes], clients: int, seconds: float
) -> tuple[list[tuple[int, float]], float]:
    """Post ``i`` is due ``i * seconds / len(bodies)`` after the start (open loop: arrivals do
    not wait for answers); ``clients`` connections take the posts as they come due."""
    results: list[tuple[int, float]] = [(0, 0.0)] * len(bodies)
    lock = threading.Lock()
    position = [0]
    began = time.perf_counter()

    def work() -> None:
        client = Client(port)
        while True:
            with lock:
                index = position[0]
                position[0] += 1
            if index >= len(bodies):
                return
            delay = began + index * seconds / len(bodies) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            results[index] = client.call("POST", "/alerts/alertmanager", bodies[index])

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="spread the posts over this long (0: all at once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exportnb-bench-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        notebook = write_quick_notebook(Path(folder) / "quick.ipynb")
        (home / "config.toml").write_text(f'[serve]\nnotebook = "{notebook}"\nworkers = 2\n')
        serve = ServeProcess(home, token=TOKEN).start()
        try:
            return measure(serve, args)
        finally:
            serve.stop()


def measure(serve: ServeProcess, args: argparse.Namespace) -> int:
    bodies = notifications(args.posts, args.groups)
    probe = Client(serve.port)
    baseline = [probe.call("GET", "/healthz")[1] for _ in range(200)]
    results, seconds = send_all(serve.port, bodies, args.clients, args.seconds)
    ended = stamp(datetime.now(UTC))
    status, body = serve.request("GET", "/incidents?limit=1000")
    found = body["incidents"] if status == 200 else []
    runs = [r for i in found for r in serve.request("GET", f"/incidents/{i['id']}")[1]["history"]]
    started = sum(r["started_at"] is not None and r["started_at"] <= ended for r in runs)
    finished = sum(r["ended_at"] is not None and r["ended_at"] <= ended for r in runs)
    accepted = sum(code == 202 for code, _ in results)
    counted = sum(i["notifications"] for i in found)
    latencies = [ms for _, ms in results]
    figures = {
        "posts": len(results),
        "accepted (202)": accepted,
        "counted by incidents": counted,
        "posts lost": len(results) - min(accepted, counted),
        "incidents": len(found),
        "seconds for the load": round(seconds, 2),
        "ack p50 ms": round(statistics.median(latencies), 2),
        "ack p99 ms": round(p99(latencies), 2),
        "ack max ms": round(max(latencies), 2),
        "baseline GET /healthz p99 ms": round(p99(baseline), 2),
        "ack p99 / baseline p99": round(p99(latencies) / p99(baseline), 2),
        "runs queued": len(runs),
        "runs started during the load": started,
        "runs finished during the load": finished,
    }
    print(
        "webhook load: posts across alert groups while runs execute a cheap notebook "
        "(a kernel start, no platform)"
    )
    print(f"  machine load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, value in figures.items():
        print(f"  {name:<38} {value}")
    checks = {
        f"load within {TARGET_SECONDS:g} s": seconds <= TARGET_SECONDS,
        f"exactly {args.groups} incidents": len(found) == args.groups,
        "0 posts lost": accepted == counted == len(results),
        f"p99 acknowledgement <= {TARGET_P99_MS:g} ms": p99(latencies) <= TARGET_P99_MS,
        "runs executing during the load": started > 0,
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    passed = all(checks.values())
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
