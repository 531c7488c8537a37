"""Benchmark: search the archive index by job ID over 10,000 records (target: at most 50 ms).

    .venv/bin/python benchmarks/archive_search.py [--records 10000] [--corpus DIR] [--runs 200]

Builds an archive of synthetic-but-valid records through the library's save path
(``runner.save``: the record is written, chained and indexed, as after a run), unless
``--corpus DIR`` names one built before (it is built there and kept when it does not
exist; otherwise a temporary one is removed at the end). Then times
``exportnb.archive.index.search(archive, job_id=...)``, the library call behind ``exportnb archive
search --job-id``: it opens the index, checks the chain for new records, and queries.

The records are shaped like the template's: a notebook with a chart, the page nbconvert's
lab template renders from it (made once, then varied per record), and a ``record.json``
whose results hold the JobState, ChecksumReport, AuditSummary, MitigationPlan and journal
bundles, with 20 to 60 job IDs each out of a pool of 100,000. About 0.4 MB a record.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TARGET_MS = 50.0
JOB_POOL = 100_000
TENANTS = ("acme", "globex", "hooli", "initech", "stark", "umbrella", "wayne", "wonka")
BUCKETS = ("exports-primary", "exports-eu", "exports-fallback")
FINDINGS = (
    ("failure_rate_high", "critical"),
    ("throttling", "critical"),
    ("failures_concentrated", "warning"),
    ("latency_high", "warning"),
    ("recovery_not_confirmed", "warning"),
    ("bulk_exports_running", "info"),
)
MARK = "@@RECORD@@"


def job_id(n: int) -> str:
    return f"job-{n:012x}"


def chart_png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=80)
    rng = random.Random(7)
    ax.plot([rng.random() for _ in range(240)])
    ax.set_title("Success rate against the baseline")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return base64.b64encode(out.getvalue()).decode()


class Maker:
    """Makes record n: its notebook, its page and its record.json."""

    def __init__(self) -> None:

        from exportnb.record.model import render_html

        self.png = chart_png()
        page = render_html(self.notebook(MARK, [job_id(1)]), title=MARK)
        self.page = page.decode()

    def notebook(self, mark: str, jobs: list[str]) -> Any:
        """The notebook as nbformat 4.5 JSON (built as plain dicts: nbformat validates each
        cell it makes, which would cost more than archiving the record)."""
        import nbformat

        text = "\n".join(f"{j}  failed  SlowDown  exports-primary" for j in jobs) + "\n"

        def code(n: int, source: str, output: dict[str, Any]) -> dict[str, Any]:
            return {
                "cell_type": "code",
                "execution_count": n,
                "id": f"c{n}",
                "metadata": {},
                "outputs": [output],
                "source": source,
            }

        cells: list[dict[str, Any]] = [
            {
                "cell_type": "markdown",
                "id": "m0",
                "metadata": {},
                "source": f"# Export failure: {mark}",
            }
        ]
        for n, step in enumerate(
            ("detection", "job_state", "storage_health", "checksums", "recovery"), start=1
        ):
            cells.append(
                {
                    "cell_type": "markdown",
                    "id": f"m{n}",
                    "metadata": {},
                    "source": f"## {step}\nThe runbook's step {step}.",
                }
            )
            cells.append(
                code(
                    n,
                    f"show({step!r}, {step}(incident))",
                    {"output_type": "stream", "name": "stdout", "text": text},
                )
            )
        cells.append(
            code(
                9,
                "show_chart(success_rate(incident))",
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": self.png, "text/plain": "[chart]"},
                },
            )
        )
        kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
        return nbformat.from_dict(
            {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
        )

    def record(self, n: int, rng: random.Random) -> tuple[Any, dict[str, bytes]]:
        from exportnb.core.ids import sha256
        from exportnb.record.model import HTML, METADATA, NOTEBOOK, Record, RecordFile

        incident = f"INC-{n // 4:05d}"
        started = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * n)
        jobs = sorted({job_id(rng.randrange(JOB_POOL)) for _ in range(rng.randint(20, 60))})
        tenants = sorted(rng.sample(TENANTS, rng.randint(1, 4)))
        nb = self.notebook(f"{incident} #{n}", jobs)
        body = (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
        html = self.page.replace(MARK, f"{incident} #{n}").encode()
        digest = sha256(body)
        record = Record(
            record_id=f"{incident}/{started:%Y%m%dT%H%M%SZ}-{digest[:8]}",
            incident_id=incident,
            status=rng.choice(("succeeded", "succeeded", "succeeded", "failed")),
            started_at=started,
            ended_at=started + timedelta(seconds=40),
            duration_seconds=40.0,
            operator=rng.choice(("alice", "bob", "dana")),
            notebook="/templates/export_failure.ipynb",
            job_ids=jobs[:3],
            parameters={"incident_id": incident, "job_ids": jobs[:3]},
            error=None,
            files={
                NOTEBOOK: RecordFile(digest, len(body)),
                HTML: RecordFile(sha256(html), len(html)),
            },
            versions={"python": "3.11"},
            results=results(n, rng, jobs, tenants),
        )
        return record, {NOTEBOOK: body, HTML: html, METADATA: record.to_json()}


def results(n: int, rng: random.Random, jobs: list[str], tenants: list[str]) -> list[dict]:
    def bundle(step: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        return {"cell_index": 1, "schema": 1, "step": step, "type": kind, "result": result}

    codes = rng.sample(FINDINGS, rng.randint(1, 4))
    found = [
        {"code": c, "severity": s, "summary": f"{c}: {n}", "step": "detection", "evidence": {}}
        for c, s in codes
    ]
    latest = [
        {
            "id": j,
            "tenant": rng.choice(tenants),
            "bucket": rng.choice(BUCKETS),
            "status": "failed",
            "error_code": "SlowDown",
            "attempts": 1,
            "error_message": f"PutObject s3://exports-primary/exports/{j}: SlowDown",
        }
        for j in jobs
    ]
    entries = [
        {
            "seq": k + 1,
            "at": "2024-01-01T00:00:00Z",
            "operator": "dana",
            "kind": "result",
            "action": "retry",
            "key": f"{n}-{k}",
            "params": {"limit": 20},
            "outcome": "succeeded",
            "detail": {},
            "sha256": "0" * 64,
        }
        for k in range(rng.randint(0, 2))
    ]
    return [
        bundle("detection", "Detection", {"failure_rate": rng.random(), "findings": found}),
        bundle(
            "job_state",
            "JobState",
            {"job_ids": jobs, "tenants": tenants, "latest": latest, "findings": []},
        ),
        bundle(
            "checksums",
            "ChecksumReport",
            {
                "jobs": [
                    {"job_id": j["id"], "tenant": j["tenant"], "bucket": j["bucket"], "state": "ok"}
                    for j in latest[:20]
                ],
                "findings": [],
            },
        ),
        bundle(
            "communication",
            "AuditSummary",
            {
                "tenants": tenants,
                "files": [f"s3://exports-primary/exports/{j}/part-00000.bin" for j in jobs[:10]],
                "corrective_actions": [],
                "findings": [],
            },
        ),
        bundle(
            "mitigations",
            "MitigationPlan",
            {"mode": "auto", "steps": [], "applied": [], "findings": []},
        ),
        bundle("mitigations", "JournalReport", {"entries": entries}),
    ]


def build(root: Path, count: int) -> None:
    """Archive ``count`` records into ``root``/archive through the save path."""
    from exportnb.archive.store import LocalArchive
    from exportnb.run import runner

    store = LocalArchive(root / "archive")
    maker, rng = Maker(), random.Random(42)
    began = time.perf_counter()
    for n in range(count):
        record, files = maker.record(n, rng)
        runner.save(store, record, files)
        if (n + 1) % 1000 == 0:
            rate = (n + 1) / (time.perf_counter() - began)
            print(f"  archived {n + 1:,} records ({rate:,.0f}/s)", file=sys.stderr)


def corpus(path: str | None, count: int) -> tuple[Path, bool]:
    """The corpus folder (built if needed), and whether it is temporary."""
    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="exportnb-archive-bench-"))
    os.environ["EXPORTNB_HOME"] = str(root / "home")
    os.environ.pop("EXPORTNB_ARCHIVE", None)
    if not (root / "archive").exists():
        print(f"building {count:,} records in {root}", file=sys.stderr)
        build(root, count)
    return root, path is None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--corpus", help="Build (or reuse) the archive here, and keep it.")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    root, temporary = corpus(args.corpus, args.records)
    try:
        return measure(root, args.runs)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, runs: int) -> int:
    from exportnb.archive import index
    from exportnb.archive.store import LocalArchive

    store = LocalArchive(root / "archive")
    total = len(index.search(store))
    rng = random.Random(1)
    wanted = [job_id(rng.randrange(JOB_POOL)) for _ in range(runs)]
    for job in wanted[:10]:  # warm the page cache and the imports
        index.search(store, job_id=job)
    times, hits = [], 0
    for job in wanted:
        began = time.perf_counter()
        hits += len(index.search(store, job_id=job))
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    median, p95, worst = statistics.median(times), times[int(len(times) * 0.95)], times[-1]
    verdict = "PASS" if p95 <= TARGET_MS else "FAIL"
    print(
        f"search by job ID over {total:,} records: median {median:.2f} ms, p95 {p95:.2f} ms, "
        f"max {worst:.2f} ms ({hits / len(wanted):.1f} records a search; target p95 <= "
        f"{TARGET_MS:.0f} ms): {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
