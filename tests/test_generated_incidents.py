"""Generated incidents: the scenario generator, the ground truth the sandbox records, the
scorer, and the diagnosis (the template, run under papermill) judged on a handful of
generated incidents against the targets.

The targets are the diagnosis's, not this file's: where the diagnosis misses one, the test
says which incident, which figure and why, and stays as it is until the diagnosis does
better."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import exportnb_cmd, need, start_sandbox

from exportnb.core.codec import encode
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import (
    FAILURE_RATE_HIGH,
    FAILURES_CONCENTRATED,
    PERMISSION_DENIED,
    THROTTLING,
    Finding,
)
from exportnb.incident.steps.checksums import verify_jobs
from exportnb.platform.registry import local_environment
from exportnb.record.model import Record
from exportnb.run.runner import run
from exportnb.sandbox.cli import sandbox as sandbox_cli
from exportnb.sandbox.faults import FAULT_KINDS
from exportnb.sandbox.generate import MAX_FAULTS, generate, save
from exportnb.sandbox.history import expected_jobs
from exportnb.sandbox.scenario import Scenario, load_scenario
from exportnb.sandbox.scoring import Summary, score
from exportnb.sandbox.state import read_state
from exportnb.sandbox.store import Store
from exportnb.sandbox.truth import Truth, truth_of

# The generator ------------------------------------------------------------------------

MANY_SEEDS = range(150)


def loaded(tmp_path: Path, seed: int, **options) -> tuple[str, Scenario]:
    generated = generate(seed, **options)
    path = save(generated, tmp_path / f"{generated.name}.toml")
    return generated.text, load_scenario(str(path))


def test_the_same_seed_gives_the_same_file_byte_for_byte():
    for seed in (0, 1, 7, 42, 2**40):
        assert generate(seed).text == generate(seed).text
        assert generate(seed, faults=2).text == generate(seed, faults=2).text
    assert len({generate(seed).text for seed in range(20)}) == 20


def test_generated_worlds_load_and_every_fault_can_strike(tmp_path):
    counts = set()
    for seed in MANY_SEEDS:
        _, scenario = loaded(tmp_path, seed)
        faults = scenario.incident.faults
        kinds = [f.kind for f in faults]
        counts.add(len(kinds))
        assert len(set(kinds)) == len(kinds) <= MAX_FAULTS, seed
        used = {b.name for b in scenario.buckets if b.weight > 0}
        sizes = sorted({c.size for c in scenario.chunk_sizes})
        for fault in faults:
            if fault.kind == "throttle":
                assert used & set(fault.params["buckets"]), (seed, "throttles no used bucket")
            if fault.kind == "timeout":
                limit = fault.params["min_chunk"]
                assert any(a < limit <= b for a, b in itertools.pairwise(sizes)), seed
                assert not fault.params.get("buckets") or used & set(fault.params["buckets"])
            if fault.kind in ("corrupt", "missing", "stuck"):
                assert 0.2 <= fault.params["rate"] <= 1.0
                assert not fault.params.get("buckets") or used & set(fault.params["buckets"])
            if fault.kind == "network":
                assert fault.params["latency"] >= 0.15  # well above the 100ms threshold
        assert scenario.incident.reported_jobs == 0 or {"corrupt", "missing"} & set(kinds)
        assert _busiest_window(scenario) <= 130, (seed, "too many jobs for a quick start")
    assert counts == {0, 1, 2, 3}


def _busiest_window(scenario: Scenario) -> float:
    """Jobs the incident window holds at the busiest hour (14:00 UTC)."""
    peak = datetime(2024, 6, 11, 14, tzinfo=UTC).timestamp()
    half = scenario.incident.minutes * 30
    return expected_jobs(scenario, peak - half, peak + half)


def test_the_number_of_faults_and_controls_can_be_asked_for(tmp_path):
    for seed in range(40):
        for count in range(MAX_FAULTS + 1):
            _, scenario = loaded(tmp_path, seed, faults=count)
            assert len(scenario.incident.faults) == count, (seed, count)
        text, scenario = loaded(tmp_path, seed, control=True)
        assert scenario.incident.faults == () and "healthy control" in text
    every = {kind for seed in range(40) for kind in generate(seed, faults=3).kinds}
    assert every == set(FAULT_KINDS)


def cli(*args: str):
    return CliRunner().invoke(sandbox_cli, ["generate", *args])


def test_the_generate_command_writes_the_file_or_prints_it(tmp_path):
    out = tmp_path / "game-day.toml"
    done = cli("--seed", "12", "--out", str(out), "--faults", "2")
    assert done.exit_code == 0, done.output
    assert out.read_text() == generate(12, faults=2).text
    assert "generated-12" in done.output
    printed = cli("--seed", "12", "--faults", "2")
    assert printed.exit_code == 0 and printed.stdout == out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed must be a whole number"),
        (["--seed", "ten"], "--seed must be a whole number"),
        (["--seed", "1.5"], "--seed must be a whole number"),
        (["--seed", str(2**63)], "the seed must be a whole number from 0"),
        (["--seed", "3", "--faults", "4"], "--faults must be a whole number from 0 to 3"),
        (["--seed", "3", "--faults", "-1"], "--faults must be a whole number from 0 to 3"),
        (["--seed", "3", "--faults", "2", "--control"], "a control has no faults"),
        (["--seed", "3", "--out", "{tmp}/no/such/folder/x.toml"], "cannot write it"),
        (["--seed", "3", "--out", "{tmp}/folder.toml"], "is a folder"),
        (["--seed", "3", "--out", "{tmp}/scenario.txt"], "must end in .toml"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, args, message):
    (tmp_path / "folder.toml").mkdir()
    kept = tmp_path / "kept.toml"
    kept.write_text("# an older file\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    runs = [args] if "--out" in args else [args, [*args, "--out", str(kept)]]
    for argv in runs:
        done = cli(*argv)
        assert done.exit_code == 2, done.output
        assert done.stderr.startswith("Error: ") and message in done.stderr
        assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert kept.read_text() == "# an older file\n"


def test_the_library_refuses_bad_seeds_and_counts():
    for seed in (-1, True, 1.0, "1"):
        with pytest.raises(InvalidInput, match="seed"):
            generate(seed)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="faults"):
        generate(1, faults=MAX_FAULTS + 1)


def test_a_generated_file_starts_a_sandbox_quickly(tmp_path):
    generated = generate(31, faults=3)  # throttle, timeout, corrupt: the slowest to replay
    path = save(generated, tmp_path / f"{generated.name}.toml")
    began = time.monotonic()
    box = start_sandbox(tmp_path / "home", str(path))
    took = time.monotonic() - began
    box.run(*exportnb_cmd("sandbox", "down"))
    assert took < 20, f"sandbox up took {took:.1f}s"


# The scorer, on records made by hand ----------------------------------------------------


def bundle(step: str, kind: str, result: dict, *, legacy: bool = False) -> dict:
    named = {"type": kind} if legacy else {"kind": kind, "type": "?"}
    return {"cell_index": 0, "schema": 2, "step": step, **named, "result": result}


def finding(code: str, **evidence) -> dict:
    return encode(Finding(code, "critical", code, "test", evidence))


def record_of(*bundles: dict, status: str = "succeeded") -> Record:
    now = datetime.now(UTC)
    return Record(
        "INC-T/1", "INC-T", status, now, now, 0.0, "t", "nb", [], {}, None, {}, {}, list(bundles)
    )


def truth(**fields) -> Truth:
    return Truth(known_buckets=frozenset({"main", "eu", "dr"}), **fields)


def test_finding_codes_name_fault_kinds_through_the_table():
    record = record_of(
        bundle(
            "storage_health",
            "storage-health/v1",
            {"findings": [finding(THROTTLING, buckets=["eu"])]},
        ),
        bundle(
            "job_state",
            "JobState",
            {
                "findings": [
                    finding(FAILURES_CONCENTRATED, dimension="error_code", value="RequestTimeout"),
                    finding(FAILURE_RATE_HIGH),
                    finding(PERMISSION_DENIED, buckets=["main"]),
                ]
            },
            legacy=True,
        ),
    )
    scored = score(record, truth(kinds=frozenset({"throttle", "stuck"}), buckets=frozenset({"eu"})))
    assert scored.named_causes == {"throttle", "timeout", "storage-access"}
    assert scored.cause_recall == 0.5 and scored.cause_precision == pytest.approx(1 / 3)
    assert scored.scope["buckets"].recall == 1.0 and scored.scope["buckets"].precision == 0.5
    assert "missed cause(s) stuck" in scored.verdict()


def test_impact_counts_the_damaged_deliveries_a_record_lists():
    from exportnb.sandbox.truth import Delivery

    damaged = tuple(
        Delivery(f"job-{n}", 1, "acme", "s3", "main", ("corrupt",), (f"s3://main/k{n}",))
        for n in range(4)
    )
    key = "exports/acme/job-0/attempt-1/part-00001.bin"
    checks = {
        "jobs": [
            {"job_id": "job-0", "state": "failed", "bucket": "main", "mismatched": [key]},
            {"job_id": "job-1", "state": "passed", "bucket": "main"},
            {"job_id": "job-2", "state": "failed", "bucket": "main", "missing": []},
        ]
    }
    record = record_of(bundle("checksums", "checksum-report/v1", {**checks, "findings": []}))
    scored = score(record, truth(kinds=frozenset({"corrupt"}), damaged=damaged))
    assert (scored.damaged, scored.damaged_listed, scored.sweep_capped) == (4, 2, False)
    assert scored.impact_recall == 0.5 and "listed 2 of 4 damaged deliveries" in scored.misses()
    key_of_another_attempt = key.replace("attempt-1", "attempt-2")
    checks["jobs"][0]["mismatched"] = [key_of_another_attempt]
    record = record_of(bundle("checksums", "ChecksumReport", checks, legacy=True))
    assert score(record, truth(damaged=damaged)).damaged_listed == 1


def test_recommended_values_that_would_not_have_worked_are_invalid():
    plan = {
        "recommendations": [
            {"action": "chunk-size", "params": {"job_ids": ["job-1"], "chunk_size": 50_000_000}},
            {"action": "fallback-bucket", "params": {"bucket": "dr", "ttl": "30m"}},
            {"action": "investigate", "params": {}},
        ],
        "findings": [],
    }
    record = record_of(bundle("assessment", "assessment/v1", plan))
    struck = truth(
        kinds=frozenset({"timeout", "throttle"}),
        timed_out={"main": (64 * 2**20,)},
        timed_out_jobs={"job-1": "main"},
        timeout_limits={"main": 40 * 2**20},
        throttled=frozenset({"eu", "dr"}),
    )
    invalid = score(record, struck).invalid
    assert len(invalid) == 2 and "40MiB" in invalid[0] and "dr" in invalid[1]
    fine = truth(
        kinds=frozenset({"timeout"}),
        timed_out={"main": (256 * 2**20,)},
        timeout_limits={"main": 100 * 2**20},
        timed_out_jobs={"job-1": "main"},
    )
    assert score(record, fine).invalid == ()
    control = score(record, truth())
    assert control.control and control.control_mitigations == ("chunk-size", "fallback-bucket")


# Ground truth, from a sandbox's own records ----------------------------------------------

HAND_MADE = """
extends = "base"
description = "truth test: four faults strike, one is scoped to a bucket no job writes to"
volume = 20000
days = 1
[incident]
minutes = 10
faults = [
    { kind = "throttle", buckets = ["exports-eu"] },
    { kind = "timeout", min_chunk = "100MiB", hold = "50ms", buckets = ["exports-primary"] },
    { kind = "corrupt", tenants = ["acme", "globex"], rate = 1.0 },
    { kind = "missing", buckets = ["exports-fallback"] },
    { kind = "stuck", connectors = ["sftp", "bigquery"], rate = 1.0 },
]
"""


def window_jobs(store: Store) -> dict[str, tuple]:
    """The incident window's jobs (replayed before the sandbox was ready): id -> row."""
    rows = store.db.execute(
        "SELECT id, status, error_code, bucket FROM jobs WHERE created_at >= ? AND created_at < ?",
        (store.get_meta("incident_start"), store.get_meta("seeded_at")),
    )
    return {row[0]: row for row in rows}


