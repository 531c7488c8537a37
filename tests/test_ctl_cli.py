"""exportctl and featurectl through click's CliRunner, on the in-memory platform.

The runbook's commands work verbatim, print tables by default and contract documents
with ``--output json``; bad input prints ``Error: …``, exits with its code and changes
nothing.
"""

from __future__ import annotations

import json
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from memory_platform import FALLBACK, MemoryPlatform

from exportnb.platform import contract
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, JobQuery
from exportnb.sandbox.ctl import exportctl, featurectl


@pytest.fixture
def memory(tmp_path, monkeypatch) -> MemoryPlatform:
    """A seeded platform in a JSON file; both CLIs open it afresh for every command."""
    path = tmp_path / "state.json"
    monkeypatch.setenv("EXPORTNB_OPERATOR", "alice")
    monkeypatch.setattr(exportctl, "platform", lambda: MemoryPlatform(path))
    monkeypatch.setattr(featurectl, "platform", lambda: MemoryPlatform(path))
    return MemoryPlatform(path)


def run(group: click.Group, *args: str) -> Result:
    return CliRunner().invoke(group, list(args))


def ctl(*args: str) -> Result:
    return run(exportctl.exportctl, *args)


def flags(*args: str) -> Result:
    return run(featurectl.featurectl, *args)


def read(result: Result, kind: str) -> Any:
    return contract.read_document(json.loads(result.stdout), kind)[1]


def failed_ids(memory: MemoryPlatform) -> list[str]:
    return [j.id for j in memory.list_jobs(JobQuery(status="failed"))]


# The runbook's lines -----------------------------------------------------------------
def test_list_failed_jobs_shows_their_error_reasons(memory):
    result = ctl("list", "--status", "failed", "--limit", "20")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "TENANT"]
    assert [line.split()[0] for line in lines[1:]] == ["j-fail-1", "j-fail-2", "j-fail-3"]
    assert "SlowDown: 503 SlowDown from S3" in result.stdout
    assert "RequestTimeout" in result.stdout


def test_list_as_json_is_a_job_list(memory):
    result = ctl("list", "--status", "failed", "--limit", "2", "--output", "json")
    assert result.exit_code == 0, result.output
    jobs = read(result, "JobList")
    assert [j.id for j in jobs] == ["j-fail-1", "j-fail-2"]
    assert jobs[0].error_code == "SlowDown"


def test_list_filters_by_connector_tenant_and_time(memory):
    result = ctl(
        "list", "--connector", "s3-parquet", "--tenant", "acme", "--since", "1h", "-o", "json"
    )
    assert sorted(j.id for j in read(result, "JobList")) == ["j-fail-1", "j-run-1"]
    early = ctl("list", "--until", "2000-01-01T00:00:00Z")
    assert early.exit_code == 0 and early.stdout.strip() == "No jobs match."


def test_verify_passes_with_exit_0(memory):
    result = ctl("verify", "--job", "j-ok-1")
    assert result.exit_code == 0, result.output
    assert "j-ok-1: PASSED - 3 ok, 0 mismatch, 0 missing" in result.stdout


def test_verify_with_mismatches_exits_10_and_still_prints(memory):
    result = ctl("verify", "--job", "j-ok-1", "--job", "j-bad-1", "--output", "json")
    assert result.exit_code == 10
    checked = read(result, "VerificationList")
    assert [v.passed for v in checked] == [True, False]
    assert [c.state for c in checked[1].checks] == ["ok", "mismatch", "missing"]
    assert "verification failed for 1 job(s): j-bad-1" in result.stderr
    table = ctl("verify", "--job", "j-bad-1", "--rehash")
    assert table.exit_code == 10
    assert "FAILED - 1 ok, 1 mismatch, 1 missing (rehash" in table.stdout
    assert "NoSuchKey" in table.stdout


