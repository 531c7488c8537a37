"""The JSON contract: every model class round-trips; bad documents are refused clearly."""

from __future__ import annotations

import dataclasses
import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from exportnb.core import codec
from exportnb.core.errors import (
    CommandError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SandboxError,
    StorageError,
)
from exportnb.platform import Platform, contract, model
from exportnb.platform.model import (
    Attempt,
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    JobQuery,
    LatencyPercentiles,
    LogLine,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Segment,
    SegmentCheck,
    StorageAccess,
    Verification,
)

AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=2)

JOB = Job(
    id="j-1",
    tenant="acme",
    connector="s3-parquet",
    bucket="exports-primary",
    kind="bulk",
    status="failed",
    attempts=2,
    chunk_size=64_000_000,
    bytes=10**9,
    created_at=AT,
    started_at=AT,
    finished_at=LATER,
    heartbeat_at=LATER,
    error_code="SlowDown",
    error_message="503 SlowDown",
    delivered_bucket=None,
)
ATTEMPT = Attempt("j-1", 1, "failed", AT, LATER, "exports-primary", 64_000_000, "SlowDown", "x")
LOG = LogLine("j-1", AT, "error", "PUT failed: SlowDown", attempt=1)
SEGMENT = Segment(0, "j-1/part-0000", 1024, "q1w2e3==")
MANIFEST = Manifest("j-1", "exports-primary", "j-1/manifest.json", 1, 1024, [SEGMENT], AT)
CHECKS = [
    SegmentCheck(0, "j-1/part-0000", "ok", "a", "a", 1024),
    SegmentCheck(1, "j-1/part-0001", "mismatch", "b", "c", 1024, "ChecksumSHA256 differs"),
    SegmentCheck(2, "j-1/part-0002", "missing", "d", detail="NoSuchKey"),
]

EXAMPLES: dict[type, Any] = {
    Job: JOB,
    Attempt: ATTEMPT,
    LogLine: LOG,
    JobDetail: JobDetail(JOB, [ATTEMPT], [LOG]),
    JobQuery: JobQuery(status="failed", since=AT, limit=5),
    Segment: SEGMENT,
    Manifest: MANIFEST,
    SegmentCheck: CHECKS[1],
    Verification: Verification("j-1", "b", "j-1/manifest.json", "checksum", CHECKS, AT),
    MinuteCount: MinuteCount(AT.replace(second=0, microsecond=0), "failed", 3),
    LatencyPercentiles: LatencyPercentiles(AT, LATER, 10, 1.5, 9.0, 12.25, minute=AT),
    Flag: Flag("export.fallback_bucket", "exports-fallback", "alice", AT, LATER),
    AuditEntry: AuditEntry(7, AT, "alice", "flag.set", "k", None, {"value": True}, "incident"),
    RetryResult: RetryResult("retry-1", 2, ["j-1", "j-2"], {"j-3": "already running"}),
    ChunkSizeChange: ChunkSizeChange("j-1", 64_000_000, 50_000_000),
    PlatformInfo: PlatformInfo(
        "sandbox",
        "exports-primary",
        ["exports-primary", "exports-fallback"],
        ["exports-fallback"],
        "export-target.example",
        "eu-west-1",
        {"port": 9000, "x": [1, "a"]},
        StorageAccess("https://s3.eu-west-1.amazonaws.com", "eu-west-1"),
    ),
    StorageAccess: StorageAccess("http://127.0.0.1:9000", None),
    contract.Done: contract.Done("flag.unset", "export.fallback_bucket"),
}


