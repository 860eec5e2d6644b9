#!/usr/bin/env bash
# The kfp SDK compatibility suite: installs the official kfp SDK into target/kfp-venv (reused when
# present), builds runledger (debug; or uses $RUNLEDGER_BIN) and starts it twice on free loopback
# ports with fresh data dirs:
#   plain       plaintext, no auth (single-user, as a laptop runs it);
#   multi-user  TLS (a self-signed certificate made with openssl) and --auth-config with bearer
#               tokens and per-namespace grants, which the SDK reaches with
#               kfp.Client(host="https://...", existing_token=..., namespace=..., ssl_ca_cert=...).
# Every test of the suite runs against both (pytest ids end in [plain] / [multi-user]; `-k plain`
# picks one); test_multi_user.py adds what only multi-user mode has. Stops both servers (also on
# failure) and exits with pytest's status. Extra arguments go to pytest (e.g. `-k terminate`, `-x`).
# Needs python3 with venv, PyPI, and openssl. RUNLEDGER_LOG_LEVEL=runledger=debug logs every HTTP
# request; RUNLEDGER_KFP_LOG_DIR=DIR keeps the server logs (plain.log, multi-user.log; by default
# they live in the temp dir and are shown only on failure).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/kfp-venv"
python="${PYTHON:-python3}"

if ! command -v openssl >/dev/null; then
    echo "kfp suite: openssl not found (apt-get install -y openssl); multi-user mode needs a certificate" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "kfp suite: creating $venv" >&2
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/tests/kfp/requirements.txt"

# `cargo test` runs this script with the binary it just built (tests/kfp_sdk.rs).
binary="${RUNLEDGER_BIN:-}"
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --quiet --bin runledger)
    binary="$root/target/debug/runledger"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/runledger-kfp.XXXXXX")"
logs="${RUNLEDGER_KFP_LOG_DIR:-$work}"
mkdir -p "$logs"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME CA_FILE|"" [serve flags...]: starts runledger on two free loopback ports
# (the kernel picks them; a clash with another process before the bind makes the server exit,
# which the wait reports) and waits, at most ~30 s, until healthz answers. Sets grpc_port and
# http_port.
start_server() {
    local name="$1" ca="$2" scheme=http
    shift 2
    [ -n "$ca" ] && scheme=https
    read -r grpc_port http_port < <("$venv/bin/python" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
    "$binary" serve \
        --grpc-addr "127.0.0.1:$grpc_port" \
        --http-addr "127.0.0.1:$http_port" \
        --data-dir "$work/$name-data" \
        --log-level "${RUNLEDGER_LOG_LEVEL:-warn}" \
        "$@" 2>"$logs/$name.log" &
    local pid=$!
    pids+=("$pid")
    local url="$scheme://127.0.0.1:$http_port/apis/v2beta1/healthz"
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kfp suite: runledger ($name) exited before serving; its log:" >&2
            cat "$logs/$name.log" >&2
            exit 1
        fi
        if "$venv/bin/python" - "$url" "$ca" 2>/dev/null <<'PY'
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] else None
urllib.request.urlopen(sys.argv[1], timeout=1, context=context)
PY
        then
            return 0
        fi
        sleep 0.2
    done
    echo "kfp suite: runledger ($name) did not answer on $url; its log:" >&2
    cat "$logs/$name.log" >&2
    exit 1
}

start_server plain ""
plain_grpc=$grpc_port plain_http=$http_port

# Multi-user: the certificate, one token per principal (only their hashes go in the config),
# and the grants the suite relies on (see test_multi_user.py).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$work/server.key" -out "$work/server.crt" 2>/dev/null
declare -A tokens
: >"$work/auth.toml"
for principal in owner runner outsider; do
    tokens[$principal]="$(openssl rand -hex 24)"
    printf '[[principals]]\nname = "%s"\ntoken_sha256 = "%s"\n\n' "$principal" \
        "$(printf '%s' "${tokens[$principal]}" | "$binary" auth hash-token)" >>"$work/auth.toml"
done
cat >>"$work/auth.toml" <<'EOF'
[[grants]]
who = "owner"
namespace = "team-a"
role = "admin"

[[grants]]
who = "runner"
namespace = "team-a"
role = "executor"

[[grants]]
who = "outsider"
namespace = "team-b"
role = "admin"
EOF
start_server multi-user "$work/server.crt" \
    --tls-cert "$work/server.crt" --tls-key "$work/server.key" --auth-config "$work/auth.toml"
secure_grpc=$grpc_port secure_http=$http_port

# What conftest.py reads: one entry per server.
"$venv/bin/python" - "$work/servers.json" <<PY
import json, sys
servers = {
    "plain": {
        "host": "http://127.0.0.1:$plain_http",
        "grpc_port_url": "http://127.0.0.1:$plain_grpc",
    },
    "multi-user": {
        "host": "https://127.0.0.1:$secure_http",
        "grpc_port_url": "https://127.0.0.1:$secure_grpc",
        "ca": "$work/server.crt",
        "namespace": "team-a",
        "other_namespace": "team-b",
        "tokens": {"owner": "${tokens[owner]}", "runner": "${tokens[runner]}",
                   "outsider": "${tokens[outsider]}"},
    },
}
json.dump(servers, open(sys.argv[1], "w"), indent=1)
PY

# A HOME of its own, so a developer's ~/.config/kfp/context.json cannot change what the SDK sends.
mkdir -p "$work/home"
set +e
HOME="$work/home" RUNLEDGER_KFP_SERVERS="$work/servers.json" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/kfp" "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    for name in plain multi-user; do
        echo "kfp suite: failed; $name server log (tail):" >&2
        tail -n 50 "$logs/$name.log" >&2
    done
fi
exit "$status"
