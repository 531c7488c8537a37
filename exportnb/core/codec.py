"""JSON of results and documents: dataclasses, datetimes, lists and dicts as plain JSON values.

:func:`encode` writes any model object field by field (datetimes as ISO-8601 UTC with
``Z``); :func:`decode` reads plain JSON back into the type a hint names, reading field
types with :func:`typing.get_type_hints`, ignoring unknown fields and refusing missing
required fields or values of the wrong type with :class:`~exportnb.core.errors.CommandError`
(the message names the path: ``JobList.items[3].attempts: expected an integer, got a string``).
The platform contract (:mod:`exportnb.platform.contract`), records and results all use it.

A field declared with :func:`secret` (credentials) is neither written nor read: it never
reaches a contract document, a record or a notebook, and is left out of the ``repr``.
"""

from __future__ import annotations

import dataclasses
import json
import types
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from exportnb.core.errors import CommandError

T = TypeVar("T")

SECRET = "exportnb.secret"
"""Field metadata that marks a secret: :func:`encode` leaves it out, :func:`decode` ignores it."""


def secret(default: Any = None) -> Any:
    """A dataclass field holding a secret (a key, a token): not in the ``repr``, never encoded,
    never decoded. It needs a default, which is what a decoded object holds."""
    return dataclasses.field(default=default, repr=False, metadata={SECRET: True})


def is_secret(f: dataclasses.Field[Any]) -> bool:
    """Whether a dataclass field was declared with :func:`secret`."""
    return bool(f.metadata.get(SECRET))


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
    """A model object (or anything inside one) as plain JSON values; secrets left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: encode(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not is_secret(f)
        }
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    return value


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
        if is_secret(f):  # a document never carries a secret: one that does is not believed
            continue
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


def _describe(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def json_type_name(value: Any) -> str:
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
    return CommandError(f"{path}: expected {expected}, got {json_type_name(value)} {shown}")
