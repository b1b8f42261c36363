"""The hub's Prometheus metrics, in a registry of their own (no process-wide globals), so
several hubs (or tests) in one process never share counters."""

from __future__ import annotations

import logging
import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from ivs.hub.store import Store

log = logging.getLogger(__name__)

REJECT_REASONS = ("schema", "auth", "sensor_mismatch", "too_large", "not_array", "topic", "storage")
"""Every value of the `reason` label of `ivs_hub_messages_rejected_total` (bounded on purpose):
schema (not a valid ivs.event/1 or ivs.frame/1 message), auth (no or an unknown or revoked
token; counted per request), sensor_mismatch (a device posting as another sensor, or an MQTT
message whose sensor_id is not its topic's), too_large (a body over the limits; per request),
not_array (a body that is not a JSON array; per request), topic (an MQTT topic that is not
ivs/<sensor>/...), storage (the database refused a batch)."""


class HubMetrics:
    """Counters of what the hub ingested; `render()` is the /metrics text."""

    def __init__(self, store: Store | None = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.offline_after_s: float | None = None
        """A sensor not heard from for this long is not online (set by `create_app`)."""
        self.accepted = Counter(
            "ivs_hub_messages_accepted", "Messages stored (first time seen).", registry=self.registry
        )
        self.duplicates = Counter(
            "ivs_hub_messages_duplicates",
            "Messages received again and not stored twice (same sensor_id and seq).",
            registry=self.registry,
        )
        self.rejected = Counter(
            "ivs_hub_messages_rejected",
            "Messages (or, for auth/too_large/not_array, requests) refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)  # every series exists from the start, at 0
        self.batch_seconds = Histogram(
            "ivs_hub_ingest_batch_seconds",
            "Time to store one batch of messages.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.sensors_online = Gauge(
            "ivs_hub_sensors_online",
            "Sensors online: their availability says so and they were heard from within the hub's --offline-after.",
            registry=self.registry,
        )
        if store is not None:
            self.sensors_online.set_function(lambda: _online(store, self.offline_after_s))

    def reject(self, reason: str, n: int = 1) -> None:
        """Count `n` rejections for `reason` (one of REJECT_REASONS)."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"reject reason {reason!r}: expected one of {', '.join(REJECT_REASONS)}")
        if n > 0:
            self.rejected.labels(reason=reason).inc(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _online(store: Store, offline_after_s: float | None) -> float:
    try:
        return float(store.online_count(offline_after_s))
    except SQLAlchemyError:
        log.warning("cannot count online sensors", exc_info=True)
        return math.nan
