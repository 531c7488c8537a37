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
values of the wrong type with :class:`~exportnb.core.errors.CommandError`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from exportnb.core import errors
from exportnb.core.codec import decode, encode, json_type_name
from exportnb.core.errors import CommandError, ExportnbError, StorageError
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


# Documents ------------------------------------------------------------------
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
        raise CommandError(f"not a JSON document: expected an object, got {json_type_name(doc)}")
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


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown document kind {kind!r}") from None
