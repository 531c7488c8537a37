"""Binder: the files repo2docker reads, and scripts/test-binder.sh, which runs them as
repo2docker does (requirements, postBuild, start around a command) in a fresh virtual
environment and checks that the sandbox's environment is exported and the sandbox answers."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import need

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
SCRIPT = ROOT / "scripts" / "test-binder.sh"
BADGE = (
    "[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/"
    "exportnb/HEAD?labpath=notebooks/postmortem_review.ipynb)"
)


def executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def test_the_binder_files_say_what_repo2docker_needs():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == ["."]
    for name in ("postBuild", "start"):
        script = BINDER / name
        assert executable(script), f"binder/{name} must be executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    start = (BINDER / "start").read_text()
    assert 'eval "$(exportnb sandbox env)"' in start and start.rstrip().endswith('exec "$@"')
    assert "exportnb sandbox up --scenario" in start
    assert BADGE in (ROOT / "README.md").read_text()


def test_the_script_refuses_binder_steps_that_are_not_executable(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(BINDER, copy / "binder")
    shutil.copytree(SCRIPT.parent, copy / "scripts")
    (copy / "binder" / "postBuild").chmod(0o644)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run(
        ["bash", str(copy / "scripts" / SCRIPT.name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode != 0
    assert "binder/postBuild and binder/start must be executable" in done.stderr
    assert not list(scratch.iterdir()), "the temporary folder is removed"


def test_the_binder_steps_run_in_a_fresh_environment_and_start_the_sandbox():
    need(sys.version_info[:2] == (3, 11), "binder/runtime.txt asks for Python 3.11")
    env = {k: v for k, v in os.environ.items() if k not in ("EXPORTNB_HOME", "VIRTUAL_ENV")}
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**env, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "postBuild: exportnb, version" in out and "/venv" in out.split("postBuild: ")[1]
    assert "check: sandbox answers at http://127.0.0.1:" in out and "/repo\n" in out
    assert out.rstrip().endswith("test-binder: ok")
