"""TLS for every ivs MQTT client (the sensor's sinks, `Consumer`, the hub's ingest): one way to
build the context, and one handshake check that turns a broker this client cannot trust into an
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

from ivs.errors import ConfigError

_CA_HINT = "e.g. ca.pem from `ivs hub certs`"


def tls_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context that trusts only the CA certificates in `ca` (the system's are not
    consulted), checks the broker's host name, and presents `cert` (with `key`, or a key inside
    `cert`) when given. ConfigError naming the file that cannot be used."""
    if key is not None and cert is None:
        raise ConfigError(f"MQTT client key {key} without a certificate: expected the client certificate too")
    try:
        context = ssl.create_default_context(cafile=ca)
    except FileNotFoundError:
        raise ConfigError(f"MQTT CA file {ca}: no such file: expected a CA certificate (PEM), {_CA_HINT}") from None
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"MQTT CA file {ca}: {err}: expected a CA certificate (PEM), {_CA_HINT}") from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
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
