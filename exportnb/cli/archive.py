"""``exportnb archive``: list, show, search, verify, render and export archived records.

Each command is a thin call into the library: :mod:`exportnb.archive.index` (list, search,
reindex), :mod:`exportnb.archive.integrity` (verify), :mod:`exportnb.archive.bundle` (html, export).

Exit codes: 0 done; 2 invalid input (nothing changed); 3 no such record or incident;
4 verification found a problem (or a record to export or render does not match its
hashes, or the chain no longer holds the head the index witnessed); 6 the archive or the
index could not be read or written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from exportnb.archive import bundle, index, integrity
from exportnb.archive.store import open_archive
from exportnb.core import codec
from exportnb.core.console import cell, echo_json, fail, handles_errors
from exportnb.record.facts import RecordFacts
from exportnb.record.model import HTML, METADATA, NOTEBOOK

F = Callable[..., Any]


@click.group("archive")
def archive_group() -> None:
    """List, search, verify, render and export archived records."""


def _archive_option(func: F) -> F:
    return click.option(
        "--archive",
        "url",
        metavar="URL",
        help="A folder or s3://bucket/prefix (default: $EXPORTNB_ARCHIVE, [archive] url, "
        "$EXPORTNB_HOME/archive).",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print as JSON.")(func)


@contextmanager
def _progress(label: str, as_json: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on a terminal's stderr (not with --json)."""
    if as_json or not sys.stderr.isatty():
        yield None
        return
    bar = click.progressbar(length=1, label=label, file=sys.stderr, show_pos=True)

    def update(done: int, total: int) -> None:
        bar.length = max(total, 1)
        bar.update(done - bar.pos)

    try:
        yield update
    finally:
        bar.render_finish()


def _table(found: Sequence[Any]) -> None:
    if not found:
        click.echo("No records.")
        return
    width = max(len(s.record_id) for s in found)
    click.echo(f"{'RECORD':<{width}}  VER  STATUS     DURATION  CRIT  WARN  INFO  OPERATOR")
    for s in found:
        f = s.findings
        click.echo(
            f"{s.record_id:<{width}}  {s.version:>3}  {s.status:<9} "
            f"{s.duration_seconds:>8.1f}s {f.get('critical', 0):>5} "
            f"{f.get('warning', 0):>5} {f.get('info', 0):>5}  {s.operator}"
        )


@archive_group.command("list")
@click.option("--incident", metavar="ID", help="Only this incident's records.")
@_archive_option
@_json_option
@handles_errors
def list_records(incident: str | None, url: str | None, as_json: bool) -> None:
    """List the records, oldest first (from the index, brought up to date first)."""
    found = index.search(url, incident=incident)
    if as_json:
        echo_json(codec.encode(found))
    else:
        _table(found)


@archive_group.command("search")
@click.option("--incident", metavar="ID", help="Records of this incident.")
@click.option("--job-id", metavar="ID", help="Records that name this export job.")
@click.option("--tenant", metavar="NAME", help="Records that name this tenant.")
@click.option("--bucket", metavar="NAME", help="Records that name this bucket.")
@click.option("--status", type=click.Choice(["succeeded", "failed"]), help="Run status.")
@click.option(
    "--since",
    metavar="TIME",
    help="Started at or after: 2024-05-01, an ISO time, or a duration ago (30d, 12h).",
)
@click.option("--until", metavar="TIME", help="Started before (same forms as --since).")
@click.option("--finding", metavar="CODE", help="Records with this finding (failure_rate_high).")
@click.option("--limit", type=int, metavar="N", help="At most N records (the oldest).")
@_archive_option
@_json_option
@handles_errors
def search_records(
    url: str | None, as_json: bool, since: str | None, until: str | None, **filters: Any
) -> None:
    """Find records by incident, job ID, tenant, bucket, status, start time or finding."""
    found = index.search(
        url,
        since=index.parse_time(since) if since else None,
        until=index.parse_time(until) if until else None,
        **filters,
    )
    if as_json:
        echo_json(codec.encode(found))
    else:
        _table(found)


