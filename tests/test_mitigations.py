"""Mitigations against the real sandbox: plans, applied once, guardrails, revert, bounds;
and the registry: an action added at run time goes through the same lifecycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import exportnb_cmd, wait_for
from memory_platform import MemoryPlatform

import exportnb
from exportnb.cli.mitigate import mitigate
from exportnb.core import codec
from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed
from exportnb.mitigation import assessment, policy, registry
from exportnb.mitigation import lifecycle as mitigations
from exportnb.mitigation.journal import read_journal
from exportnb.mitigation.model import By, Change, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation, Param
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG
from exportnb.sandbox.platform import SandboxPlatform

SETTINGS = Settings(max_retry_concurrency=4)


def submit(sandbox, *args: str) -> list[str]:
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", *args), check=True).stdout
    return json.loads(out)


def finished(platform, job_ids, timeout: float = 60.0) -> None:
    def done():
        return all(platform.get_job(j).job.status in ("succeeded", "failed") for j in job_ids)

    wait_for(done, timeout)


def plan(sandbox, incident, action, params=None):
    return mitigations.plan(
        sandbox.platform(), incident, action, params, operator="dana", settings=SETTINGS
    )


def apply(sandbox, p, **how):
    how = {"operator": "dana", "confirmed": True, "settings": SETTINGS, **how}
    return mitigations.apply(sandbox.platform(), p, **how)


def flag_sets(platform, key: str, key_prefix: str) -> list:
    return [
        e for e in platform.flag_history(key) if e.action == "flag.set" and key_prefix in e.reason
    ]


def journal_kinds(incident: str) -> list[tuple[str, str]]:
    return [(e.kind, e.outcome) for e in read_journal(incident)]


def test_the_key_does_not_depend_on_spelling_or_order():
    normalize = registry.get("chunk-size").normalize
    a = normalize({"job_ids": ["j2", "j1"], "chunk_size": "50MB"}, SETTINGS)
    b = normalize({"job_ids": ["j1", "j2", "j1"], "chunk_size": 50_000_000}, SETTINGS)
    assert a == b
    key = mitigations.idempotency_key
    assert key("INC-1", "chunk-size", a) == key("INC-1", "chunk-size", b)
    assert key("INC-1", "chunk-size", a) != key("INC-2", "chunk-size", a)
    assert key("INC-1", "chunk-size", a) != key("INC-1", "chunk-size", {**a, "round": 2})


def test_fallback_bucket_is_applied_once_even_when_asked_twice(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    p = plan(sandbox, "INC-fb", "fallback-bucket", {"bucket": fallback, "ttl": "30m"})
    assert p.commands == [f"featurectl set export.fallback_bucket {fallback} --ttl 30m"]
    assert p.params == {"bucket": fallback, "ttl": 1800, "round": 1} and not p.already_applied
    assert p.changes[0].target == FALLBACK_FLAG and p.changes[0].new["value"] == fallback
    try:
        first = apply(sandbox, p)
        second = apply(sandbox, p)  # a double click
        assert (first.status, second.status) == ("applied", "already_applied")
        assert second.result.already_applied and second.result.seq == first.result.seq
        assert first.result.response["value"] == fallback
        again = plan(sandbox, "INC-fb", "fallback-bucket", {"bucket": fallback, "ttl": "30m"})
        assert again.already_applied and again.key == p.key
        assert apply(sandbox, again).status == "already_applied"
        platform = sandbox.platform()
        assert len(flag_sets(platform, FALLBACK_FLAG, p.key[:12])) == 1
        flag = platform.get_flag(FALLBACK_FLAG)
        assert flag.value == fallback and flag.set_by == "dana" and flag.expires_at is not None
        assert journal_kinds("INC-fb") == [
            ("plan", "planned"),
            ("apply", "applying"),
            ("result", "succeeded"),
            ("skip", "already_applied"),
            ("plan", "already_applied"),
            ("skip", "already_applied"),
        ]
        notes = [e for e in platform.audit_log(limit=50) if e.target == "INC-fb/fallback-bucket"]
        assert [e.action for e in notes][:3] == [
            "mitigation.plan",
            "mitigation.apply",
            "mitigation.result",
        ]
        assert notes[2].new["sha256"] == read_journal("INC-fb")[2].sha256
        assert notes[2].new["outcome"] == "succeeded" and "detail" not in notes[2].new
        assert notes[0].new["summary"].startswith(f"Set {FALLBACK_FLAG} = {fallback} for 30m")
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


GUARDRAILS = [
    ("fallback-bucket", {"bucket": "EXPORT_FALLBACK_BUCKET", "ttl": "0s"}, InvalidInput, "TTL"),
    ("fallback-bucket", {"bucket": "EXPORT_FALLBACK_BUCKET", "ttl": 0}, InvalidInput, "TTL"),
    (
        "fallback-bucket",
        {"bucket": "EXPORT_FALLBACK_BUCKET", "ttl": "25h"},
        InvalidInput,
        "max_flag_ttl",
    ),
    ("fallback-bucket", {"bucket": "no-such-bucket"}, PreconditionFailed, "does not exist"),
    ("retry", {"status": "failed", "concurrency": 5}, InvalidInput, "max_retry_concurrency"),
    ("retry", {"job_ids": ["job-nope"]}, NotFound, "job-nope"),
    ("chunk-size", {"job_ids": ["job-nope"]}, NotFound, "job-nope"),
    ("chunk-size", {"job_ids": ["x"], "chunk_size": "-5MB"}, InvalidInput, "size"),
    ("retry", {"colour": "red"}, InvalidInput, "colour"),
]


@pytest.mark.parametrize(("action", "params", "error", "words"), GUARDRAILS)
def test_guardrails_explain_and_change_nothing(sandbox, action, params, error, words):
    params = {k: sandbox.env.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    platform = sandbox.platform()
    flags, audit = platform.list_flags(), len(platform.audit_log(limit=10_000))
    incident = f"INC-guard-{action}"
    with pytest.raises(error, match=words):
        plan(sandbox, incident, action, params)
    assert platform.list_flags() == flags
    changes = [
        e
        for e in platform.audit_log(limit=10_000)[audit:]
        if not e.action.startswith("mitigation.")
    ]
    assert changes == []
    assert all(e.kind == "plan" and e.outcome == "refused" for e in read_journal(incident))


def test_interactive_apply_needs_a_confirmation(sandbox):
    p = plan(sandbox, "INC-confirm", "pause-bulk")
    with pytest.raises(PreconditionFailed, match="not confirmed"):
        apply(sandbox, p, confirmed=False)
    assert sandbox.platform().get_flag(BULK_PAUSE_FLAG) is None
    outcome = mitigations.decline(p, operator="dana")
    assert outcome.status == "cancelled"
    assert journal_kinds("INC-confirm") == [("plan", "planned"), ("skip", "cancelled")]


def test_a_failed_apply_is_journaled_and_may_be_tried_again(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    p = plan(sandbox, "INC-again", "fallback-bucket", {"bucket": fallback, "ttl": "2h"})
    strict = SandboxPlatform(sandbox.home, settings=Settings(max_flag_ttl=3600))
    try:
        failed = mitigations.apply(strict, p, operator="dana", confirmed=True, settings=SETTINGS)
        assert failed.status == "failed" and not failed.result.ok
        assert failed.result.error_type == "InvalidInput" and "max_flag_ttl" in failed.result.error
        assert sandbox.platform().get_flag(FALLBACK_FLAG) is None
        retried = apply(sandbox, p)
        assert retried.status == "applied" and retried.result.ok
        assert journal_kinds("INC-again")[1:] == [
            ("apply", "applying"),
            ("result", "failed"),
            ("apply", "applying"),
            ("result", "succeeded"),
        ]
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


def test_chunk_size_reduces_and_refuses_to_grow_unless_forced(sandbox):
    big, small = (
        submit(sandbox, "--size", "10MB", "--chunk-size", "256MB")[0],
        submit(sandbox, "--size", "10MB", "--chunk-size", "32MB")[0],
    )
    with pytest.raises(PreconditionFailed, match="reduces chunk sizes"):
        plan(sandbox, "INC-grow", "chunk-size", {"job_ids": [big, small]})
    assert sandbox.platform().get_job(big).job.chunk_size == 256 * 10**6
    p = plan(sandbox, "INC-grow", "chunk-size", {"job_ids": [small, big], "force": True})
    assert [(c.target, c.old, c.new) for c in p.changes] == sorted(
        [(big, 256 * 10**6, 50 * 10**6), (small, 32 * 10**6, 50 * 10**6)]
    )
    assert p.reach == {"jobs": 2, "tenants": 1, "buckets": 1}
    assert p.commands == sorted(
        f"exportctl update --job {j} --chunk-size 50MB" for j in (big, small)
    )


def test_revert_restores_exactly_what_this_incident_changed(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    mine, theirs, moved = submit(sandbox, "--count", "3", "--size", "10MB", "--chunk-size", "256MB")
    platform = sandbox.platform()
    finished(platform, [mine, theirs, moved])
    for incident, action, params in [
        ("INC-A", "chunk-size", {"job_ids": [mine, moved]}),
        ("INC-A", "fallback-bucket", {"bucket": fallback}),
        ("INC-A", "pause-bulk", {}),
        ("INC-B", "chunk-size", {"job_ids": [theirs], "chunk_size": "32MB"}),
    ]:
        assert apply(sandbox, plan(sandbox, incident, action, params)).status == "applied"
    sandbox.run("exportctl", "update", "--job", moved, "--chunk-size", "64MB", check=True)

    p = plan(sandbox, "INC-A", "revert")
    assert {(c.kind, c.target, c.new) for c in p.changes} == {
        ("chunk_size", mine, 256 * 10**6),
        ("flag", FALLBACK_FLAG, None),
        ("bulk_pause", BULK_PAUSE_FLAG, None),
    }
    assert any(moved in w and "left as it is" in w for w in p.warnings)
    assert "featurectl unset export.fallback_bucket" in p.commands
    outcome = apply(sandbox, p)
    assert outcome.status == "applied", outcome.message
    assert apply(sandbox, p).status == "already_applied"
    sizes = {j: platform.get_job(j).job.chunk_size for j in (mine, theirs, moved)}
    assert sizes == {mine: 256 * 10**6, theirs: 32 * 10**6, moved: 64 * 10**6}
    assert platform.get_flag(FALLBACK_FLAG) is None and platform.get_flag(BULK_PAUSE_FLAG) is None
    reverts = [e for e in read_journal("INC-A") if e.kind == "revert"]
    assert sorted(e.outcome for e in reverts) == ["left", "restored", "restored", "restored"]
    with pytest.raises(PreconditionFailed, match="changed nothing"):
        plan(sandbox, "INC-A", "revert")
    assert apply(sandbox, plan(sandbox, "INC-B", "revert")).status == "applied"
    assert platform.get_job(theirs).job.chunk_size == 256 * 10**6


def test_revert_leaves_a_flag_that_another_incident_set_since(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    try:
        first = plan(sandbox, "INC-C", "fallback-bucket", {"bucket": "exports-eu"})
        assert any("not one of the platform's fallback buckets" in w for w in first.warnings)
        apply(sandbox, first)
        later = plan(sandbox, "INC-D", "fallback-bucket", {"bucket": fallback, "ttl": "1h"})
        assert any("this replaces it" in w for w in later.warnings)
        apply(sandbox, later)
        p = plan(sandbox, "INC-C", "revert")
        assert p.changes == [] and "left as it is" in p.warnings[0]
        assert apply(sandbox, p).status == "applied"
        assert sandbox.platform().get_flag(FALLBACK_FLAG).value == fallback  # INC-D's, kept
        undo = plan(sandbox, "INC-D", "revert")
        assert undo.commands[0].startswith("featurectl set export.fallback_bucket exports-eu")
        apply(sandbox, undo)
        flag = sandbox.platform().get_flag(FALLBACK_FLAG)  # INC-C's again, while it lasts
        assert flag.value == "exports-eu" and flag.expires_at is not None
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


RACER = """
import sys, time
from pathlib import Path
from exportnb.mitigation import lifecycle as mitigations
from exportnb.platform import get_platform
go = Path(sys.argv[1])
platform = get_platform()
p = mitigations.plan(platform, "INC-race", "fallback-bucket", {"bucket": sys.argv[2]})
while not go.exists():
    time.sleep(0.005)
