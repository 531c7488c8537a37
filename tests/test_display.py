"""Display bundles: every step result renders for people (HTML or Markdown, with the runbook
command and its findings) and for the record (the result mimetype, strict JSON)."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import nbformat
import pytest
from constructed import FALLBACK, NOW, PRIMARY, SECONDARY, make_world, minutes
from nbclient import NotebookClient

from exportnb.core import codec
from exportnb.core.findings import RESULT_MIMETYPE, THROTTLING, Finding
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps.baseline import baseline
from exportnb.incident.steps.checksums import ChecksumReport, JobCheck
from exportnb.incident.steps.comms import AuditSummary, StatusUpdate
from exportnb.incident.steps.detection import detect
from exportnb.incident.steps.jobstate import job_state
from exportnb.incident.steps.network import Hop, NetworkPath
from exportnb.incident.steps.recovery import ChunkChange, Recovery
from exportnb.incident.steps.storagehealth import BucketCheck, StorageHealth
from exportnb.mitigation.assessment import Assessment, Recommendation, assess
from exportnb.mitigation.response import bulk_pause, capture, mitigation_plan
from exportnb.notebook import display, views
from exportnb.platform.model import Flag
from exportnb.record.model import LEGACY_TYPES, TYPE_NAMES

AT = NOW.replace(second=0)
THROTTLED = Finding(
    THROTTLING,
    "critical",
    "exports-eu answers 503 SlowDown",
    "storage_health",
    {"buckets": ["exports-eu"], "region": "eu-west-1"},
)


class Tags(HTMLParser):
    """Checks that HTML is well formed enough: every opened tag is closed, no scripts."""

    VOID = frozenset({"br", "hr", "img"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def check_html(html: str) -> set[str]:
    parser = Tags()
    parser.feed(html)
    assert parser.open == [] and "script" not in parser.seen and "style" not in parser.seen
    return parser.seen


def check_bundle(step, result, command=None) -> dict:
    data = display.bundle(step, result, command=command)
    assert RESULT_MIMETYPE in data and "text/plain" in data
    assert ("text/html" in data) != ("text/markdown" in data)
    record = json.loads(display.dumps(data[RESULT_MIMETYPE]))  # strict JSON round trip
    assert record["step"] == step
    kind = getattr(type(result), "KIND", None)
    if kind is None:  # a type without a kind: by class name, as before kinds
        assert record["schema"] == 1 and "kind" not in record
        assert record["type"] == type(result).__name__
    else:  # its kind, and the class name it had when kinds came in
        assert record["schema"] == 2 and record["kind"] == kind
        assert record["type"] == TYPE_NAMES[kind] == type(result).__name__
    assert record == json.loads(json.dumps(record, allow_nan=False))
    if "text/html" in data:
        check_html(data["text/html"])
        if command:
            assert (
                f"<code>{command.replace('<', '&lt;').replace('>', '&gt;')}</code>"
                in data["text/html"]
            )
    else:
        assert command is None or f"`{command}`" in data["text/markdown"]
    if command:
        assert command in data["text/plain"]
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ten minutes of exports to two buckets, failing on exports-eu with SlowDown."""
    w = make_world(tmp_path_factory.mktemp("display"))
    for m in range(12, 0, -1):
        w.many(AT - minutes(m) + timedelta(seconds=10), 8)
        w.job(
            AT - minutes(m) + timedelta(seconds=20),
            "failed",
            tenant="globex",
            bucket=SECONDARY,
            error_code="SlowDown",
            error_message="503 SlowDown",
            logs=2,
        )
    yield w
    w.platform.close()


# The diagnostics, from real runs ------------------------------------------------------------
def test_detection(world):
    result = detect(world.platform, now=NOW, reported_jobs=["job-nope"])
    data = check_bundle("detection", result)
    html = data["text/html"]
    assert html.startswith("<h4>Detection</h4>")
    assert "🔴 <strong>critical</strong>" in html and "failure_rate_high" in html
    assert "Failure rate, last 10 min" in html and "11.11%" in html  # 1 of 9
    assert "job-nope" in html and "Reported jobs" in html
    assert "[critical]" in data["text/plain"]
    assert data[RESULT_MIMETYPE]["result"]["breached"] is True


def test_job_state_and_the_capture(world):
    jobs = job_state(world.platform, since=NOW - minutes(15), until=NOW)
    command = "exportctl list --status failed --limit 20"
    html = check_bundle("job_state", jobs, command)["text/html"]
    assert html.startswith("<h4>Diagnostics 1 · Job state — runbook: <code>exportctl list")
    assert "Failures by connector and storage" in html and "SlowDown" in html
    assert "Newest failed jobs" in html and jobs.failing_job_ids[0] in html
    captured = check_bundle("immediate_actions", capture(jobs, ["job-r"]))["text/html"]
    assert "Sample logs" in captured and "<pre>" in captured and "503 SlowDown" in captured
    assert "job-r" in captured


