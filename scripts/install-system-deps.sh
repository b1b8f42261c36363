#!/usr/bin/env bash
# System packages the tests use, from Debian: the Mosquitto MQTT broker (started by the test
# fixtures on a free loopback port, never as a service). Idempotent; needs root (or sudo) only
# when something is missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}
# Debian's package may start a broker on 1883 where an init system runs; the tests use their own.
echo "install-system-deps: installed ${need[*]}"
