"""``exportnb mitigate`` and ``exportnb journal`` against the real sandbox."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from conftest import exportnb_cmd

from exportnb.cli import main
from exportnb.cli.mitigate import mitigate
from exportnb.mitigation import registry
from exportnb.mitigation.journal import journal_path, read_journal
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG


def cli(*args: str, answer: str | None = None):
    return CliRunner().invoke(
        main, list(args), input=answer, env={"EXPORTNB_OPERATOR": "cli-operator"}
    )


def test_every_command_has_help():
    context = click.Context(mitigate)
    names = mitigate.list_commands(context)
    assert names == sorted(registry.names())  # one subcommand per registered mitigation
    for name in names:
        command = mitigate.get_command(context, name)
        assert command is not None and command.help and command.help.strip(), name
        result = cli("mitigate", name, "--help")
        assert result.exit_code == 0 and "--incident" in result.output
    assert "mitigate" in cli("--help").output and "journal" in cli("--help").output


def test_yes_applies_once_and_a_second_run_does_nothing(sandbox):
    try:
        first = cli("mitigate", "pause-bulk", "--incident", "INC-cli", "--yes")
        assert first.exit_code == 0, first.output
        assert "exportctl pause bulk" in first.output and "Applied:" in first.output
        second = cli("mitigate", "pause-bulk", "--incident", "INC-cli", "--yes")
        assert second.exit_code == 0 and "Already applied" in second.output
        flag = sandbox.platform().get_flag(BULK_PAUSE_FLAG)
        assert flag.set_by == "cli-operator"
    finally:
        sandbox.platform().resume_bulk(actor="test")


def test_answering_no_at_the_prompt_cancels(sandbox):
    result = cli("mitigate", "pause-bulk", "--incident", "INC-no", answer="n\n")
    assert result.exit_code == 1
    assert "Apply pause-bulk? [y/N]" in result.stderr and "Cancelled" in result.stdout
    assert sandbox.platform().get_flag(BULK_PAUSE_FLAG) is None
    assert [(e.kind, e.outcome) for e in read_journal("INC-no")] == [
        ("plan", "planned"),
        ("skip", "cancelled"),
    ]


def test_answering_yes_at_the_prompt_applies(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    try:
        result = cli(
            "mitigate",
            "fallback-bucket",
            "--incident",
            "INC-yes",
            "--bucket",
            fallback,
            "--ttl",
            "10m",
            answer="y\n",
        )
        assert result.exit_code == 0, result.output
        assert sandbox.platform().get_flag(FALLBACK_FLAG).value == fallback
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)


def test_json_prints_the_outcome_with_its_plan(sandbox):
    submit = exportnb_cmd("sandbox", "submit", "--json", "--size", "10MB", "--chunk-size", "256MB")
    (job_id,) = json.loads(sandbox.run(*submit, check=True).stdout)
    result = cli(
        "mitigate",
        "chunk-size",
        "--incident",
        "INC-json",
        "--job",
        job_id,
        "--chunk-size",
        "50MB",
        "--yes",
        "--json",
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "applied" and outcome["result"]["ok"] is True
    assert outcome["plan"]["commands"] == [f"exportctl update --job {job_id} --chunk-size 50MB"]
    assert outcome["result"]["changes"][0] == {
        "kind": "chunk_size",
        "target": job_id,
        "old": 256_000_000,
        "new": 50_000_000,
    }
    assert "chunk-size for INC-json" in result.stderr  # the plan, off stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["fallback-bucket", "--bucket", "exports-fallback", "--ttl", "0"], 2, "TTL"),
        (["fallback-bucket", "--bucket", "exports-fallback", "--ttl", "48h"], 2, "max_flag_ttl"),
        (["fallback-bucket", "--bucket", "missing-bucket"], 4, "does not exist"),
        (["retry", "--status", "failed", "--concurrency", "9"], 2, "max_retry_concurrency"),
        (["retry", "--job", "job-nope"], 3, "job-nope"),
        (["chunk-size", "--job", "job-nope"], 3, "not found"),
        (["chunk-size"], 2, "needs the job"),
        (["resume-bulk"], 4, "not paused"),
    ],
)
def test_refusals_exit_with_their_code_and_change_nothing(sandbox, args, code, words):
    before = sandbox.platform().list_flags()
    result = cli("mitigate", *args, "--incident", "INC-refused", "--yes")
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and words in result.stderr
    assert "Traceback" not in result.output
    assert sandbox.platform().list_flags() == before


def test_journal_prints_entries_and_refuses_a_broken_one(sandbox):
    cli("mitigate", "pause-bulk", "--incident", "INC-jr", answer="n\n")
    table = cli("journal", "INC-jr")
    assert table.exit_code == 0 and "hash chain verified" in table.output
    assert "cancelled" in table.output and "cli-operator" in table.output
    entries = json.loads(cli("journal", "INC-jr", "--json").stdout)
    assert [e["kind"] for e in entries] == ["plan", "skip"] and entries[0]["seq"] == 1
    assert cli("journal", "INC-empty").output.startswith("No journal entries")
    assert cli("journal", "../x").exit_code == 2
    path = journal_path("INC-jr")
    path.write_text(path.read_text().replace("cli-operator", "someone-else", 1))
    broken = cli("journal", "INC-jr")
    assert broken.exit_code == 4 and "broken at line 1" in broken.stderr


def test_a_real_subprocess_applies_and_reverts(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    try:
        applied = sandbox.run(
            *exportnb_cmd(
                "mitigate",
                "fallback-bucket",
                "--incident",
                "INC-7",
                "--bucket",
                fallback,
                "--ttl",
                "30m",
                "--yes",
                "--json",
            )
        )
        assert applied.returncode == 0, applied.stderr
        outcome = json.loads(applied.stdout)
        assert outcome["status"] == "applied" and outcome["result"]["operator"] == "test-operator"
        assert outcome["plan"]["commands"] == [
            f"featurectl set export.fallback_bucket {fallback} --ttl 30m"
        ]
        history = json.loads(
            sandbox.run(
                "featurectl", "history", FALLBACK_FLAG, "--output", "json", check=True
            ).stdout
        )["items"]
        assert history[-1]["reason"] == f"INC-7 fallback-bucket {outcome['key'][:12]}"
        reverted = sandbox.run(*exportnb_cmd("mitigate", "revert", "--incident", "INC-7", "--yes"))
        assert reverted.returncode == 0, reverted.stderr
        assert "featurectl unset export.fallback_bucket" in reverted.stdout
        assert sandbox.run("featurectl", "get", FALLBACK_FLAG).returncode == 3
        again = sandbox.run(*exportnb_cmd("mitigate", "revert", "--incident", "INC-7", "--yes"))
        assert again.returncode == 4 and "changed nothing" in again.stderr
    finally:
        sandbox.run("featurectl", "unset", FALLBACK_FLAG)