def test_assessment_recommendations_and_the_plan(world):
    jobs = job_state(world.platform, since=NOW - minutes(15), until=NOW)
    throttled = BucketCheck(SECONDARY, False, 503, "SlowDown", "eu-west-1", 12.5, "throttled", "")
    healthy = BucketCheck(PRIMARY, True, 200, None, "us-east-1", 3.0, "ok", "")
    storage = StorageHealth([throttled, healthy], [THROTTLED])
    result = assess(jobs, storage, context=AssessmentContext(PRIMARY, FALLBACK))
    assert result.recommendations
    html = check_bundle("assessment", result)["text/html"]
    first = min(result.recommendations, key=lambda r: r.priority)
    assert "<ol>" in html and f"<code>{first.command}</code>" in html
    assert html.index(first.action) < html.index("</li>")
    plan = check_bundle("mitigations", mitigation_plan(result, mode="auto"))["text/html"]
    assert "nothing is applied" in plan and first.command in plan
    assert "Applied</th><td style='text-align:left'>nothing" in plan
    empty = check_bundle("assessment", Assessment([]))["text/html"]
    assert "No mitigation is recommended." in empty and "No findings." not in empty
    assert "No findings." in check_bundle("storage_health", StorageHealth([], []))["text/html"]


def test_storage_health():
    result = StorageHealth(
        [BucketCheck(SECONDARY, False, 503, "SlowDown", "eu-west-1", 12.6, "throttled", "503")],
        [THROTTLED],
    )
    html = check_bundle("storage_health", result, "aws s3api head-bucket --bucket $EXPORT_BUCKET")[
        "text/html"
    ]
    assert "throttled" in html and "eu-west-1" in html and "13 ms" in html
    assert "evidence" not in html  # evidence is for the record, not the table


def test_checksums_with_mismatches_and_no_manifest():
    result = ChecksumReport(
        "checksum",
        [
            JobCheck("job-d", "acme", PRIMARY, "passed", 4, [], [], segments=4),
            JobCheck("job-b", None, None, "no_manifest", 0, [], [], detail="no attempt delivered"),
            JobCheck("job-c", None, None, "error", 0, [], [], error="SlowDown"),
            JobCheck("job-e", None, None, "no_manifest", 0, [], [], detail="no attempt delivered"),
            JobCheck("job-a", "acme", PRIMARY, "failed", 2, ["a/part-1"], ["a/part-2"], segments=4),
        ],
        [],
    )
    html = check_bundle("checksums", result, "exportctl verify --job <job-id>")["text/html"]
    assert "<code>exportctl verify --job &lt;job-id&gt;</code>" in html
    assert "s3://exports-primary/a/part-2" in html
    assert "failed: 1" in html and "acme" in html
    # mismatches first, then errors, then what passed; jobs with no manifest in one line
    assert html.index("job-a") < html.index("job-c") < html.index("job-d")
    assert "never delivered data, so nothing to verify (2 job(s)): job-b, job-e." in html
    assert "no attempt delivered" not in html


def test_network_path_with_and_without_hops():
    hops = [
        Hop(1, "10.0.0.1", 10, 10, 0.0, 0.4, 0.9, 0.5),
        Hop(2, "203.0.113.9", 10, 8, 20.0, 150.2, 190.0, 155.0),
    ]
    result = NetworkPath(
        "export-target", 22, "mtr", "mtr -r -n -c 10 export-target", hops, 20.0, 150.2, 190.0, []
    )
    html = check_bundle("network_path", result, "mtr -r $EXPORT_TARGET_HOST")["text/html"]
    assert "mtr -r -n -c 10 export-target" in html and "203.0.113.9" in html and "20%" in html
    down = NetworkPath(
        "h", 22, "tcp", "tcp probe h:22", [], 100.0, None, None, [], error="connection refused"
    )
    html = check_bundle("network_path", down)["text/html"]
    assert "connection refused" in html and "Hops: none" in html


