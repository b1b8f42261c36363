"""Run a hub: the HTTP API under uvicorn, and optionally an MQTT ingest worker beside it."""

from __future__ import annotations

import logging

import uvicorn

from ivs.errors import ConfigError
from ivs.hub.app import create_app
from ivs.hub.metrics import HubMetrics
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.store import Store

log = logging.getLogger(__name__)


def serve(
    database: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    admin_token: str = "",
    mqtt_host: str | None = None,
    mqtt_port: int = 1883,
    mqtt_group: str = "ivs-hub",
    mqtt_client_id: str | None = None,
    mqtt_username: str | None = None,
    mqtt_password: str | None = None,
) -> None:
    """Serve the hub's API on host:port over the database at `database` (a SQLAlchemy url:
    sqlite:///path or postgresql://...) until interrupted. With `mqtt_host`, also store what
    sensors publish on that broker (a shared subscription in `mqtt_group`: run several hubs
    with the same group to split the stream). `admin_token` guards /api/v1/devices ("" turns
    device management over HTTP off). /metrics counts both ingests."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port}: expected 1 to 65535")
    store = Store(database)
    metrics = HubMetrics(store)
    ingest: MqttIngest | None = None
    try:
        if mqtt_host is not None:
            ingest = MqttIngest(
                store,
                mqtt_host,
                mqtt_port,
                mqtt_group,
                client_id=mqtt_client_id,
                username=mqtt_username,
                password=mqtt_password,
                metrics=metrics,
            )
        app = create_app(store, admin_token, metrics=metrics)
        log.info("hub on http://%s:%d (docs at /docs), database %s", host, port, store.engine.url)
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if ingest is not None:
            ingest.close()
        store.close()