def test_truth_is_what_the_worker_and_proxy_recorded(tmp_path):
    scenario = tmp_path / "hand-made.toml"
    scenario.write_text(HAND_MADE)
    box = start_sandbox(tmp_path / "home", str(scenario))
    try:
        store = Store(Path(read_state(box.home).store))
        jobs = window_jobs(store)
        found = truth_of(box.home)

        def struck(kind: str) -> set[str]:
            return set(found.struck.get(kind, ())) & set(jobs)

        def failed_with(code: str) -> set[str]:
            return {j for j, row in jobs.items() if row[1] == "failed" and row[2] == code}

        # what struck: the missing fault was injected, but no job writes to the fallback
        assert found.kinds == {"throttle", "timeout", "corrupt", "stuck"}
        assert struck("throttle") == failed_with("SlowDown")
        assert {jobs[j][3] for j in struck("throttle")} == {"exports-eu"}
        assert struck("timeout") == failed_with("RequestTimeout")
        assert found.timeout_limits == {"exports-primary": 100 * 2**20}
        assert min(found.timed_out["exports-primary"]) >= 100 * 2**20
        assert min(found.succeeded["exports-primary"]) < 100 * 2**20
        assert struck("stuck") == {j for j, row in jobs.items() if row[1] == "running"}
        assert "exports-eu" in found.throttled and "exports-fallback" not in found.buckets
        # the damaged deliveries are exactly those whose stored segments fail verification
        delivered = [j for j, row in jobs.items() if row[1] == "succeeded"]
        report = verify_jobs(box.platform(), delivered)
        failing = {j.job_id: set(j.files) for j in report.jobs if j.state == "failed"}
        damaged = [d for d in found.damaged if d.job_id in jobs]
        assert failing == {d.job_id: set(d.uris) for d in damaged} and damaged
        assert {d.tenant for d in damaged} <= {"acme", "globex"}
        assert all(d.kinds == ("corrupt",) for d in damaged)
        # before the incident nothing had struck
        assert truth_of(box.home, until=store.get_meta("incident_start") - 1).control
        store.close()
    finally:
        box.run(*exportnb_cmd("sandbox", "down"))