def test_recovery_status_update_and_audit_summary(world):
    usual = baseline(world.platform, NOW - minutes(15), NOW, days=1)
    check_bundle("recovery", usual)  # no renderer needed beyond the Baseline one
    flag = Flag("export.fallback_bucket", FALLBACK, "bob", NOW - minutes(9), NOW + minutes(21))
    recovery = Recovery(
        "not_yet",
        "success rate 88.9% is below the baseline 99.5%",
        0.889,
        0.995,
        108,
        None,
        flag,
        True,
        [ChunkChange("job-a", 256 * 2**20, 50_000_000, False)],
        False,
        ["globex"],
    )
    html = check_bundle("recovery", recovery)["text/html"]
    assert (
        "not_yet" in html and "88.90% / 99.50%" in html and "exports-fallback (set by bob)" in html
    )
    assert "Chunk size changes" in html and "globex" in html
    assert "Configuration reverted</th><td style='text-align:left'>no<" in html
    untouched = dataclasses.replace(
        recovery, fallback=None, bulk_paused=False, chunk_changes=[], config_reverted=True
    )
    assert (
        "<td style='text-align:left'>yes (no fallback flag, bulk exports not paused, "
        "no chunk size changed)<" in (check_bundle("recovery", untouched)["text/html"])
    )
    restored = [ChunkChange("job-a", 256 * 2**20, 50_000_000, True)]
    back = dataclasses.replace(untouched, chunk_changes=restored)
    assert (
        "<td style='text-align:left'>yes (1 chunk size change(s) restored)<"
        in check_bundle("recovery", back)["text/html"]
    )
    update = StatusUpdate(
        "INC-1",
        NOW,
        NOW + minutes(15),
        "### Export incident INC-1\n\n- one",
        "Export incident INC-1",
        [THROTTLED],
    )
    data = check_bundle("communication", update)
    markdown = data["text/markdown"]
    assert markdown.startswith(
        "#### Communication · Status update\n\n- 🔴 **critical** exports-eu answers"
    )
    assert markdown.endswith("### Export incident INC-1\n\n- one")
    summary = AuditSummary(["globex"], ["s3://b/k"], ["retry"], "## Audit\n\n- globex")
    assert check_bundle("communication", summary)["text/markdown"].endswith("- globex")


def test_bulk_pause_and_declaration(world, monkeypatch, tmp_path):
    html = check_bundle("immediate_actions", bulk_pause(world.platform), "exportctl pause bulk")[
        "text/html"
    ]
    assert html.startswith("<h4>Immediate actions · Pause new bulk exports — runbook: <code>")
    assert (
        "Bulk exports paused</th><td style='text-align:left'>no" in html
        and "bulk_exports_running" in html
    )
    from exportnb.incident.model import open_incident

    monkeypatch.setenv("EXPORTNB_HOME", str(world.home))
    for name in ("EXPORT_BUCKET", "EXPORT_FALLBACK_BUCKET", "EXPORT_TARGET_HOST"):
        monkeypatch.delenv(name, raising=False)
    incident = open_incident(incident_id="INC-9", operator="alice", now=NOW.isoformat())
    data = check_bundle("immediate_actions", incident.declaration())
    assert "Comms lead</th><td style='text-align:left'>unassigned" in data["text/html"]
    assert "· Declare incident; assign comms lead" in data["text/html"]
    assert data[RESULT_MIMETYPE]["result"]["operator"] == "alice"


# Any result --------------------------------------------------------------------------------
def test_unknown_types_render_from_their_fields():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Row:
        name: str
        value: float

    @dataclass(frozen=True)
    class Novel:
        title: str
        when: datetime
        rate: float
        rows: list[Row]
        findings: list[Finding] = field(default_factory=list)

    result = Novel("x <b>", NOW, math.nan, [Row("a", 1.5), Row("b", math.inf)])
    data = check_bundle("assessment", result)
    html = data["text/html"]
    assert "x &lt;b&gt;" in html and "2024-06-11 14:30:30 UTC" in html and "<caption>rows" in html
    record = data[RESULT_MIMETYPE]["result"]
    assert record["rate"] is None and record["rows"][1]["value"] is None  # NaN is not JSON
    assert check_bundle("detection", {"plain": "dict"})["text/plain"].startswith("Detection")


def test_long_tables_are_cut_but_the_record_keeps_everything():
    result = ChecksumReport(
        "checksum",
        [JobCheck(f"job-{i}", "acme", PRIMARY, "passed", 1, [], []) for i in range(30)],
        [],
    )
    data = check_bundle("checksums", result)
    assert "job-19" in data["text/html"] and "job-20" not in data["text/html"]
    assert "… and 10 more" in data["text/html"]
    assert len(data[RESULT_MIMETYPE]["result"]["jobs"]) == 30


def test_unknown_steps_are_refused():
    with pytest.raises(ValueError, match="unknown step"):
        display.bundle("diagnostics", Assessment([]))


def test_every_pinned_result_type_has_a_renderer():
    kinds = {
        "detection/v1",
        "job-state/v1",
        "storage-health/v1",
        "checksum-report/v1",
        "network-path/v1",
        "assessment/v1",
        "recovery/v1",
        "status-update/v1",
        "audit-summary/v1",
    }
    assert kinds <= set(views.RENDERERS) and display.RENDERERS is views.RENDERERS