print(mitigations.apply(platform, p, confirmed=True).status)
"""


def test_two_processes_applying_one_key_apply_it_once(sandbox, tmp_path):
    go = tmp_path / "go"
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(go), fallback],
            env=sandbox.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        time.sleep(2.0)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert sorted(out.strip() for out, _ in outputs) == ["already_applied", "applied"]
        key = next(e.key for e in read_journal("INC-race"))
        assert len(flag_sets(sandbox.platform(), FALLBACK_FLAG, key[:12])) == 1
        assert [e.kind for e in read_journal("INC-race")].count("apply") == 1
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


def test_the_observed_maximum_of_concurrent_retries_equals_the_bound(sandbox):
    fault = sandbox.inject("throttle", "--bucket", "exports-eu")
    platform = sandbox.platform()
    try:
        ids = submit(sandbox, "--count", "6", "--bucket", "exports-eu", "--size", "5MB")
        finished(platform, ids)
    finally:
        sandbox.clear(fault)
    p = plan(sandbox, "INC-bound", "retry", {"job_ids": ids, "concurrency": 2})
    assert p.reach == {"jobs": 6, "tenants": 1, "buckets": 1}
    assert (
        p.command == f"exportctl retry {' '.join(f'--job {j}' for j in sorted(ids))} "
        "--concurrency 2"
    )
    outcome = apply(sandbox, p)
    assert outcome.status == "applied" and sorted(outcome.retried) == sorted(ids)
    batch = outcome.result.response["batch"]
    for job_id in ids:  # slow them down so overlap is observable
        platform.store.db.execute("UPDATE jobs SET bytes = 160000000 WHERE id = ?", (job_id,))
    peak, deadline, watch = 0, time.monotonic() + 90, None
    while time.monotonic() < deadline:
        peak = max(peak, platform.store.batch_running_peak(batch))
        watch = mitigations.watch_retry(
            platform, outcome.retried, attempts_before=outcome.attempts_before
        )
        if watch.done:
            break
        time.sleep(0.05)
    assert peak == 2
    assert watch is not None and watch.done and watch.counts["succeeded"] == 6
    assert watch.repeat_errors == [] and watch.findings == []


def test_watch_retry_reports_a_job_that_fails_again_with_the_same_error(sandbox):
    bucket = sandbox.env["EXPORT_BUCKET"]
    fault = sandbox.inject("throttle", "--bucket", bucket)
    platform = sandbox.platform()
    try:
        (job_id,) = submit(sandbox, "--size", "5MB")
        finished(platform, [job_id])
        outcome = apply(sandbox, plan(sandbox, "INC-repeat", "retry", {"job_ids": [job_id]}))
        assert outcome.attempts_before == {job_id: 1}

        def settled():
            watch = mitigations.watch_retry(
                platform, [job_id], attempts_before=outcome.attempts_before
            )
            return watch if watch.done else None

        watch = wait_for(settled, 60)
        assert watch.repeat_errors == [job_id] and watch.counts["failed"] == 1
        assert watch.findings[0].code == "retry_repeat_errors"
        assert "SlowDown" in watch.findings[0].summary
    finally:
        sandbox.clear(fault)


def test_the_same_flow_drives_an_organisations_own_tools(sandbox):
    """Through the command platform (exportctl/featurectl as executables): no audit notes,
    but every change carries the incident's reason, and revert recognises its own flag."""
    import shutil

    from exportnb.platform.command import CommandPlatform

    tools = {
        name: shutil.which(name, path=sandbox.env["PATH"]) for name in ("exportctl", "featurectl")
    }
    platform = CommandPlatform(**tools)
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    how = {"operator": "dana", "settings": SETTINGS}
    try:
        p = mitigations.plan(platform, "INC-cmd", "fallback-bucket", {"bucket": fallback}, **how)
        assert mitigations.apply(platform, p, confirmed=True, **how).status == "applied"
        history = sandbox.platform().flag_history(FALLBACK_FLAG)
        assert history[-1].reason == f"INC-cmd fallback-bucket {p.key[:12]}"
        undo = mitigations.plan(platform, "INC-cmd", "revert", **how)
        assert undo.commands == ["featurectl unset export.fallback_bucket"], undo.warnings
        assert mitigations.apply(platform, undo, confirmed=True, **how).status == "applied"
        assert sandbox.platform().get_flag(FALLBACK_FLAG) is None
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


