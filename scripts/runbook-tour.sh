#!/usr/bin/env bash
# Bring the sandbox up, run the export-failure runbook's commands verbatim, bring it down.
set -euo pipefail

scenario="${SCENARIO:-default}"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

exportnb sandbox up --scenario "$scenario"
trap 'exportnb sandbox down' EXIT
eval "$(exportnb sandbox env)"

step exportctl list --status failed --limit 20
exportctl list --status failed --limit 20

step aws s3api head-bucket --bucket "$EXPORT_BUCKET"
if command -v aws >/dev/null; then aws s3api head-bucket --bucket "$EXPORT_BUCKET" || true; fi

job=$(exportctl list --status succeeded --limit 1 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
step exportctl verify --job "$job"
exportctl verify --job "$job" || true

step mtr -r "$EXPORT_TARGET_HOST"
if command -v mtr >/dev/null; then mtr -r -c 5 "$EXPORT_TARGET_HOST" || true; else echo "(mtr not installed)"; fi

step featurectl set export.fallback_bucket "$EXPORT_FALLBACK_BUCKET" --ttl 30m
featurectl set export.fallback_bucket "$EXPORT_FALLBACK_BUCKET" --ttl 30m

step exportctl retry --status failed --limit 20 --concurrency 2
exportctl retry --status failed --limit 20 --concurrency 2

failed=$(exportctl list --status failed --limit 1 --output json | python3 -c 'import json,sys; d=json.load(sys.stdin)["items"]; print(d[0]["id"] if d else "")')
if [ -n "$failed" ]; then
  step exportctl update --job "$failed" --chunk-size 50MB
  exportctl update --job "$failed" --chunk-size 50MB
fi

step featurectl history export.fallback_bucket
featurectl history export.fallback_bucket
