"""The versioned JSON contract between exportnb and an exportctl/featurectl.

Every ``--output json`` answer is one document, an envelope around the objects of
:mod:`exportnb.platform.model`::

    {"apiVersion": "exportnb.dev/v1", "kind": "JobList", "items": [{...}, ...]}
    {"apiVersion": "exportnb.dev/v1", "kind": "Manifest", "item": {...}}
    {"apiVersion": "exportnb.dev/v1", "kind": "Error",
     "error": {"type": "NotFound", "message": "job 'x' not found", "exitCode": 3}}

``KINDS`` says which dataclass each kind carries and whether it is a list (``items``)
or one object (``item``). Objects are encoded field by field, generically: datetimes
as ISO-8601 UTC with ``Z``, nested dataclasses as objects, lists and dicts as they are.
Decoding reads the field types with :func:`typing.get_type_hints`, ignores unknown
fields (v1 only ever adds optional fields) and refuses missing required fields or
values of the wrong type with :class:`~exportnb.errors.CommandError`.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from exportnb import errors
from exportnb.errors import CommandError, ExportnbError, StorageError
from exportnb.platform.model import (
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    LatencyPercentiles,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Verification,
)

API_VERSION = "exportnb.dev/v1"
ERROR_KIND = "Error"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Done:
    """The answer to an action that returns nothing else: what was done, to what."""

    action: str
    target: str


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of document: the dataclass it carries, and whether it carries a list."""

    name: str
    model: type
    many: bool

    @property
    def payload_key(self) -> str:
        return "items" if self.many else "item"


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("PlatformInfo", PlatformInfo, many=False),
        Kind("JobList", Job, many=True),
        Kind("JobDetail", JobDetail, many=False),
        Kind("Manifest", Manifest, many=False),
        Kind("Verification", Verification, many=False),
        Kind("VerificationList", Verification, many=True),
        Kind("MinuteCounts", MinuteCount, many=True),
        Kind("Latency", LatencyPercentiles, many=True),
        Kind("RetryResult", RetryResult, many=False),
        Kind("ChunkSizeChange", ChunkSizeChange, many=False),
        Kind("Flag", Flag, many=False),
        Kind("FlagList", Flag, many=True),
        Kind("AuditLog", AuditEntry, many=True),
        Kind("Done", Done, many=False),
    )
}

ERROR_TYPES: dict[str, type[ExportnbError]] = {
    cls.__name__: cls
    for cls in (
        errors.ExportnbError,
        errors.InvalidInput,
        errors.NotFound,
        errors.PreconditionFailed,
        errors.ConfigError,
        errors.SandboxError,
        errors.PlatformError,
        errors.StorageError,
        errors.CommandError,
    )
}


# Encoding -------------------------------------------------------------------
def format_time(value: datetime) -> str:
    """``2024-05-01T12:00:00Z``; naive datetimes are taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def readable_time(value: datetime) -> str:
    """``2024-05-01 12:00:00 UTC``: a time for people (tables, messages, findings)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def encode(value: Any) -> Any:
    """A model object (or anything inside one) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    return value


def document(kind: str, payload: Any) -> dict[str, Any]:
    """The envelope of ``kind`` around ``payload`` (a model object, or a list of them)."""
    spec = _kind(kind)
    body = [encode(p) for p in payload] if spec.many else encode(payload)
    return {"apiVersion": API_VERSION, "kind": kind, spec.payload_key: body}


def error_document(exc: ExportnbError) -> dict[str, Any]:
    """The Error document for ``exc``: its class name, message and exit code."""
    error: dict[str, Any] = {
        "type": _error_type_name(exc),
        "message": exc.message,
        "exitCode": exc.exit_code,
    }
    if isinstance(exc, StorageError):
        error["code"] = exc.code
        error["status"] = exc.status
    return {"apiVersion": API_VERSION, "kind": ERROR_KIND, "error": error}


def _error_type_name(exc: ExportnbError) -> str:
    for cls in type(exc).__mro__:
        if cls.__name__ in ERROR_TYPES and ERROR_TYPES[cls.__name__] is cls:
            return cls.__name__
    return "ExportnbError"


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)


# Decoding -------------------------------------------------------------------
def loads(text: str) -> dict[str, Any]:
    """Parse a document's text; anything that is not a JSON object is a CommandError."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"not a JSON document: {exc}") from exc
    if not isinstance(doc, dict):
        raise CommandError(f"not a JSON document: expected an object, got {_type_name(doc)}")
    return doc


