#!/usr/bin/env bash
# make demo: a local hub (SQLite) and one sensor on the sample video, metadata only.
set -euo pipefail
BIN=${BIN:-.venv/bin}
mkdir -p out
rm -f out/demo-events.jsonl out/demo-hub.db out/demo-http-outbox.sqlite*
export IVS_HUB_ADMIN_TOKEN=${IVS_HUB_ADMIN_TOKEN:-demo-admin}
# --open-read: a demo on loopback; a real hub gives its viewers a login (docs/security.md)
"$BIN/ivs" hub serve --db sqlite:///out/demo-hub.db --port 8765 --open-read > out/demo-hub.log 2>&1 &
hub=$!
trap 'kill $hub 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    "$BIN/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8765/healthz', timeout=1)" \
        >/dev/null 2>&1 && break
    sleep 0.2
done
export IVS_HUB_TOKEN=$("$BIN/ivs" hub device add demo-street --db sqlite:///out/demo-hub.db | awk '/^device / {print $4}')
echo
echo "hub and dashboard: http://127.0.0.1:8765/   (its OpenAPI document: http://127.0.0.1:8765/openapi.json)"
echo
"$BIN/ivs" run --config examples/demo.yaml
echo
echo "hub: $("$BIN/python" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8765/api/v1/sensors').read().decode())")"
echo "events: out/demo-events.jsonl; dashboard still at http://127.0.0.1:8765/"
if [ -t 0 ] && [ "${DEMO_KEEP:-1}" = 1 ]; then
    echo "press Ctrl-C to stop the hub"
    wait $hub
fi
