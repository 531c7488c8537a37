"""Sizes and durations as people type them: ``50MB``, ``256MiB``, ``30m``, ``1h30m``.

Sizes use decimal units for ``KB/MB/GB/TB`` and binary units for ``KiB/MiB/GiB/TiB``,
as AWS and most export tools do. A bare number is bytes.
"""

from __future__ import annotations

import re

from exportnb.core.errors import InvalidInput

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """``"50MB"`` -> ``50_000_000``. Rejects negative, zero and unknown units."""
    if isinstance(text, bool):
        raise InvalidInput(f"invalid size {text!r}")
    if isinstance(text, int):
        if text <= 0:
            raise InvalidInput(f"invalid size {text!r}: must be greater than zero")
        return text
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise InvalidInput(
            f"invalid size {text!r}: use a positive number with a unit such as 50MB, 64MiB or 1GB"
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise InvalidInput(f"invalid size {text!r}: must be greater than zero")
    return value


def format_size(n: float) -> str:
    """``50_000_000`` -> ``"50MB"``, ``64 * 2**20`` -> ``"64MiB"``, ``1.5e8`` -> ``"150MB"``."""
    for unit in ("TB", "GB", "MB", "KB"):
        factor, binary = _SIZE_UNITS[unit], _SIZE_UNITS[unit[0] + "IB"]
        if n >= binary and n % binary == 0:
            return f"{int(n // binary)}{unit[0]}iB"
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + unit
    return f"{int(n)}B"


def parse_ttl(text: str | float) -> float:
    """``"30m"`` -> ``1800.0`` seconds; ``"1h30m"`` works too. Zero and bare numbers are refused."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise InvalidInput(f"invalid TTL {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        compact = str(text).strip().lower().replace(" ", "")
        pieces = _DURATION_RE.findall(compact)
        if not compact or "".join(n + u for n, u in pieces) != compact:
            raise InvalidInput(
                f"invalid TTL {text!r}: use a duration such as 30m, 2h or 1h30m "
                "(units: ms, s, m, h, d, w)"
            )
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in pieces)
    if seconds <= 0:
        raise InvalidInput(f"invalid TTL {text!r}: must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """``1800`` -> ``"30m"``, ``5400`` -> ``"1h30m"``, ``42.5`` -> ``"42.5s"``."""
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    total = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts)