# The diagnosis on generated incidents -----------------------------------------------------


@dataclass(frozen=True)
class Incident:
    seed: int
    faults: int | None = None
    control: bool = False


INCIDENTS = (
    Incident(1, control=True),
    Incident(31, faults=3),  # throttle, timeout, corrupt
    Incident(18, faults=3),  # throttle, missing, stuck
    Incident(7, faults=3),  # corrupt, stuck, network
    Incident(9, faults=3),  # timeout, missing, network
)
"""Fixed seeds: a healthy control and four incidents that between them have every kind of
fault, corrupt and missing segments among them."""


def diagnose(tmp_path: Path, incident: Incident):
    generated = generate(incident.seed, faults=incident.faults, control=incident.control)
    folder = tmp_path / generated.name
    folder.mkdir()
    path = save(generated, folder / f"{generated.name}.toml")
    box = start_sandbox(folder / "home", str(path))
    try:
        found = local_environment(box.home)
        assert found is not None
        env, defaults = found
        record = run(
            incident_id=f"INC-{generated.name}",
            env=env,
            defaults=defaults,
            archive=str(tmp_path / "archive"),
            cell_timeout=300,
        )
        assert record.status == "succeeded", (generated.name, record.error)
        truth_then = truth_of(box.home, until=record.started_at.timestamp())
        return score(record, truth_then, scenario=generated.name)
    finally:
        box.run(*exportnb_cmd("sandbox", "down"))


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> Iterator[list]:
    need(shutil.which("mtr") is not None, "mtr is not installed (make test installs mtr-tiny)")
    folder = tmp_path_factory.mktemp("generated")
    found = [diagnose(folder, incident) for incident in INCIDENTS]
    print("\n".join(s.verdict() for s in found))
    yield found


