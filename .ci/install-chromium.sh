#!/usr/bin/env bash
# Installs what the browser suite (tests/ui/) needs: Debian's chromium and chromium-driver (when
# missing; see apt-install.sh).
set -euo pipefail
bash "$(dirname "$0")/apt-install.sh" chromium chromium-driver
chromium --version >&2
chromedriver --version >&2