SINCE_KINDS = {"impact-sweep/v1"}
"""Results made after kinds came in: no record ever named them by class name."""


def test_renderers_are_keyed_by_kind_and_every_older_kind_was_a_class_name():
    for kind, result_class in views.RESULT_CLASSES.items():
        assert kind == result_class.KIND and kind in views.RENDERERS
        if kind not in SINCE_KINDS:  # the legacy table is complete
            assert LEGACY_TYPES[result_class.__name__] == kind
        else:
            assert result_class.__name__ not in LEGACY_TYPES
    no_view = {"journal-report/v1", "incident-review/v1", "portfolio/v1"}
    assert set(LEGACY_TYPES.values()) | SINCE_KINDS == set(views.RENDERERS) | no_view


def test_a_renamed_result_class_keeps_its_kind_its_type_and_its_view():
    result = Assessment([Recommendation("retry", "why", {}, [], "exportctl retry", 1)])
    renamed = type("AssessmentOfTheRunbook", (Assessment,), {})
    moved = renamed(result.recommendations)
    before, after = display.bundle("assessment", result), display.bundle("assessment", moved)
    assert after[RESULT_MIMETYPE]["kind"] == "assessment/v1"
    assert after[RESULT_MIMETYPE]["type"] == "Assessment"
    assert after == before


def test_a_recorded_result_renders_by_its_kind_or_else_from_its_fields():
    result = Assessment([Recommendation("retry", "why", {}, [], "exportctl retry", 1)])
    recorded = display.result_record("assessment", result)
    assert views.render_recorded(recorded) == views.render(result)
    before_kinds = {"schema": 1, "step": "assessment", "type": "Assessment", "result": {}}
    before_kinds["result"] = recorded["result"]
    assert views.render_recorded(before_kinds) == views.render(result)
    unreadable = {**recorded, "result": {"recommendations": "none"}}
    novel = {"schema": 2, "kind": "novel/v1", "result": {"title": "x", "rows": [1]}}
    for body in (views.render_recorded(unreadable), views.render_recorded(novel)):
        check_html(body.html)
    assert "title" in views.render_recorded(novel).html
    assert views.render_recorded(novel).text == "novel/v1"


def test_recommendation_without_codes_renders():
    result = Assessment(
        [Recommendation("investigate", "no rule fits", {}, [], "exportctl list", 9)]
    )
    assert "investigate" in check_bundle("assessment", result)["text/html"]


# In a real kernel ----------------------------------------------------------------------------
def test_show_makes_one_display_call_in_a_kernel():
    cells = [
        "from exportnb.notebook.display import show, show_chart\n"
        "from exportnb.mitigation.assessment import Assessment, Recommendation\n"
        "show('assessment', Assessment([Recommendation('retry', 'why', {}, [], 'cmd', 1)]),"
        " command='exportctl retry')",
        "import pandas as pd\nfrom exportnb.notebook.charts import latency_chart\n"
        "show_chart(latency_chart(pd.DataFrame(), slo=60))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    shown = nb.cells[0].outputs
    assert [o.output_type for o in shown] == ["display_data"]
    assert set(shown[0].data) == {"text/html", "text/plain", RESULT_MIMETYPE}
    assert shown[0].data[RESULT_MIMETYPE]["step"] == "assessment"
    chart = nb.cells[1].outputs
    assert [o.output_type for o in chart] == ["display_data"]
    assert set(chart[0].data) == {"image/png", "text/plain"}
    assert chart[0].data["text/plain"] == "[chart: Export latency per minute (p50, p95, p99)]"
    nbformat.validate(nb)


def test_times_render_in_utc():
    plus_two = datetime(2024, 6, 11, 16, 30, tzinfo=timezone(timedelta(hours=2)))
    assert views.cell(plus_two) == "2024-06-11 14:30:00 UTC"
    assert views.cell(None) == "—" and views.cell(True) == "yes" and views.cell([]) == "—"
    assert views.percent(0.02) == "2.00%" and views.percent(None) == "—"
    assert codec.encode(NOW) == "2024-06-11T14:30:30Z"


def test_a_recommendation_without_a_runbook_command_says_so():
    result = Assessment(
        [Recommendation("escalate-network", "20% loss", {}, ["network_loss"], "", 1)]
    )
    html = check_bundle("assessment", result)["text/html"]
    assert "<em>no runbook command</em>" in html and "<code></code>" not in html
    plan = check_bundle("mitigations", mitigation_plan(result, mode="auto"))["text/html"]
    assert "<td style='text-align:left'>no runbook command</td>" in plan
