"""Writing a package: members, their digests in the manifest, and the signature over it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ivs.package.manifest import Manifest
from ivs.package.reader import MANIFEST, SIGNATURE
from ivs.package.signing import sign


def write_package(
    out: Path,
    manifest_fields: dict[str, Any],
    members: dict[str, bytes],
    key: Ed25519PrivateKey | None,
) -> Manifest:
    """Validate the manifest, add member digests, sign, and write the zip atomically."""
    doc = dict(manifest_fields)
    doc["members"] = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(members.items())}
    manifest = Manifest.model_validate(doc)
    manifest_bytes = json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True).encode()
    tmp = out.with_suffix(out.suffix + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest_bytes)
        if key is not None:
            zf.writestr(SIGNATURE, json.dumps(sign(manifest_bytes, key), indent=1))
        for name, data in sorted(members.items()):
            zf.writestr(name, data)
    tmp.replace(out)
    return manifest
