"""Ed25519 signing of package manifests, and the keyring of trusted public keys."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ivs.errors import PackageError

BUILTIN_KEYRING = Path(__file__).parent / "keys"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(private_path: Path) -> Path:
    """Write a new private key (PEM, mode 600) and its public key beside it (.pub)."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public_path


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"{path}: expected an Ed25519 private key (PEM)")
    return key


def sign(manifest_bytes: bytes, key: Ed25519PrivateKey) -> dict[str, str]:
    return {
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
    }


@dataclass
class Keyring:
    """Public keys a sensor trusts, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def load(cls, *folders: Path) -> Keyring:
        keys: dict[str, Ed25519PublicKey] = {}
        for folder in folders:
            if not folder.is_dir():
                raise PackageError(f"keyring {folder} is not a folder: expected a folder of .pub files")
            for path in sorted(folder.glob("*.pub")):
                key = serialization.load_pem_public_key(path.read_bytes())
                if not isinstance(key, Ed25519PublicKey):
                    raise PackageError(f"{path}: expected an Ed25519 public key (PEM)")
                keys[key_id(key)] = key
        return cls(keys)

    @classmethod
    def default(cls) -> Keyring:
        """The keys that sign the built-in zoo."""
        return cls.load(BUILTIN_KEYRING)

    def verify(self, manifest_bytes: bytes, signature: dict[str, str], where: str) -> str:
        """Check a signature; returns the key id or raises PackageError saying why not."""
        if signature.get("algorithm") != "ed25519":
            raise PackageError(f"{where}: signature algorithm {signature.get('algorithm')!r}, expected 'ed25519'")
        kid = signature.get("key_id", "")
        key = self.keys.get(kid)
        if key is None:
            raise PackageError(
                f"{where}: signed by unknown key {kid!r}; expected one of the trusted keys "
                f"({', '.join(sorted(self.keys)) or 'keyring is empty'}): add its .pub to the keyring"
            )
        try:
            key.verify(base64.b64decode(signature.get("signature", ""), validate=True), manifest_bytes)
        except (InvalidSignature, ValueError):
            raise PackageError(
                f"{where}: manifest signature does not verify with key {kid}: the manifest was changed after signing"
            ) from None
        return kid