def _through_json(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def test_every_model_class_has_an_example():
    classes = {
        cls
        for _, cls in inspect.getmembers(model, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == model.__name__
    }
    assert classes <= set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_every_model_class_round_trips(cls):
    original = EXAMPLES[cls]
    assert codec.decode(cls, _through_json(codec.encode(original))) == original


@pytest.mark.parametrize("kind", sorted(contract.KINDS))
def test_every_kind_round_trips_as_a_document(kind):
    spec = contract.KINDS[kind]
    example = EXAMPLES[spec.model]
    payload = [example, example] if spec.many else example
    doc = _through_json(contract.document(kind, payload))
    assert doc["apiVersion"] == "exportnb.dev/v1"
    assert doc["kind"] == kind
    assert (spec.payload_key in doc) and set(doc) == {"apiVersion", "kind", spec.payload_key}
    assert contract.read_document(doc, kind) == (kind, payload)


def test_every_platform_method_has_a_kind():
    returns = {
        "info": "PlatformInfo",
        "list_jobs": "JobList",
        "get_job": "JobDetail",
        "manifest": "Manifest",
        "verify": "VerificationList",
        "status_counts": "MinuteCounts",
        "latency": "Latency",
        "retry": "RetryResult",
        "set_chunk_size": "ChunkSizeChange",
        "pause_bulk": "Flag",
        "resume_bulk": "Done",
        "set_flag": "Flag",
        "get_flag": "Flag",
        "list_flags": "FlagList",
        "unset_flag": "Done",
        "flag_history": "AuditLog",
        "audit_log": "AuditLog",
    }
    assert set(returns) == set(Platform.__abstractmethods__)
    assert set(returns.values()) <= set(contract.KINDS)


def test_times_are_iso_8601_utc_with_z():
    east = timezone(timedelta(hours=2))
    assert codec.encode(datetime(2024, 5, 1, 14, 0, tzinfo=east)) == "2024-05-01T12:00:00Z"
    assert codec.encode(AT) == "2024-05-01T12:00:00.123456Z"
    decoded = codec.decode(datetime, "2024-05-01T14:00:00+02:00")
    assert decoded == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert decoded.tzinfo is UTC


def test_documents_are_plain_json_in_field_order():
    doc = contract.document("Flag", EXAMPLES[Flag])
    assert doc == {
        "apiVersion": "exportnb.dev/v1",
        "kind": "Flag",
        "item": {
            "key": "export.fallback_bucket",
            "value": "exports-fallback",
            "set_by": "alice",
            "set_at": "2024-05-01T12:00:00.123456Z",
            "expires_at": "2024-05-01T12:02:00.123456Z",
        },
    }


def test_unknown_api_version_is_refused():
    doc = contract.document("JobList", [JOB]) | {"apiVersion": "exportnb.dev/v2"}
    with pytest.raises(CommandError, match=r"unsupported apiVersion 'exportnb.dev/v2'"):
        contract.read_document(doc, "JobList")
    with pytest.raises(CommandError, match="unsupported apiVersion None"):
        contract.read_document({"kind": "JobList", "items": []}, "JobList")


def test_unknown_and_unexpected_kinds_are_refused():
    doc = {"apiVersion": contract.API_VERSION, "kind": "Jobs", "items": []}
    with pytest.raises(CommandError, match="unknown document kind 'Jobs'"):
        contract.read_document(doc, "JobList")
    with pytest.raises(CommandError, match="expected a document of kind Flag, got 'JobList'"):
        contract.read_document(contract.document("JobList", []), "Flag")
    with pytest.raises(ValueError, match="unknown document kind"):
        contract.document("Nope", [])


def test_missing_fields_are_refused_with_their_path():
    item = codec.encode(JOB)
    del item["created_at"]
    doc = {"apiVersion": contract.API_VERSION, "kind": "JobList", "items": [item]}
    with pytest.raises(CommandError, match=r"JobList.items\[0\]: missing field 'created_at'"):
        contract.read_document(doc, "JobList")
    with pytest.raises(CommandError, match="missing field 'item'"):
        contract.read_document({"apiVersion": contract.API_VERSION, "kind": "Flag"}, "Flag")


def test_optional_fields_may_be_omitted_and_unknown_fields_are_ignored():
    item = {k: v for k, v in codec.encode(JOB).items() if k != "delivered_bucket"}
    item["added_in_a_later_v1"] = 1
    assert codec.decode(Job, item) == JOB


def test_platform_info_without_storage_is_still_v1():
    older = {k: v for k, v in codec.encode(EXAMPLES[PlatformInfo]).items() if k != "storage"}
    doc = {"apiVersion": contract.API_VERSION, "kind": "PlatformInfo", "item": older}
    assert contract.read_document(doc, "PlatformInfo")[1].storage is None


def test_storage_keys_stay_out_of_documents_reprs_and_readers():
    access = StorageAccess("http://s3.local", "us-east-1", "AKIAEXAMPLE", "s3cr3t-key")
    info = dataclasses.replace(EXAMPLES[PlatformInfo], storage=access)
    doc = contract.dumps(contract.document("PlatformInfo", info))
    for shown in (doc, repr(info), repr(access), str(access)):
        assert "AKIAEXAMPLE" not in shown and "s3cr3t-key" not in shown, shown
    assert json.loads(doc)["item"]["storage"] == {
        "endpoint_url": "http://s3.local",
        "region": "us-east-1",
    }
    smuggled = {"endpoint_url": "http://s3.local", "secret_access_key": "from-a-document"}
    assert codec.decode(StorageAccess, smuggled) == StorageAccess("http://s3.local")
    assert access.client_credentials() == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    assert StorageAccess("http://s3.local").client_credentials() is None


def test_secret_fields_are_never_encoded():
    @dataclasses.dataclass(frozen=True)
    class Login:
        user: str
        password: str | None = codec.secret()

    login = Login("alice", "hunter2")
    assert codec.encode([login, {"nested": login}]) == [
        {"user": "alice"},
        {"nested": {"user": "alice"}},
    ]
    assert repr(login).endswith("Login(user='alice')")


@pytest.mark.parametrize(
    ("cls", "field", "value", "message"),
    [
        (Job, "attempts", "2", "expected an integer"),
        (Job, "attempts", True, "expected an integer"),
        (Job, "created_at", "yesterday", "expected an ISO-8601 time"),
        (Job, "started_at", 5, "expected an ISO-8601 time"),
        (Job, "tenant", None, "expected a string, got null"),
        (Manifest, "segments", {"0": {}}, "expected a list"),
        (RetryResult, "skipped", ["j-1"], "expected an object"),
        (LatencyPercentiles, "p50", "fast", "expected a number"),
    ],
)
def test_wrong_types_are_refused(cls, field, value, message):
    item = codec.encode(EXAMPLES[cls]) | {field: value}
    with pytest.raises(CommandError, match=f"{field}: {message}"):
        codec.decode(cls, item)


def test_integers_are_accepted_where_numbers_are_expected():
    item = codec.encode(EXAMPLES[LatencyPercentiles]) | {"p50": 2}
    assert codec.decode(LatencyPercentiles, item).p50 == 2.0


@pytest.mark.parametrize(
    "exc",
    [
        NotFound("job 'x' not found"),
        InvalidInput("invalid size '50XB'"),
        PreconditionFailed("bucket 'b' does not exist"),
        SandboxError("the sandbox is not running"),
        CommandError("exportctl broke"),
    ],
)
def test_error_documents_raise_the_same_class(exc):
    doc = _through_json(contract.error_document(exc))
    assert doc["kind"] == "Error"
    assert doc["error"] == {
        "type": type(exc).__name__,
        "message": exc.message,
        "exitCode": exc.exit_code,
    }
    with pytest.raises(type(exc)) as raised:
        contract.read_document(doc, "JobList")
    assert type(raised.value) is type(exc)
    assert raised.value.message == exc.message


def test_storage_errors_keep_their_code_and_status():
    doc = _through_json(contract.error_document(StorageError("slow", code="SlowDown", status=503)))
    with pytest.raises(StorageError) as raised:
        contract.read_document(doc, "Manifest")
    assert (raised.value.code, raised.value.status, raised.value.exit_code) == ("SlowDown", 503, 6)


def test_subclasses_outside_the_tree_are_reported_as_their_nearest_known_class():
    class Throttled(StorageError):
        pass

    assert contract.error_document(Throttled("x"))["error"]["type"] == "StorageError"


def test_unknown_error_types_become_command_errors():
    doc = {
        "apiVersion": contract.API_VERSION,
        "kind": "Error",
        "error": {"type": "QuotaExceeded", "message": "too many"},
    }
    with pytest.raises(CommandError, match="QuotaExceeded: too many"):
        contract.read_document(doc, "JobList")
    with pytest.raises(CommandError, match=r"without an error\.message"):
        contract.read_document({"apiVersion": contract.API_VERSION, "kind": "Error"}, "Flag")


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", "null"])
def test_text_that_is_not_a_document_is_refused(text):
    with pytest.raises(CommandError, match="not a JSON document"):
        contract.loads(text)
