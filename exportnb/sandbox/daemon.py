"""The sandbox's background process: storage, faults, history, the worker, traffic and metrics.

Started by ``exportnb sandbox up`` as ``python -m exportnb.sandbox.daemon``. It:

1. seeds a fresh store with the scenario's history (the last ``days`` before the incident);
2. starts moto server on loopback behind the S3 fault proxy, and creates the buckets;
3. sets up the path to ``EXPORT_TARGET_HOST`` (the path emulator where it can, else a
   loopback listener);
4. injects the scenario's faults and replays the incident window: those jobs really run
   through the worker against S3, recorded at the times they were scheduled;
5. writes ``state.json`` (ready), then runs live traffic, the worker pool, flag expiry
   and metrics until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from exportnb.core.errors import ExportnbError
from exportnb.platform import storage
from exportnb.platform.model import Job
from exportnb.sandbox import netpath
from exportnb.sandbox.faults import Fault, FaultSet
from exportnb.sandbox.history import plan_jobs, seed_history
from exportnb.sandbox.metrics import SandboxMetrics
from exportnb.sandbox.netpath import tcp_connect_time
from exportnb.sandbox.s3proxy import FaultProxy
from exportnb.sandbox.scenario import Scenario, load_scenario
from exportnb.sandbox.state import CREDENTIALS, SandboxState, sandbox_dir
from exportnb.sandbox.store import Store
from exportnb.sandbox.worker import Outcome, Pace, Worker

log = logging.getLogger("exportnb.sandbox")

INCIDENT_IDS, LIVE_IDS = "01", "02"
"""Job ID namespaces of the replayed incident window and of live traffic (history is 00)."""


class FaultCache:
    """The active faults, re-read from the store when they change (polled cheaply)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._version: Any = None
        self._faults = FaultSet()
        self._checked = 0.0
        self._lock = threading.Lock()
        self.listeners: list[Any] = []

    def __call__(self) -> FaultSet:
        now = time.monotonic()
        if now - self._checked > 0.25:
            with self._lock:
                self._checked = now
                version = self.store.faults_version()
                if version != self._version:
                    self._version = version
                    rows = self.store.active_faults()
                    self._faults = FaultSet(tuple(Fault(k, p, i) for i, k, p, _ in rows))
                    for listener in self.listeners:
                        listener(self._faults)
        return self._faults