# The registry -------------------------------------------------------------------------
class HoldBulk(Mitigation):
    """Another package's action: holds bulk exports back, with a note saying why."""

    name = "hold-bulk"
    label = "Hold bulk exports"
    help = "Hold bulk exports back (exportctl pause bulk), with a note."
    params = (Param("note", "Note", "text", "", "Why they are held."), ROUND)
    revertible = True

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
        if not isinstance(given["note"], str):
            raise InvalidInput("note is text")
        return {"note": given["note"].strip()}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        if context.platform.get_flag(BULK_PAUSE_FLAG) is not None:
            raise PreconditionFailed("bulk exports are held already")
        change = Change("bulk_pause", BULK_PAUSE_FLAG, None, True)
        return Draft(f"Hold bulk exports: {params['note']}.", [change], [], [], [], ["x"])

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        flag = context.platform.pause_bulk(actor=by.actor, reason=by.reason)
        progress.response = flag
        progress.changes.append(Change("bulk_pause", BULK_PAUSE_FLAG, None, codec.encode(flag)))

    def command(self, params: Mapping[str, Any]) -> str:
        return "exportctl pause bulk"


@pytest.fixture
def hold_bulk() -> Iterator[HoldBulk]:
    action = registry.register(HoldBulk())
    try:
        yield action
    finally:
        registry.unregister(action.name)


