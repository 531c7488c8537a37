"""Records for the archive tests, assembled through the library without running a kernel.

:func:`make_record` builds a valid record (notebook, HTML and ``record.json`` whose hashes
match) holding the result bundles the template displays: JobState, ChecksumReport,
AuditSummary, the MitigationPlan and, when given, the journal as the template shows it
(entries appended to a real :class:`~exportnb.mitigation.journal.Journal`). :func:`save` archives it
through the runner's save path, so the chain and the index see it as they see a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat

from exportnb.archive.store import Archive
from exportnb.core import codec
from exportnb.core.ids import sha256
from exportnb.mitigation.journal import Journal
from exportnb.record.model import HTML, METADATA, NOTEBOOK, Record, RecordError, RecordFile
from exportnb.run import runner

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def bundle(step: str, kind: str, result: dict[str, Any], cell: int = 1) -> dict[str, Any]:
    return {"cell_index": cell, "schema": 1, "step": step, "type": kind, "result": result}


def finding(code: str, severity: str = "critical", step: str = "detection") -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "summary": f"{code} found",
        "step": step,
        "evidence": {},
    }


def journal_bundle(home: Path, incident: str, applied: Sequence[tuple[str, str]]) -> dict:
    """The incident's journal with one plan and one successful result per (action, operator)."""
    journal = Journal(incident, home=home)
    for action, operator in applied:
        key = f"{incident}-{action}-key"
        if journal.applied(key) is None:
            journal.append("plan", action=action, key=key, operator=operator, outcome="planned")
            journal.append(
                "result",
                action=action,
                key=key,
                operator=operator,
                params={"bucket": "exports-fallback"},
                outcome="succeeded",
                detail={"summary": f"{action} applied"},
            )
    entries = [codec.encode(e) for e in journal.entries()]
    return bundle("mitigations", "JournalReport", {"entries": entries, "chain_ok": True}, 9)


def make_record(
    incident: str = "INC-1",
    *,
    at: datetime = T0,
    job_ids: Sequence[str] = ("job-1",),
    tenants: Sequence[str] = ("acme",),
    buckets: Sequence[str] = ("exports-primary",),
    findings: Sequence[tuple[str, str]] = (("failure_rate_high", "critical"),),
    status: str = "succeeded",
    operator: str = "alice",
    plan_applied: Sequence[str] = (),
    extra: Sequence[dict[str, Any]] = (),
) -> tuple[Record, dict[str, bytes]]:
    """A record of ``incident`` started ``at``, and its files."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(f"incident_id = {incident!r}\nstarted = {at.isoformat()!r}")
        ]
    )
    body = nbformat.writes(nb).encode()
    html = f"<html><body><h1>{incident}</h1><p>{at.isoformat()}</p></body></html>".encode()
    digest = sha256(body)
    latest = [
        {
            "id": j,
            "tenant": tenants[i % len(tenants)] if tenants else "",
            "bucket": buckets[i % len(buckets)] if buckets else "",
            "status": "failed",
        }
        for i, j in enumerate(job_ids)
    ]
    results = [
        bundle("detection", "Detection", {"findings": [finding(c, s) for c, s in findings]}),
        bundle(
            "job_state",
            "JobState",
            {"job_ids": list(job_ids), "tenants": list(tenants), "latest": latest, "findings": []},
            3,
        ),
        bundle(
            "checksums",
            "ChecksumReport",
            {
                "jobs": [
                    {"job_id": j, "tenant": x["tenant"], "bucket": x["bucket"]}
                    for j, x in zip(job_ids, latest, strict=True)
                ],
                "findings": [],
            },
            5,
        ),
        bundle(
            "communication",
            "AuditSummary",
            {
                "tenants": list(tenants),
                "files": [
                    f"s3://{b}/exports/{j}/part-0.bin"
                    for j, b in zip(job_ids, buckets, strict=False)
                ],
                "corrective_actions": [],
                "findings": [],
            },
            7,
        ),
        bundle(
            "mitigations",
            "MitigationPlan",
            {"mode": "auto", "steps": [], "applied": list(plan_applied), "findings": []},
            8,
        ),
        *extra,
    ]
    error = RecordError("ValueError", "boom", 2, "c-2", 2) if status == "failed" else None
    record = Record(
        record_id=f"{incident}/{at:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        incident_id=incident,
        status=status,
        started_at=at,
        ended_at=at + timedelta(seconds=3),
        duration_seconds=3.0,
        operator=operator,
        notebook="/templates/export_failure.ipynb",
        job_ids=list(job_ids),
        parameters={"incident_id": incident},
        error=error,
        files={NOTEBOOK: RecordFile(digest, len(body)), HTML: RecordFile(sha256(html), len(html))},
        versions={"python": "3.11"},
        results=results,
    )
    return record, {NOTEBOOK: body, HTML: html, METADATA: record.to_json()}


def save(store: Archive, record: Record, files: dict[str, bytes]) -> Record:
    """Archive through the runner's save path (chained, indexed); the record, located."""
    runner.save(store, record, files)
    return replace(record, location=store.location(record.record_id))
