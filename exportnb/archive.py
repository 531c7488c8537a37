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
record. Any failure is a :class:`~exportnb.errors.StorageError`.
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

from exportnb import config
from exportnb.errors import ConfigError, InvalidInput, NotFound, StorageError
from exportnb.record import (
    FILES,
    METADATA,
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
        """Store a new record's files; StorageError if it exists. Returns its location."""

    @abstractmethod
    def read(self, record_id: str, name: str) -> bytes:
        """One file of a record; NotFound if there is no such record."""

    @abstractmethod
    def record_ids(self, incident: str | None = None) -> list[str]:
        """The IDs of the complete records (those with a record.json), oldest first."""

    def show(self, record_id: str) -> Record:
        """The record's metadata, read from its ``record.json``."""
        check_record_id(record_id)
        return Record.from_json(self.read(record_id, METADATA), self.location(record_id))

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
        pattern = f"{incident}/*/{METADATA}" if incident else f"*/*/{METADATA}"
        found = [p.parent.relative_to(self.root).as_posix() for p in self.root.glob(pattern)]
        return sorted((r for r in found if not r.startswith(".")), key=_by_time)


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

    def __init__(self, url: str, s3: Any = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInput(f"{url!r} is not an s3://bucket/prefix URL")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._s3 = s3

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            from exportnb import storage

            self._s3 = storage.client()
        return self._s3

    def key(self, record_id: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, record_id, name) if p)

    def check(self) -> None:
        from exportnb import storage

        storage.head_bucket(self.s3, self.bucket)

    def location(self, record_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(record_id)}"

    def write(self, record_id: str, files: Mapping[str, bytes]) -> str:
        from exportnb import storage

        check_files(record_id, files)
        for name in FILES:
            key = self.key(record_id, name)
            try:
                storage.put_object(self.s3, self.bucket, key, files[name],
                                   IfNoneMatch="*", ContentType=CONTENT_TYPES[name])  # fmt: skip
            except StorageError as exc:
                if exc.status == 412 or exc.code == "PreconditionFailed":
                    raise StorageError(
                        f"record {record_id} already exists in {self.url} ({name})",
                        code=exc.code, status=exc.status,
                    ) from exc  # fmt: skip
                raise
        return self.location(record_id)

    def read(self, record_id: str, name: str) -> bytes:
        from exportnb import storage

        key = self.key(record_id, name)
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            error = storage.storage_error(exc, f"GetObject s3://{self.bucket}/{key}")
            if error.status == 404 or error.code in ("NoSuchKey", "NotFound"):
                raise NotFound(f"no record {record_id} in {self.url}") from exc
            raise error from exc
        return body

    def record_ids(self, incident: str | None = None) -> list[str]:
        from exportnb import storage

        start = self.key(incident) + "/" if incident else (self.prefix + "/" if self.prefix else "")
        found = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                found += [o["Key"] for o in page.get("Contents", [])]
        except Exception as exc:
            raise storage.storage_error(exc, f"ListObjectsV2 {self.url}") from exc
        skip = len(self.prefix) + 1 if self.prefix else 0
        ids = [k[skip : -len(METADATA) - 1] for k in found if k.endswith("/" + METADATA)]
        return sorted((i for i in ids if i.count("/") == 1), key=_by_time)


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
    if not path.exists():
        return None
    try:
        url = tomllib.loads(path.read_text(encoding="utf-8")).get("archive", {}).get("url")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{path}: [archive] url must be a string")
    return url or None


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
