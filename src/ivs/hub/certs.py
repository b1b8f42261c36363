"""A private certificate authority for one ivs deployment: `ivs hub certs`.

Writes, into one folder:

    ca.pem, ca.key                 the CA (10 years): give ca.pem to every sensor (`tls_ca` of the
                                   MQTT sink, `ca_file` of the HTTP sink); keep ca.key offline
    server.pem, server.key         the hub's and the broker's certificate, for the names and
                                   addresses in `hosts` (subject alternative names)
    devices/<name>.pem, .key       a client certificate per device (CN = the device name), for
                                   brokers that authenticate devices by certificate

Keys are ECDSA P-256 (what every TLS stack here speaks: OpenSSL in Mosquitto and Python), written
mode 0600. A CA already in the folder is reused to sign (so devices can be added later with
`--no-server --device NAME`); any other file that would be overwritten is refused unless
`force`. Rotating the CA means a new folder: every sensor then needs the new ca.pem.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ivs.errors import ConfigError
from ivs.hub.store import check_name

CA_DAYS = 3650
LEAF_DAYS = 825
"""Server and device certificates: 825 days, the longest validity that every TLS client accepts."""
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass
class Written:
    """What `make_certs` wrote (and which CA it used)."""

    ca_cert: Path
    ca_reused: bool
    files: list[Path] = field(default_factory=list)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ivs"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def check_host(host: str) -> str | None:
    """Why `host` cannot be a subject alternative name, or None when it can."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.split(".")
    ok = 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii() and label[0] != "-"
        for label in (labels[1:] if labels[0] == "*" else labels)
    )
    return None if ok else f"host {host!r}: expected an IP address or a DNS name (letters, digits, '-', dots)"


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """ECDSA keys sign (TLS handshakes); only the CA's signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Create it 0600 from the start: a chmod after writing leaves a moment where others may read it.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            f"the CA in {cert_path.parent}: expected ca.pem and ca.key written by `ivs hub certs` ({err})"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} is not the key of {cert_path}: expected the pair `ivs hub certs` wrote")
    return cert, key


def _leaf(
    subject: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    days: int,
    *,
    usage: x509.ObjectIdentifier,
    hosts: list[str] | None = None,
    device: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a sensor clock a little behind
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    if device:
        # RFC 5280 verifiers want a subject alternative name on every leaf; a URN names the device
        # (Mosquitto's use_identity_as_username takes the CN, which is the same name).
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:ivs:device:{device}")])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("ivs CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_certs(
    out: Path,
    *,
    hosts: list[str] | None = None,
    devices: list[str] | None = None,
    server: bool = True,
    force: bool = False,
    days: int = LEAF_DAYS,
) -> Written:
    """Write a CA (or reuse the one in `out`), a server certificate for `hosts` (when `server`)
    and a client certificate per name in `devices`. Raises ConfigError, before writing anything,
    for a bad host or device name, or for files that exist (unless `force`)."""
    hosts = list(DEFAULT_HOSTS) if hosts is None else hosts
    devices = devices or []
    if not 1 <= days <= LEAF_DAYS:
        raise ConfigError(f"days {days}: expected 1 to {LEAF_DAYS}")
    if server and not hosts:
        raise ConfigError("no hosts for the server certificate: expected e.g. --hosts 127.0.0.1,localhost,hub.lan")
    for host in hosts:
        why = check_host(host)
        if why is not None:
            raise ConfigError(why)
    for name in devices:
        why = check_name(name)
        if why is not None:
            raise ConfigError(f"device {why}")
    if len(set(devices)) != len(devices):
        raise ConfigError(f"devices {devices}: a name is given twice")
    if not server and not devices and (out / "ca.pem").exists():
        raise ConfigError(f"{out} has a CA already and nothing else was asked for: expected --device NAME or a server")

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: expected a folder (it is created if missing)")
    ca_cert_path, ca_key_path = out / "ca.pem", out / "ca.key"
    ca_reused = ca_cert_path.exists() or ca_key_path.exists()
    if ca_reused and not (ca_cert_path.exists() and ca_key_path.exists()):
        raise ConfigError(f"{out} has only one of ca.pem and ca.key: expected both (a CA to reuse) or neither")
    targets: list[Path] = []
    if server:
        targets += [out / "server.pem", out / "server.key"]
    for name in devices:
        targets += [out / "devices" / f"{name}.pem", out / "devices" / f"{name}.key"]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing)
        raise ConfigError(f"{shown} exist: expected --force to replace them, or another --out folder")

    now = dt.datetime.now(dt.UTC)
    if ca_reused:
        ca, ca_key = _load_ca(ca_cert_path, ca_key_path)
    else:
        ca, ca_key = _new_ca(now)
    written = Written(ca_cert_path, ca_reused)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not ca_reused:
            _write_key(ca_key_path, ca_key)
            _write_cert(ca_cert_path, ca)
            written.files += [ca_cert_path, ca_key_path]
        if server:
            cert, key = _leaf(hosts[0], ca, ca_key, now, days, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts)
            _write_key(out / "server.key", key)
            _write_cert(out / "server.pem", cert)
            written.files += [out / "server.pem", out / "server.key"]
        if devices:
            (out / "devices").mkdir(exist_ok=True)
        for name in devices:
            cert, key = _leaf(name, ca, ca_key, now, days, usage=ExtendedKeyUsageOID.CLIENT_AUTH, device=name)
            _write_key(out / "devices" / f"{name}.key", key)
            _write_cert(out / "devices" / f"{name}.pem", cert)
            written.files += [out / "devices" / f"{name}.pem", out / "devices" / f"{name}.key"]
    except OSError as err:
        raise ConfigError(
            f"could not write into {out}: {err.strerror or err}: expected a folder this user can write"
        ) from None
    return written
