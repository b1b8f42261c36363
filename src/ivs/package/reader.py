"""Reading a package: bounded, verified, refused with a precise reason when anything is off.

Order matters: the signature is checked over the exact manifest bytes before the manifest is
trusted, and each member's sha256 is checked against the manifest before it is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import ValidationError

from ivs import decode
from ivs.errors import PackageError
from ivs.package.manifest import Manifest
from ivs.package.signing import Keyring

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_PACKAGE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Package:
    """A verified package held in memory."""

    path: Path
    manifest: Manifest
    members: dict[str, bytes]
    signed_by: str | None
    """Key id that signed it, or None when loaded with allow_unsigned."""

    @property
    def model_bytes(self) -> bytes:
        return self.members[self.manifest.model.path]

    def assets(self) -> dict[str, np.ndarray[Any, Any]]:
        out = {}
        for role, member in self.manifest.assets.items():
            out[role] = np.load(io.BytesIO(self.members[member]), allow_pickle=False)
        return out


def _safe_member(name: str, where: str) -> None:
    p = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in p.parts or p.is_absolute():
        raise PackageError(f"{where}: member path {name!r} escapes the package: expected a relative path without '..'")


def read_package(path: Path, keyring: Keyring | None = None, *, allow_unsigned: bool = False) -> Package:
    """Open, bound-check, verify and parse a package file."""
    where = str(path)
    if not path.is_file():
        raise PackageError(f"model package {where} not found: expected an .ivsm file")
    if path.stat().st_size > MAX_PACKAGE_BYTES:
        raise PackageError(f"{where}: {path.stat().st_size} bytes, expected at most {MAX_PACKAGE_BYTES}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise PackageError(
            f"{where}: not a readable model package ({err}); expected a zip holding "
            f"{MANIFEST}: the file is truncated or not a package"
        ) from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        for name in infos:
            _safe_member(name, where)
        total = sum(i.file_size for i in infos.values())
        if total > MAX_PACKAGE_BYTES:
            raise PackageError(f"{where}: members expand to {total} bytes, expected at most {MAX_PACKAGE_BYTES}")
        if MANIFEST not in infos:
            raise PackageError(f"{where}: no {MANIFEST}: expected one at the package root")
        if infos[MANIFEST].file_size > MAX_MANIFEST_BYTES:
            raise PackageError(
                f"{where}: {MANIFEST} is {infos[MANIFEST].file_size} bytes, expected at most {MAX_MANIFEST_BYTES}"
            )
        try:
            raw = {name: zf.read(name) for name in infos}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise PackageError(f"{where}: a member cannot be read ({err}): the file is corrupt") from None

    manifest_bytes = raw.pop(MANIFEST)
    signature_bytes = raw.pop(SIGNATURE, None)
    signed_by: str | None = None
    if signature_bytes is None:
        if not allow_unsigned:
            raise PackageError(
                f"{where}: package is not signed: expected {SIGNATURE} "
                "(sign with `ivs model pack --key`, or pass --allow-unsigned for development)"
            )
        log.warning("loading UNSIGNED model package %s (--allow-unsigned): for development only", where)
    else:
        try:
            signature = json.loads(signature_bytes)
            if not isinstance(signature, dict):
                raise ValueError("not an object")
        except ValueError as err:
            raise PackageError(f"{where}: {SIGNATURE} is not a JSON object ({err})") from None
        if keyring is None:
            keyring = Keyring.default()
        try:
            signed_by = keyring.verify(manifest_bytes, signature, where)
        except PackageError:
            if not allow_unsigned:
                raise
            log.warning("signature of %s does not verify; loading anyway (--allow-unsigned)", where)

    try:
        doc = json.loads(manifest_bytes)
    except ValueError as err:
        raise PackageError(f"{where}: {MANIFEST} is not valid JSON ({err})") from None
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PackageError(
            f"{where}: {MANIFEST} field {loc!r}: {first['msg']} ({err.error_count()} error(s))"
        ) from None

    listed = set(manifest.members)
    present = set(raw)
    if present - listed:
        raise PackageError(f"{where}: members not listed in the manifest: {sorted(present - listed)}")
    if listed - present:
        raise PackageError(f"{where}: members listed in the manifest but missing: {sorted(listed - present)}")
    for name, digest in manifest.members.items():
        actual = hashlib.sha256(raw[name]).hexdigest()
        if actual != digest:
            raise PackageError(
                f"{where}: member {name} has sha256 {actual[:16]}..., the manifest says "
                f"{digest[:16]}...: the member was changed after packing"
            )
    if manifest.model.path not in raw:
        raise PackageError(f"{where}: model member {manifest.model.path!r} is not in the package")
    if manifest.model.weights is not None and manifest.model.weights not in raw:
        raise PackageError(f"{where}: weights member {manifest.model.weights!r} is not in the package")
    for role, member in manifest.assets.items():
        if member not in raw:
            raise PackageError(f"{where}: asset {role!r} -> {member!r} is not in the package")
    if manifest.decoder.name not in decode.names():
        raise PackageError(
            f"{where}: decoder {manifest.decoder.name!r} does not exist: expected one of {', '.join(decode.names())}"
        )
    return Package(path=path, manifest=manifest, members=raw, signed_by=signed_by)
