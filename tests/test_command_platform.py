"""The ``command`` platform driving real exportctl/featurectl processes through the contract.

The executables are tiny wrapper scripts that run ``python -m exportnb.sandbox.ctl.exportctl``
(and featurectl) on the in-memory platform, whose state is a JSON file shared by every
process. Broken executables (missing, slow, chatty, off-contract) are scripts too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from memory_platform import FALLBACK, MemoryPlatform

from exportnb.core.errors import (
    CommandError,
    ConfigError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    StorageError,
)
from exportnb.platform import get_platform
from exportnb.platform.command import CommandPlatform
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, JobQuery, StorageAccess

TESTS = Path(__file__).resolve().parent


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    path.chmod(0o755)
    return path


def wrapper(folder: Path, module: str) -> Path:
    """An executable that runs ``python -m module``, as an organisation's tool would be."""
    return script(
        folder, module.rsplit(".", 1)[1], f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n'
    )


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXPORTNB_OPERATOR", "dave")
    monkeypatch.delenv("EXPORTNB_PLATFORM", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state.json"


@pytest.fixture
def memory(state) -> MemoryPlatform:
    """The same platform the child processes use, read directly."""
    return MemoryPlatform(state)


@pytest.fixture
def platform(tmp_path, state, memory) -> CommandPlatform:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return CommandPlatform(
        exportctl=str(wrapper(bin_dir, "exportnb.sandbox.ctl.exportctl")),
        featurectl=str(wrapper(bin_dir, "exportnb.sandbox.ctl.featurectl")),
        timeout="30s",
        env={
            "EXPORTNB_CTL_PLATFORM": "memory_platform:MemoryPlatform",
            "EXPORTNB_MEMORY_STATE": str(state),
            "PYTHONPATH": str(TESTS),
        },
    )


# Reads ---------------------------------------------------------------------------
def test_reads_answer_what_the_platform_itself_answers(platform, memory):
    assert platform.info() == memory.info()
    for query in (
        JobQuery(status="failed", limit=20),
        JobQuery(
            connector="s3-parquet", tenant="acme", since=datetime.now(UTC) - timedelta(hours=1)
        ),
        JobQuery(until=datetime(2000, 1, 1, tzinfo=UTC)),
        JobQuery(bucket="exports-primary", limit=2),
    ):
        assert platform.list_jobs(query) == memory.list_jobs(query)
    assert platform.get_job("j-fail-1") == memory.get_job("j-fail-1")
    assert platform.manifest("j-ok-1") == memory.manifest("j-ok-1")
    since, until = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)
    assert platform.status_counts(since, until) == memory.status_counts(since, until)
    assert platform.latency(since, until) == memory.latency(since, until)
    assert platform.latency(since, until, per_minute=True) == memory.latency(
        since, until, per_minute=True
    )


@pytest.mark.parametrize(("job_id", "passed"), [("j-ok-1", True), ("j-bad-1", False)])
@pytest.mark.parametrize("rehash", [False, True])
def test_verify_returns_the_verification_whatever_it_found(
    platform, memory, job_id, passed, rehash
):
    found = platform.verify(job_id, rehash=rehash)
    expected = memory.verify(job_id, rehash=rehash)
    assert found.passed is passed
    assert found == replace(expected, checked_at=found.checked_at)


