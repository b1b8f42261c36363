"""Hostile model packages: every one is refused with a precise PackageError, within bounded
memory and time (a sanity bound against hangs, not a benchmark).

Zip bombs (a member inflating far past what it declares, a huge declared size, a huge
compression ratio, a million members), path traversal, duplicated names, a huge or deeply
nested manifest, a wrong type in every manifest field, a malformed signature, non-zip bytes,
and hypothesis-generated mutations of a valid package's bytes. The zips are written byte by
byte here (`zip_bytes`), so they can lie in ways `zipfile` would not write.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivs.errors import PackageError
from ivs.package.reader import (
    MAX_DIRECTORY_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    MAX_PACKAGE_BYTES,
    Package,
    read_package,
)
from ivs.package.signing import Keyring, generate, load_private, sign
from tests.test_package import fields, tiny_classifier

EXAMPLES = int(os.environ.get("IVS_FUZZ_EXAMPLES", "100"))
MAX_GROWTH = 100 * 2**20
"""Peak memory a refusal may take (the packages here inflate to gigabytes if trusted)."""
MAX_SECONDS = 5.0
"""A refusal is a few milliseconds: this only catches a hang or a runaway inflate."""

MODEL = tiny_classifier()


@dataclass
class Entry:
    """One zip member as written: `data` is already compressed, the sizes are what it declares."""

    name: bytes
    data: bytes
    crc: int
    size: int
    method: int = 8  # deflate
    csize: int | None = None
    flags: int = 0x800  # names are UTF-8


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def entry(name: str | bytes, data: bytes) -> Entry:
    """An honest member."""
    raw = name.encode() if isinstance(name, str) else name
    return Entry(raw, deflate(data), zlib.crc32(data), len(data))


def zip_bytes(entries: list[Entry], *, declared_entries: int | None = None) -> bytes:
    """A zip archive, local headers then the central directory then its end record."""
    out = bytearray()
    directory = bytearray()
    for e in entries:
        csize = len(e.data) if e.csize is None else e.csize
        offset = len(out)
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21, e.crc, csize, e.size, len(e.name), 0
        )
        out += e.name + e.data
        directory += struct.pack(
            "<4s6H3L5H2L",
            *(b"PK\x01\x02", 20, 20, e.flags, e.method, 0, 0x21, e.crc, csize, e.size, len(e.name)),
            *(0, 0, 0, 0, 0, offset),
        )
        directory += e.name
    n = len(entries) if declared_entries is None else declared_entries
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n & 0xFFFF, n & 0xFFFF, len(directory), len(out), 0)
    return bytes(out + directory + end)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ed25519PrivateKey, Keyring]:
    folder = tmp_path_factory.mktemp("keys")
    generate(folder / "k.key")
    ring = folder / "ring"
    ring.mkdir()
    (folder / "k.pub").rename(ring / "k.pub")
    return load_private(folder / "k.key"), Keyring.load(ring)


def manifest_doc(**over: Any) -> dict[str, Any]:
    doc = fields(MODEL, **over)
    doc.setdefault("members", {"model.onnx": hashlib.sha256(MODEL).hexdigest()})
    return doc


def signed(key: Ed25519PrivateKey, manifest: bytes | dict[str, Any], *members: Entry) -> bytes:
    """A package whose manifest (bytes as given, or a document) is signed with `key`."""
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    signature = json.dumps(sign(data, key)).encode()
    return zip_bytes([entry("manifest.json", data), entry("signature.json", signature), *members])


def valid(key: Ed25519PrivateKey) -> bytes:
    return signed(key, manifest_doc(), entry("model.onnx", MODEL))


class Bounded:
    """Reads packages under tracemalloc: the peak memory and the time of the last read."""

    def __init__(self, folder: Path, keyring: Keyring) -> None:
        self.folder, self.keyring = folder, keyring
        self.peak = 0
        self.seconds = 0.0

    def read(self, data: bytes, name: str = "p.ivsm") -> Package:
        path = self.folder / name
        path.write_bytes(data)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            return read_package(path, self.keyring)
        finally:
            self.seconds = time.perf_counter() - started
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            path.unlink()
            assert self.peak < MAX_GROWTH, f"{self.peak / 2**20:.0f} MiB to read {len(data)} bytes"
            assert self.seconds < MAX_SECONDS, f"{self.seconds:.1f} s to read {len(data)} bytes"

    def refused(self, data: bytes, match: str) -> str:
        with pytest.raises(PackageError, match=match) as err:
            self.read(data)
        return str(err.value)


@pytest.fixture()
def reader(tmp_path: Path, key: tuple[Ed25519PrivateKey, Keyring]) -> Iterator[Bounded]:
    yield Bounded(tmp_path, key[1])


def test_the_valid_package_here_is_read(reader: Bounded, key: tuple[Ed25519PrivateKey, Keyring]) -> None:
    """The baseline every case below breaks one thing of."""
    package = reader.read(valid(key[0]))
    assert package.model_bytes == MODEL and package.signed_by in key[1].keys


# -- zip bombs -----------------------------------------------------------------------------


def zeros_stream(gib: int) -> bytes:
    """A raw deflate stream inflating to `gib` GiB of zeros, in about a MiB: a 1 MiB
    full-flushed block repeated (a full flush lets later blocks not refer back), then an
    empty final block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (1024 * gib) + b"\x03\x00"


