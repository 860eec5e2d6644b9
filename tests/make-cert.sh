#!/usr/bin/env bash
# make-cert.sh DIR: a self-signed server certificate for localhost and 127.0.0.1 (DIR/server.crt,
# key DIR/server.key), made with the openssl command README's "Securing runledger" shows, for
# the suites that start runledger with TLS (tests/kfp, tests/ui). Clients trust server.crt itself.
set -euo pipefail
dir="$1"
if ! command -v openssl >/dev/null; then
    echo "make-cert: openssl not found (apt-get install -y openssl, or bash .ci/apt-install.sh openssl)" >&2
    exit 1
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
