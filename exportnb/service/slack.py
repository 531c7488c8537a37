"""Status updates to a Slack incoming webhook, as Block Kit.

:func:`message` builds the post: a header with the incident, the run's status update (the
notebook's communication step, in Slack's ``mrkdwn``) in sections of at most
:data:`SECTION_LIMIT` characters, and a context line with the run, its record and where
its HTML is. A run without a status update (a failed one, say) posts a short line instead.

:func:`send` posts it with slack-sdk's :class:`~slack_sdk.webhook.WebhookClient` and its
retry handlers, which share one attempt counter (at most ``[serve] slack_retries`` retries
per post, whatever the mix):

- ``RateLimitErrorRetryHandler``: a ``429``; it sleeps ``Retry-After`` seconds (a whole
  number; 1 s when absent) plus up to 1 s of jitter, then retries;
- ``ServerErrorRetryHandler``: a ``500`` or a ``503`` only (a 502 or 504 is not retried
  here, and waits in the outbox like any other failure);
- ``ConnectionErrorRetryHandler``: no answer (refused, reset, a connect timeout); these two
  wait ``slack_backoff`` x 2^attempt plus up to as much again of jitter.

``send_dict`` returns the last answer whatever its status, and raises when there was no
answer at all; :func:`send` turns both into an :class:`Answer`. Slack accepted the post
when it answered 2xx. A ``400`` or ``413`` refuses this very post (``invalid_payload``,
``invalid_blocks``...), so sending it again would never help: :attr:`Answer.refused`.
Anything else (429, 5xx, 401/403/404/410 for a webhook revoked or a channel archived, no
answer) may pass later: the update waits in the outbox (:mod:`exportnb.service.outbox`).
"""

from __future__ import annotations

import http.client
import logging
import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.errors import SlackRequestError
from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    Jitter,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from exportnb.core.errors import PlatformError
from exportnb.service.settings import LOOPBACK_HOSTS, ServeSettings

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


REFUSED = (400, 413)
"""Statuses by which Slack refuses the post itself: sending it again cannot help."""
REASONS = ("rate_limited", "server_error", "unreachable", "refused", "rejected")
"""Why a post failed after its retries (:attr:`Answer.reason`), for the metrics."""
_quiet = logging.getLogger("exportnb.service.slack_sdk")
_quiet.setLevel(logging.CRITICAL)  # the SDK logs the webhook URL (a secret) at debug level


@dataclass(frozen=True)
class Answer:
    """What Slack said to one post, once the retries are spent: ``status`` (None: no
    answer at all) and the first 200 characters it said, or why it could not be reached."""

    status: int | None
    said: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in REFUSED

    @property
    def reason(self) -> str:
        """One of :data:`REASONS` (for a post that was not accepted)."""
        if self.status is None:
            return "unreachable"
        if self.status == 429:
            return "rate_limited"
        if self.status >= 500:
            return "server_error"
        return "refused" if self.refused else "rejected"

    @property
    def why(self) -> str:
        if self.status is None:
            return f"cannot reach the Slack webhook: {self.said}"
        return f"Slack answered {self.status}: {self.said}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one post tries (``[serve] slack_retries``, ``slack_backoff``, ``slack_timeout``)."""

    retries: int = 3
    backoff: float = 0.5
    timeout: float = 10.0

    @classmethod
    def of(cls, settings: ServeSettings) -> RetryPolicy:
        return cls(settings.slack_retries, settings.slack_backoff, settings.slack_timeout)

    def handlers(self) -> list[RetryHandler]:
        """429 (Retry-After), 500/503 and no answer, each at most ``retries`` times in all."""
        waits = BackoffRetryIntervalCalculator(self.backoff, _ScaledJitter(self.backoff))
        return [
            RateLimitErrorRetryHandler(max_retry_count=self.retries),
            ServerErrorRetryHandler(max_retry_count=self.retries, interval_calculator=waits),
            ConnectionErrorRetryHandler(max_retry_count=self.retries, interval_calculator=waits),
        ]


class _ScaledJitter(Jitter):
    """Up to ``most`` seconds of jitter (the SDK's default adds up to a whole second)."""

    def __init__(self, most: float) -> None:
        self.most = most

    def recalculate(self, duration: float) -> float:
        return duration + random.uniform(0, self.most)


def client(url: str, policy: RetryPolicy) -> WebhookClient:
    """The webhook client with the retry handlers of ``policy``."""
    webhook = WebhookClient(
        url,
        timeout=max(1, round(policy.timeout)),
        logger=_quiet,
        retry_handlers=policy.handlers(),
    )
    if urlsplit(url).hostname in LOOPBACK_HOSTS:
        webhook.proxy = None  # a receiver on loopback is never behind $HTTPS_PROXY
    return webhook


def send(webhook: WebhookClient, payload: dict[str, Any]) -> Answer:
    """POST the message, with the client's retries; never raises for Slack or the network."""
    try:
        response = webhook.send_dict(payload)
    except (OSError, http.client.HTTPException, SlackRequestError, ValueError) as exc:
        # OSError: refused, reset, timed out (URLError is one); ValueError: a Retry-After
        # that is not a whole number of seconds
        return Answer(None, _reason(exc))
    return Answer(response.status_code, str(response.body or "")[:200])


def post(url: str, payload: dict[str, Any], *, policy: RetryPolicy | None = None) -> None:
    """POST the message; PlatformError when Slack (or the network) did not take it."""
    answer = send(client(url, policy or RetryPolicy()), payload)
    if not answer.accepted:
        raise PlatformError(answer.why)


def _reason(exc: Exception) -> str:
    """What went wrong, without the URL (a secret)."""
    inner = getattr(exc, "reason", None)
    return str(inner if inner is not None else exc) or type(exc).__name__
