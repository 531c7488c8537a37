"""The mitigation panel in a real JupyterLab, clicked in a real browser.

``jupyter lab`` serves the prepared incident notebook (as ``exportnb investigate`` does);
Playwright drives Debian's chromium (``executable_path``). The test runs all cells,
plans, confirms and applies two mitigations from the panel, finalizes the incident, and
checks the sandbox's state, the journal and the archived record. Under CI=true a
missing chromium or Playwright fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need

from exportnb.mitigation.journal import read_journal
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG
from exportnb.platform.registry import local_environment
from exportnb.run import runner

CHROMIUM = os.environ.get("EXPORTNB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
INCIDENT = "INC-browser-1"
SLOW = 180_000  # ms: the first run of all cells starts a kernel and runs the diagnostics


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    need(
        Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
        f"chromium is not installed ({CHROMIUM}); make test installs it",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed; make test installs it")
        raise
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
            headless=True,  # a new empty profile of Playwright's own
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def lab(sandbox) -> Iterator[object]:
    from exportnb.run.lab import Lab

    found = local_environment(sandbox.home)
    assert found is not None
    env, defaults = found
    target, made = runner.prepare(
        incident_id=INCIDENT,
        defaults={**defaults, "mode": "interactive"},
        operator="browser-operator",
    )
    assert made
    started = Lab.start(target, env={**env, "EXPORTNB_OPERATOR": "browser-operator"})
    try:
        yield started
    finally:
        started.stop()


def wait_for_panel(page) -> None:
    """Wait for the panel; JupyterLab may first ask which kernel to use: the notebook's."""
    panel = page.locator(".exportnb-action-pause-bulk button.exportnb-plan")
    asked = page.locator(".jp-Dialog").get_by_text("Select Kernel")
    deadline = time.monotonic() + SLOW / 1000
    while time.monotonic() < deadline:
        if panel.count():
            return
        if asked.count():
            page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True).click()
        time.sleep(0.5)
    panel.wait_for(timeout=1)


def card(page, action: str):
    return page.locator(f".exportnb-action-{action}")


def click(page, action: str, button: str) -> None:
    card(page, action).locator(f"button.exportnb-{button}").click()


def test_plan_confirm_apply_two_mitigations_and_finalize(sandbox, lab, browser, tmp_path):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(lab.url)
        page.wait_for_selector(".jp-Notebook", timeout=SLOW)
        page.get_by_text("| Idle").wait_for(timeout=SLOW)  # the status bar: the kernel is up
        page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
        wait_for_panel(page)

        for action in ("pause-bulk", "fallback-bucket"):
            here = card(page, action)
            here.scroll_into_view_if_needed()
            click(page, action, "plan")
            here.get_by_text("Planned", exact=False).wait_for()
            click(page, action, "apply")
            here.get_by_text("Confirm or Cancel", exact=False).wait_for()
            click(page, action, "confirm")
            here.get_by_text("Applied:", exact=False).wait_for()

        platform = sandbox.platform()
        assert platform.get_flag(BULK_PAUSE_FLAG).value is True
        assert platform.get_flag(FALLBACK_FLAG).value == fallback
        applied = [e for e in read_journal(INCIDENT) if e.ok]
        assert [e.action for e in applied] == ["pause-bulk", "fallback-bucket"]
        assert {e.operator for e in applied} == {"browser-operator"}

        page.locator("button.exportnb-finalize").click()
        page.get_by_text(f"Record {INCIDENT}/", exact=False).wait_for(timeout=SLOW)
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'failure.png'}; JupyterLab log: {lab.log}")
        raise
    finally:
        page.close()

    from exportnb.run.finalize import latest_record

    record = latest_record(INCIDENT)
    assert record is not None and record.status == "succeeded", record and record.error
    trails = [r["result"] for r in record.results if r.get("type") == "Trail"]
    assert [a["action"] for a in trails[-1]["applied"]] == ["pause-bulk", "fallback-bucket"]
    assert record.parameters["mode"] == "auto"
    # finalizing applied nothing again
    assert sum(1 for e in read_journal(INCIDENT) if e.ok) == 2
    sets = [
        e
        for e in sandbox.platform().flag_history(FALLBACK_FLAG)
        if e.action == "flag.set" and INCIDENT in e.reason
    ]
    assert len(sets) == 1
