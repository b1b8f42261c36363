"""Run a hub: the HTTP API under uvicorn, and optionally an MQTT ingest worker beside it."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from ivs.errors import ConfigError
from ivs.hub.app import create_app
from ivs.hub.metrics import HubMetrics
from ivs.hub.mqtt_auth import HUB_USER, BrokerSync
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.retention import EvidenceRetention, RetentionJob
from ivs.hub.rollouts import RolloutController
from ivs.hub.store import Retention, Store

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
    mqtt_tls_ca: str | None = None,
    mqtt_tls_cert: str | None = None,
    mqtt_tls_key: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    mqtt_auth: str | None = None,
    mqtt_broker_pid: str | None = None,
    offline_after_s: float | None = 90.0,
    open_read: bool = False,
    retention: Retention | None = None,
    evidence_dir: str | None = None,
    evidence_retention: EvidenceRetention | None = None,
    trusted_proxies: list[str] | None = None,
) -> None:
    """Serve the hub's API on host:port over the database at `database` (a SQLAlchemy url:
    sqlite:///path or postgresql://...) until interrupted. With `mqtt_host`, also store what
    sensors publish on that broker (a shared subscription in `mqtt_group`: run several hubs
    with the same group to split the stream). `admin_token` guards /api/v1/devices ("" turns
    device management over HTTP off). /metrics counts both ingests. `tls_cert` and `tls_key`
    (PEM files, e.g. server.pem and server.key from `ivs hub certs`) serve HTTPS instead of HTTP.
    `mqtt_tls_ca` (ca.pem) connects to the broker over TLS, verifying it (`mqtt_tls_cert` and
    `mqtt_tls_key`: a client certificate, for a listener that wants one); a broker that cannot be
    verified is a ConfigError before anything is served. `mqtt_auth` (a folder `ivs hub mqtt-auth`
    wrote) and `mqtt_broker_pid` (Mosquitto's pid file): rewrite the broker's password file and
    ACL and reload it after each enrolment and revocation over HTTP (`BrokerSync`). `retention`:
    prune the database at start and every hour (`RetentionJob`). `evidence_dir`: keep uploaded
    snapshots and clips there (None: refuse them); `evidence_retention`: prune them hourly too."""
    if not 0 < port < 65536:
        raise ConfigError(f"port {port}: expected 1 to 65535")
    check_tls_files(tls_cert, tls_key)
    if (mqtt_tls_cert or mqtt_tls_key) and not mqtt_tls_ca:
        raise ConfigError(
            "--mqtt-cert/--mqtt-key without --mqtt-ca: expected the CA that signed the broker's certificate too"
            " (ca.pem from `ivs hub certs`)"
        )
    store = Store(database)
    metrics = HubMetrics(store)
    sync = None
    if mqtt_auth is not None:
        try:
            sync = BrokerSync(
                store, Path(mqtt_auth), hub_user=mqtt_username or HUB_USER,
                pid_file=Path(mqtt_broker_pid) if mqtt_broker_pid else None,
            )  # fmt: skip
        except ConfigError:
            store.close()
            raise
    ingest: MqttIngest | None = None
    controller: RolloutController | None = None
    job: RetentionJob | None = None
    try:
        if (retention is not None and retention.active) or evidence_retention is not None:
            job = RetentionJob(store, retention or Retention(), evidence=evidence_retention).start()
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
                tls_ca=mqtt_tls_ca,
                tls_cert=mqtt_tls_cert,
                tls_key=mqtt_tls_key,
            )
            log.info("MQTT ingest from %s:%d (%s)", mqtt_host, mqtt_port, "TLS" if mqtt_tls_ca else "no TLS")
        controller = RolloutController(store, ingest.push_desired if ingest is not None else None).start()
        app = create_app(
            store,
            admin_token,
            metrics=metrics,
            push_desired=ingest.push_desired if ingest is not None else None,
            command=ingest.command if ingest is not None else None,
            devices_changed=sync,
            rollouts=controller,
            offline_after_s=offline_after_s,
            open_read=open_read,
            evidence_dir=evidence_dir,
        )
        scheme = "https" if tls_cert else "http"
        log.info("hub on %s://%s:%d (its API at /openapi.json), database %s", scheme, host, port, store.engine.url)
        # X-Forwarded-For names the caller (the audit log's address, the login backoff's key) only
        # when the request came through one of these proxies; uvicorn's default trusts loopback.
        proxies = trusted_proxies or []
        uvicorn.run(app, host=host, port=port, log_level="info", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                    proxy_headers=bool(proxies), forwarded_allow_ips=",".join(proxies) or None)  # fmt: skip
    finally:
        if job is not None:
            job.close()
        if controller is not None:
            controller.close()
        if ingest is not None:
            ingest.close()
        store.close()


def check_tls_files(cert: str | None, key: str | None) -> None:
    """Both or neither, each a readable PEM file: ConfigError saying which is wrong otherwise
    (uvicorn's own error would be a bare OpenSSL one, after the database was opened)."""
    if (cert is None) != (key is None):
        raise ConfigError(
            "TLS: expected both --tls-cert and --tls-key (e.g. server.pem and server.key from `ivs hub certs`)"
        )
    for what, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{what} {path}: no such file: expected a PEM file (`ivs hub certs` writes them)")
    if cert is not None and key is not None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(
                f"--tls-cert {cert} / --tls-key {key}: expected a PEM certificate and its key ({err})"
            ) from None
