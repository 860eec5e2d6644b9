#!/usr/bin/env bash
# The kfp SDK compatibility suite: installs the official kfp SDK into target/kfp-venv (reused when
# present), builds runledger (debug; or uses $RUNLEDGER_BIN) and starts it twice on free loopback
# ports with fresh data dirs:
#   plain       plaintext, no auth (single-user, as a laptop runs it);
#   multi-user  TLS (a self-signed certificate, tests/make-cert.sh) and --auth-config with bearer
#               tokens and per-namespace grants, which the SDK reaches with
#               kfp.Client(host="https://...", existing_token=..., namespace=..., ssl_ca_cert=...).
# Every test of the suite runs against both (pytest ids end in [plain] / [multi-user]; `-k plain`
# picks one); test_multi_user.py adds what only multi-user mode has. Stops both servers (also on
# failure) and exits with pytest's status. Extra arguments go to pytest (e.g. `-k terminate`, `-x`).
# Needs python3 with venv, PyPI, and openssl. RUNLEDGER_LOG_LEVEL=runledger=debug logs every HTTP
# request; RUNLEDGER_KFP_LOG_DIR=DIR keeps the server logs (plain.log, multi-user.log; by default
# they live in the temp dir and are shown only on failure).
# `--database-url URL` (first; once or twice) serves the plain server, then the multi-user one,
# from that PostgreSQL database instead of a data dir; each should be empty (the suite expects a
# fresh store).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

database_urls=()
while [ "${1:-}" = "--database-url" ]; do
    if [ -z "${2:-}" ] || [ "${#database_urls[@]}" -ge 2 ]; then
        echo "kfp suite: --database-url needs a URL and is given at most twice" >&2
        exit 2
    fi
    database_urls+=("$2")
    shift 2
done
# store_flags N: the serve flags of the Nth server's store (none: its data dir).
store_flags() {
    if [ -n "${database_urls[$1]:-}" ]; then
        printf '%s\n' --database-url "${database_urls[$1]}"
    fi
}
venv="$root/target/kfp-venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "kfp suite: creating $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
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
python="$venv/bin/python"
# shellcheck source=../serve.sh
source "$root/tests/serve.sh"
cleanup() {
    stop_servers
    rm -rf "$work"
}
trap cleanup EXIT

mapfile -t plain_store < <(store_flags 0)
start_server plain "" "${plain_store[@]}"
plain_grpc=$grpc_port plain_http=$http_port

# Multi-user: the certificate, one token per principal (only their hashes go in the config),
# and the grants the suite relies on (see test_multi_user.py).
bash "$root/tests/make-cert.sh" "$work"
declare -A tokens
for principal in owner runner outsider; do
    tokens[$principal]="$(auth_token "$principal")"
done
cat >>"$work/auth.toml" <<'EOF'
[[grants]]
who = "owner"
namespace = "team-a"
role = "admin"

# The owner also publishes shared pipelines (namespace ""), as the SDK uploads them by default.
[[grants]]
who = "owner"
namespace = ""
role = "editor"

[[grants]]
who = "runner"
namespace = "team-a"
role = "executor"

[[grants]]
who = "outsider"
namespace = "team-b"
role = "admin"
EOF
mapfile -t multi_user_store < <(store_flags 1)
start_server multi-user "$work/server.crt" "${multi_user_store[@]}" \
    --tls-cert "$work/server.crt" --tls-key "$work/server.key" --auth-config "$work/auth.toml"
secure_grpc=$grpc_port secure_http=$http_port

# What conftest.py reads: one entry per server.
"$python" - "$work/servers.json" <<PY
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
    "$python" -m pytest -q -p no:cacheprovider "$root/tests/kfp" "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    for name in plain multi-user; do
        echo "kfp suite: failed; $name server log (tail):" >&2
        tail -n 50 "$logs/$name.log" >&2
    done
fi
exit "$status"
