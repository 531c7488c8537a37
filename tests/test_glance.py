"""The box at the top of a record's page, made from the recorded results only."""

from __future__ import annotations

from exportnb.record.glance import MAX_NAMED, glance_html, with_glance
from exportnb.record.model import TYPE_NAMES, with_kinds


def finding(severity: str, summary: str) -> dict:
    return {"code": "c", "severity": severity, "summary": summary, "step": "s", "evidence": {}}


def result(kind: str, **body) -> dict:
    return {"step": "s", "kind": kind, "result": {"findings": [], **body}}


RESULTS = [
    result("detection/v1", findings=[finding("critical", "Failure rate 90% <b>high</b>")]),
    result(
        "storage-health/v1",
        findings=[
            finding("critical", "S3 is throttling exports-primary"),
            finding("info", "fallback answers"),
        ],
    ),
    result(
        "assessment/v1",
        recommendations=[
            {
                "action": "fallback-bucket",
                "command": "featurectl set export.fallback_bucket b --ttl 30m",
            }
        ],
        findings=[],
    ),
    result("recovery/v1", verdict="not_yet", reason="11% against the baseline 99.5%"),
    result("recovery/v1", verdict="recovered", reason="back at baseline for 15 min"),
    result(
        "audit-trail/v1",
        applied=[
            {"action": "fallback-bucket", "operator": "dana", "at": "2024-05-01T12:10:03.123456Z"}
        ],
    ),
]


def test_the_box_says_the_run_the_verdict_the_findings_the_advice_and_what_was_done():
    box = glance_html(incident_id="INC-7", failed_at=None, results=RESULTS)
    assert box.startswith('<section class="exportnb-glance"')
    assert "At a glance — INC-7</strong> · run succeeded" in box
    assert "<strong>Recovery:</strong> Recovered — back at baseline for 15 min" in box  # latest
    assert "<strong>Findings:</strong> 2 critical, 0 warning, 1 info" in box
    assert "Failure rate 90% &lt;b&gt;high&lt;/b&gt;" in box and "<b>high" not in box
    assert "fallback answers" not in box  # info findings are counted, not named
    assert "fallback-bucket: <code>featurectl set export.fallback_bucket b --ttl 30m</code>" in box
    assert "fallback-bucket by dana at 2024-05-01 12:10:03 UTC" in box


def test_results_recorded_before_kinds_make_the_same_box():
    legacy = [
        {"step": r["step"], "type": TYPE_NAMES[r["kind"]], "result": r["result"]} for r in RESULTS
    ]
    box = glance_html(incident_id="INC-7", failed_at=None, results=RESULTS)
    assert glance_html(incident_id="INC-7", failed_at=None, results=with_kinds(legacy)) == box


def test_a_failed_run_with_nothing_recorded_says_so():
    box = glance_html(incident_id="INC-8", failed_at="cell 4 (In [3]): ValueError: <x>", results=[])
    assert "run failed at cell 4 (In [3]): ValueError: &lt;x&gt;" in box
    assert "Findings:</strong> 0 critical, 0 warning, 0 info" in box
    assert "Recovery" not in box and "Recommended" not in box and "Mitigations" not in box


def test_long_lists_are_cut_and_say_how_many_more():
    many = [result("job-state/v1", findings=[finding("warning", f"w{i}") for i in range(9)])]
    box = glance_html(incident_id="INC-9", failed_at=None, results=many)
    assert box.count("<strong>warning</strong>") == MAX_NAMED and "… and 4 more below" in box


def test_the_box_goes_first_in_the_page():
    page = b"<html><body class='jp-Notebook'>\n<main>\n<div>cells</div></main></body></html>"
    out = with_glance(page, "<section>box</section>")
    assert out.index(b"<section>box") < out.index(b"cells") and out.count(b"<main>") == 1
    assert with_glance(b"<body>x</body>", "B").startswith(b"<body>\nB")
    assert with_glance(b"bare", "B") == b"Bbare"
