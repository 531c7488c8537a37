"""Identifiers and digests every stage shares: incident IDs, record IDs, sha256.

An incident ID is one path segment (it names a folder of the archive, the journal and
the working copy), so it is checked before anything is written under it. A record ID is
``<incident>/<UTC start>-<hash>`` (``INC-42/20240501T120000Z-3fa9c2d1``).
"""

from __future__ import annotations

import hashlib
import re

from exportnb.core.errors import InvalidInput

INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}/\d{8}T\d{6}Z-[0-9a-f]{8}$")


def check_incident_id(incident_id: str) -> str:
    """An incident ID is a path segment: letters, digits, ``.``, ``_`` and ``-``."""
    if not INCIDENT_ID.match(incident_id):
        raise InvalidInput(
            f"incident ID {incident_id!r} must start with a letter or digit and hold only "
            "letters, digits, '.', '_' and '-' (at most 100)"
        )
    return incident_id


def check_record_id(record_id: str) -> str:
    if not RECORD_ID.match(record_id):
        raise InvalidInput(
            f"{record_id!r} is not a record ID (like INC-42/20240501T120000Z-3fa9c2d1)"
        )
    return record_id


def sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
