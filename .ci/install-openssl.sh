#!/usr/bin/env bash
# Installs the openssl command line tool: the kfp SDK suite (tests/kfp/run.sh) makes its
# multi-user server's certificate with it, as README's "Securing runledger" does. (The build never
# needs OpenSSL: runledger's TLS is rustls.) Idempotent; runs `apt-get update` only when the
# package lists are missing or the install fails without one. Needs root (or sudo).
set -euo pipefail

if command -v openssl >/dev/null; then
    echo "install-openssl: $(openssl version)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-openssl: installing openssl" >&2
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
    $sudo apt-get update -qq
fi
if ! $sudo apt-get install -y -qq openssl; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq openssl
fi
openssl version >&2
