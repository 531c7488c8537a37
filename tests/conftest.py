"""Shared fixtures. The sandbox fixture runs the real daemon: moto server over HTTP on
loopback behind the fault proxy, the export worker, and the path emulator where the
process may create it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

QUIET_SCENARIO = """
extends = "base"
description = "test world: a small, healthy history and no faults"
volume = 3000
[incident]
minutes = 5
faults = []
"""


def need(condition: bool, reason: str) -> None:
    """Skip when a component is missing, except in CI, where a missing component fails."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: components the tests need must be installed)")
    pytest.skip(reason)


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


@dataclass
class Sandbox:
    home: Path
    env: dict[str, str]

    def run(
        self, *args: str, check: bool = False, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the sandbox's shell (after `eval "$(exportnb sandbox env)"`)."""
        result = subprocess.run(
            list(args),
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result

    def inject(self, *args: str) -> int:
        """``exportnb sandbox fault inject ARGS``; the fault's ID, once the daemon has it."""
        out = self.run(*exportnb_cmd("sandbox", "fault", "inject", "--json", *args), check=True)
        time.sleep(0.6)  # the daemon re-reads faults every 0.25s
        return int(json.loads(out.stdout)["id"])

    def clear(self, fault_id: int) -> None:
        self.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault_id)), check=True)

    def platform(self):
        from exportnb.sandbox.platform import SandboxPlatform

        return SandboxPlatform(self.home)


def exportnb_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "exportnb.cli", *args]


def start_sandbox(home: Path, scenario: str) -> Sandbox:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[limits]\nstale_heartbeat = "3s"\nmax_retry_concurrency = 4\n'
    )
    env = {**os.environ, "EXPORTNB_HOME": str(home), "EXPORTNB_OPERATOR": "test-operator"}
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(key, None)
    subprocess.run(
        exportnb_cmd("sandbox", "up", "--scenario", scenario),
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    exports = subprocess.run(
        exportnb_cmd("sandbox", "env"), env=env, check=True, capture_output=True, text=True
    ).stdout
    shell = subprocess.run(
        ["bash", "-c", f"{exports}\nenv -0"], env=env, check=True, capture_output=True, text=True
    ).stdout
    sandbox_env = dict(item.split("=", 1) for item in shell.split("\0") if "=" in item)
    return Sandbox(home, sandbox_env)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $EXPORTNB_HOME of the test's own (operator alice, the default archive)."""
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXPORTNB_OPERATOR", "alice")
    monkeypatch.delenv("EXPORTNB_ARCHIVE", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A running sandbox with a quiet world, for one test module."""
    home = tmp_path_factory.mktemp("home")
    scenario = home / "quiet.toml"
    home.mkdir(exist_ok=True)
    scenario.write_text(QUIET_SCENARIO)
    box = start_sandbox(home, str(scenario))
    old = os.environ.get("EXPORTNB_HOME")
    os.environ["EXPORTNB_HOME"] = str(home)
    try:
        yield box
    finally:
        subprocess.run(
            exportnb_cmd("sandbox", "down"), env=box.env, capture_output=True, timeout=60
        )
        if old is None:
            os.environ.pop("EXPORTNB_HOME", None)
        else:
            os.environ["EXPORTNB_HOME"] = old
