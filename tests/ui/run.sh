#!/usr/bin/env bash
# The browser suite: drives the web UI in headless Chromium (Debian's chromium and
# chromium-driver; `.ci/install-chromium.sh` installs them) with Python selenium from
# target/ui-venv (created here, reused when present), against this build's runledger started on
# free loopback ports with a fresh data dir. Saves screenshots to target/ui-screenshots/. The
# server is stopped on exit, failure included. Extra arguments go to pytest (e.g. `-k sort`, `-x`).
# CHROMIUM / CHROMEDRIVER override the browser and driver paths; UI_SUITE_TIMEOUT (seconds,
# default 300) bounds the whole pytest run, so a hung browser cannot hang `cargo test`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/ui-venv"
python="${PYTHON:-python3}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"
shots="$root/target/ui-screenshots"

for tool in "$chromium" "$chromedriver"; do
    if [ ! -x "$tool" ]; then
        echo "ui suite: $tool not found (apt-get install -y chromium chromium-driver, or bash .ci/install-chromium.sh)" >&2
        exit 1
    fi
done

if [ ! -x "$venv/bin/python" ]; then
    echo "ui suite: creating $venv" >&2
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 30 \
    -r "$root/tests/ui/requirements.txt"

# `cargo test` runs this script with the binary it just built (tests/ui_browser.rs).
binary="${RUNLEDGER_BIN:-}"
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --quiet --bin runledger)
    binary="$root/target/debug/runledger"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/runledger-ui.XXXXXX")"
log="${RUNLEDGER_UI_SERVER_LOG:-$work/server.log}"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

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
    --data-dir "$work/data" \
    --log-level "${RUNLEDGER_LOG_LEVEL:-warn}" \
    2>"$log" &
server_pid=$!

url="http://127.0.0.1:$http_port"
ready=""
for _ in $(seq 1 150); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "ui suite: runledger exited before serving; its log:" >&2
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
    echo "ui suite: runledger did not answer on $url; its log:" >&2
    cat "$log" >&2
    exit 1
fi

rm -rf "$shots"
mkdir -p "$shots" "$work/home"
set +e
HOME="$work/home" RUNLEDGER_HTTP_URL="$url" RUNLEDGER_UI_SCREENSHOTS="$shots" \
    CHROMIUM="$chromium" CHROMEDRIVER="$chromedriver" RUNLEDGER_UI_WORK="$work" \
    timeout --kill-after=15 "${UI_SUITE_TIMEOUT:-300}" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/ui" "$@"
status=$?
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "ui suite: timed out after ${UI_SUITE_TIMEOUT:-300}s" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "ui suite: failed; server log:" >&2
    tail -n 50 "$log" >&2
    if [ -f "$work/chromedriver.log" ]; then
        echo "ui suite: chromedriver log (tail):" >&2
        tail -n 30 "$work/chromedriver.log" >&2
    fi
else
    echo "ui suite: screenshots in $shots" >&2
fi
exit "$status"
