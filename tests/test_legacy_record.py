"""Records archived before result kinds still read, render, verify and index.

Each folder of ``CASES`` under ``tests/fixtures`` holds a record written by exportnb
before result bundles carried a ``kind`` (its results name their type by class name only,
schema 1), with its chain entry, and ``facts.json``: what the code that wrote it read from
the record (its facts, the index's searches, the review, the CLI's output). Today's code
must read the same. ``legacy_record`` was written after the package was reorganised into
subpackages, ``premove_record`` before (commit 152d8b1).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from functools import cached_property
from html import escape
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

from exportnb.archive import index, integrity
from exportnb.archive.store import open_archive
from exportnb.cli import main
from exportnb.core import codec
from exportnb.core.findings import RESULT_MIMETYPE
from exportnb.notebook import views
from exportnb.record.facts import RecordFacts
from exportnb.record.glance import glance_html
from exportnb.record.model import HTML, LEGACY_TYPES, NOTEBOOK, Record, kind_of, with_kinds
from exportnb.review.model import review_of

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Case:
    """A fixture folder, and what its record is known to hold."""

    folder: str
    incident: str
    job_id: str  # the job the run was given, searched for
    applied: str  # how the "at a glance" box shows the mitigation the run applied

    @cached_property
    def expected(self) -> dict[str, Any]:
        return json.loads((FIXTURES / self.folder / "facts.json").read_text())

    @property
    def record_id(self) -> str:
        return self.expected["record_id"]

    def commands(self) -> dict[str, list[str]]:
        return {
            "show": ["show", self.record_id],
            "search_job": ["search", "--job-id", self.job_id],
            "search_tenant_json": ["search", "--tenant", "acme", "--json"],
            "search_finding": ["search", "--finding", "throttling"],
            "verify_json": ["verify", "--json"],
            "list": ["list"],
        }


CASES = [
    Case(
        "legacy_record",
        incident="INC-7",
        job_id="job-ecc635b939c1",
        applied="pause-bulk by dana at 2026-12-05 02:29:29 UTC",
    ),
    Case(
        "premove_record",
        incident="INC-8",
        job_id="job-11539dba89c0",
        applied="pause-bulk by dana at 2026-12-05 03:26:58 UTC",
    ),
]


@pytest.fixture(params=CASES, ids=[c.folder for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def archive(case: Case, home: Path, tmp_path: Path) -> str:
    """A copy of the archive that holds the case's record (its chain entry included)."""
    target = tmp_path / "archive"
    shutil.copytree(FIXTURES / case.folder / "archive", target)
    return str(target)


@pytest.fixture
def record(case: Case, archive: str) -> Record:
    return open_archive(archive).show(case.record_id)


def with_kinds_only(record: Record) -> Record:
    """The record as today's code writes it, but with its results' class names gone."""
    results = [
        {k: v for k, v in {**b, "schema": 2, "kind": kind_of(b)}.items() if k != "type"}
        for b in record.results
    ]
    return replace(record, results=results)


# Reading --------------------------------------------------------------------------------------
def test_the_record_is_from_before_kinds_and_reads_with_their_kinds(case, record):
    expected = case.expected
    assert record.record_id == case.record_id and record.incident_id == case.incident
    assert record.job_ids == [case.job_id]
    assert all(b["schema"] == 1 and "kind" not in b for b in record.results)
    assert [b["type"] for b in record.results] == expected["types"]
    assert [kind_of(b) for b in record.results] == [LEGACY_TYPES[t] for t in expected["types"]]
    assert record.severity_counts() == expected["severity_counts"]
    assert codec.encode(RecordFacts.of(record)) == expected["facts"]


def test_its_facts_do_not_depend_on_class_names(record):
    assert RecordFacts.of(with_kinds_only(record)) == RecordFacts.of(record)
    now = review_of([with_kinds_only(record)])
    assert codec.encode(now) == codec.encode(review_of([record]))


# Rendering ------------------------------------------------------------------------------------
def shown(nb: nbformat.NotebookNode, bundle: dict) -> dict:
    """What the notebook displayed for a recorded result: its output's mimetype bundle."""
    outputs = nb.cells[bundle["cell_index"]].get("outputs", [])
    found = [
        o.data
        for o in outputs
        if {"cell_index": bundle["cell_index"], **o.get("data", {}).get(RESULT_MIMETYPE, {})}
        == bundle
    ]
    assert len(found) == 1, bundle["type"]
    return found[0]


def test_every_result_renders_as_the_notebook_showed_it(case, record, archive):
    nb = nbformat.read(Path(archive) / case.record_id / NOTEBOOK, as_version=4)
    for bundle in record.results:
        assert kind_of(bundle) in views.RENDERERS, bundle["type"]
        body = views.render_recorded(bundle)
        data = shown(nb, bundle)
        title = views.title_of(bundle["step"]) + (f" · {body.label}" if body.label else "")
        assert data["text/plain"].startswith(title) and data["text/plain"].endswith(body.text)
        if body.markdown is not None:
            assert data["text/markdown"].startswith(f"#### {title}")
            assert data["text/markdown"].endswith(body.markdown)
        else:
            assert data["text/html"].startswith(f"<h4>{escape(title)}")
            assert data["text/html"].endswith(body.html) and body.html


def test_its_page_opens_with_the_box_the_results_make(case, record, archive):
    page = (Path(archive) / case.record_id / HTML).read_text()
    box = glance_html(incident_id=case.incident, failed_at=None, results=with_kinds(record.results))
    assert box in page and case.applied in box


# Verifying and indexing ---------------------------------------------------------------------------
def test_it_verifies_against_its_hashes_and_its_chain_entry(case, archive):
    verified = integrity.verify_archive(archive)
    assert verified.ok is case.expected["verify_ok"] is True and not verified.problems


def test_it_indexes_with_the_same_facts(case, archive):
    expected = case.expected
    assert codec.encode(index.facts(case.record_id, archive)) == expected["indexed"]
    assert sorted(expected["search"]) == ["bucket", "finding", "job_id", "tenant"]
    for name, found in expected["search"].items():
        value = {"job_id": case.job_id, "tenant": "acme", "finding": "throttling"}
        query = {name: value.get(name, "exports-primary")}
        assert [r.record_id for r in index.search(archive, **query)] == found == [case.record_id]
    mitigations = index.mitigations(archive, incident=case.incident)
    assert codec.encode(mitigations) == expected["mitigations"]


def test_the_review_reads_it_as_before(case, record):
    review = review_of([record])
    expected = case.expected["review"]
    assert review.tenants == expected["tenants"] and review.files == expected["files"]
    assert codec.encode(review.mitigations) == expected["mitigations"]
    assert codec.encode(review.verdicts) == expected["verdicts"]
    assert review.journal_ok is expected["journal_ok"]
    assert review.follow_ups == expected["follow_ups"]
    assert review.threshold == expected["threshold"] and len(review.rates) == expected["rates"]


@pytest.mark.parametrize("name", sorted(CASES[0].commands()))
def test_the_cli_prints_what_it_printed_then(case, archive, name):
    assert sorted(case.expected["cli"]) == sorted(case.commands())
    args = case.commands()[name]
    result = CliRunner().invoke(main, ["archive", *args, "--archive", archive])
    work = str(Path(archive).parent)
    then = case.expected["cli"][name]
    assert (result.exit_code, result.output.replace(work, "<work>")) == (then["rc"], then["stdout"])
