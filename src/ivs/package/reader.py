"""Reading a package: bounded, verified, refused with a precise reason when anything is off.

Order matters: the signature is checked over the exact manifest bytes before the manifest is
trusted, and each member's sha256 is checked against the manifest before it is used.

Bounded: a hostile file is refused before it costs much memory or time. The zip's central
directory is sized before it is parsed (a million tiny members would cost gigabytes of Python
objects), members are counted, their declared sizes summed and their compression ratio checked
before anything is inflated (a zip bomb), and an inflating member that outgrows its declared size
fails its CRC check. tests/test_fuzz_package.py attacks each of these.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
import zlib
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
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_MEMBERS = 64
"""A package holds a manifest, a signature, the network, its weights and a few assets."""
MAX_DIRECTORY_BYTES = 64 * 1024
"""The zip's central directory: about 1000 entries' worth, where a package needs a handful."""
MAX_RATIO = 100
"""Declared size / compressed size of a member over `_RATIO_FROM` bytes: networks compress
about 1.2:1 and anchor tables 20:1, a zip bomb 1000:1."""
_RATIO_FROM = 1024 * 1024
_CHUNK = 1024 * 1024
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error)
"""What zipfile raises on hostile bytes (RuntimeError: an encrypted member; NotImplementedError,
a subclass: an unknown compression method; ValueError: a bad name encoding)."""


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
    if name.startswith("/") or "\\" in name or ".." in p.parts or p.is_absolute() or re.match(r"[A-Za-z]:", name):
        raise PackageError(
            f"{where}: member path {name[:200]!r} escapes the package: expected a relative path without '..'"
        )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _names(names: set[str]) -> str:
    shown = [_short(n) for n in sorted(names)[:10]]
    return f"{shown}" + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _directory_size(path: Path) -> tuple[int, int] | None:
    """(entries, bytes) of the zip's central directory as its end records declare them (the
    largest of the plausible readings), or None where there is no end record: ZipFile then
    says the file is not a zip."""
    with path.open("rb") as f:
        size = f.seek(0, io.SEEK_END)
        start = max(0, size - (22 + 0xFFFF + 20))  # end record, the longest comment, zip64 locator
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries = int.from_bytes(tail[at + 10 : at + 12], "little")
        length = int.from_bytes(tail[at + 12 : at + 16], "little")
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] == b"PK\x06\x07":
            # zip64: the record is where the locator says, or (as some readers assume) just before it
            for offset in (int.from_bytes(locator[8:16], "little"), start + at - 20 - 56):
                if 0 <= offset < size:
                    f.seek(offset)
                    record = f.read(56)
                    if record[:4] == b"PK\x06\x06" and len(record) == 56:
                        entries = max(entries, int.from_bytes(record[32:40], "little"))
                        length = max(length, int.from_bytes(record[40:48], "little"))
    return entries, length


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated a MiB at a time. zipfile stops at the declared size and checks
    the CRC there, but `ZipFile.read` inflates in one call as much as the stream holds first:
    gigabytes, from a member that declares a kilobyte."""
    chunks = []
    with zf.open(info) as f:
        while chunk := f.read(_CHUNK):
            chunks.append(chunk)
    return b"".join(chunks)


def read_package(path: Path, keyring: Keyring | None = None, *, allow_unsigned: bool = False) -> Package:
    """Open, bound-check, verify and parse a package file."""
    where = str(path)
    raw = _read_members(path, where)
    manifest_bytes = raw.pop(MANIFEST)
    signed_by = _verify(manifest_bytes, raw.pop(SIGNATURE, None), keyring, allow_unsigned, where)
    manifest = _parse_manifest(manifest_bytes, where)
    _check_members(manifest, raw, where)
    return Package(path=path, manifest=manifest, members=raw, signed_by=signed_by)