def read_document(doc: dict[str, Any], expected: str | Iterable[str]) -> tuple[str, Any]:
    """``(kind, payload)`` of a document of one of the ``expected`` kinds.

    An Error document is raised as the exception it describes.
    """
    kinds = (expected,) if isinstance(expected, str) else tuple(expected)
    kind = _check_envelope(doc)
    if kind == ERROR_KIND:
        raise error_from_document(doc)
    if kind not in kinds:
        raise CommandError(f"expected a document of kind {' or '.join(kinds)}, got {kind!r}")
    spec = KINDS[kind]
    if spec.payload_key not in doc:
        raise CommandError(f"{kind}: missing field {spec.payload_key!r}")
    body = doc[spec.payload_key]
    if spec.many:
        return kind, decode(list[spec.model], body, path=f"{kind}.items")  # type: ignore[name-defined]
    return kind, decode(spec.model, body, path=f"{kind}.item")


def _check_envelope(doc: dict[str, Any]) -> str:
    version = doc.get("apiVersion")
    if version != API_VERSION:
        raise CommandError(
            f"unsupported apiVersion {version!r} (this exportnb speaks {API_VERSION})"
        )
    kind = doc.get("kind")
    if kind != ERROR_KIND and kind not in KINDS:
        known = ", ".join([*KINDS, ERROR_KIND])
        raise CommandError(f"unknown document kind {kind!r} (known: {known})")
    return str(kind)


def error_from_document(doc: dict[str, Any]) -> ExportnbError:
    """The exception an Error document describes, of the matching class from errors.py."""
    error = doc.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise CommandError("Error document without an error.message")
    name, message = str(error.get("type", "")), error["message"]
    cls = ERROR_TYPES.get(name)
    if cls is None:
        return CommandError(f"{name or 'error'}: {message}")
    if cls is StorageError:
        status = error.get("status")
        return StorageError(
            message,
            code=str(error.get("code") or ""),
            status=status if isinstance(status, int) else None,
        )
    return cls(message)


def decode(hint: Any, value: Any, *, path: str = "$") -> Any:
    """``value`` (plain JSON) as an instance of the type ``hint``; CommandError if it is not."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _decode_union(hint, value, path)
    if origin is Literal:
        if value not in get_args(hint):
            raise _mismatch(path, f"one of {get_args(hint)}", value)
        return value
    if origin in (list, tuple, set, frozenset):
        return _decode_list(hint, value, path)
    if origin is dict or hint is dict:
        return _decode_dict(hint, value, path)
    if hint is list:
        return _decode_list(list[Any], value, path)
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, path)  # type: ignore[arg-type]
    return _decode_scalar(hint, value, path)


def _decode_union(hint: Any, value: Any, path: str) -> Any:
    options = get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise _mismatch(path, "a value", value)
    problems = []
    for option in options:
        if option is type(None):
            continue
        try:
            return decode(option, value, path=path)
        except CommandError as exc:
            problems.append(exc)
    raise problems[0]


def _decode_list(hint: Any, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _mismatch(path, "a list", value)
    args = get_args(hint)
    item = args[0] if args else Any
    return [decode(item, v, path=f"{path}[{i}]") for i, v in enumerate(value)]


def _decode_dict(hint: Any, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _mismatch(path, "an object", value)
    args = get_args(hint)
    item = args[1] if len(args) == 2 else Any
    return {k: decode(item, v, path=f"{path}.{k}") for k, v in value.items()}


def _decode_dataclass(cls: type[T], value: Any, path: str) -> T:
    if not isinstance(value, dict):
        raise _mismatch(path, f"a {cls.__name__} object", value)
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in value:
            kwargs[f.name] = decode(hints[f.name], value[f.name], path=f"{path}.{f.name}")
        elif _required(f):
            raise CommandError(f"{path}: missing field {f.name!r} of {cls.__name__}")
    return cls(**kwargs)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _decode_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is datetime:
        return _decode_time(value, path)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise _mismatch(path, "an integer", value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _mismatch(path, _describe(hint), value)


def _decode_time(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise _mismatch(path, "an ISO-8601 time", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _mismatch(path, "an ISO-8601 time", value) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown document kind {kind!r}") from None


def _describe(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _mismatch(path: str, expected: str, value: Any) -> CommandError:
    if value is None:
        return CommandError(f"{path}: expected {expected}, got null")
    shown = json.dumps(value, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CommandError(f"{path}: expected {expected}, got {_type_name(value)} {shown}")
