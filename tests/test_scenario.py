"""Scenarios: the built-in ones, files written by users, and files that cannot be used."""

import json
import re
from pathlib import Path

import pytest

from exportnb.core.errors import InvalidInput, NotFound
from exportnb.sandbox.scenario import builtin_scenarios, describe, load_scenario

REQUIRED = {
    "default",
    "throttled-bucket",
    "large-chunk-timeouts",
    "customer-checksums",
    "stuck-jobs",
    "mixed",
}

OWN_WORLD = """
description = "A tiny world of my own"
seed = 42
days = 2
volume = 1000
baseline_success = 0.99
export_bucket = "main"
fallback_bucket = "spare"
latency_slo = "90s"
running_sla = "10m"
tenants = [
    { id = "t1", name = "Tenant One", tier = "enterprise", weight = 3 },
    { id = "t2", name = "Tenant Two", tier = "starter" },
]
connectors = [
    { name = "s3" },
    { name = "kafka", family = "stream", weight = 2 },
]
buckets = [
    { name = "main", role = "primary", region = "eu-central-1" },
    { name = "spare", role = "fallback", region = "eu-west-1" },
]
chunk_sizes = [
    { size = "16MB" },
    { size = "512MiB", weight = 0.5, connectors = ["kafka"] },
]

[throughput]
bytes_per_second = "10MB"
overhead = 0

[incident]
minutes = 20
reported_jobs = 2
faults = [
    { kind = "throttle", buckets = ["main"] },
    { kind = "corrupt", tenants = ["t2"], rate = 0.5 },
]
"""


