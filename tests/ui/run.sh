#!/usr/bin/env bash
# The browser suite: drives the web UI in headless Chromium (Debian's chromium and
# chromium-driver; `.ci/install-chromium.sh` installs them) with Python selenium from
# target/ui-venv (created here, reused when present), against this build's runledger started on
# free loopback ports with a fresh data dir, and (for the sign-in test) once more with TLS and
# --auth-config. Saves screenshots to target/ui-screenshots/. The servers are stopped on exit,
# failure included; RUNLEDGER_UI_LOG_DIR=DIR keeps their logs (plain.log, auth.log). Extra
# arguments go to pytest (e.g. `-k sort`, `-x`).
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
logs="${RUNLEDGER_UI_LOG_DIR:-$work}"
mkdir -p "$logs"
python="$venv/bin/python"
# shellcheck source=../serve.sh
source "$root/tests/serve.sh"
cleanup() {
    stop_servers
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

start_server plain ""
url="http://127.0.0.1:$http_port"

# The sign-in test's server: TLS (Chromium trusts exactly this certificate, by its public key's
# hash) and --auth-config with one principal that may read everything.
bash "$root/tests/make-cert.sh" "$work"
token="$(auth_token ui-user)"
printf '[[grants]]\nwho = "ui-user"\nnamespace = "*"\nrole = "editor"\n' >>"$work/auth.toml"
start_server auth "$work/server.crt" \
    --tls-cert "$work/server.crt" --tls-key "$work/server.key" --auth-config "$work/auth.toml"
auth_url="https://127.0.0.1:$http_port"
spki="$(openssl x509 -in "$work/server.crt" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)"

rm -rf "$shots"
mkdir -p "$shots" "$work/home"
set +e
HOME="$work/home" RUNLEDGER_HTTP_URL="$url" RUNLEDGER_UI_SCREENSHOTS="$shots" \
    RUNLEDGER_AUTH_URL="$auth_url" RUNLEDGER_AUTH_TOKEN="$token" RUNLEDGER_AUTH_CA="$work/server.crt" \
    RUNLEDGER_AUTH_SPKI="$spki" \
    CHROMIUM="$chromium" CHROMEDRIVER="$chromedriver" RUNLEDGER_UI_WORK="$work" \
    timeout --kill-after=15 "${UI_SUITE_TIMEOUT:-300}" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/ui" "$@"
status=$?
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "ui suite: timed out after ${UI_SUITE_TIMEOUT:-300}s" >&2
fi
if [ "$status" -ne 0 ]; then
    for name in plain auth; do
        echo "ui suite: failed; $name server log (tail):" >&2
        tail -n 50 "$logs/$name.log" >&2
    done
    if [ -f "$work/chromedriver.log" ]; then
        echo "ui suite: chromedriver log (tail):" >&2
        tail -n 30 "$work/chromedriver.log" >&2
    fi
else
    echo "ui suite: screenshots in $shots" >&2
fi
exit "$status"