def test_a_member_inflating_to_gigabytes_past_its_declared_size_is_refused(reader: Bounded, key: Any) -> None:
    bomb = Entry(b"model.onnx", zeros_stream(2), zlib.crc32(bytes(1000)), 1000)  # says 1000 bytes, holds 2 GiB
    message = reader.refused(signed(key[0], manifest_doc(), bomb), "member model.onnx has sha256")
    assert "the member was changed after packing" in message
    bomb.crc = 0xDEADBEEF  # and with a CRC that the first 1000 bytes do not have
    reader.refused(signed(key[0], manifest_doc(), bomb), r"a member cannot be read \(Bad CRC-32")


def test_a_huge_declared_size_is_refused_before_inflating(reader: Bounded, key: Any) -> None:
    bomb = Entry(b"model.onnx", zeros_stream(1), 0, 2**31)
    reader.refused(
        signed(key[0], manifest_doc(), bomb), rf"members expand to \d+ bytes, expected at most {MAX_PACKAGE_BYTES}"
    )


def test_a_huge_compression_ratio_is_refused_before_inflating(reader: Bounded, key: Any) -> None:
    stream = zeros_stream(1)
    bomb = Entry(b"model.onnx", stream, 0, 400 * 2**20)  # under the size bound, 400 MiB from ~1 MiB
    message = reader.refused(signed(key[0], manifest_doc(), bomb), r"expected a compression ratio of at most \d+")
    assert f"inflates {len(stream)} bytes to {400 * 2**20}" in message


def test_a_million_members_are_refused_before_the_directory_is_parsed(reader: Bounded) -> None:
    many = [entry(f"m{i}", b"") for i in range(1_000_000 // 20)]
    reader.refused(zip_bytes(many), rf"expected at most {MAX_MEMBERS} members in {MAX_DIRECTORY_BYTES} bytes")
    # the end record may lie about the count: the directory's size still gives it away
    reader.refused(zip_bytes(many, declared_entries=3), "the zip directory declares 3 members in")


def test_one_member_too_many_is_refused(reader: Bounded, key: Any) -> None:
    members = [entry(f"asset{i}.npy", b"x") for i in range(MAX_MEMBERS - 2)]  # with manifest, signature, model
    data = signed(key[0], manifest_doc(), entry("model.onnx", MODEL), *members)
    reader.refused(data, rf"declares {MAX_MEMBERS + 1} members in \d+ bytes: expected at most {MAX_MEMBERS} members")
    # an end record that under-counts: the directory is parsed, and its entries counted
    lying = zip_bytes(_entries(data), declared_entries=3)
    reader.refused(lying, rf"^{reader.folder}/p.ivsm: {MAX_MEMBERS + 1} members: expected at most {MAX_MEMBERS}")


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "..\\x", "a\\b", "C:x", "c:/windows/x"],
)
def test_a_member_path_escaping_the_package_is_refused(reader: Bounded, key: Any, name: str) -> None:
    reader.refused(
        signed(key[0], manifest_doc(), entry("model.onnx", MODEL), entry(name, b"x")),
        r"member path .* escapes the package: expected a relative path without '\.\.'",
    )


@pytest.mark.parametrize("name", ["model.onnx", "manifest.json", "signature.json"])
def test_a_duplicated_member_name_is_refused(reader: Bounded, key: Any, name: str) -> None:
    data = valid(key[0])
    again = zip_bytes([*_entries(data), entry(name, b"other bytes")])
    reader.refused(again, rf"member names \['{name}'\] appear more than once")


def _entries(package: bytes) -> list[Entry]:
    """The members of a package, re-made."""
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return [entry(i.filename, zf.read(i)) for i in zf.infolist()]


# -- manifest ------------------------------------------------------------------------------