def write(tmp_path, text, name="world.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path, text, name="bad.toml"):
    with pytest.raises(InvalidInput) as caught:
        load_scenario(str(write(tmp_path, text, name)))
    return caught.value.message


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_every_builtin_scenario_loads(name):
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.description
    assert scenario.export_bucket == "exports-primary"
    assert scenario.fallback_bucket == "exports-fallback"
    assert (scenario.days, scenario.volume, scenario.baseline_success) == (7, 50_000, 0.995)
    assert name in describe(scenario)


def test_the_runbook_scenarios_are_built_in_and_described():
    found = builtin_scenarios()
    assert set(found) >= REQUIRED
    assert all(found.values())


def test_builtin_scenarios_carry_their_faults():
    kinds = {n: [f.kind for f in load_scenario(n).incident.faults] for n in REQUIRED}
    assert kinds["throttled-bucket"] == ["throttle"]
    assert kinds["large-chunk-timeouts"] == ["timeout"]
    assert sorted(kinds["customer-checksums"]) == ["corrupt", "missing"]
    assert kinds["stuck-jobs"] == ["stuck"]
    assert sorted(kinds["mixed"]) == ["network", "throttle", "timeout"]
    assert load_scenario("default").incident == load_scenario("throttled-bucket").incident


def test_throttle_hits_the_export_bucket():
    scenario = load_scenario("throttled-bucket")
    assert scenario.incident.faults[0].params["buckets"] == [scenario.export_bucket]


def test_large_chunk_timeouts_split_the_chunk_sizes():
    scenario = load_scenario("large-chunk-timeouts")
    threshold = scenario.incident.faults[0].params["min_chunk"]
    sizes = {c.size for c in scenario.chunk_sizes}
    assert {s for s in sizes if s >= threshold} == {128 * 2**20, 256 * 2**20}
    assert {s for s in sizes if s < threshold} == {32 * 2**20, 64 * 2**20}
    assert [c.size for c in scenario.chunk_choices("s3")] == [32 * 2**20, 64 * 2**20, 128 * 2**20]
    assert max(c.size for c in scenario.chunk_choices("snowflake")) == 256 * 2**20


def test_customer_checksums_reports_jobs():
    scenario = load_scenario("customer-checksums")
    assert scenario.incident.reported_jobs == 3
    tenants = {t for f in scenario.incident.faults for t in f.params["tenants"]}
    assert tenants == {"globex", "initech"}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(NotFound) as caught:
        load_scenario("no-such-scenario")
    assert "throttled-bucket" in caught.value.message
    assert "no-such-scenario" in caught.value.message


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        load_scenario(str(tmp_path / "absent.toml"))


def test_a_toml_file_with_its_own_world(tmp_path):
    scenario = load_scenario(str(write(tmp_path, OWN_WORLD)))
    assert scenario.name == "world"
    assert [t.id for t in scenario.tenants] == ["t1", "t2"]
    assert {c.name: c.family for c in scenario.connectors} == {"s3": "object", "kafka": "stream"}
    assert (scenario.export_bucket, scenario.fallback_bucket) == ("main", "spare")
    assert scenario.bucket("main").weight == 1.0 and scenario.bucket("spare").weight == 0.0
    assert [c.size for c in scenario.chunk_choices("s3")] == [16_000_000]
    assert scenario.throughput.bytes_per_second == 10_000_000
    assert scenario.throughput.overhead == 0.0
    assert (scenario.latency_slo, scenario.running_sla) == (90.0, 600.0)
    assert scenario.incident.minutes == 20 and scenario.incident.reported_jobs == 2
    assert scenario.incident.faults[1].params["rate"] == 0.5
    assert scenario.jobs_per_minute == pytest.approx(1000 / 2880)


def test_a_json_file(tmp_path):
    raw = {
        "name": "from-json",
        "seed": 3,
        "volume": 10,
        "tenants": [{"id": "a", "name": "A"}],
        "connectors": [{"name": "sftp"}],
        "buckets": [{"name": "b", "role": "primary"}],
        "chunk_sizes": [{"size": 64_000_000}],
        "incident": {"faults": [{"kind": "timeout", "min_chunk": "32MB", "buckets": ["b"]}]},
    }
    scenario = load_scenario(str(write(tmp_path, json.dumps(raw), "world.json")))
    assert scenario.name == "from-json"
    assert scenario.connectors[0].family == "file-transfer"
    assert scenario.fallback_bucket is None
    assert scenario.incident.faults[0].params == {
        "buckets": ["b"],
        "min_chunk": 32_000_000,
        "hold": 1.0,
    }


def test_a_user_file_extends_a_builtin_and_another_file(tmp_path):
    write(tmp_path, 'extends = "base"\n[incident]\nminutes = 10\n', "quiet.toml")
    path = write(
        tmp_path,
        'extends = "quiet.toml"\nvolume = 500\n'
        '[incident]\nfaults = [{ kind = "stuck", connectors = ["sftp"] }]\n',
        "mine.toml",
    )
    scenario = load_scenario(str(path))
    assert scenario.name == "mine" and scenario.description == ""
    assert scenario.volume == 500
    assert scenario.incident.minutes == 10
    assert [f.kind for f in scenario.incident.faults] == ["stuck"]
    assert len(scenario.tenants) == len(load_scenario("base").tenants)


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            '{ kind = "throttle", buckets = ["main"] }',
            '{ kind = "explode" }',
            "incident.faults[0].kind: unknown fault 'explode'",
        ),
        (
            '{ kind = "throttle", buckets = ["main"] }',
            '{ kind = "throttle", buckets = ["nope"] }',
            "incident.faults[0].buckets: 'nope' is not one of the scenario's buckets",
        ),
        (
            'tenants = ["t2"]',
            'tenants = ["t9"]',
            "incident.faults[1].tenants: 't9' is not one of the scenario's tenants",
        ),
        ('{ size = "16MB" }', '{ size = "big" }', "chunk_sizes[0].size: invalid size 'big'"),
        ("volume = 1000", "volume = 0", "volume: must be greater than 0"),
        ("volume = 1000", 'volume = "many"', "volume: must be a whole number"),
        ('role = "fallback"', 'role = "backup"', "buckets[1].role: must be one of"),
        ('{ id = "t2"', '{ id = "t1"', "tenants: id must be unique; repeated: t1"),
        (
            '{ name = "kafka", family = "stream", weight = 2 }',
            '{ name = "kafka" }',
            "connectors[1].family: is required",
        ),
        ("rate = 0.5", "rate = 2", "incident.faults[1]: fault corrupt: rate must be"),
        ("minutes = 20", "minutes = 20\nhours = 1", "incident: unknown key(s) hours"),
        ('export_bucket = "main"', 'export_bucket = "other"', "export_bucket: 'other' is not"),
        (
            'connectors = ["kafka"]',
            'connectors = ["flink"]',
            "chunk_sizes[1].connectors: unknown connector 'flink'",
        ),
        ("overhead = 0", 'overhead = "soon"', "throughput.overhead: invalid TTL 'soon'"),
    ],
)
def test_bad_files_name_the_file_and_the_field(tmp_path, replace, by, expected):
    assert replace in OWN_WORLD
    message = error_for(tmp_path, OWN_WORLD.replace(replace, by, 1))
    assert "bad.toml" in message
    assert expected in message


def test_reported_jobs_need_a_checksum_fault(tmp_path):
    text = OWN_WORLD.replace('{ kind = "corrupt", tenants = ["t2"], rate = 0.5 },', "")
    assert "reported_jobs: needs a corrupt or missing fault" in error_for(tmp_path, text)


def test_malformed_toml_and_json(tmp_path):
    assert "not valid TOML" in error_for(tmp_path, "volume = = 3")
    assert "not valid JSON" in error_for(tmp_path, "{volume: 3", "bad.json")
    assert "table of keys" in error_for(tmp_path, "[1, 2]", "bad.json")


def test_extends_loop_is_refused(tmp_path):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    with pytest.raises(InvalidInput, match="loop"):
        load_scenario(str(tmp_path / "a.toml"))


def test_other_suffixes_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match=r"\.toml or \.json"):
        load_scenario(str(write(tmp_path, OWN_WORLD, "world.yaml")))


def test_the_examples_in_the_docs_load(tmp_path):
    docs = Path(__file__).parent.parent / "docs" / "scenarios.md"
    examples = re.findall(r"```toml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert len(examples) == 2
    full = load_scenario(str(write(tmp_path, examples[0], "full.toml")))
    assert full.name == "acme-eu-incident" and len(full.incident.faults) == 3
    short = load_scenario(str(write(tmp_path, examples[1], "short.toml")))
    assert short.incident.minutes == 60
