# Sourced by the suites that drive the runledger binary from Python (tests/kfp/run.sh,
# tests/ui/run.sh): start_server, and stop_servers for their EXIT trap. The caller sets $binary
# (runledger), $python (a python3), $work (a temp dir) and $logs (where server logs go).

server_pids=()

# start_server NAME CA_FILE|"" [serve flags...]: starts runledger on two free loopback ports
# (the kernel picks them; a clash with another process before the bind makes the server exit,
# which the wait reports), with a fresh data dir and its log in $logs/NAME.log, and waits (at most
# ~30 s) until healthz answers, over https trusting CA_FILE when one is given. Sets grpc_port and
# http_port.
start_server() {
    local name="$1" ca="$2" scheme=http
    shift 2
    [ -n "$ca" ] && scheme=https
    read -r grpc_port http_port < <("$python" - <<'PY'
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
    server_pids+=("$pid")
    local url="$scheme://127.0.0.1:$http_port/apis/v2beta1/healthz"
    for _ in $(seq 1 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "runledger ($name) exited before serving; its log:" >&2
            cat "$logs/$name.log" >&2
            exit 1
        fi
        if "$python" - "$url" "$ca" 2>/dev/null <<'PY'
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] else None
urllib.request.urlopen(sys.argv[1], timeout=1, context=context)
PY
        then
            return 0
        fi
        sleep 0.2
    done
    echo "runledger ($name) did not answer on $url; its log:" >&2
    cat "$logs/$name.log" >&2
    exit 1
}

# Stops every server start_server started (SIGTERM: a graceful stop), waiting for each.
stop_servers() {
    for pid in "${server_pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}

# auth_token NAME: a fresh random token for principal NAME, whose [[principals]] entry (with the
# token's hash only) is appended to $work/auth.toml; prints the token.
auth_token() {
    local token
    token="$("$python" -c 'import secrets; print(secrets.token_hex(24))')"
    printf '[[principals]]\nname = "%s"\ntoken_sha256 = "%s"\n\n' "$1" \
        "$(printf '%s' "$token" | "$binary" auth hash-token)" >>"$work/auth.toml"
    printf '%s' "$token"
}
