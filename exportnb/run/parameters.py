"""Notebook parameters: read what a notebook declares, and validate what is passed to it.

Papermill injects parameters as Python code (one ``name = <literal>`` line each), so they
are validated *before* anything runs:

- names are ASCII Python identifiers, not keywords and not dunder names, and must be
  declared in the notebook's ``parameters`` cell (unknown names are refused with the list
  of known ones);
- values are JSON values only: ``None``, ``bool``, ``int`` (within 64 bits), finite
  ``float``, ``str``, ``list`` and ``dict`` with ``str`` keys, nested at most
  :data:`MAX_DEPTH` deep and at most :data:`MAX_BYTES` of JSON in all. Sets, bytes, tuples,
  objects, NaN and infinities are refused. A string always arrives as a string, never code;
- a value must fit the kind of its declared default when that default is a literal: a
  number for a number, a bool for a bool, a list for a list, an object for a dict.

``-p NAME VALUE`` on the command line is stricter than papermill's ``-p``: VALUE is parsed
as JSON when it parses (``10``, ``0.5``, ``true``, ``null``, ``["a","b"]``, ``{"k": 1}``)
and taken as a string otherwise; Python spellings (``True``, ``False``, ``None``) and
``NaN``/``Infinity`` are refused with a hint rather than guessed. When the declared default
is a string, VALUE is always taken as the string it is (``-p operator 007`` is ``"007"``).

An alert reaches the notebook as ONE JSON value: the object read from the alert file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exportnb.core.config import home
from exportnb.core.errors import InvalidInput

MAX_DEPTH = 20
"""How deeply lists and objects may nest in one parameter value."""
MAX_BYTES = 1_000_000
"""The most JSON all parameter values may take together, in bytes."""
MAX_INT = 2**63 - 1
"""Integers must fit in 64 bits (what JSON readers elsewhere can take)."""
PYTHON_SPELLINGS = {"True": "true", "False": "false", "None": "null"}


@dataclass(frozen=True)
class Declared:
    """One parameter declared in a notebook's ``parameters`` cell."""

    name: str
    default: str
    type_name: str = "None"
    help: str = ""

    @property
    def literal(self) -> tuple[bool, Any]:
        """``(True, value)`` when the default is a Python literal, else ``(False, None)``."""
        try:
            return True, ast.literal_eval(self.default)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return False, None


