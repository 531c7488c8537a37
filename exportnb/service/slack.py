"""Status updates to a Slack incoming webhook, as Block Kit.

:func:`message` builds the post: a header with the incident, the run's status update (the
notebook's communication step, in Slack's ``mrkdwn``) in sections of at most
:data:`SECTION_LIMIT` characters, and a context line with the run, its record and where
its HTML is. A run without a status update (a failed one, say) posts a short line instead.
:func:`post` sends it with the standard library; Slack answers ``ok``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from exportnb.core.errors import PlatformError

SECTION_LIMIT = 3000
"""Slack's limit on the text of one section block."""
MAX_BLOCKS = 50
HEADER_LIMIT = 150


def mrkdwn(markdown: str) -> str:
    """Markdown as Slack writes it: ``*bold*``, headings in bold, ``<url|text>`` links."""
    text = re.sub(r"^#{1,6}\s+(.*)$", r"*\1*", markdown, flags=re.MULTILINE)
    text = re.sub(r"\*\*(.+?)\*\*", r"*\1*", text)
    text = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r"<\2|\1>", text)
    return re.sub(r"^(\s*)[-*] ", r"\1• ", text, flags=re.MULTILINE)


def _sections(text: str) -> list[str]:
    """``text`` in pieces of at most SECTION_LIMIT characters, cut at line ends."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines():
        for start in range(0, max(len(line), 1), SECTION_LIMIT):
            chunk = line[start : start + SECTION_LIMIT]
            if current and len(current) + 1 + len(chunk) > SECTION_LIMIT:
                pieces.append(current)
                current = chunk
            else:
                current = f"{current}\n{chunk}" if current else chunk
    return [p for p in [*pieces, current] if p.strip()]


def message(
    incident_id: str,
    run: int,
    reason: str,
    *,
    status_update: str | None,
    record_id: str | None,
    record_status: str | None,
    html: str | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The Block Kit payload for one finished run."""
    title = f"Export incident {incident_id}: run {run} ({reason.replace('_', ' ')})"
    if status_update:
        body = mrkdwn(status_update)
    elif record_id:
        body = f"The run {record_status}; no status update in record `{record_id}`."
    else:
        body = f"The run produced no record: {error or 'unknown error'}"
    context = [f"record `{record_id}` ({record_status})" if record_id else "no record"]
    if html:
        context.append(f"<{html}|HTML>" if html.startswith("http") else f"HTML: `{html}`")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:HEADER_LIMIT]}},
        *(
            {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in _sections(body)
        ),
    ]
    blocks = blocks[: MAX_BLOCKS - 1]
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {
        "text": f"{title}: {body.splitlines()[0] if body else ''}"[:SECTION_LIMIT],
        "blocks": blocks,
    }


def post(url: str, payload: dict[str, Any], *, timeout: float = 10.0) -> None:
    """POST the message; PlatformError when Slack (or the network) refuses it."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        said = exc.read()[:200].decode(errors="replace")
        raise PlatformError(f"Slack answered {exc.code}: {said}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PlatformError(f"cannot reach the Slack webhook: {exc}") from exc
