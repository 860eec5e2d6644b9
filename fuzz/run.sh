#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from seeds/<target>.
#
#   fuzz/run.sh 60
#
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (address
# sanitizer, sanitizer coverage) to the stable compiler. The first build compiles the whole
# dependency tree with instrumentation (about 10 minutes on 2 cores); later builds take seconds.
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script exit non-zero:
# turn it into a regression test, then fix it.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
done
echo "fuzz: every target ran ${seconds}s without a crash"