def declared(notebook: Path) -> dict[str, Declared]:
    """The parameters a notebook declares, read with papermill's ``inspect_notebook``.

    Kept in ``$EXPORTNB_HOME/cache/declared/`` by the sha256 of the notebook (and
    papermill's version): checking the input of another run of the same notebook does not
    load papermill, a second of ``exportnb run``'s start (nbformat's schema validator).
    """
    if not notebook.is_file():
        raise InvalidInput(f"notebook {notebook} does not exist")
    key = _content_key(notebook)
    kept = _kept(key)
    if kept is not None:
        return kept
    from papermill import inspect_notebook
    from papermill.exceptions import PapermillException

    try:
        found = inspect_notebook(str(notebook))
    except (PapermillException, ValueError, OSError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read the parameters of {notebook}: {exc}") from exc
    params = {
        name: Declared(
            name,
            str(p.get("default", "")),
            str(p.get("inferred_type_name")),
            str(p.get("help") or ""),
        )
        for name, p in found.items()
    }
    if key is not None and key == _content_key(notebook):  # unchanged while papermill read it
        _keep(key, params)
    return params


def _content_key(notebook: Path) -> str | None:
    from importlib import metadata

    try:
        tool = metadata.version("papermill").encode()
        return hashlib.sha256(tool + b"\0" + notebook.read_bytes()).hexdigest()
    except (OSError, metadata.PackageNotFoundError):
        return None


def _kept(key: str | None) -> dict[str, Declared] | None:
    if key is None:
        return None
    try:
        doc = json.loads((home() / "cache" / "declared" / f"{key}.json").read_bytes())
        return {name: Declared(**fields) for name, fields in doc.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _keep(key: str, params: Mapping[str, Declared]) -> None:
    folder = home() / "cache" / "declared"
    part = folder / f"{key}.json.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps({name: asdict(d) for name, d in params.items()}))
        part.replace(folder / f"{key}.json")
    except OSError:
        part.unlink(missing_ok=True)  # a cache that cannot be written is only slower


def check_name(name: object) -> str:
    """``name`` if it may be injected as a parameter name; InvalidInput otherwise."""
    if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
        raise InvalidInput(f"parameter name {name!r} is not a Python identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidInput(f"parameter name {name!r} is a Python keyword")
    if name.startswith("__"):
        raise InvalidInput(f"parameter name {name!r} is reserved (dunder)")
    return name


def check_value(name: str, value: Any, depth: int = 0) -> None:
    """Refuse anything that is not a plain JSON value (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise InvalidInput(f"parameter {name}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise InvalidInput(f"parameter {name}: integer {value} does not fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"parameter {name}: {value} is not a JSON number")
    elif isinstance(value, list):
        for item in value:
            check_value(name, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"parameter {name}: object key {key!r} is not a string")
            check_value(name, item, depth + 1)
    else:
        raise InvalidInput(
            f"parameter {name}: a {type(value).__name__} is not a JSON value "
            "(use null, true/false, numbers, strings, lists or objects)"
        )


def check_fits(name: str, value: Any, spec: Declared) -> None:
    """Refuse a value of another kind than the declared literal default."""
    is_literal, default = spec.literal
    if not is_literal or default is None:
        return
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "true or false"),
        ((int, float), "a number"),
        (list, "a list"),
        (dict, "an object"),
        (str, "a string"),
    ]
    for kind, words in kinds:
        if isinstance(default, kind):
            number = kind == (int, float)
            if not isinstance(value, kind) or (number and isinstance(value, bool)):
                raise InvalidInput(
                    f"parameter {name} takes {words} (its default is {spec.default}); "
                    f"got {json.dumps(value)[:80]}"
                )
            return


def validate(parameters: Mapping[str, Any], known: Mapping[str, Declared]) -> dict[str, Any]:
    """The parameters, checked: safe names, declared, JSON values of the declared kind."""
    for name, value in parameters.items():
        check_name(name)
        if name not in known:
            names = ", ".join(sorted(known)) or "none: the notebook has no parameters cell"
            raise InvalidInput(f"unknown parameter {name!r} (known parameters: {names})")
        check_value(name, value)
        check_fits(name, value, known[name])
    size = len(json.dumps(dict(parameters), allow_nan=False).encode())
    if size > MAX_BYTES:
        raise InvalidInput(f"parameters take {size} bytes of JSON, more than {MAX_BYTES}")
    return dict(parameters)


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def parse_value(name: str, raw: str, spec: Declared | None = None) -> Any:
    """One ``-p NAME VALUE``: JSON when it parses, else the string (see module docstring)."""
    is_literal, default = spec.literal if spec else (False, None)
    if is_literal and isinstance(default, str):
        return raw
    if raw.strip() in PYTHON_SPELLINGS:
        hint = PYTHON_SPELLINGS[raw.strip()]
        raise InvalidInput(
            f"-p {name} {raw}: write {hint} for the JSON value, or '\"{raw}\"' for the string"
        )
    if raw.strip() in ("NaN", "Infinity", "-Infinity"):
        raise InvalidInput(f"-p {name} {raw}: NaN and infinities are not JSON values")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except ValueError:
        return raw


def parse_assignments(
    pairs: Sequence[tuple[str, str]], known: Mapping[str, Declared]
) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as parameters; a name given twice is refused."""
    found: dict[str, Any] = {}
    for name, raw in pairs:
        check_name(name)
        if name in found:
            raise InvalidInput(f"parameter {name} is given twice")
        found[name] = parse_value(name, raw, known.get(name))
    return found


def read_alert(path: str | Path) -> dict[str, Any]:
    """The alert file as one JSON object (an Alertmanager webhook payload, say)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read alert file {path}: {exc}") from exc
    try:
        alert = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise InvalidInput(f"alert file {path} is not JSON: {exc}") from exc
    if not isinstance(alert, dict):
        raise InvalidInput(f"alert file {path} must hold a JSON object, not {type(alert).__name__}")
    check_value("alert", alert)
    return alert
