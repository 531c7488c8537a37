"""Redaction: secrets are replaced by ``[REDACTED:<kind>]`` before anything is written.

What is found, by pattern, in any text:

==============  ==========================================================  ================
kind            what                                                        replaced
==============  ==========================================================  ================
aws-access-key  AWS access key IDs (``AKIA…``, ``ASIA…`` and the other      the whole ID
                four-letter prefixes; 20 characters)
aws-secret-key  40 base64-ish characters after a key-ish name               the 40 characters
                (``aws_secret_access_key``, ``SecretAccessKey``, ``secret``)
authorization   the value of an ``Authorization:`` (or ``Proxy-``) header   the value
bearer-token    ``Bearer <token>``                                          the token
basic-auth      ``Basic <base64 of user:password>``                         the base64
url-password    ``scheme://user:password@host``                             the password
==============  ==========================================================  ================

In JSON values (a JSON output, the result mimetype, metadata), the string value of a key
that names a secret (``SecretAccessKey``, ``password``, ``token``... see
:data:`SECRET_FIELDS`) is replaced whole as ``[REDACTED:field:<key>]``.

Cell sources are searched for all but ``authorization`` (see :data:`CODE_SAFE`) and,
everywhere, by value for the secrets the run knows of: the values of the environment variables
named in ``[secrets] names = [...]`` of ``$EXPORTNB_HOME/config.toml`` (plus
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``), and the values of parameters whose
name looks secret (``token``, ``password``, ``secret``, ``key``, ``credential``).
Values shorter than :data:`MIN_SECRET_LENGTH` characters are not searched for in free
text (that would redact common words); secret-named parameters are replaced whole in the
record's parameters and in the injected-parameters cell whatever their length.

:meth:`Redactor.notebook` walks a whole notebook: every cell source, every output (stream
text, error ename/evalue/traceback, and every text or JSON mimetype, the exportnb result
mimetype included; binary images are left alone) and the notebook and cell metadata.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from exportnb.core import config
from exportnb.core.errors import ConfigError

MIN_SECRET_LENGTH = 6
DEFAULT_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SECRET_FIELDS = frozenset(
    (
        "secret",
        "secretkey",
        "secretaccesskey",
        "awssecretaccesskey",
        "clientsecret",
        "password",
        "passwd",
        "token",
        "accesstoken",
        "sessiontoken",
        "awssessiontoken",
        "refreshtoken",
        "idtoken",
        "apikey",
        "authorization",
        "privatekey",
    )
)
"""JSON keys (compared lower-case, without ``_`` and ``-``) whose string values are secrets:
in a JSON output the key and its value are apart, where no pattern sees them together."""
SECRET_NAME = re.compile(r"token|passw|secret|credential|key(?:s?$|_)", re.IGNORECASE)
BINARY_MIMETYPES = re.compile(r"^(image/(?!svg)|application/(pdf|octet-stream)|audio/|video/)")
MARK = "[REDACTED:{}]"

_Q = r"(?:[\"'`\s]|\\\"|&quot;|&#34;|&#39;|&#x27;)"  # quotes and spaces, also escaped
_SEP = rf"{_Q}{{0,6}}\s*(?:[:=]|=>)?\s*{_Q}{{0,6}}"  # between a name and its value
_ASSIGN = rf"{_Q}{{0,6}}\s*(?:[:=]|=>)\s*{_Q}{{0,6}}"  # the same, with a : or = in it
_VALUE_END = r"[^\s\"'`<>,;}&\\\]]"
_VALUE_START = r"[^\s\"'`<>,;}&\\\]\[:=]"


def _mark(kind: str) -> str:
    return MARK.format(kind)


def is_secret_name(name: str) -> bool:
    """Whether a parameter or variable name says its value is a secret."""
    return bool(SECRET_NAME.search(name))


def is_secret_field(key: str) -> bool:
    """Whether a JSON key names a secret (see :data:`SECRET_FIELDS`)."""
    return re.sub(r"[^a-z0-9]", "", key.lower()) in SECRET_FIELDS


def _looks_basic(token: str) -> bool:
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


# (kind, pattern, group to replace, optional check of the matched group)
PATTERNS: list[tuple[str, re.Pattern[str], int, Callable[[str], bool] | None]] = [
    (
        "authorization",
        re.compile(
            rf"\b(?:Proxy-)?Authorization{_ASSIGN}({_VALUE_START}(?:[^\r\n\"'`<>,;}}&\\]*"
            rf"{_VALUE_END})?)",
            re.IGNORECASE,
        ),
        1,
        None,
    ),
    ("bearer-token", re.compile(r"\bBearer\s+(?!\[REDACTED)([A-Za-z0-9\-._~+/]+=*)"), 1, None),
    (
        "basic-auth",
        re.compile(r"\bBasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])"),
        1,
        _looks_basic,
    ),
    (
        "url-password",
        re.compile(
            r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@?#\"'<>]*:(?!\[REDACTED|\{)([^\s/@?#\"'<>]+)@"
        ),
        1,
        None,
    ),
    (
        "aws-secret-key",
        re.compile(
            rf"(?:aws_?secret_?access_?key|secret_?access_?key|secret_?key|secret){_SEP}"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
            re.IGNORECASE,
        ),
        1,
        None,
    ),
    (
        "aws-access-key",
        re.compile(
            r"\b((?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16})\b"
        ),
        1,
        None,
    ),
]
CODE_SAFE = frozenset(kind for kind, *_ in PATTERNS) - {"authorization"}
"""Kinds searched in cell sources: those whose matches cannot be code (an archived notebook
must stay runnable; ``headers = {"Authorization": f"Bearer {token}"}`` is not a secret)."""


def _variants(value: str) -> set[str]:
    """The spellings of a secret as it may appear in outputs: raw, HTML-, JSON-, repr-escaped."""
    return {
        value,
        html.escape(value),
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
        value.encode("unicode_escape").decode().replace('"', r"\""),
    }


class Redactor:
    """Replaces secrets in text, JSON values and notebooks, and counts what it replaced."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        """``secrets``: label -> secret value (e.g. ``env:DB_PASSWORD`` -> its value)."""
        pairs = {
            variant: label
            for label, value in (secrets or {}).items()
            if len(value) >= MIN_SECRET_LENGTH
            for variant in _variants(value)
        }
        self.literals = sorted(pairs.items(), key=lambda item: -len(item[0]))
        self.counts: Counter[str] = Counter()

    def text(self, text: str, *, code: bool = False) -> str:
        """``text`` with every secret replaced; ``code``: only the kinds in CODE_SAFE."""
        for literal, label in self.literals:
            if literal in text:
                self.counts[label] += text.count(literal)
                text = text.replace(literal, _mark(label))
        for kind, pattern, group, check in PATTERNS:
            if not code or kind in CODE_SAFE:
                text = pattern.sub(self._replacer(kind, group, check), text)
        return text

    def _replacer(
        self, kind: str, group: int, check: Callable[[str], bool] | None
    ) -> Callable[[re.Match[str]], str]:
        """Replaces group ``group`` of a match by the mark of ``kind``, if ``check`` agrees."""

        def replace(match: re.Match[str]) -> str:
            if check is not None and not check(match.group(group)):
                return match.group(0)
            self.counts[kind] += 1
            start = match.start(group) - match.start(0)
            end = match.end(group) - match.start(0)
            return match.group(0)[:start] + _mark(kind) + match.group(0)[end:]

        return replace

    def value(self, value: Any, key: str = "") -> Any:
        """A JSON-like value with every string redacted; binary mimetypes are kept."""
        if isinstance(value, str):
            if BINARY_MIMETYPES.match(key):
                return value
            return self.text(value, code=key == "source")
        if isinstance(value, dict):
            return {self.text(k): self._field(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, key) for v in value]
        return value

    def _field(self, key: str, value: Any) -> Any:
        if isinstance(value, str) and value and is_secret_field(key):
            if not value.startswith("[REDACTED"):
                self.counts["field"] += 1
            return _mark(f"field:{key}")
        return self.value(value, key)

    def parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters as they may be recorded: secret-named ones replaced whole."""
        safe = {}
        for name, value in parameters.items():
            if is_secret_name(name) and value not in (None, ""):
                self.counts[f"parameter:{name}"] += 1
                safe[name] = _mark(f"parameter:{name}")
            else:
                safe[name] = self.value(value)
        return safe

    def notebook(self, nb: Any) -> Any:
        """A notebook (``NotebookNode``) with every cell and its metadata redacted."""
        import nbformat

        return nbformat.from_dict(self.value(dict(nb)))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def secret_values(
    parameters: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, str]:
    """label -> value of every secret the run knows: secret-named parameters, secret env vars.

    ``names`` are environment variable names (default: ``[secrets] names`` of config.toml);
    ``env`` defaults to the process environment.
    """
    env = os.environ if env is None else env
    wanted = [*DEFAULT_SECRET_ENV, *(secret_names() if names is None else names)]
    found = {f"env:{name}": env[name] for name in wanted if env.get(name)}
    for name, value in (parameters or {}).items():
        if is_secret_name(name):
            for i, text in enumerate(_strings(value)):
                found[f"parameter:{name}" + (f":{i}" if i else "")] = text
    return found


def redactor(
    parameters: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> Redactor:
    """A :class:`Redactor` for one run (see :func:`secret_values`)."""
    return Redactor(secret_values(parameters, env, names))


def secret_names(path: Any = None) -> tuple[str, ...]:
    """``[secrets] names`` of ``$EXPORTNB_HOME/config.toml``: env vars whose values are secret."""
    path = path or config.home() / "config.toml"
    if not path.exists():
        return ()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    names = raw.get("secrets", {}).get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: [secrets] names must be a list of environment variable names")
    return tuple(names)