# Actions -------------------------------------------------------------------------
def test_retry_and_chunk_size_change_the_platform(platform, memory):
    result = platform.retry(status="failed", limit=2, concurrency=2, actor="carol", reason="INC-1")
    assert result.queued == ["j-fail-1", "j-fail-2"] and result.concurrency == 2
    assert [j.id for j in memory.list_jobs(JobQuery(status="failed"))] == ["j-fail-3"]
    named = platform.retry(job_ids=["j-fail-3", "j-run-1"])
    assert named.skipped == {"j-run-1": "already running"}
    change = platform.set_chunk_size("j-fail-3", 50_000_000, actor="carol")
    assert (change.old, change.new) == (64_000_000, 50_000_000)
    assert memory.get_job("j-fail-3").job.chunk_size == 50_000_000
    audit = platform.audit_log(limit=10)
    assert [(e.action, e.actor, e.reason) for e in audit] == [
        ("job.retry", "carol", "INC-1"),
        ("job.retry", "dave", ""),
        ("job.update", "carol", ""),
    ]
    assert platform.audit_log(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_flags_round_trip(platform, memory):
    flag = platform.set_flag(FALLBACK_FLAG, FALLBACK, ttl=1800, actor="erin", reason="INC-1")
    assert (flag.value, flag.set_by) == (FALLBACK, "erin")
    assert (flag.expires_at - flag.set_at).total_seconds() == pytest.approx(1800, abs=1)
    assert platform.get_flag(FALLBACK_FLAG) == flag == memory.get_flag(FALLBACK_FLAG)
    assert platform.list_flags() == [flag]
    platform.unset_flag(FALLBACK_FLAG, reason="recovered")
    assert platform.get_flag(FALLBACK_FLAG) is None
    history = platform.flag_history(FALLBACK_FLAG)
    assert [(e.action, e.actor, e.old, e.new and e.new["value"]) for e in history] == [
        ("flag.set", "erin", None, FALLBACK),
        ("flag.unset", "dave", FALLBACK, None),
    ]
    assert history == memory.flag_history(FALLBACK_FLAG)


def test_pause_and_resume_bulk(platform, memory):
    flag = platform.pause_bulk(reason="INC-1")
    assert (flag.key, flag.value, flag.set_by) == (BULK_PAUSE_FLAG, True, "dave")
    assert memory.get_flag(BULK_PAUSE_FLAG) is not None
    assert platform.resume_bulk() is None
    assert memory.get_flag(BULK_PAUSE_FLAG) is None


# Errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: p.get_job("nope"), NotFound, "job 'nope' not found"),
        (lambda p: p.verify("nope"), NotFound, "job 'nope' not found"),
        (lambda p: p.unset_flag(FALLBACK_FLAG), NotFound, "is not set"),
        (lambda p: p.retry(status="failed", concurrency=99), InvalidInput, "1 to 8"),
        (lambda p: p.retry(status="broken"), InvalidInput, "unknown status 'broken'"),
        (lambda p: p.set_flag("export.typo", 1, ttl=60), InvalidInput, "unknown flag"),
        (lambda p: p.set_flag(FALLBACK_FLAG, FALLBACK, ttl=0), InvalidInput, "greater than zero"),
        (lambda p: p.set_chunk_size("j-fail-1", 0), InvalidInput, "invalid size"),
        (lambda p: p.set_flag(FALLBACK_FLAG, "nope", ttl=60), PreconditionFailed, "does not exist"),
        (lambda p: p.manifest("j-slow-1"), StorageError, "SlowDown"),
    ],
)
def test_error_documents_raise_the_matching_error(platform, memory, call, error, message):
    with pytest.raises(error, match=message) as raised:
        call(platform)
    assert type(raised.value) is error
    assert memory.audit_log() == []


def test_storage_errors_keep_code_and_status(platform):
    with pytest.raises(StorageError) as raised:
        platform.verify("j-slow-1")
    assert (raised.value.code, raised.value.status) == ("SlowDown", 503)


def test_arguments_are_never_interpreted_by_a_shell(platform, tmp_path):
    hostile = "$(touch pwned); touch pwned2 `touch pwned3`"
    with pytest.raises(NotFound, match="touch pwned"):
        platform.get_job(hostile)
    assert not list(tmp_path.glob("pwned*"))


def test_operands_that_look_like_options_stay_operands(platform):
    with pytest.raises(InvalidInput, match="invalid flag key '--help'"):
        platform.get_flag("--help")


# Argument lists ----------------------------------------------------------------------
RECORDER = """#!{python}
import json, os, sys
call = {{"argv": sys.argv[1:], "operator": os.environ.get("EXPORTNB_OPERATOR")}}
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(call) + "\\n")
print(os.environ["ANSWER"])
"""


def recorded(tmp_path: Path, answer: dict, call) -> list[dict]:
    record = tmp_path / "record.jsonl"
    tool = script(tmp_path, "recorder", RECORDER.format(python=sys.executable))
    env = {"RECORD": str(record), "ANSWER": json.dumps(answer)}
    call(CommandPlatform(str(tool), str(tool), env=env))
    return [json.loads(line) for line in record.read_text().splitlines()]


EMPTY_JOBS = {"apiVersion": "exportnb.dev/v1", "kind": "JobList", "items": []}
DONE = {"apiVersion": "exportnb.dev/v1", "kind": "Done", "item": {"action": "a", "target": "t"}}


def test_argument_lists_follow_the_contract(tmp_path, state):
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    query = JobQuery(status="failed", since=at, connector="c", limit=5)
    (call,) = recorded(tmp_path, EMPTY_JOBS, lambda p: p.list_jobs(query))
    assert call == {
        "argv": [
            "list",
            "--limit=5",
            "--status=failed",
            "--connector=c",
            "--since=2024-05-01T12:00:00Z",
            "--output",
            "json",
        ],
        "operator": "dave",
    }
    (call,) = recorded(
        tmp_path / "..", DONE, lambda p: p.unset_flag("k", actor="erin", reason="why")
    )
    assert call == {
        "argv": ["unset", "--reason=why", "--output", "json", "--", "k"],
        "operator": "erin",
    }


def test_flag_values_are_passed_as_json(tmp_path, state):
    flag = {
        "key": "k",
        "value": "true",
        "set_by": "x",
        "set_at": "2024-05-01T12:00:00Z",
        "expires_at": None,
    }
    answer = {"apiVersion": "exportnb.dev/v1", "kind": "Flag", "item": flag}
    (call,) = recorded(tmp_path, answer, lambda p: p.set_flag("k", "true", ttl=90.5))
    assert call["argv"] == ["set", "--ttl=90.5s", "--output", "json", "--", "k", '"true"']


