#!/usr/bin/env bash
# Install the Debian packages the tests need, where they are missing.
# Under CI=true a package that cannot be installed is an error, never a silent skip.
set -euo pipefail

declare -A wanted=(
  [mtr]=mtr-tiny
  [ip]=iproute2
  [chromium]=chromium
  [prometheus]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [systemd-analyze]=systemd
  [redis-server]=redis-server
)

missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif [ "${CI:-}" = "true" ]; then
  echo "Error: cannot install ${missing[*]} (not root, no sudo)" >&2
  exit 1
else
  echo "Warning: ${missing[*]} missing and cannot be installed without root; tests that need them will skip." >&2
fi
