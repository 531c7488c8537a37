"""The archive of records: write-once storage, found by URL scheme.

==================  ================================================================
URL                 archive
==================  ================================================================
a path, ``file://`` :class:`LocalArchive`: ``<root>/<incident>/<stamp>-<hash>/`` folders
``s3://bucket/p``   :class:`S3Archive`: objects under ``p/<record id>/``, any endpoint
                    (``AWS_ENDPOINT_URL``, boto3's usual credentials)
==================  ================================================================

More schemes register with :func:`register`, or through the ``exportnb.archives`` entry
point group (a callable taking the URL and returning an :class:`Archive`).

Which archive: ``--archive URL``, else ``$EXPORTNB_ARCHIVE``, else ``[archive] url`` in
``$EXPORTNB_HOME/config.toml``, else the folder ``$EXPORTNB_HOME/archive``.

Records are write-once. A local record is written into a temporary folder beside the
archive and renamed into place, which fails if the record exists; files are created with
``O_EXCL`` and made read-only. On S3 every object is put with ``If-None-Match: *``, so
S3 refuses to overwrite one (HTTP 412; AWS S3, MinIO and moto support it; there is no
check-then-put fallback), and ``record.json`` is put last: a prefix without it is not a
record. Any failure is a :class:`~exportnb.core.errors.StorageError`.

Every record written is then chained (:mod:`exportnb.archive.chain`): a write-once entry under
``.chain/`` at the archive's root names it and the sha256 of its ``record.json``, and
follows the entry before. On S3, where the bucket has Object Lock, every put carries a
retention (:mod:`exportnb.archive.retention`).
The index of an archive (:mod:`exportnb.archive.index`) and
its verification (:mod:`exportnb.archive.integrity`) read it through this interface.
"""

from __future__ import annotations

import os
import shutil
import tomllib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from exportnb.archive import chain
from exportnb.archive.retention import Retention, RetentionSettings, bucket_retention
from exportnb.core import config
from exportnb.core.errors import ConfigError, InvalidInput, NotFound, StorageError
from exportnb.platform import storage
from exportnb.record.model import (
    FILES,
    INCIDENT_ID,
    METADATA,
    RECORD_ID,
    Record,
    RecordSummary,
    check_incident_id,
    check_record_id,
)

CONTENT_TYPES = {
    "notebook.ipynb": "application/x-ipynb+json",
    "notebook.html": "text/html; charset=utf-8",
    "record.json": "application/json",
}
Summaries = list[RecordSummary]


class Archive(ABC):
    """Where records are kept. Subclasses store bytes; reading records is shared."""

    url: str

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError now if records could not be written (before a long run)."""

    @abstractmethod
    def location(self, record_id: str) -> str:
        """Where the record's files are (a folder path, or an ``s3://`` prefix)."""

    @abstractmethod
    def write(self, record_id: str, files: Mapping[str, bytes]) -> str:
        """Store a new record's files (``record.json`` last) and chain it (:func:`chain.append`);
        StorageError if it exists. Returns its location."""

    @abstractmethod
    def read(self, record_id: str, name: str) -> bytes:
        """One file of a record; NotFound if there is no such record."""

    @abstractmethod
    def record_ids(self, incident: str | None = None) -> list[str]:
        """The IDs of the complete records (those with a record.json), oldest first."""

    # The chain's storage: an archive that keeps none has an empty chain. ---------------
    def chain_seqs(self) -> list[int]:
        """The seqs of the stored chain entries, in order."""
        return []

    def read_chain(self, seq: int) -> bytes:
        """The bytes of chain entry ``seq``; NotFound if there is none."""
        raise NotFound(f"no chain entry {seq} in {self.url}")

    def write_chain(self, seq: int, data: bytes) -> bool:
        """Store chain entry ``seq`` once: False (nothing written) if it exists already."""
        raise StorageError(f"the archive {self.url} keeps no chain")

    def deleted(self) -> list[str]:
        """Names (``<record id>/<file>``, ``.chain/<seq>.json``) hidden by a delete, where
        the storage keeps what was deleted (S3 versioning); empty elsewhere."""
        return []

    def show(self, record_id: str) -> Record:
        """The record's metadata, read from its ``record.json``."""
        check_record_id(record_id)
        return Record.from_json(self.read(record_id, METADATA), self.location(record_id))

    def resolve(self, ref: str) -> str:
        """The record ID ``ref`` names: a record ID itself, or an incident ID for the
        incident's latest record; NotFound when the incident has none here."""
        if RECORD_ID.match(ref):
            return ref
        if not INCIDENT_ID.match(ref):
            check_record_id(ref)  # neither: say what a record ID looks like
        ids = self.record_ids(ref)
        if not ids:
            raise NotFound(f"no records of incident {ref} in {self.url}")
        return ids[-1]

    def list(self, incident: str | None = None) -> Summaries:
        """Every record (of one incident), oldest first."""
        if incident is not None:
            check_incident_id(incident)
        return [self.show(rid).summary() for rid in self.record_ids(incident)]


