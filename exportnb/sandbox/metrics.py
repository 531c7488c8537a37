"""Prometheus metrics of the sandbox, served at ``/metrics``.

Enough to write the runbook's detection rules in PromQL (see ``deploy/prometheus``):

- ``exportnb_job_attempts_total{status, connector, storage}``: finished attempts.
  Failure rate over 10 minutes::

      sum(rate(exportnb_job_attempts_total{status="failed"}[10m]))
        / sum(rate(exportnb_job_attempts_total[10m])) > 0.02

- ``exportnb_job_duration_seconds{connector, storage}``: a histogram of attempt durations.
  ``histogram_quantile(0.95, sum by (le) (rate(exportnb_job_duration_seconds_bucket[10m])))``
- ``exportnb_jobs{status}``: jobs in the store by current status.
- ``exportnb_jobs_running``: jobs running now.
- ``exportnb_oldest_heartbeat_age_seconds``: the age of the oldest heartbeat among running jobs
  (0 when none run); a job stuck beyond the SLA shows as this above the SLA.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exportnb.platform.model import Job
from exportnb.sandbox.store import Store

DURATION_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, float("inf"))


class StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status = GaugeMetricFamily(
            "exportnb_jobs", "Jobs in the store by status.", labels=["status"]
        )
        for status, n in self.store.db.execute("SELECT status, count(*) FROM jobs GROUP BY status"):
            by_status.add_metric([status], n)
        yield by_status
        running, oldest = self.store.running_summary()
        yield GaugeMetricFamily("exportnb_jobs_running", "Jobs running now.", value=running)
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "exportnb_oldest_heartbeat_age_seconds",
            "Age of the oldest heartbeat among running jobs, in seconds (0 when none run).",
            value=age,
        )


class SandboxMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        labels = ["connector", "storage"]
        self.attempts = Counter(
            "exportnb_job_attempts",
            "Finished export attempts.",
            ["status", *labels],
            registry=self.registry,
        )
        self.duration = Histogram(
            "exportnb_job_duration_seconds",
            "Duration of finished export attempts, in seconds.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(store))

    def observe(self, job: Job, status: str, bucket: str, duration: float) -> None:
        self.attempts.labels(status, job.connector, bucket).inc()
        self.duration.labels(job.connector, bucket).observe(duration)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return f"http://{host}:{server.server_port}/metrics"