def test_a_mitigation_registered_at_run_time_goes_through_the_same_lifecycle(home, hold_bulk):
    assert "hold-bulk" in policy.known() and "hold-bulk" in registry.names()
    assert policy.allows("hold-bulk", "auto", Settings(auto_apply=("hold-bulk",)))
    assert "hold-bulk" in mitigate.list_commands(click.Context(mitigate))
    platform = MemoryPlatform()
    how = {"operator": "dana", "settings": SETTINGS}
    with pytest.raises(InvalidInput, match="takes no parameter colour"):
        mitigations.plan(platform, "INC-plugin", "hold-bulk", {"colour": "red"}, **how)
    p = mitigations.plan(platform, "INC-plugin", "hold-bulk", {"note": " drill "}, **how)
    assert p.params == {"note": "drill", "round": 1} and p.summary == "Hold bulk exports: drill."
    first = mitigations.apply(platform, p, confirmed=True, **how)
    second = mitigations.apply(platform, p, confirmed=True, **how)
    assert (first.status, second.status) == ("applied", "already_applied")
    flag = platform.get_flag(BULK_PAUSE_FLAG)
    assert flag is not None and flag.set_by == "dana"
    assert platform.flag_history(BULK_PAUSE_FLAG)[-1].reason == f"INC-plugin hold-bulk {p.key[:12]}"
    assert [(e.kind, e.action) for e in read_journal("INC-plugin")][:3] == [
        ("plan", "hold-bulk"),
        ("apply", "hold-bulk"),
        ("result", "hold-bulk"),
    ]
    assert [s.action for s in mitigations.standing_changes("INC-plugin")] == ["hold-bulk"]
    undo = mitigations.plan(platform, "INC-plugin", "revert", **how)
    assert undo.commands == ["exportctl resume bulk"]
    assert mitigations.apply(platform, undo, confirmed=True, **how).status == "applied"
    assert platform.get_flag(BULK_PAUSE_FLAG) is None


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("pause-bulk", {}),
        ("fallback-bucket", {"bucket": "exports-fallback", "ttl": "30m"}),
        ("chunk-size", {"job_ids": ["j-1", "j-2"], "chunk_size": 50_000_000}),
        ("retry", {"job_ids": ["j-1"], "concurrency": 2}),
        ("retry", {"status": "failed", "limit": 20, "concurrency": 2}),
    ],
)
def test_a_recommendation_shows_the_command_its_mitigation_plans(action, params):
    mitigation = registry.get(action)
    canonical = mitigation.normalize(params, SETTINGS)
    assert mitigation.command(canonical) == assessment.command(action, params)


def test_an_unknown_mitigation_is_refused_naming_the_known_ones():
    with pytest.raises(InvalidInput, match=r"unknown mitigation 'reboot' .*pause-bulk"):
        registry.get("reboot")
    with pytest.raises(InvalidInput, match="not a Mitigation"):
        registry.register("reboot")  # type: ignore[arg-type]


def _names_an_action(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_an_action(e, names) for e in node.elts)
    return False


def test_no_code_outside_the_mitigation_package_compares_an_action_name():
    """What an action does is in its Mitigation object, not in branches on its name."""
    names, package = set(registry.names()), Path(exportnb.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        if where.startswith("exportnb/mitigation/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            operands = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            if isinstance(node, ast.MatchValue):
                operands = [node.value]
            if any(_names_an_action(o, names) for o in operands):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
