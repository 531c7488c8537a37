"""A record archived before result kinds still reads, renders, verifies and indexes.

``tests/fixtures/legacy_record`` holds a record written by exportnb before result bundles
carried a ``kind`` (its results name their type by class name only, schema 1), with its
chain entry, and ``facts.json``: what that code read from the record (its facts, the
index's searches, the review, the CLI's output). Today's code must read the same.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from html import escape
from pathlib import Path

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

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_record"
EXPECTED = json.loads((FIXTURE / "facts.json").read_text())
RECORD_ID = EXPECTED["record_id"]


@pytest.fixture
def archive(home: Path, tmp_path: Path) -> str:
    """A copy of the archive that holds the legacy record (its chain entry included)."""
    target = tmp_path / "archive"
    shutil.copytree(FIXTURE / "archive", target)
    return str(target)


@pytest.fixture
def record(archive: str) -> Record:
    return open_archive(archive).show(RECORD_ID)


def with_kinds_only(record: Record) -> Record:
    """The record as today's code writes it, but with its results' class names gone."""
    results = [
        {k: v for k, v in {**b, "schema": 2, "kind": kind_of(b)}.items() if k != "type"}
        for b in record.results
    ]
    return replace(record, results=results)


# Reading --------------------------------------------------------------------------------------
def test_the_record_is_from_before_kinds_and_reads_with_their_kinds(record):
    assert all(b["schema"] == 1 and "kind" not in b for b in record.results)
    assert [b["type"] for b in record.results] == EXPECTED["types"]
    assert [kind_of(b) for b in record.results] == [LEGACY_TYPES[t] for t in EXPECTED["types"]]
    assert record.severity_counts() == EXPECTED["severity_counts"]
    assert codec.encode(RecordFacts.of(record)) == EXPECTED["facts"]


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


def test_every_result_renders_as_the_notebook_showed_it(record, archive):
    nb = nbformat.read(Path(archive) / RECORD_ID / NOTEBOOK, as_version=4)
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


def test_its_page_opens_with_the_box_the_results_make(record, archive):
    page = (Path(archive) / RECORD_ID / HTML).read_text()
    box = glance_html(incident_id="INC-7", failed_at=None, results=with_kinds(record.results))
    assert box in page and "pause-bulk by dana at 2026-12-05 02:29:29 UTC" in box


# Verifying and indexing ---------------------------------------------------------------------------
def test_it_verifies_against_its_hashes_and_its_chain_entry(archive):
    verified = integrity.verify_archive(archive)
    assert verified.ok is EXPECTED["verify_ok"] is True and not verified.problems


def test_it_indexes_with_the_same_facts(archive):
    assert codec.encode(index.facts(RECORD_ID, archive)) == EXPECTED["indexed"]
    for name, found in EXPECTED["search"].items():
        value = {"job_id": "job-ecc635b939c1", "tenant": "acme", "finding": "throttling"}
        query = {name: value.get(name, "exports-primary")}
        assert [r.record_id for r in index.search(archive, **query)] == found == [RECORD_ID]
    mitigations = index.mitigations(archive, incident="INC-7")
    assert codec.encode(mitigations) == EXPECTED["mitigations"]


def test_the_review_reads_it_as_before(record):
    review = review_of([record])
    expected = EXPECTED["review"]
    assert review.tenants == expected["tenants"] and review.files == expected["files"]
    assert codec.encode(review.mitigations) == expected["mitigations"]
    assert codec.encode(review.verdicts) == expected["verdicts"]
    assert review.journal_ok is expected["journal_ok"]
    assert review.follow_ups == expected["follow_ups"]
    assert review.threshold == expected["threshold"] and len(review.rates) == expected["rates"]


COMMANDS = {
    "show": ["show", RECORD_ID],
    "search_job": ["search", "--job-id", "job-ecc635b939c1"],
    "search_tenant_json": ["search", "--tenant", "acme", "--json"],
    "search_finding": ["search", "--finding", "throttling"],
    "verify_json": ["verify", "--json"],
    "list": ["list"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_cli_prints_what_it_printed_then(archive, name):
    result = CliRunner().invoke(main, ["archive", *COMMANDS[name], "--archive", archive])
    work = str(Path(archive).parent)
    then = EXPECTED["cli"][name]
    assert (result.exit_code, result.output.replace(work, "<work>")) == (then["rc"], then["stdout"])