class LocalArchive(Archive):
    """Records as folders under a local root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the archive folder {self.root}: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"the archive folder {self.root} is not writable")

    def location(self, record_id: str) -> str:
        return str(self.root.joinpath(*record_id.split("/")))

    def write(self, record_id: str, files: Mapping[str, bytes]) -> str:
        location = self._put(record_id, files)
        chain.append(self, record_id, files[METADATA])
        return location

    def _put(self, record_id: str, files: Mapping[str, bytes]) -> str:
        check_files(record_id, files)
        final = Path(self.location(record_id))
        if final.exists():
            raise StorageError(f"record {record_id} already exists in {self.url}", code="Exists")
        incoming = self.root / ".incoming" / uuid.uuid4().hex
        try:
            incoming.mkdir(parents=True)
            for name in FILES:
                _write_new(incoming / name, files[name])
            final.parent.mkdir(parents=True, exist_ok=True)
            incoming.rename(final)  # fails when the record folder exists and is not empty
        except OSError as exc:
            if final.exists():
                raise StorageError(f"record {record_id} already exists in {self.url}") from exc
            raise StorageError(f"cannot write record {record_id} in {self.url}: {exc}") from exc
        finally:
            shutil.rmtree(incoming, ignore_errors=True)  # gone already when renamed
        return str(final)

    def read(self, record_id: str, name: str) -> bytes:
        path = Path(self.location(record_id)) / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no record {record_id} in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    def record_ids(self, incident: str | None = None) -> list[str]:
        found = []
        for folder in [incident] if incident else _names(self.root):
            for name in _names(self.root / folder):
                record_id = f"{folder}/{name}"
                if RECORD_ID.match(record_id) and (self.root / folder / name / METADATA).exists():
                    found.append(record_id)
        return sorted(found, key=_by_time)

    @property
    def chain_folder(self) -> Path:
        return self.root / chain.FOLDER

    def chain_seqs(self) -> list[int]:
        seqs = (chain.seq_of(name) for name in _names(self.chain_folder))
        return sorted(s for s in seqs if s is not None)

    def read_chain(self, seq: int) -> bytes:
        path = self.chain_folder / chain.entry_name(seq)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no chain entry {seq} in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    def write_chain(self, seq: int, data: bytes) -> bool:
        final = self.chain_folder / chain.entry_name(seq)
        incoming = self.root / ".incoming" / uuid.uuid4().hex
        try:
            self.chain_folder.mkdir(parents=True, exist_ok=True)
            incoming.parent.mkdir(parents=True, exist_ok=True)
            _write_new(incoming, data)
            os.link(incoming, final)  # whole or not at all; fails when the entry exists
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot write {final}: {exc}") from exc
        finally:
            incoming.unlink(missing_ok=True)
        return True


def _names(folder: Path) -> list[str]:
    """The names in ``folder`` (none when it does not exist), hidden ones left out."""
    try:
        with os.scandir(folder) as found:
            return [e.name for e in found if not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StorageError(f"cannot list {folder}: {exc}") from exc


def check_files(record_id: str, files: Mapping[str, bytes]) -> None:
    """A record to write has a valid ID and exactly the files of a record."""
    check_record_id(record_id)
    if set(files) != set(FILES):
        raise InvalidInput(f"a record holds {', '.join(FILES)}; got {', '.join(sorted(files))}")


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    path.chmod(0o444)


def _by_time(record_id: str) -> tuple[str, str]:
    incident, name = record_id.split("/", 1)
    return name, incident


class S3Archive(Archive):
    """Records as objects under ``s3://bucket/prefix/``, through boto3 (any endpoint)."""

    def __init__(
        self, url: str, s3: Any = None, retention: RetentionSettings | None = None
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInput(f"{url!r} is not an s3://bucket/prefix URL")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._s3 = s3
        self.settings = retention if retention is not None else retention_settings()
        self._retention: list[Retention | None] = []  # looked up at the first put

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = storage.client()
        return self._s3

    @property
    def retention(self) -> Retention | None:
        """The Object Lock retention of every put: None when the bucket has no Object Lock."""
        if not self._retention:
            self._retention.append(bucket_retention(self.s3, self.bucket, self.settings))
        return self._retention[0]

    def key(self, record_id: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, record_id, name) if p)

    def check(self) -> None:
        storage.head_bucket(self.s3, self.bucket)

    def location(self, record_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(record_id)}"

    def write(self, record_id: str, files: Mapping[str, bytes]) -> str:
        check_files(record_id, files)
        for name in FILES:
            if not self._put_once(self.key(record_id, name), files[name], CONTENT_TYPES[name]):
                raise StorageError(
                    f"record {record_id} already exists in {self.url} ({name})",
                    code="PreconditionFailed",
                    status=412,
                )
        chain.append(self, record_id, files[METADATA])
        return self.location(record_id)

    def _put_once(self, key: str, body: bytes, content_type: str) -> bool:
        """Put a new object (with the retention, if any); False if the key exists."""
        lock = self.retention.put_arguments() if self.retention else {}
        try:
            storage.put_object(
                self.s3, self.bucket, key, body, IfNoneMatch="*", ContentType=content_type, **lock
            )
        except StorageError as exc:
            if exc.status == 412 or exc.code == "PreconditionFailed":
                return False
            raise
        return True

    def _get(self, key: str, missing: str) -> bytes:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            error = storage.storage_error(exc, f"GetObject s3://{self.bucket}/{key}")
            if error.status == 404 or error.code in ("NoSuchKey", "NotFound"):
                raise NotFound(missing) from exc
            raise error from exc
        return body

    def read(self, record_id: str, name: str) -> bytes:
        return self._get(self.key(record_id, name), f"no record {record_id} in {self.url}")

    def _keys(self, start: str, *, hidden: bool = False) -> list[str]:
        """Keys under ``start``, relative to the prefix; ``hidden``: those a delete hides."""
        operation, field = (
            ("list_object_versions", "DeleteMarkers") if hidden else ("list_objects_v2", "Contents")
        )
        found = []
        try:
            for page in self.s3.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=start):
                found += [o["Key"] for o in page.get(field, []) if o.get("IsLatest", True)]
        except Exception as exc:
            raise storage.storage_error(exc, f"{operation} {self.url}") from exc
        skip = len(self.prefix) + 1 if self.prefix else 0
        return [k[skip:] for k in found]

    def _root(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    def record_ids(self, incident: str | None = None) -> list[str]:
        keys = self._keys(self.key(incident) + "/" if incident else self._root())
        ids = [k[: -len(METADATA) - 1] for k in keys if k.endswith("/" + METADATA)]
        return sorted((i for i in ids if RECORD_ID.match(i)), key=_by_time)

    def chain_seqs(self) -> list[int]:
        keys = self._keys(self.key(chain.FOLDER) + "/")
        seqs = (chain.seq_of(k.rsplit("/", 1)[-1]) for k in keys)
        return sorted(s for s in seqs if s is not None)

    def read_chain(self, seq: int) -> bytes:
        key = self.key(chain.FOLDER, chain.entry_name(seq))
        return self._get(key, f"no chain entry {seq} in {self.url}")

    def write_chain(self, seq: int, data: bytes) -> bool:
        return self._put_once(
            self.key(chain.FOLDER, chain.entry_name(seq)), data, CONTENT_TYPES[METADATA]
        )

    def deleted(self) -> list[str]:
        return sorted(self._keys(self._root(), hidden=True))


ARCHIVES: dict[str, Callable[[str], Archive]] = {
    "": LocalArchive,
    "file": lambda url: LocalArchive(urlparse(url).path),
    "s3": S3Archive,
}


def register(scheme: str, factory: Callable[[str], Archive]) -> None:
    """Make ``scheme://`` URLs open archives made by ``factory(url)``."""
    ARCHIVES[scheme] = factory


def _entry_point(scheme: str) -> Callable[[str], Archive] | None:
    from importlib.metadata import entry_points

    for entry in entry_points(group="exportnb.archives"):
        if entry.name == scheme:
            factory: Callable[[str], Archive] = entry.load()
            register(scheme, factory)
            return factory
    return None


def archive_url(explicit: str | None = None) -> str:
    """``explicit``, else $EXPORTNB_ARCHIVE, else [archive] url, else $EXPORTNB_HOME/archive."""
    return (
        explicit
        or os.environ.get("EXPORTNB_ARCHIVE")
        or configured_url()
        or str(config.home() / "archive")
    )


def configured_url(path: Path | None = None) -> str | None:
    """``[archive] url`` of ``$EXPORTNB_HOME/config.toml``, if set."""
    path = path or config.home() / "config.toml"
    url = archive_table(path).get("url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{path}: [archive] url must be a string")
    return url or None


def retention_settings(path: Path | None = None) -> RetentionSettings:
    """``[archive] object_lock_mode`` and ``object_lock_days`` of the config file."""
    path = path or config.home() / "config.toml"
    return RetentionSettings.from_table(archive_table(path), str(path))


def archive_table(path: Path) -> dict[str, Any]:
    """The ``[archive]`` table of a config file (empty when there is none)."""
    if not path.exists():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("archive", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [archive] must be a table")
    return table


def open_archive(url: str | Archive | None = None) -> Archive:
    """The archive at ``url`` (see :func:`archive_url` for the default)."""
    if isinstance(url, Archive):
        return url
    url = archive_url(url)
    scheme = urlparse(url).scheme if "://" in url else ""
    factory = ARCHIVES.get(scheme) or _entry_point(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in ARCHIVES if s)
        raise InvalidInput(f"no archive for {url!r} (known: a path, {known})")
    return factory(url)
