#!/usr/bin/env bash
# The headless browser the dashboard test drives (tests/test_hub_dashboard.py): Debian's
# Chromium at /usr/bin/chromium, used by Playwright through `executable_path` (no
# `playwright install`: nothing is downloaded outside apt). Idempotent; needs root (or sudo)
# only when it is missing.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null
}
echo "install-browser: installed chromium ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
