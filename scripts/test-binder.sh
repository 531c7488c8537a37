#!/usr/bin/env bash
# Test the Binder steps the way repo2docker runs them, in a fresh virtual environment under a
# temporary folder, every step from a copy of the repository (repo2docker's working folder):
#
#   1. the Python of binder/runtime.txt, in a fresh virtual environment;
#   2. pip install -r binder/requirements.txt;
#   3. binder/postBuild (it must be executable);
#   4. binder/start wrapping a command (as repo2docker wraps the notebook server) that checks
#      the sandbox's environment is exported and the sandbox answers; then the sandbox stops.
#
# To keep it quick, the packages exportnb depends on are read from the project's environment
# through a .pth file (a view of its site-packages without exportnb, pip and setuptools), so
# pip finds them installed; exportnb itself is installed from the copy by the Binder steps.
#
#   PYTHON   the interpreter whose packages are reused (default: .venv/bin/python)
#   KEEP=1   keep the temporary folder (it is printed) instead of removing it
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/exportnb-binder.XXXXXX")"
venv="$work/venv"
export EXPORTNB_HOME="$work/home"      # the sandbox's state, away from anyone else's
export MPLCONFIGDIR="$work/matplotlib" # postBuild's font cache, likewise
unset EXPORTNB_ARCHIVE AWS_ENDPOINT_URL VIRTUAL_ENV

step() { printf '\n== %s\n' "$*"; }
fail() { echo "test-binder: $*" >&2; exit 1; }

cleanup() {
    local status=$?
    if [ -x "$venv/bin/exportnb" ]; then "$venv/bin/exportnb" sandbox down >/dev/null 2>&1 || true; fi
    if [ "${KEEP:-}" = 1 ]; then echo "test-binder: kept $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT

step "copy the repository to $work/repo"
mkdir -p "$work/repo"
tar -C "$repo" --exclude=./.venv --exclude=./.git --exclude='__pycache__' \
    --exclude='./.*_cache' --exclude='*.egg-info' --exclude=./build --exclude=./dist \
    -cf - . | tar -C "$work/repo" -xf -
cd "$work/repo"
for file in binder/runtime.txt binder/requirements.txt binder/postBuild binder/start; do
    [ -f "$file" ] || fail "$file is missing"
done
[ -x binder/postBuild ] && [ -x binder/start ] || fail "binder/postBuild and binder/start must be executable"

step "a fresh virtual environment with the Python of binder/runtime.txt"
want="$(sed -n 's/^python-//p' binder/runtime.txt)"
have="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$have" = "$want" ] || fail "binder/runtime.txt asks for Python $want; $python is $have"
"$python" -m venv "$venv"
"$python" - "$work/deps" <<'PY'
import sys
import sysconfig
from pathlib import Path

view = Path(sys.argv[1])
view.mkdir()
skip = {"exportnb", "pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel"}
for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
    project = entry.name.split("-")[0].split(".")[0].lower()
    if entry.suffix == ".pth" or entry.name == "__pycache__" or project in skip:
        continue
    if not entry.name.startswith("__editable__"):
        (view / entry.name).symlink_to(entry)
PY
purelib="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$work/deps" >"$purelib/exportnb-binder-test-deps.pth"
export PATH="$venv/bin:$PATH"

step "pip install -r binder/requirements.txt"
python -m pip install --disable-pip-version-check -r binder/requirements.txt

step "binder/postBuild"
binder/postBuild
cmp -s binder/overrides.json "$venv/share/jupyter/lab/settings/overrides.json" \
    || fail "postBuild did not put binder/overrides.json where JupyterLab reads it"

step "binder/start <check the sandbox>"
cat >"$work/check.sh" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
for name in EXPORT_BUCKET EXPORT_FALLBACK_BUCKET EXPORT_TARGET_HOST AWS_ENDPOINT_URL; do
    [ -n "${!name:-}" ] || { echo "check: $name is not exported" >&2; exit 1; }
done
[ "$(command -v exportnb)" = "$BINDER_VENV/bin/exportnb" ] || { echo "check: exportnb is not the fresh install" >&2; exit 1; }
[ "$(command -v exportctl)" = "$EXPORTNB_HOME/sandbox/bin/exportctl" ] || { echo "check: the sandbox's exportctl is not on PATH" >&2; exit 1; }
exportctl list --status failed --limit 3 --output json >/dev/null
python -P - <<'PY'  # -P: exportnb as installed, not the copy in the working folder
import os
import sys

import boto3

import exportnb

assert exportnb.__file__.startswith(sys.prefix), f"exportnb from {exportnb.__file__}"
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
s3.head_bucket(Bucket=os.environ["EXPORT_FALLBACK_BUCKET"])
print(f"check: sandbox answers at {os.environ['AWS_ENDPOINT_URL']}; cwd {os.getcwd()}")
PY
echo "check: ok"
SH
BINDER_VENV="$venv" binder/start bash "$work/check.sh"
exportnb sandbox status >/dev/null || fail "the sandbox start started is not running"

echo
echo "test-binder: ok"
