"""The mitigation panel, headless: its buttons clicked with Button.click() on a real sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import exportnb_cmd, wait_for
from memory_platform import MemoryPlatform

from exportnb.core.config import Settings
from exportnb.core.errors import PreconditionFailed
from exportnb.mitigation import registry
from exportnb.mitigation.assessment import Assessment, Recommendation
from exportnb.mitigation.journal import read_journal
from exportnb.mitigation.model import By, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation, Param
from exportnb.mitigation.trail import trail
from exportnb.notebook.cards import params_of
from exportnb.notebook.panel import MitigationPanel, incident_prefill
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG

SETTINGS = Settings(max_retry_concurrency=4)


def panel_for(sandbox, incident: str, assessment: Assessment | None = None, **extra):
    return MitigationPanel(
        sandbox.platform(),
        incident,
        assessment=assessment,
        operator="dana",
        settings=SETTINGS,
        watch_interval=0.2,
        **extra,
    )


def recommend(*recs: tuple[str, dict, int]) -> Assessment:
    return Assessment(
        recommendations=[
            Recommendation(action, f"because {action}", params, ["throttling"], "cmd", priority)
            for action, params, priority in recs
        ],
        considered=[],
    )


def kinds(incident: str) -> list[tuple[str, str, str]]:
    return [(e.kind, e.action, e.outcome) for e in read_journal(incident)]


def test_recommended_actions_come_first_with_their_inputs_prefilled(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    assessed = recommend(
        ("chunk-size", {"job_ids": ["j-2", "j-1"], "chunk_size": 50_000_000}, 30),
        ("fallback-bucket", {"bucket": fallback, "ttl": 1800}, 20),
        ("re-export", {"job_ids": ["j-9"]}, 40),  # not a panel action
    )
    panel = panel_for(sandbox, "INC-order", assessed)
    assert list(panel.cards)[:2] == ["fallback-bucket", "chunk-size"]
    assert set(panel.cards) == {
        "fallback-bucket",
        "chunk-size",
        "pause-bulk",
        "resume-bulk",
        "retry",
        "revert",
    }
    chunk = panel.cards["chunk-size"]
    assert chunk.inputs["job_ids"].value == "j-2\nj-1"
    assert chunk.inputs["chunk_size"].value == "50MB"
    assert panel.cards["fallback-bucket"].inputs["ttl"].value == "30m"
    assert panel.cards["retry"].inputs["concurrency"].max == 4  # the configured cap
    assert (
        "Recommended: because fallback-bucket"
        in panel.cards["fallback-bucket"].widget.children[0].value
    )
    assert read_journal("INC-order") == []  # building the panel changes nothing


def test_plan_confirm_apply_fallback_bucket_once(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    panel = panel_for(sandbox, "INC-panel-fb", prefill={"fallback-bucket": {"bucket": fallback}})
    card = panel.cards["fallback-bucket"]
    assert card.apply_button.disabled  # nothing to apply before a plan
    card.plan_button.click()
    assert "featurectl set export.fallback_bucket" in card.detail.value
    assert not card.apply_button.disabled
    card.apply_button.click()
    assert card.confirm_row.layout.display == "flex" and "Confirm" in card.status.value
    assert sandbox.platform().get_flag(FALLBACK_FLAG) is None  # not before the confirmation
    card.confirm_button.click()
    assert card.outcome.status == "applied", card.status.value
    assert sandbox.platform().get_flag(FALLBACK_FLAG).value == fallback
    card.confirm_button.click()  # a second click on a consumed plan does nothing
    card.plan_button.click()  # planning again: already applied, nothing to apply
    assert card.current.already_applied and card.apply_button.disabled
    assert kinds("INC-panel-fb") == [
        ("plan", "fallback-bucket", "planned"),
        ("apply", "fallback-bucket", "applying"),
        ("result", "fallback-bucket", "succeeded"),
        ("plan", "fallback-bucket", "already_applied"),
    ]
    applied = [e for e in read_journal("INC-panel-fb") if e.ok]
    assert len(applied) == 1 and applied[0].operator == "dana"
    sets = [
        e
        for e in sandbox.platform().flag_history(FALLBACK_FLAG)
        if e.action == "flag.set" and "INC-panel-fb" in e.reason
    ]
    assert len(sets) == 1


def test_cancel_changes_nothing_and_is_journaled(sandbox):
    panel = panel_for(sandbox, "INC-panel-cancel")
    card = panel.cards["pause-bulk"]
    card.plan_button.click()
    card.apply_button.click()
    card.cancel_button.click()
    assert card.outcome.status == "cancelled"
    assert sandbox.platform().get_flag(BULK_PAUSE_FLAG) is None
    assert [k[0] for k in kinds("INC-panel-cancel")] == ["plan", "skip"]


def test_changed_inputs_need_a_new_plan(sandbox):
    panel = panel_for(sandbox, "INC-panel-edit")
    card = panel.cards["fallback-bucket"]
    card.inputs["bucket"].value = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    card.plan_button.click()
    card.inputs["ttl"].value = "45m"
    assert card.current is None and card.apply_button.disabled
    assert "plan again" in card.status.value


def test_guardrails_refuse_and_change_nothing(sandbox):
    panel = panel_for(sandbox, "INC-panel-guard")
    card = panel.cards["fallback-bucket"]
    card.inputs["bucket"].value = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    for ttl in ("0", "", "forever", "30d"):
        card.inputs["ttl"].value = ttl
        card.plan_button.click()
        assert "Refused" in card.status.value, ttl
        assert card.current is None and card.apply_button.disabled
    card.inputs["bucket"].value = "no-such-bucket-here"
    card.inputs["ttl"].value = "30m"
    card.plan_button.click()
    assert "Refused" in card.status.value and "no-such-bucket-here" in card.status.value
    chunk = panel.cards["chunk-size"]
    chunk.inputs["job_ids"].value = "01NOPE000000000000000000"
    chunk.plan_button.click()
    assert "Refused" in chunk.status.value
    changed = [
        e for e in sandbox.platform().flag_history(FALLBACK_FLAG) if "INC-panel-guard" in e.reason
    ]
    assert changed == []
    assert all(e.kind == "plan" and e.outcome == "refused" for e in read_journal("INC-panel-guard"))


def test_retry_is_watched_live_and_repeat_errors_are_flagged(sandbox):
    buckets = (sandbox.env["EXPORT_BUCKET"], sandbox.env["EXPORT_FALLBACK_BUCKET"])
    faults = [sandbox.inject("throttle", "--bucket", bucket) for bucket in buckets]
    platform = sandbox.platform()
    try:
        out = sandbox.run(
            *exportnb_cmd("sandbox", "submit", "--json", "--count", "2", "--size", "5MB"),
            check=True,
        ).stdout
        jobs = json.loads(out)
        wait_for(lambda: all(platform.get_job(j).job.status == "failed" for j in jobs), 60)
        panel = panel_for(sandbox, "INC-panel-retry")
        card = panel.cards["retry"]
        card.inputs["job_ids"].value = "\n".join(jobs)
        card.inputs["concurrency"].value = 2
        card.plan_button.click()
        assert "2 jobs" in card.status.value, card.status.value
        card.apply_button.click()
        card.confirm_button.click()
        assert card.outcome.status == "applied", card.status.value
        assert card.watcher is not None and card.watch_box.children
        wait_for(lambda: card.watcher.last is not None and card.watcher.last.done, 60)
        card.watcher.stop()
    finally:
        for fault in faults:
            sandbox.clear(fault)
    watch = card.watcher.last
    assert {j.job_id for j in watch.jobs} == set(jobs)
    assert card.watcher.progress.value == 2 == card.watcher.progress.max
    assert sorted(watch.repeat_errors) == sorted(jobs)  # throttled again: flagged
    assert "Repeat errors" in card.watcher.label.value and "done" in card.watcher.label.value
    assert card.watcher.progress.bar_style == "danger"


def test_a_double_click_applies_once(sandbox):
    panel = panel_for(sandbox, "INC-panel-double")
    card = panel.cards["pause-bulk"]
    card.plan_button.click()
    card.apply_button.click()
    card.confirm_button.click()
    card.confirm_button.click()
    other = panel_for(sandbox, "INC-panel-double").cards["pause-bulk"]  # a second window
    other.plan_button.click()
    assert other.current.already_applied
    assert sum(1 for e in read_journal("INC-panel-double") if e.ok) == 1
    resume = panel.cards["resume-bulk"]
    resume.plan_button.click()
    resume.apply_button.click()
    resume.confirm_button.click()
    assert resume.outcome.status == "applied"


def test_revert_undoes_what_the_panel_applied_and_the_trail_shows_it(sandbox):
    incident = "INC-panel-revert"
    panel = panel_for(sandbox, incident)
    card = panel.cards["pause-bulk"]
    for button in (card.plan_button, card.apply_button, card.confirm_button):
        button.click()
    assert sandbox.platform().get_flag(BULK_PAUSE_FLAG).value is True
    revert = panel.cards["revert"]
    for button in (revert.plan_button, revert.apply_button, revert.confirm_button):
        button.click()
    assert revert.outcome.status == "applied", revert.status.value
    flag = sandbox.platform().get_flag(BULK_PAUSE_FLAG)
    assert flag is None or flag.value is False
    found = trail(incident)
    assert found.chain_ok and [a.action for a in found.applied] == ["pause-bulk", "revert"]
    assert all(a.operator == "dana" for a in found.applied)


def test_params_of_retry_uses_ids_or_status_never_both():
    values = {"job_ids": ["a"], "status": "failed", "limit": 20, "concurrency": 2, "round": 1}
    assert params_of("retry", values) == {"job_ids": ["a"], "concurrency": 2}
    values["job_ids"] = []
    assert params_of("retry", values) == {"status": "failed", "limit": 20, "concurrency": 2}
    assert params_of("pause-bulk", {"round": 3}) == {"round": 3}


def test_finalize_button_archives_a_record_with_the_journal(sandbox, tmp_path, monkeypatch):
    incident = "INC-panel-final"
    archive = tmp_path / "archive"
    monkeypatch.setenv("EXPORTNB_ARCHIVE", str(archive))
    monkeypatch.setenv("EXPORTNB_TEMPLATE", str(tiny_notebook(tmp_path)))
    work = sandbox.home / "work" / incident
    work.mkdir(parents=True)
    prepared = json.loads((tmp_path / "tiny.ipynb").read_text())
    prepared["metadata"]["papermill"] = {
        "parameters": {"incident_id": incident, "mode": "interactive"}
    }
    (work / "tiny.ipynb").write_text(json.dumps(prepared))
    panel = panel_for(sandbox, incident)
    card = panel.cards["pause-bulk"]
    for button in (card.plan_button, card.apply_button, card.confirm_button):
        button.click()
    started = time.monotonic()
    panel.on_finalize(wait=True)
    assert panel.record is not None, panel.finalize_status.value
    assert panel.record.status == "succeeded" and time.monotonic() - started < 120
    trails = [r for r in panel.record.results if r.get("type") == "Trail"]
    assert trails and [a["action"] for a in trails[0]["result"]["applied"]] == ["pause-bulk"]
    assert panel.record.parameters["mode"] == "auto"
    assert str(archive) in panel.record.location


def tiny_notebook(folder):
    """A two-cell notebook: parameters, then the audit trail (what finalize must record)."""
    import nbformat

    params = nbformat.v4.new_code_cell('incident_id = "INC-unset"\nmode = "auto"')
    params.metadata["tags"] = ["parameters"]
    show = nbformat.v4.new_code_cell(
        "from exportnb.notebook.display import show\nfrom exportnb.mitigation.trail import trail\n"
        'show("mitigations", trail(incident_id))'
    )
    nb = nbformat.v4.new_notebook(
        cells=[params, show],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


class DrainQueue(Mitigation):
    """An action another package adds: the panel makes its card from it."""

    name = "drain-queue"
    label = "Drain the export queue"
    help = "Drain the export queue (exportctl drain)."
    order = 5
    params = (
        Param("limit", "Limit", "int", 5, "At most this many.", maximum=9),
        Param("ttl", "TTL", "duration", 600, "How long."),
        ROUND,
    )

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
        return {"limit": given["limit"], "ttl": given["ttl"]}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        raise PreconditionFailed("nothing to drain")

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        raise AssertionError("never planned, never applied")

    def command(self, params: Mapping[str, Any]) -> str:
        return "exportctl drain"


@pytest.fixture
def drain_queue() -> Iterator[DrainQueue]:
    action = registry.register(DrainQueue())
    try:
        yield action
    finally:
        registry.unregister(action.name)


def test_a_registered_mitigation_gets_a_card_made_from_it(home, drain_queue):
    panel = MitigationPanel(MemoryPlatform(), "INC-card", operator="dana", settings=SETTINGS)
    assert next(iter(panel.cards)) == "drain-queue"  # its order puts it first
    card = panel.cards["drain-queue"]
    assert "Drain the export queue" in card.widget.children[0].value
    assert card.inputs["limit"].value == 5 and card.inputs["limit"].max == 9
    assert card.inputs["ttl"].value == "10m" and card.inputs["round"].value == 1
    assert panel.cards["revert"].inputs == {}  # revert takes no inputs: the journal decides
    card.plan_button.click()
    assert "Refused: nothing to drain" in card.status.value
    assert [(e.kind, e.outcome) for e in read_journal("INC-card")] == [("plan", "refused")]


def test_the_incident_fills_the_inputs_that_name_its_facts():
    found = incident_prefill(SimpleNamespace(fallback_bucket="exports-fallback"))
    assert found == {"fallback-bucket": {"bucket": "exports-fallback"}}
    assert incident_prefill(SimpleNamespace(fallback_bucket=None)) == {}