# Broken executables ------------------------------------------------------------------
def broken(tmp_path: Path, body: str, timeout: float = 30) -> CommandPlatform:
    tool = script(tmp_path, "exportctl", f"#!/bin/sh\n{body}\n")
    return CommandPlatform(str(tool), str(tool), timeout=timeout)


def test_a_missing_executable_is_a_command_error(tmp_path):
    platform = CommandPlatform(str(tmp_path / "nowhere"), str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match=r"cannot run .*nowhere info --output json"):
        platform.info()


def test_a_file_that_cannot_be_executed_is_a_command_error(tmp_path):
    text = tmp_path / "exportctl"
    text.write_text("not a program")
    with pytest.raises(CommandError, match="cannot run"):
        CommandPlatform(str(text), str(text)).info()


def test_a_slow_executable_times_out(tmp_path):
    platform = broken(tmp_path, "echo 'starting' >&2; exec sleep 10", timeout=0.5)
    with pytest.raises(CommandError, match=r"info --output json timed out after 0.5s"):
        platform.info()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "echo hello; echo 'Traceback: it broke' >&2",
            r"not a JSON document.*stderr: Traceback: it broke",
        ),
        (
            "echo 'Error: boom' >&2; exit 1",
            r"exited with 1 and printed no document \(stderr: Error: boom\)",
        ),
        (f"echo '{json.dumps(DONE)}'; exit 1", "info --output json: exited with 1"),
        (
            'echo \'{"apiVersion": "exportnb.dev/v9", "kind": "PlatformInfo", "item": {}}\'',
            "unsupported apiVersion",
        ),
        (
            "echo '" + json.dumps({**DONE, "kind": "PlatformInfo", "item": {"name": "x"}}) + "'",
            "missing field 'export_bucket'",
        ),
        (f"echo '{json.dumps(DONE)}'", "expected a document of kind PlatformInfo, got 'Done'"),
    ],
)
def test_output_outside_the_contract_is_a_command_error(tmp_path, body, message):
    with pytest.raises(CommandError, match=message):
        broken(tmp_path, body).info()


INFO = {
    "name": "acme",
    "export_bucket": "exports-primary",
    "buckets": ["exports-primary"],
    "fallback_buckets": [],
    "region": "eu-west-1",
}


def info_tool(tmp_path: Path, item: dict[str, object]) -> CommandPlatform:
    doc = {"apiVersion": "exportnb.dev/v1", "kind": "PlatformInfo", "item": item}
    return broken(tmp_path, f"echo '{json.dumps(doc)}'")


def test_an_older_exportctl_without_storage_leaves_it_to_boto3(tmp_path):
    info = info_tool(tmp_path, INFO).info()
    assert info.storage is None and info.region == "eu-west-1"


def test_the_storage_endpoint_and_region_come_from_the_tool_but_never_keys(tmp_path):
    storage = {
        "endpoint_url": "https://s3.acme.example",
        "region": "eu-west-1",
        "access_key_id": "AKIAEXAMPLE",
        "secret_access_key": "do-not-believe-me",
    }
    info = info_tool(tmp_path, {**INFO, "storage": storage}).info()
    assert info.storage == StorageAccess("https://s3.acme.example", "eu-west-1")
    assert info.storage.client_credentials() is None


def test_an_error_document_wins_over_the_exit_code(tmp_path):
    doc = {
        "apiVersion": "exportnb.dev/v1",
        "kind": "Error",
        "error": {"type": "NotFound", "message": "gone"},
    }
    with pytest.raises(NotFound, match=r"^gone$"):
        broken(tmp_path, f"echo '{json.dumps(doc)}'; exit 3").info()


# Construction --------------------------------------------------------------------------
def test_get_platform_builds_it_from_options(state):
    found = get_platform(
        "command", exportctl="/opt/acme/exportctl", featurectl="/opt/acme/featurectl", timeout="2m"
    )
    assert isinstance(found, CommandPlatform)
    assert (found.exportctl, found.timeout) == ("/opt/acme/exportctl", 120.0)


@pytest.mark.parametrize(
    "options",
    [
        {"exportctl": "", "featurectl": "f"},
        {"exportctl": "e", "featurectl": 3},
        {"exportctl": "e", "featurectl": "f", "timeout": "soon"},
        {"exportctl": "e", "featurectl": "f", "timeout": 0},
    ],
)
def test_bad_configuration_is_a_config_error(options):
    with pytest.raises(ConfigError, match=r"\[platform.command\]"):
        CommandPlatform(**options)


def test_timeouts_accept_numbers_and_durations():
    assert CommandPlatform("e", "f", timeout=5).timeout == 5.0
    assert CommandPlatform("e", "f", timeout="90").timeout == 90.0
    assert CommandPlatform("e", "f", timeout="1m30s").timeout == 90.0
