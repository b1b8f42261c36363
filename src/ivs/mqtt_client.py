"""The MQTT client layer every ivs client shares (the sensor's sinks, `Consumer`, the hub's
ingest): `MqttSettings` makes each paho client the same way (credentials, TLS, backoff); one way to
build the TLS context, and one handshake check that turns a broker this client cannot trust into an
error that says so.

Why a check of its own: paho reports a failed TLS handshake only as "connection failed" and
retries forever, so a hub given the wrong CA would sit there storing nothing, with nothing in
its log to say why. `tls_problem` does the handshake paho would do, with the same context, and
tells a problem that will not go away by itself (the certificate does not verify, the listener
does not speak TLS, it wants a client certificate) from a broker that is merely not up yet.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ivs.errors import ConfigError, IvsError

_CA_HINT = "e.g. ca.pem from `ivs hub certs`"


class MqttError(IvsError):
    """Something about an MQTT client's connection to its broker."""


class MqttSetupError(MqttError, ConfigError):
    """A setting with which the connection cannot work, and retrying will not help: a TLS file
    that cannot be used, a broker certificate that does not verify, a listener that does not
    speak TLS, a broker that wants a client certificate. A `ConfigError` too."""


def tls_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context that trusts only the CA certificates in `ca` (the system's are not
    consulted), checks the broker's host name, and presents `cert` (with `key`, or a key inside
    `cert`) when given. MqttSetupError naming the file that cannot be used."""
    if key is not None and cert is None:
        raise MqttSetupError(f"MQTT client key {key} without a certificate: expected the client certificate too")
    try:
        context = ssl.create_default_context(cafile=ca)
    except FileNotFoundError:
        raise MqttSetupError(f"MQTT CA file {ca}: no such file: expected a CA certificate (PEM), {_CA_HINT}") from None
    except (OSError, ssl.SSLError) as err:
        raise MqttSetupError(f"MQTT CA file {ca}: {err}: expected a CA certificate (PEM), {_CA_HINT}") from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise MqttSetupError(
                f"MQTT client certificate {cert}" + (f" / key {key}" if key else "") + f": {err}:"
                " expected a PEM certificate and its key, e.g. devices/NAME.pem and .key from `ivs hub certs --device`"
            ) from None
    return context


def tls_problem(
    host: str, port: int, context: ssl.SSLContext, *, client_cert: bool = False, timeout: float = 5.0
) -> str | None:
    """Why a TLS connection to the broker at host:port cannot work, or None: the handshake
    worked, or nothing answered (a broker not up yet: paho keeps trying, and so should the caller).

    client_cert: whether `context` presents a certificate; without one, a TLS 1.3 broker that
    requires it says so only after the handshake, so this waits briefly (0.3 s) for its alert."""
    where = f"MQTT {host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        with raw, context.wrap_socket(raw, server_hostname=host) as tls:
            if not client_cert and tls.version() == "TLSv1.3":
                tls.settimeout(0.3)
                with contextlib.suppress(TimeoutError):  # no alert: the broker took the connection
                    tls.recv(1)
    except ssl.SSLCertVerificationError as err:
        return (
            f"{where}: TLS: the broker's certificate did not verify ({err.verify_message}): expected one signed by"
            f" the CA this client trusts (the MQTT CA file, {_CA_HINT}) and naming {host!r}"
        )
    except ssl.SSLError as err:
        text = str(err)
        if "CERTIFICATE_REQUIRED" in text or ("HANDSHAKE_FAILURE" in text and not client_cert):
            return (
                f"{where}: TLS: the broker wants a client certificate ({err.reason}): expected one"
                " (e.g. from `ivs hub certs --device NAME`), or a listener that takes a password"
            )
        return f"{where}: the TLS handshake failed ({err.reason or text}): expected a TLS listener there"
    except OSError as err:  # reset or closed during the handshake: a plain MQTT listener does that
        return f"{where}: the connection closed during the TLS handshake ({err}): expected a TLS listener there"
    return None


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    """CA certificate file; enables TLS."""
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 10
    encoding: str = "json"
    """"json" or "msgpack"."""
    max_inflight: int = 100

    def client(self, client_id: str, *, clean_session: bool = True, max_delay: int = 30) -> mqtt.Client:
        """A paho client with these credentials and TLS, reconnecting with backoff (1 to
        `max_delay` s): the one way sinks, `ivs.consumer.Consumer` and the hub's ingest make theirs.
        MqttSetupError when a TLS file cannot be used."""
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            client.tls_set_context(tls_context(self.tls_ca, self.tls_cert, self.tls_key))
        client.reconnect_delay_set(min_delay=1, max_delay=max_delay)
        client.max_queued_messages_set(0)
        return client
