"""Shared fixtures: the sample media (fetched by scripts/fetch-media.sh) and the zoo models."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from ivs.localnet import LocalPostgres
from ivs.model import Model, load_model
from tests.processes import Proc

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / ".cache" / "media"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def media() -> Path:
    if not (MEDIA / "vtest.avi").is_file():
        subprocess.run([ROOT / "scripts" / "fetch-media.sh", MEDIA], check=True)
    return MEDIA


@pytest.fixture(scope="session")
def vtest(media: Path) -> Path:
    return media / "vtest.avi"


def read_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """RGB frames of a video at the given 0-based indices (decoded in order)."""
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(indices):
                break
    return out


@pytest.fixture(scope="session")
def person_model() -> Iterator[Model]:
    model = load_model("person", runtime="onnxruntime")
    yield model
    model.close()


@pytest.fixture(scope="session")
def classifier_model() -> Iterator[Model]:
    model = load_model("classifier", runtime="onnxruntime")
    yield model
    model.close()


@pytest.fixture()
def broker(tmp_path: Path):
    """A fresh Mosquitto on a free 127.0.0.1 port, stopped after the test."""
    from tests.broker import Mosquitto

    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One throw-away PostgreSQL server for the session (ivs.localnet.LocalPostgres: a free
    127.0.0.1 port, fsync off, removed at the end); `postgres_url` gives each test its own database."""
    server = LocalPostgres()
    server.start()
    yield server
    server.stop()


_databases = itertools.count(1)


@pytest.fixture()
def postgres_url(postgres: LocalPostgres) -> str:
    """The SQLAlchemy URL of a fresh, empty database on the session's PostgreSQL."""
    return postgres.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty hub database: a SQLite file in the test's folder, or a database on the
    session's PostgreSQL. A test that takes it runs on both, as the hub does."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session", autouse=True)
def runtime_choice_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`--runtime auto` remembers its choice (ivs.runtime.choice): the tests' in a folder of
    their own (the processes they start inherit it), never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("ivs-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IVS_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture()
def procs() -> Iterator[list[Proc]]:
    """Every process a test starts (tests.processes.Proc) is killed at its end, whatever happened."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture(scope="session")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The classifier re-signed by a test key as 1.0.0, 2.0.0 and 3.0.0; 3.0.0 then tampered:
    one byte of the network flipped and the zip rebuilt with the signed manifest unchanged."""
    import shutil
    import zipfile

    from ivs.package.reader import read_package
    from ivs.package.signing import generate, key_id, load_private
    from ivs.package.writer import write_package
    from ivs.package.zoo import resolve

    d = tmp_path_factory.mktemp("deploy")
    (d / "ring").mkdir()
    generate(d / "k.key")
    shutil.move(d / "k.pub", d / "ring" / "k.pub")
    key = load_private(d / "k.key")
    src = read_package(resolve("classifier"))
    fields = src.manifest.model_dump(mode="json", exclude_none=True)
    out: dict[str, Any] = {"ring": d / "ring", "key_id": key_id(key.public_key())}
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        fields["version"] = version
        out[version] = d / f"classifier-{version}.ivsm"
        write_package(out[version], fields, src.members, key)
    network = src.manifest.model.path
    tampered = d / "classifier-3.0.0-tampered.ivsm"
    with zipfile.ZipFile(out["3.0.0"]) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == network:
                flipped = bytearray(data)
                flipped[len(flipped) // 2] ^= 0xFF
                data = bytes(flipped)
            zout.writestr(info.filename, data)
    out["tampered"] = tampered
    return out