def test_a_huge_manifest_is_refused_before_reading_it(reader: Bounded, key: Any) -> None:
    doc = manifest_doc(description=random.Random(0).randbytes(MAX_MANIFEST_BYTES // 2).hex())  # incompressible
    reader.refused(signed(key[0], doc, entry("model.onnx", MODEL)), r"manifest.json is \d+ bytes, expected at most")


def test_a_manifest_larger_than_it_declares_is_refused(reader: Bounded, key: Any) -> None:
    data = json.dumps(manifest_doc(description="x" * 2 * MAX_MANIFEST_BYTES)).encode()
    lying = Entry(b"manifest.json", deflate(data), zlib.crc32(data), 1000)
    reader.refused(zip_bytes([lying, entry("model.onnx", MODEL)]), "a member cannot be read")


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_deeply_nested_manifest_is_refused(reader: Bounded, key: Any, depth: int) -> None:
    deep = b'{"runtime_hints": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
    reader.refused(signed(key[0], deep, entry("model.onnx", MODEL)), r"manifest.json is not valid JSON")


def _paths(doc: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        yield (*path, key), value
        # decoder params and runtime hints are free-form (dict[str, Any]): only they themselves are typed
        if (*path, key) not in (("decoder", "params"), ("runtime_hints",)):
            yield from _paths(value, (*path, key))


def _wrong(value: Any) -> list[Any]:
    """Values of a type no field of `value`'s type takes (pydantic coerces "5" to 5, so no digits)."""
    if isinstance(value, bool):
        return [[], {"a": 1}]
    if isinstance(value, int | float):
        return ["x", [], None]
    if isinstance(value, str):
        return [5, [], {}]
    if isinstance(value, list):
        return ["x", {}, 5]
    return ["x", [], 5]


def _put(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


WRONG_TYPES = [
    pytest.param(path, bad, id=f"{'.'.join(map(str, path))}={json.dumps(bad)}")
    for path, value in _paths(manifest_doc())
    if path[0] != "members"  # their keys are member names: covered by the member checks
    for bad in _wrong(value)
]


@pytest.mark.parametrize(("path", "bad"), WRONG_TYPES)
def test_a_wrong_type_in_any_manifest_field_is_refused_naming_the_field(
    reader: Bounded, key: Any, path: tuple[str | int, ...], bad: Any
) -> None:
    doc = _put(manifest_doc(), path, bad)
    field = ".".join(map(str, path))
    reader.refused(signed(key[0], doc, entry("model.onnx", MODEL)), rf"manifest.json field '{field}': .+ \(\d+ error")


@pytest.mark.parametrize("manifest", [b"[]", b'"x"', b"5", b"null", b"{}", b"\xff\xfe", b""])
def test_a_manifest_that_is_not_an_object_is_refused(reader: Bounded, key: Any, manifest: bytes) -> None:
    reader.refused(signed(key[0], manifest, entry("model.onnx", MODEL)), r"manifest.json (is not valid JSON|field)")


@pytest.mark.parametrize(
    "signature",
    [b"[]", b"5", b'{"algorithm": 5}', b'{"algorithm": "ed25519", "key_id": [], "signature": "x"}',
     b'{"algorithm": "ed25519", "key_id": "k", "signature": 5}', b"[" * 50_000, b"\xff"],
)  # fmt: skip
def test_a_malformed_signature_is_refused(reader: Bounded, key: Any, signature: bytes) -> None:
    data = zip_bytes([entry("manifest.json", json.dumps(manifest_doc()).encode()), entry("signature.json", signature)])
    reader.refused(data, r"signature.json is not (JSON|a signature: expected a JSON object with string fields)")


# -- bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip", b"\x89PNG\r\n\x1a\n" + bytes(100), b"\x1f\x8b\x08" + bytes(100), b"PK\x05\x06" + bytes(18)],
)
def test_bytes_that_are_not_a_package_are_refused(reader: Bounded, data: bytes) -> None:
    reader.refused(data, "not a readable model package|no manifest.json")


def mutations(original: bytes) -> st.SearchStrategy[bytes]:
    """Flipped, overwritten, inserted, deleted and truncated bytes of `original`."""
    n = len(original)
    at = st.integers(0, n - 1)

    def flip(i: int, bit: int) -> bytes:
        return original[:i] + bytes([original[i] ^ (1 << bit)]) + original[i + 1 :]

    return st.one_of(
        st.builds(flip, at, st.integers(0, 7)),
        st.builds(lambda i, b: original[:i] + b + original[i + len(b) :], at, st.binary(min_size=1, max_size=8)),
        st.builds(lambda i, b: original[:i] + b + original[i:], at, st.binary(min_size=1, max_size=8)),
        st.builds(lambda i, k: original[:i] + original[i + k :], at, st.integers(1, 64)),
        st.builds(lambda i: original[:i], at),
    )


def test_random_mutations_of_a_valid_package_are_refused_or_still_valid(
    tmp_path: Path, key: tuple[Ed25519PrivateKey, Keyring]
) -> None:
    original = valid(key[0])
    reader = Bounded(tmp_path, key[1])
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutations(original))
    def fuzz(data: bytes) -> None:
        try:
            package = reader.read(data)
        except PackageError as err:
            assert str(err).startswith(str(tmp_path)), f"a refusal that does not name the file: {err}"
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            return
        # a mutation of bytes nothing verifies (a timestamp, a version field) may leave it valid:
        # then it must still be exactly the package that was signed
        assert package.model_bytes == MODEL and package.signed_by in key[1].keys
        outcomes["read"] = outcomes.get("read", 0) + 1

    fuzz()
    assert outcomes.get("refused", 0) > EXAMPLES // 2, outcomes