def test_retry_failed_jobs_with_safe_concurrency(memory):
    result = ctl("retry", "--status", "failed", "--limit", "20", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert "3 queued, 0 skipped (concurrency 2)" in result.stdout
    assert failed_ids(memory) == []
    entry = memory.audit_log()[-1]
    assert (entry.action, entry.actor) == ("job.retry", "alice")


def test_retry_named_jobs_as_json(memory):
    result = ctl(
        "retry", "--job", "j-fail-2", "--job", "j-run-1", "--reason", "INC-1", "-o", "json"
    )
    retried = read(result, "RetryResult")
    assert (retried.queued, retried.skipped) == (["j-fail-2"], {"j-run-1": "already running"})
    assert memory.audit_log()[-1].reason == "INC-1"


def test_update_chunk_size(memory):
    result = ctl("update", "--job", "j-fail-1", "--chunk-size", "50MB", "--output", "json")
    assert result.exit_code == 0, result.output
    change = read(result, "ChunkSizeChange")
    assert (change.old, change.new) == (64_000_000, 50_000_000)
    assert memory.get_job("j-fail-1").job.chunk_size == 50_000_000
    table = ctl("update", "--job", "j-fail-2", "--chunk-size", "32MiB")
    assert table.stdout.startswith("j-fail-2: chunk size ")
    assert table.stdout.strip().endswith(" -> 32MiB")


def test_featurectl_set_get_list_history_unset(memory):
    result = flags("set", FALLBACK_FLAG, FALLBACK, "--ttl", "30m", "--reason", "INC-1")
    assert result.exit_code == 0, result.output
    assert "Value:   exports-fallback" in result.stdout
    assert "(in 29m" in result.stdout or "(in 30m" in result.stdout
    flag = read(flags("get", FALLBACK_FLAG, "-o", "json"), "Flag")
    assert (flag.value, flag.set_by) == (FALLBACK, "alice")
    assert round((flag.expires_at - flag.set_at).total_seconds()) == 1800
    assert [f.key for f in read(flags("list", "-o", "json"), "FlagList")] == [FALLBACK_FLAG]
    assert flags("unset", FALLBACK_FLAG, "--reason", "recovered").exit_code == 0
    history = read(flags("history", FALLBACK_FLAG, "-o", "json"), "AuditLog")
    assert [(e.action, e.actor, e.reason) for e in history] == [
        ("flag.set", "alice", "INC-1"),
        ("flag.unset", "alice", "recovered"),
    ]
    table = flags("history", FALLBACK_FLAG)
    assert "None" not in table.stdout and '- -> {"value": "exports-fallback"' in table.stdout
    assert flags("get", FALLBACK_FLAG).exit_code == 3


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_flag_values_are_json_when_they_parse(memory, text, value):
    result = flags("set", BULK_PAUSE_FLAG, text, "-o", "json")
    assert read(result, "Flag").value is value


def test_flag_values_that_are_not_json_are_strings():
    assert featurectl.parse_value("exports-fallback") == "exports-fallback"
    assert featurectl.parse_value('{"a": [1]}') == {"a": [1]}
    assert featurectl.parse_value('"true"') == "true"
    assert featurectl.parse_value("NaN") == "NaN"


def test_pause_and_resume_bulk(memory):
    paused = ctl("pause", "bulk", "--reason", "INC-1", "-o", "json")
    assert read(paused, "Flag").value is True
    resumed = ctl("resume", "bulk", "-o", "json")
    assert read(resumed, "Done") == contract.Done("bulk.resume", BULK_PAUSE_FLAG)
    assert memory.get_flag(BULK_PAUSE_FLAG) is None


def test_show_manifest_stats_audit_info(memory):
    show = ctl("show", "--job", "j-fail-1", "--logs", "1")
    assert show.exit_code == 0, show.output
    assert "Attempts" in show.stdout and "Logs (last 1 of 2)" in show.stdout
    assert "attempt 1 failed" in show.stdout
    detail = read(ctl("show", "--job", "j-fail-1", "-o", "json"), "JobDetail")
    assert len(detail.logs) == 2
    assert read(ctl("manifest", "--job", "j-ok-1", "-o", "json"), "Manifest").total_bytes
    counts = ctl("stats", "counts", "--since", "2h")
    assert counts.exit_code == 0 and "FAILED%" in counts.stdout
    assert (
        sum(
            c.count
            for c in read(ctl("stats", "counts", "--since", "2h", "-o", "json"), "MinuteCounts")
        )
        == 6
    )
    latency = read(
        ctl("stats", "latency", "--since", "2h", "--per-minute", "-o", "json"), "Latency"
    )
    assert latency[0].count == 6
    ctl("pause", "bulk")
    assert [e.action for e in read(ctl("audit", "--since", "1h", "-o", "json"), "AuditLog")] == [
        "flag.set"
    ]
    assert read(ctl("info", "-o", "json"), "PlatformInfo").export_bucket == "exports-primary"
    assert "Export bucket:" in ctl("info").stdout


# Bad input: Error: …, the exit code, nothing changed --------------------------------
def assert_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("size", ["50XB", "-1MB", "0MB", "fifty"])
def test_bad_sizes_are_refused(memory, size):
    assert_error(ctl("update", "--job", "j-fail-1", "--chunk-size", size), 2, "invalid size")
    assert memory.get_job("j-fail-1").job.chunk_size == 64_000_000


@pytest.mark.parametrize("ttl", ["30x", "0m", "30", "-5m"])
def test_bad_ttls_are_refused(memory, ttl):
    assert_error(flags("set", FALLBACK_FLAG, FALLBACK, "--ttl", ttl), 2, "invalid TTL")
    assert memory.flag_history(FALLBACK_FLAG) == []


@pytest.mark.parametrize(
    ("concurrency", "message"), [("0", "must be at least 1"), ("99", "1 to 8")]
)
def test_bad_concurrency_is_refused(memory, concurrency, message):
    result = ctl("retry", "--status", "failed", "--concurrency", concurrency)
    assert_error(result, 2, message)
    assert failed_ids(memory) == ["j-fail-1", "j-fail-2", "j-fail-3"]
    assert memory.audit_log() == []


def test_unknown_status_lists_the_statuses(memory):
    for result in (ctl("list", "--status", "broken"), ctl("retry", "--status", "broken")):
        assert_error(result, 2, "unknown status 'broken' (statuses: queued, running, succeeded")
    assert failed_ids(memory) == ["j-fail-1", "j-fail-2", "j-fail-3"]


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--limit", "0"),
        ("retry", "--status", "failed", "--limit", "0"),
        ("audit", "--limit", "-3"),
        ("show", "--job", "j-fail-1", "--logs", "0"),
    ],
)
def test_limits_below_one_are_refused(memory, args):
    assert_error(ctl(*args), 2, "must be at least 1")
    assert failed_ids(memory) == ["j-fail-1", "j-fail-2", "j-fail-3"]