@archive_group.command("show")
@click.argument("ref", metavar="RECORD_ID|INCIDENT")
@_archive_option
@click.option("--json", "as_json", is_flag=True, help="Print the record.json, with its paths.")
@handles_errors
def show_record(ref: str, url: str | None, as_json: bool) -> None:
    """Show a record: its metadata, findings, mitigations and where its files are.

    Given an incident ID, shows the incident's latest record.
    """
    store = open_archive(url)
    record = store.show(store.resolve(ref))
    facts = RecordFacts.of(record)
    if as_json:
        paths = {name: record.path(name) for name in (NOTEBOOK, HTML, METADATA)}
        echo_json({**codec.encode(record), "paths": paths, "facts": codec.encode(facts)})
        return
    status = record.status + (f" at {record.error.describe()}" if record.error else "")
    latest = f" (the latest of incident {ref})" if ref != record.record_id else ""
    click.echo(f"Record {record.record_id}{latest}")
    click.echo(f"  status:    {status}")
    click.echo(f"  incident:  {record.incident_id}   operator: {record.operator}")
    click.echo(f"  started:   {cell(record.started_at)}   duration: {record.duration_seconds:.1f}s")
    click.echo(f"  template:  {record.notebook}")
    click.echo(f"  jobs:      {' '.join(facts.job_ids) or '-'}")
    click.echo(f"  tenants:   {' '.join(facts.tenants) or '-'}")
    click.echo(f"  buckets:   {' '.join(facts.buckets) or '-'}")
    for name in (NOTEBOOK, HTML, METADATA):
        click.echo(f"  {name.split('.')[-1] + ':':<10} {record.path(name)}")
    for name, file in record.files.items():
        click.echo(f"  sha256:    {file.sha256}  {name}")
    for finding in record.findings():
        click.echo(f"  {finding.severity:<8} {finding.step}: {finding.summary} ({finding.code})")
    for done in facts.mitigations:
        when = cell(done.at)
        click.echo(f"  applied   {done.action} by {done.operator} at {when} ({done.source})")


@archive_group.command("verify")
@click.option("--incident", metavar="ID", help="Check this incident's records (and the chain).")
@_archive_option
@_json_option
@handles_errors
def verify_records(incident: str | None, url: str | None, as_json: bool) -> None:
    """Check the sha256 of every file of every record, and the hash chain across records.

    Names each problem (record, file, what is wrong) and exits 4 when there is any.
    """
    with _progress("Verifying", as_json) as progress:
        found = integrity.verify_archive(url, incident=incident, on_progress=progress)
    if as_json:
        echo_json({"ok": found.ok, **codec.encode(found)})
        sys.exit(0 if found.ok else 4)
    for problem in found.problems:
        click.echo(problem.describe())
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    what = (
        f"{found.records} record(s) ({found.files} files, {found.bytes:,} bytes) and a "
        f"chain of {found.chain_length} entries in {found.archive}"
    )
    if not found.ok:
        fail(f"{len(found.problems)} problem(s) in {what}", 4)
    head = f"; head: entry {found.head.seq} ({found.head.sha256[:16]})" if found.head else ""
    click.echo(f"OK: {what}{head}")


@archive_group.command("html")
@click.argument("ref", metavar="RECORD_ID|INCIDENT")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the page here.")
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser.")
@_archive_option
@handles_errors
def html_page(ref: str, output: str | None, open_it: bool, url: str | None) -> None:
    """Print the path of the record's notebook.html (checked against its sha256).

    Given an incident ID, the page of the incident's latest record.
    """
    path = bundle.html_page(ref, url, output)
    click.echo(str(path))
    if open_it:
        import webbrowser

        webbrowser.open(path.absolute().as_uri())


@archive_group.command("export")
@click.argument("incident")
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="A new folder, or a FILE.tar.gz."
)
@_archive_option
@_json_option
@handles_errors
def export_records(incident: str, output: str, url: str | None, as_json: bool) -> None:
    """Export an incident's records, verified, with a manifest of hashes (MANIFEST.json,
    SHA256SUMS)."""
    done = bundle.export_incident(incident, output, url)
    if as_json:
        echo_json(codec.encode(done))
        return
    click.echo(
        f"Exported {len(done.records)} record(s) of {incident} to {done.path} "
        f"({done.files} files, {done.bytes:,} bytes; check with sha256sum -c SHA256SUMS)"
    )


@archive_group.command("reindex")
@click.option(
    "--accept-chain",
    is_flag=True,
    help="Trust the archive's chain as it is now, even if it no longer holds the "
    "head this index witnessed (after records were deliberately removed).",
)
@_archive_option
@_json_option
@handles_errors
def reindex(accept_chain: bool, url: str | None, as_json: bool) -> None:
    """Rebuild the archive's index from its records."""
    with _progress("Indexing", as_json) as progress:
        done = index.reindex(url, accept_chain=accept_chain, on_progress=progress)
    if as_json:
        echo_json(codec.encode(done))
        return
    head = f"entry {done.head.seq}" if done.head else "none"
    click.echo(f"Indexed {done.records} record(s) of {done.archive}; chain head witnessed: {head}")
    for record_id in done.unchained:
        click.echo(f"  not in the chain: {record_id}")
    for record_id, why in done.unreadable.items():
        click.echo(f"  not indexed: {record_id}: {why}")
