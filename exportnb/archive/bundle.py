"""Records taken out of the archive for people: one record's HTML page, or an incident's
records as a bundle with a manifest of hashes (for a postmortem, an auditor, a ticket).

:func:`html_page` gives a local file of a record's ``notebook.html``: the archived file
itself in a local archive, else a copy (``$EXPORTNB_HOME/cache/html/...``, or where
asked). Either way its sha256 is checked against ``record.json`` first.

:func:`export_incident` writes every record of an incident into a folder or a
``.tar.gz``::

    MANIFEST.json       schema exportnb.export/v1: the incident, the archive, when, and for
                        each record its version, status, start, chain entry and files
                        (sha256 and size)
    SHA256SUMS          ``sha256sum -c SHA256SUMS`` checks every file of the bundle
    <incident>/<record>/notebook.ipynb, notebook.html, record.json
    .chain/<seq>.json   the chain entry of each record: it holds the sha256 of the record.json

The incident is verified first (:func:`~exportnb.archive.integrity.verify_archive`): a record
with a problem refuses the whole export, and nothing is written. The bundle is built
beside the target and renamed into place; an existing target is never overwritten.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exportnb.archive import chain, index, integrity
from exportnb.archive.store import Archive, LocalArchive, open_archive
from exportnb.core import codec, config
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed, StorageError
from exportnb.core.ids import check_incident_id
from exportnb.core.ids import sha256 as digest
from exportnb.record.model import FILES, HTML, METADATA, Record

EXPORT_SCHEMA = "exportnb.export/v1"
MANIFEST, SUMS = "MANIFEST.json", "SHA256SUMS"


def html_page(
    record_id: str, archive: str | Archive | None = None, target: str | Path | None = None
) -> Path:
    """A local file holding the record's HTML, its sha256 checked against ``record.json``
    (``record_id`` may be an incident ID: its latest record)."""
    store = open_archive(archive)
    record_id = store.resolve(record_id)
    record, data = html_of(store, record_id)
    if target is None and isinstance(store, LocalArchive):
        return Path(record.path(HTML))
    path = Path(target) if target else config.home() / "cache" / "html" / f"{record_id}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc
    return path


def html_of(store: Archive, record_id: str) -> tuple[Record, bytes]:
    """A record and the bytes of its ``notebook.html``, checked against its sha256:
    NotFound without such a record, PreconditionFailed when the page was changed."""
    record = store.show(record_id)
    return record, _checked(record, HTML, store.read(record_id, HTML))


def _checked(record: Record, name: str, data: bytes) -> bytes:
    stated = record.files.get(name)
    if stated is None or digest(data) != stated.sha256:
        raise PreconditionFailed(
            f"{name} of {record.record_id} does not match the sha256 in "
            "its record.json: run `exportnb archive verify`"
        )
    return data


@dataclass(frozen=True)
class Exported:
    """What :func:`export_incident` wrote."""

    incident_id: str
    path: Path
    records: list[str]
    files: int
    bytes: int


def export_incident(
    incident: str, target: str | Path, archive: str | Archive | None = None
) -> Exported:
    """Write the incident's records, with a manifest of hashes, to a folder or a .tar.gz."""
    check_incident_id(incident)
    target = Path(target).expanduser().absolute()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise InvalidInput(f"{target} exists: give a new folder or .tar.gz file")
    store = open_archive(archive)
    checked = integrity.verify_archive(store, incident=incident)
    if not checked.ok:
        raise PreconditionFailed(
            f"{len(checked.problems)} problem(s) found; nothing was "
            "exported: run `exportnb archive verify --incident "
            f"{incident}`"
        )
    found = index.search(store, incident=incident)
    if not found:
        raise NotFound(f"no record of incident {incident} in {store.url}")
    files = _bundle_files(store, [r.record_id for r in found], {r.record_id: r for r in found})
    manifest = _manifest(incident, store.url, found, files)
    files[MANIFEST] = manifest
    files[SUMS] = "".join(f"{digest(data)}  {name}\n" for name, data in files.items()).encode()
    _write(target, files)
    return Exported(
        incident,
        target,
        [r.record_id for r in found],
        len(files),
        sum(len(d) for d in files.values()),
    )


def _bundle_files(store: Archive, ids: list[str], found: dict[str, Any]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for record_id in ids:
        record = store.show(record_id)
        for name in FILES:
            data = store.read(record_id, name)
            if name != METADATA:
                _checked(record, name, data)
            files[f"{record_id}/{name}"] = data
        seq = found[record_id].chain_seq
        if seq is not None:
            entry = store.read_chain(seq)
            files[f"{chain.FOLDER}/{chain.entry_name(seq)}"] = entry
    return files


def _manifest(incident: str, url: str, found: list[Any], files: dict[str, bytes]) -> bytes:
    records = []
    for r in found:
        names = [n for n in FILES if f"{r.record_id}/{n}" in files]
        entry = f"{chain.FOLDER}/{chain.entry_name(r.chain_seq)}" if r.chain_seq else None
        records.append(
            {
                "record_id": r.record_id,
                "version": r.version,
                "status": r.status,
                "started_at": codec.format_time(r.started_at),
                "chain": {
                    "seq": r.chain_seq,
                    "file": entry,
                    "sha256": digest(files[entry]) if entry else None,
                },
                "files": {
                    n: {
                        "sha256": digest(files[f"{r.record_id}/{n}"]),
                        "size": len(files[f"{r.record_id}/{n}"]),
                    }
                    for n in names
                },
            }
        )
    doc = {
        "schema": EXPORT_SCHEMA,
        "incident_id": incident,
        "archive": url,
        "exported_at": codec.format_time(datetime.now(UTC)),
        "records": records,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _write(target: Path, files: dict[str, bytes]) -> None:
    """Build beside ``target``, then rename into place (never over an existing file)."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.name.endswith((".tar.gz", ".tgz")):
            _tar(partial, target.name.split(".tar")[0].split(".tgz")[0], files)
            os.link(partial, target)  # fails when the target appeared meanwhile
        else:
            for name, data in files.items():
                (partial / name).parent.mkdir(parents=True, exist_ok=True)
                (partial / name).write_bytes(data)
            if target.exists():
                target.rmdir()  # empty (checked): the rename needs it gone
            partial.rename(target)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc}") from exc
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def _tar(path: Path, top: str, files: dict[str, bytes]) -> None:
    now = int(datetime.now(UTC).timestamp())
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(f"{top}/{name}")
            member.size, member.mtime, member.mode = len(data), now, 0o444
            tar.addfile(member, io.BytesIO(data))