def test_the_incidents_are_what_they_were_generated_to_be(scores):
    controls = [s for s in scores if s.control]
    assert [s.scenario for s in controls] == ["generated-1"]
    assert any(s.damaged for s in scores), "no incident delivered corrupt or missing segments"
    assert set().union(*(s.true_causes for s in scores)) >= {"throttle", "timeout", "corrupt"}


@pytest.mark.xfail(
    reason="#11 open: faults that strike a few jobs, and damage no failure points to, are "
    "not yet named; benchmarks/diagnosis_accuracy.py reports the scores",
    strict=False,
)
def test_every_cause_that_struck_is_named(scores):
    missed = [s.verdict() for s in scores if s.cause_recall < 1.0]
    assert Summary(tuple(scores)).cause_recall == 1.0, "\n".join(missed)


def test_causes_named_are_right_over_the_set(scores):
    summary = Summary(tuple(scores))
    false = [s.verdict() for s in scores if s.named_causes - s.true_causes]
    assert summary.cause_precision >= 0.95, "\n".join(false)


@pytest.mark.xfail(
    reason="#11 open: faults that strike a few jobs, and damage no failure points to, are "
    "not yet named; benchmarks/diagnosis_accuracy.py reports the scores",
    strict=False,
)
def test_every_damaged_delivery_is_listed_where_the_sweep_is_not_capped(scores):
    short = [
        f"{s.verdict()} (missed {', '.join(s.missed_deliveries)})"
        for s in scores
        if s.impact_recall is not None and s.impact_recall < 1.0 and not s.sweep_capped
    ]
    assert not short, "\n".join(short)


def test_recommended_values_would_have_worked(scores):
    invalid = [f"{s.scenario}: {reason}" for s in scores for reason in s.invalid]
    assert not invalid, "\n".join(invalid)


def test_nothing_is_recommended_on_a_healthy_control(scores):
    alarms = [
        f"{s.scenario}: {', '.join(s.control_mitigations)}" for s in scores if s.control_mitigations
    ]
    assert not alarms, "\n".join(alarms)
