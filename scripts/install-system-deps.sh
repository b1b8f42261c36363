#!/usr/bin/env bash
# System packages the tests use, from Debian: the Mosquitto MQTT broker, the PostgreSQL server
# and GStreamer's RTSP server with the plugins tests/rtsp_server.py needs (each started by the
# test fixtures on a free loopback port, never as a service). The RTSP server runs under
# Debian's /usr/bin/python3, which python3-gi belongs to.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# The server binaries (initdb, postgres) live in /usr/lib/postgresql/<version>/bin, off PATH.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
rtsp=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad)
/usr/bin/python3 - 2>/dev/null <<'PY' || need+=("${rtsp[@]}")
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst
Gst.init(None)
missing = [e for e in ("tsdemux", "mpeg4videoparse", "rtpmp4vpay") if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
PY
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if [[ " ${need[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    # Debian's package would create (and, under an init system, start) a "main" cluster on 5432;
    # the tests run their own throw-away server (ivs.localnet.LocalPostgres), so ask for none.
    # UCF_FORCE_CONFFOLD keeps this file when the package installs its own version of it.
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
export UCF_FORCE_CONFFOLD=1
$sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}
# Debian's package may start a broker on 1883 where an init system runs; the tests use their own.
echo "install-system-deps: installed ${need[*]}"
