#!/bin/sh
# Write the running sandbox's metrics endpoint as a Prometheus file_sd target list.
#
#   deploy/prometheus/sandbox-targets.sh /etc/prometheus/targets/exportnb-sandbox.json
#
# Reads `exportnb sandbox status --json` (EXPORTNB_HOME chooses the sandbox), and replaces
# the file atomically, so Prometheus never reads half of it. Exit code 5: no sandbox runs.
set -eu

out=${1:?usage: sandbox-targets.sh TARGETS.json}
status=$(exportnb sandbox status --json)
python=${PYTHON:-python3}
printf '%s' "$status" | "$python" -c '
import json, sys
from urllib.parse import urlsplit

state = json.load(sys.stdin)["state"]
url = urlsplit(state["metrics_url"])
target = {
    "targets": [url.netloc],
    "labels": {"__metrics_path__": url.path or "/metrics", "scenario": state["scenario"]},
}
json.dump([target], sys.stdout, indent=2)
print()
' >"$out.tmp"
mv "$out.tmp" "$out"