def test_non_numbers_are_refused_by_click(memory):
    result = ctl("list", "--limit", "many")
    assert result.exit_code == 2 and "Error: Invalid value for '--limit'" in result.stderr


def test_retry_needs_jobs_or_a_status_but_not_both(memory):
    assert_error(ctl("retry"), 2, "give either --job")
    assert_error(ctl("retry", "--job", "j-fail-1", "--status", "failed"), 2, "not both")
    assert memory.audit_log() == []


@pytest.mark.parametrize("when", ["yesterday", "2024-13-01", "0m"])
def test_bad_times_are_refused(memory, when):
    assert_error(ctl("list", "--since", when), 2, "invalid time")


def test_windows_must_run_forward(memory):
    assert_error(ctl("stats", "counts", "--since", "1h", "--until", "2h"), 2, "must be before")


@pytest.mark.parametrize(
    "args",
    [
        ("show", "--job", "nope"),
        ("manifest", "--job", "nope"),
        ("verify", "--job", "nope"),
        ("update", "--job", "nope", "--chunk-size", "50MB"),
        ("retry", "--job", "nope"),
    ],
)
def test_unknown_jobs_are_not_found(memory, args):
    assert_error(ctl(*args), 3, "Error: job 'nope' not found")
    assert memory.audit_log() == []


def test_unknown_flags_and_unset_flags(memory):
    assert_error(flags("get", FALLBACK_FLAG), 3, f"flag '{FALLBACK_FLAG}' is not set")
    assert_error(flags("unset", FALLBACK_FLAG), 3, "is not set")
    assert_error(flags("set", "export.typo", "1"), 2, "unknown flag 'export.typo'")
    assert_error(flags("get", "bad key"), 2, "invalid flag key 'bad key'")


def test_precondition_and_storage_errors_keep_their_exit_codes(memory):
    result = flags("set", FALLBACK_FLAG, "no-such-bucket", "--ttl", "30m")
    assert_error(result, 4, "bucket 'no-such-bucket' does not exist")
    assert_error(ctl("manifest", "--job", "j-slow-1"), 6, "SlowDown")


def test_errors_with_json_output_print_an_error_document(memory):
    result = ctl("show", "--job", "nope", "--output", "json")
    assert result.exit_code == 3
    assert json.loads(result.stdout) == {
        "apiVersion": "exportnb.dev/v1",
        "kind": "Error",
        "error": {"type": "NotFound", "message": "job 'nope' not found", "exitCode": 3},
    }
    assert result.stderr == "Error: job 'nope' not found\n"
    storage = json.loads(ctl("manifest", "--job", "j-slow-1", "-o", "json").stdout)
    assert storage["error"] | {"message": ""} == {
        "type": "StorageError",
        "message": "",
        "exitCode": 6,
        "code": "SlowDown",
        "status": 503,
    }


def test_table_errors_print_nothing_on_stdout(memory):
    result = ctl("show", "--job", "nope")
    assert result.stdout == ""


# Help -------------------------------------------------------------------------------
def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = [(exportctl.exportctl, path) for path in _commands(exportctl.exportctl)] + [
    (featurectl.featurectl, path) for path in _commands(featurectl.featurectl)
]


@pytest.mark.parametrize(
    ("group", "path"), COMMANDS, ids=[f"{g.name} {' '.join(p)}".strip() for g, p in COMMANDS]
)
def test_every_command_has_help(group, path):
    result = run(group, *path, "--help")
    assert result.exit_code == 0
    command: click.Command = group
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help and len(command.help) > 15
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
            assert param.opts[-1] in result.stdout


def test_the_runbook_commands_and_options_exist():
    for args in (
        ("list", "--status", "failed", "--limit", "20"),
        ("verify", "--job", "x"),
        ("retry", "--status", "failed", "--limit", "20", "--concurrency", "2"),
        ("update", "--job", "x", "--chunk-size", "50MB"),
    ):
        ctx = exportctl.exportctl.make_context("exportctl", list(args), resilient_parsing=True)
        name, command, rest = exportctl.exportctl.resolve_command(ctx, list(args))
        assert command is not None
        command.make_context(name, rest)  # parses without usage errors
    sub = featurectl.featurectl.commands["set"]
    sub.make_context("set", [FALLBACK_FLAG, "b", "--ttl", "30m"])
