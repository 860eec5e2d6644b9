#!/usr/bin/env bash
# Installs what the browser suite (tests/ui/) needs: Debian's chromium and chromium-driver.
# Idempotent: does nothing when both are installed; runs `apt-get update` only when the package
# lists are missing or the install fails without one. Needs root (or sudo).
set -euo pipefail

packages=(chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-chromium: chromium and chromium-driver are installed" >&2
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-chromium: installing ${missing[*]}" >&2
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
    $sudo apt-get update -qq
fi
if ! $sudo apt-get install -y -qq "${missing[@]}"; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
fi
chromium --version >&2
chromedriver --version >&2
