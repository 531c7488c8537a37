"""Watching a retry live: the retried jobs polled until they finish, as widgets.

:class:`RetryWatcher` polls :func:`exportnb.mitigation.retries.watch_retry` in a thread and shows
a progress bar (jobs finished of jobs retried), the counts by status (queued -> running ->
succeeded or failed) and a table of the jobs, with the jobs that failed again with the
error they had before flagged as repeat errors. It stops when every job has finished,
when the watch times out, or on :meth:`RetryWatcher.stop`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

import ipywidgets as widgets

from exportnb.core.errors import ExportnbError
from exportnb.mitigation.retries import RetryWatch, watch_retry

if TYPE_CHECKING:
    from exportnb.platform import Platform

STYLE = {"ok": "#1a7f37", "info": "#0969da", "warn": "#9a6700", "bad": "#cf222e"}
FINISHED = ("succeeded", "failed", "cancelled", "not_found")


def message(text: str, tone: str = "info") -> str:
    return f'<div style="color:{STYLE[tone]}">{escape(text)}</div>'


def preformatted(text: str) -> str:
    return f'<pre style="white-space:pre-wrap;margin:4px 0">{escape(text)}</pre>'


class RetryWatcher:
    """Live progress of retried jobs: polls :func:`~exportnb.mitigation.retries.watch_retry`."""

    def __init__(
        self, platform: Platform, job_ids: Sequence[str], attempts_before: Mapping[str, int]
    ) -> None:
        self.platform, self.job_ids = platform, list(job_ids)
        self.attempts_before = dict(attempts_before)
        self.progress = widgets.IntProgress(
            value=0, min=0, max=max(len(self.job_ids), 1), description="Finished"
        )
        self.label, self.table = widgets.HTML(), widgets.HTML()
        self.widget = widgets.VBox([self.progress, self.label, self.table])
        self.widget.add_class("exportnb-retry-watch")
        self.last: RetryWatch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> RetryWatch:
        """Look at the jobs once and update the widgets."""
        watch = watch_retry(self.platform, self.job_ids, attempts_before=self.attempts_before)
        self.last = watch
        self.progress.value = sum(1 for j in watch.jobs if j.status in FINISHED)
        self.progress.bar_style = (
            "danger" if watch.repeat_errors else ("success" if watch.done else "info")
        )
        counts = " · ".join(f"{status} {n}" for status, n in watch.counts.items())
        text = counts + (" — done" if watch.done else " — watching")
        if watch.repeat_errors:
            text += f". Repeat errors: {', '.join(watch.repeat_errors)}"
        self.label.value = message(text, "bad" if watch.repeat_errors else "info")
        self.table.value = _jobs_table(watch)
        return watch

    def start(self, interval: float, timeout: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(interval, timeout), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, interval: float, timeout: float) -> None:
        waited = 0.0
        while not self._stop.is_set():
            try:
                if self.refresh().done:
                    return
            except ExportnbError as exc:
                self.label.value = message(f"Watch failed: {exc.message}", "bad")
                return
            if waited >= timeout:
                self.label.value += message(f"Stopped watching after {timeout:.0f}s.", "warn")
                return
            self._stop.wait(interval)
            waited += interval


def _jobs_table(watch: RetryWatch) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("job", "status", "attempts", "error", "repeat"))
    rows = "".join(
        f"<tr><td>{escape(j.job_id)}</td><td>{escape(j.status)}</td><td>{j.attempts}</td>"
        f"<td>{escape(j.error_code or '')}</td><td>{'⚠ yes' if j.repeat else ''}</td></tr>"
        for j in watch.jobs
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
