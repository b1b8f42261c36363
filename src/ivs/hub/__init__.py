"""The hub: where sensors' metadata ends up.

Sensors POST batches to `POST /api/v1/ingest` (the HTTP sink) or publish them to an MQTT
broker that `MqttIngest` workers subscribe to; both store through `Store.ingest`, which is
idempotent on `(sensor_id, seq)`, so at-least-once delivery from the sensor becomes exactly
once in the database. `create_app` is the HTTP API (FastAPI), `serve` runs it with uvicorn.
"""

from __future__ import annotations

from ivs.hub.store import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store"]
