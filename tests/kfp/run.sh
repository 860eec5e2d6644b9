#!/usr/bin/env bash
# The kfp SDK compatibility suite: installs the official kfp SDK into target/kfp-venv (reused when
# present), builds runledger (debug; or uses $RUNLEDGER_BIN), starts it on free loopback ports with a fresh data dir,
# runs pytest against it through kfp.Client, stops the server (also on failure) and exits with
# pytest's status. `--database-url URL` (first) serves from that PostgreSQL database instead of a
# data dir (it should be empty: the suite expects a fresh store). Extra arguments go to pytest
# (e.g. `-k terminate`, `-x`).
# RUNLEDGER_LOG_LEVEL=runledger=debug logs every HTTP request; RUNLEDGER_KFP_SERVER_LOG=FILE keeps
# the server log (by default it lives in the temp dir and is shown only on failure).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

database_url=""
if [ "${1:-}" = "--database-url" ]; then
    if [ -z "${2:-}" ]; then
        echo "kfp suite: --database-url needs a URL" >&2
        exit 2
    fi
    database_url="$2"
    shift 2
fi
venv="$root/target/kfp-venv"
python="${PYTHON:-python3}"

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
log="${RUNLEDGER_KFP_SERVER_LOG:-$work/server.log}"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Two free loopback ports (the kernel picks them; a clash with another process between here and
# the bind below makes the server exit, which the wait loop reports).
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

if [ -n "$database_url" ]; then
    store_args=(--database-url "$database_url")
else
    store_args=(--data-dir "$work/data")
fi
"$binary" serve \
    --grpc-addr "127.0.0.1:$grpc_port" \
    --http-addr "127.0.0.1:$http_port" \
    "${store_args[@]}" \
    --log-level "${RUNLEDGER_LOG_LEVEL:-warn}" \
    2>"$log" &
server_pid=$!

url="http://127.0.0.1:$http_port"
# Wait (at most ~30 s) until healthz answers; stop early if the server died.
ready=""
for _ in $(seq 1 150); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "kfp suite: runledger exited before serving; its log:" >&2
        cat "$log" >&2
        exit 1
    fi
    if "$venv/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "$url/apis/v2beta1/healthz" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "kfp suite: runledger did not answer on $url; its log:" >&2
    cat "$log" >&2
    exit 1
fi

# A HOME of its own, so a developer's ~/.config/kfp/context.json cannot change what the SDK sends.
mkdir -p "$work/home"
set +e
HOME="$work/home" RUNLEDGER_HTTP_URL="$url" RUNLEDGER_GRPC_PORT_URL="http://127.0.0.1:$grpc_port" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/kfp" "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "kfp suite: failed; server log:" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