class Loopback:
    """A TCP listener standing in for the target host where no path emulator can run."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
        self.sock.close()


class Sandbox:
    def __init__(
        self, folder: Path, scenario: Scenario, *, workers: int = 8, s3_endpoint: str | None = None
    ) -> None:
        self.folder, self.scenario, self.workers = folder, scenario, workers
        self.external_s3 = s3_endpoint
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.closers: list[Any] = []
        self.emulator: Any = None
        self.planned: dict[str, int] = {}  # jobs planned so far per ID namespace

    # Start-up -------------------------------------------------------------
    def phase(self, text: str) -> None:
        log.info("phase: %s", text)
        (self.folder / "phase").write_text(text, encoding="utf-8")

    def start(self) -> SandboxState:
        self.phase("seeding history")
        store_path = self.folder / "store.db"
        for old in self.folder.glob("store.db*"):
            old.unlink()
        self.store = Store(store_path, create=True)
        now = time.time()
        report = seed_history(self.store, self.scenario, now=now, progress=self._seed_progress)
        self.phase("starting storage")
        endpoint = self._start_storage()
        target_host, target_port, emulated = self._start_path()
        self.faults = FaultCache(self.store)
        self.faults.listeners.append(self._sync_path)
        self.metrics = SandboxMetrics(self.store)
        metrics_url = self.metrics.serve()
        self.worker = Worker(
            self.store,
            storage.client(endpoint, credentials=CREDENTIALS),
            self.faults,
            target=(target_host, target_port),
            connect=self._connect,
            pace=Pace(
                throughput=self.scenario.throughput.bytes_per_second,
                overhead=self.scenario.throughput.overhead,
            ),
            on_finish=self._finished,
        )
        for fault in self.scenario.incident.faults:
            self.store.add_fault(fault.kind, fault.params, report.incident_start)
        self.faults()
        self.phase("replaying the incident window")
        reported = self._replay(report.incident_start, now)
        state = SandboxState(
            pid=_pid(),
            scenario=self.scenario.name,
            store=str(store_path),
            s3_endpoint=endpoint,
            metrics_url=metrics_url,
            export_bucket=self.scenario.export_bucket,
            fallback_bucket=self.scenario.fallback_bucket or "",
            target_host=target_host,
            target_port=target_port,
            started_at=time.time(),
            path_emulated=emulated,
            embedded_s3=self.external_s3 is None,
            reported_jobs=reported,
            detail={"incident_start": report.incident_start, "history_jobs": report.jobs},
        )
        self._run_live(now)
        state.write(self.folder)
        self.phase("running")
        return state

    def _seed_progress(self, done: int, total: int) -> None:
        (self.folder / "phase").write_text(f"seeding history {done}/{total}", encoding="utf-8")

    def _start_storage(self) -> str:
        """The embedded moto server behind the fault proxy, or the configured endpoint."""
        from exportnb.sandbox.s3server import MotoServer  # deferred: moto is heavy

        if self.external_s3 is not None:
            self._create_buckets(self.external_s3)
            return self.external_s3
        moto = MotoServer()
        upstream = moto.start()
        self.closers.append(moto.stop)
        self._create_buckets(upstream)
        proxy = FaultProxy(upstream, lambda: self.faults(), on_hit=self.store.record_fault_hit)
        endpoint = proxy.start()
        self.closers.insert(0, proxy.stop)
        return endpoint

    def _create_buckets(self, endpoint: str) -> None:
        for name, _, region in self.store.buckets():
            client = storage.client(
                endpoint, credentials={**CREDENTIALS, "AWS_DEFAULT_REGION": region}
            )
            extra = {"CreateBucketConfiguration": {"LocationConstraint": region}}
            try:
                client.create_bucket(Bucket=name, **({} if region == "us-east-1" else extra))
            except Exception as exc:
                error = storage.storage_error(exc, f"CreateBucket {name}")
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise error from exc

    def _start_path(self) -> tuple[str, int, bool]:
        ok, why = netpath.emulator_available()
        if ok:
            try:
                self.emulator = netpath.PathEmulator(self.folder.as_posix())
                host = self.emulator.start()
                self.closers.insert(0, self.emulator.stop)
                return host, 22, True
            except ExportnbError as exc:
                why = exc.message
        log.warning("network path emulator unavailable (%s); using a loopback target", why)
        self.emulator = None
        loop = Loopback()
        self.closers.append(loop.stop)
        return "127.0.0.1", loop.port, False

    def _sync_path(self, faults: FaultSet) -> None:
        if self.emulator is None:
            return
        fault = faults.network()
        if fault is None:
            self.emulator.clear()
        else:
            p = fault.params
            self.emulator.set_impairment(latency=p["latency"], jitter=p["jitter"], loss=p["loss"])

    def _connect(self, host: str, port: int, timeout: float) -> float:
        return tcp_connect_time(host, port, timeout)

    def _finished(self, job: Job, outcome: Outcome, duration: float) -> None:
        self.metrics.observe(job, outcome.status, outcome.bucket, duration)

    # The incident window and live traffic ---------------------------------
    def _create(self, start: float, end: float, prefix: str) -> list[str]:
        first = self.planned.get(prefix, 0)
        specs = plan_jobs(
            self.scenario, start, end, rng_seed=int(end), id_prefix=prefix, first_index=first
        )
        self.planned[prefix] = first + len(specs)
        for spec in specs:
            self.store.create_job(
                job_id=spec.id,
                tenant=spec.tenant,
                connector=spec.connector,
                bucket=spec.bucket,
                kind=spec.kind,
                chunk_size=spec.chunk_size,
                size=spec.bytes,
                created_at=spec.created_at,
            )
        return [s.id for s in specs]

    def _replay(self, start: float, end: float) -> list[str]:
        ids = self._create(start, end, INCIDENT_IDS)

        def one(_: int) -> None:
            job = self.store.claim(now=time.time(), bulk_paused=False)
            if job is not None:
                queue_delay = zlib.crc32(job.id.encode()) % 20 + 1
                self.worker.run(job, backdate=min(job.created_at.timestamp() + queue_delay, end))

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, range(len(ids))))
        return self._reported(ids)

    def _reported(self, ids: list[str]) -> list[str]:
        """The jobs a customer reports: delivered, but hit by corrupt or missing segments."""
        want = self.scenario.incident.reported_jobs
        found: list[str] = []
        faults = self.faults()
        for job_id in ids:
            if len(found) >= want:
                break
            job = self.store.get_job(job_id)
            if job.status != "succeeded":
                continue
            hits = faults.worker_hits(
                job_id=job.id,
                tenant=job.tenant,
                connector=job.connector,
                bucket=job.delivered_bucket or job.bucket,
                attempt=job.attempts,
            )
            if hits & {"corrupt", "missing"}:
                found.append(job.id)
        return found

    def _run_live(self, since: float) -> None:
        for n in range(self.workers):
            self._thread(f"worker-{n}", self.worker.serve, self.stop_event)
        self._thread("traffic", self._traffic, since)
        self._thread("housekeeping", self._housekeeping)

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _traffic(self, since: float) -> None:
        last = since
        while not self.stop_event.wait(5.0):
            now = time.time()
            self._create(last, now, LIVE_IDS)
            last = now

    def _housekeeping(self) -> None:
        while not self.stop_event.wait(1.0):
            self.store.expire_flags(time.time())
            self.faults()

    def stop(self) -> None:
        self.stop_event.set()
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.target = None  # no probe may outlive the path emulator
        for thread in self.threads:
            thread.join(timeout=10)
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("error while stopping")


def _pid() -> int:
    import os

    return os.getpid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exportnb-sandbox-daemon")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--s3-endpoint", default=None)
    args = parser.parse_args(argv)
    folder = sandbox_dir(args.home)
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(folder / "daemon.log")],
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    sandbox = Sandbox(
        folder, load_scenario(args.scenario), workers=args.workers, s3_endpoint=args.s3_endpoint
    )
    try:
        sandbox.start()
    except Exception as exc:
        log.exception("sandbox failed to start")
        (folder / "phase").write_text(f"failed: {exc}", encoding="utf-8")
        sandbox.stop()
        return 1
    stopping.wait()
    log.info("stopping")
    sandbox.stop()
    (folder / "state.json").unlink(missing_ok=True)
    (folder / "phase").write_text("stopped", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