def _read_members(path: Path, where: str) -> dict[str, bytes]:
    """Every member's bytes, each bound checked before it is inflated (size, count, ratio, names)."""
    if not path.is_file():
        raise PackageError(f"model package {where} not found: expected an .ivsm file")
    if path.stat().st_size > MAX_PACKAGE_BYTES:
        raise PackageError(f"{where}: {path.stat().st_size} bytes, expected at most {MAX_PACKAGE_BYTES}")
    try:
        directory = _directory_size(path)
    except OSError as err:
        raise PackageError(f"{where}: cannot read ({err.strerror}): expected a model package") from None
    if directory is not None and (directory[0] > MAX_MEMBERS or directory[1] > MAX_DIRECTORY_BYTES):
        raise PackageError(
            f"{where}: the zip directory declares {directory[0]} members in {directory[1]} bytes: "
            f"expected at most {MAX_MEMBERS} members in {MAX_DIRECTORY_BYTES} bytes"
        )
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as err:
        raise PackageError(
            f"{where}: not a readable model package ({_short(str(err))}); expected a zip holding "
            f"{MANIFEST}: the file is truncated or not a package"
        ) from None
    with zf:
        listing = zf.infolist()
        if len(listing) > MAX_MEMBERS:
            raise PackageError(f"{where}: {len(listing)} members: expected at most {MAX_MEMBERS}")
        infos = {i.filename: i for i in listing}
        if len(infos) != len(listing):
            twice = sorted({i.filename for i in listing if sum(j.filename == i.filename for j in listing) > 1})
            raise PackageError(
                f"{where}: member names {[_short(n) for n in twice]} appear more than once: expected each once "
                "(which copy a reader takes differs between readers)"
            )
        for name in infos:
            _safe_member(name, where)
        total = sum(i.file_size for i in infos.values())
        if total > MAX_PACKAGE_BYTES:
            raise PackageError(f"{where}: members expand to {total} bytes, expected at most {MAX_PACKAGE_BYTES}")
        for info in listing:
            if info.file_size > _RATIO_FROM and info.file_size > MAX_RATIO * info.compress_size:
                raise PackageError(
                    f"{where}: member {_short(info.filename)!r} inflates {info.compress_size} bytes to "
                    f"{info.file_size}: expected a compression ratio of at most {MAX_RATIO} (a zip bomb?)"
                )
        if MANIFEST not in infos:
            raise PackageError(f"{where}: no {MANIFEST}: expected one at the package root")
        if infos[MANIFEST].file_size > MAX_MANIFEST_BYTES:
            raise PackageError(
                f"{where}: {MANIFEST} is {infos[MANIFEST].file_size} bytes, expected at most {MAX_MANIFEST_BYTES}"
            )
        if SIGNATURE in infos and infos[SIGNATURE].file_size > MAX_SIGNATURE_BYTES:
            raise PackageError(
                f"{where}: {SIGNATURE} is {infos[SIGNATURE].file_size} bytes, expected at most {MAX_SIGNATURE_BYTES}"
            )
        try:
            raw = {name: _inflate(zf, info) for name, info in infos.items()}
        except _ZIP_ERRORS as err:
            raise PackageError(f"{where}: a member cannot be read ({_short(str(err))}): the file is corrupt") from None

    return raw


def _verify(
    manifest_bytes: bytes, signature_bytes: bytes | None, keyring: Keyring | None, allow_unsigned: bool, where: str
) -> str | None:
    """The key id that signed the manifest (None: unsigned, allowed for development)."""
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
        except (ValueError, RecursionError) as err:
            raise PackageError(f"{where}: {SIGNATURE} is not JSON ({_short(str(err))})") from None
        fields = ("algorithm", "key_id", "signature")
        if not isinstance(signature, dict) or not all(isinstance(signature.get(k), str) for k in fields):
            raise PackageError(
                f"{where}: {SIGNATURE} is not a signature: expected a JSON object with string fields "
                f"{', '.join(fields)} (as `ivs model pack --key` writes)"
            )
        if keyring is None:
            keyring = Keyring.default()
        try:
            signed_by = keyring.verify(manifest_bytes, signature, where)
        except PackageError:
            if not allow_unsigned:
                raise
            log.warning("signature of %s does not verify; loading anyway (--allow-unsigned)", where)

    return signed_by


def _parse_manifest(manifest_bytes: bytes, where: str) -> Manifest:
    try:
        doc = json.loads(manifest_bytes)
    except (ValueError, RecursionError) as err:
        raise PackageError(f"{where}: {MANIFEST} is not valid JSON ({_short(str(err))})") from None
    try:
        manifest = Manifest.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        loc = _short(".".join(str(p) for p in first["loc"]))
        raise PackageError(
            f"{where}: {MANIFEST} field {loc!r}: {_short(first['msg'])} ({err.error_count()} error(s))"
        ) from None

    return manifest


def _check_members(manifest: Manifest, raw: dict[str, bytes], where: str) -> None:
    """The members are exactly those the manifest lists, unchanged, with what it points at."""
    listed = set(manifest.members)
    present = set(raw)
    if present - listed:
        raise PackageError(f"{where}: members not listed in the manifest: {_names(present - listed)}")
    if listed - present:
        raise PackageError(f"{where}: members listed in the manifest but missing: {_names(listed - present)}")
    for name, digest in manifest.members.items():
        actual = hashlib.sha256(raw[name]).hexdigest()
        if actual != digest:
            raise PackageError(
                f"{where}: member {name} has sha256 {actual[:16]}..., the manifest says "
                f"{digest[:16]}...: the member was changed after packing"
            )
    if manifest.model.path not in raw:
        raise PackageError(f"{where}: model member {_short(manifest.model.path)!r} is not in the package")
    if manifest.model.weights is not None and manifest.model.weights not in raw:
        raise PackageError(f"{where}: weights member {_short(manifest.model.weights)!r} is not in the package")
    for role, member in manifest.assets.items():
        if member not in raw:
            raise PackageError(f"{where}: asset {_short(role)!r} -> {_short(member)!r} is not in the package")
    if manifest.decoder.name not in decode.names():
        raise PackageError(
            f"{where}: decoder {_short(manifest.decoder.name)!r} does not exist: "
            f"expected one of {', '.join(decode.names())}"
        )
