#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs the Debian packages among PACKAGE... that are not installed.
# Idempotent: does nothing when all are there; runs `apt-get update` only when the package lists
# are missing or the install fails without one. Needs root (or sudo).
set -euo pipefail

missing=()
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "apt-install: $* installed" >&2
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "apt-install: installing ${missing[*]}" >&2
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
    $sudo apt-get update -qq
fi
if ! $sudo apt-get install -y -qq "${missing[@]}"; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
fi
