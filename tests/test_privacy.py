"""In metadata mode no pixel data leaves the process: not in a record, not in a file."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np

from ivs.frame import Frame
from ivs.sensor import Sensor
from ivs.sinks.jsonl import JsonlSink
from ivs.sources.synthetic import SyntheticSource


class SpySource(SyntheticSource):
    """The synthetic scene, keeping a copy of every frame it hands out."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[np.ndarray] = []

    def frames(self):
        for frame in super().frames():
            self.seen.append(frame.pixels.copy())
            yield frame


def pixel_windows(pixels: np.ndarray, rng: np.random.Generator, n: int = 200, size: int = 12) -> list[bytes]:
    flat = pixels.tobytes()
    starts = rng.integers(0, len(flat) - size, n)
    return [flat[s : s + size] for s in starts]


def walk(value, path="record"):
    """Yield (path, leaf) for every leaf of a decoded record."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, value


def test_records_and_files_hold_no_pixels(classifier_model, tmp_path: Path):
    out = tmp_path / "meta.jsonl"
    sent = []

    class Capture:
        def write(self, record):
            sent.append(msgspec.json.encode(record))

        def close(self):
            pass

    src = SpySource(width=320, height=240, frames=6)
    Sensor(src, classifier_model, [JsonlSink(out), Capture()], fps=0).run()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.jsonl"]
    written = out.read_bytes()
    assert len(sent) == 6 and written == b"".join(s + b"\n" for s in sent)
    frame_bytes = 320 * 240 * 3
    assert max(len(s) for s in sent) < frame_bytes / 100

    rng = np.random.default_rng(1)
    for pixels in src.seen:
        for window in pixel_windows(pixels, rng):
            assert window not in written
            assert base64.b64encode(window)[:12] not in written
    for payload in sent:
        for path, leaf in walk(msgspec.json.decode(payload)):
            assert not isinstance(leaf, bytes), path
            assert not (isinstance(leaf, str) and len(leaf) > 200), path


def test_frames_are_not_kept_by_the_record(classifier_model):
    # A record is built from the frame, never holds it: no field can reference an array.
    class Keep:
        records: list = []

        def write(self, record):
            self.records.append(record)

        def close(self):
            pass

    sink = Keep()
    Sensor(SyntheticSource(160, 120, frames=2), classifier_model, [sink], fps=0).run()
    for record in sink.records:
        for path, leaf in walk(msgspec.to_builtins(record)):
            assert not isinstance(leaf, np.ndarray | Frame | bytes), path


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ivs", *args], cwd=cwd, capture_output=True, timeout=120)


def test_cli_metadata_mode_writes_only_metadata(tmp_path: Path):
    r = run_cli(
        [
            "run",
            "--source",
            "synthetic:160x120@30:4",
            "--model",
            "classifier",
            "--fps",
            "0",
            "--out",
            "meta.jsonl",
            "--artifacts",
            "art",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.jsonl"]
    assert len(r.stdout) == 0  # nothing on stdout when metadata goes to a file


def test_cli_image_mode_does_write_pixels(tmp_path: Path):
    # The control for the test above: the other modes really do write pixel files.
    for mode, suffix in (("image", ".jpg"), ("roi", ".png"), ("tensor", ".npy")):
        r = run_cli(
            [
                "run",
                "--source",
                "synthetic:160x120@30:2",
                "--model",
                "classifier",
                "--fps",
                "0",
                "--mode",
                mode,
                "--artifacts",
                f"art-{mode}",
                "--out",
                f"{mode}.jsonl",
            ],
            tmp_path,
        )
        assert r.returncode == 0, r.stderr.decode()
        files = sorted((tmp_path / f"art-{mode}").iterdir())
        assert [f.suffix for f in files] == [suffix, suffix]
        lines = (tmp_path / f"{mode}.jsonl").read_text().splitlines()
        assert all(f'"artifact":"art-{mode}/' in line for line in lines)
    tensor = np.load(tmp_path / "art-tensor" / "tensor_000000.npy")
    assert tensor.shape == (1, 3, 224, 224)


def test_default_evidence_policy_keeps_no_pixel_on_the_sensor_the_spool_or_the_hub(tmp_path: Path):
    """A configured sensor (evidence policy none, the default) posting to a hub that would keep
    evidence: the hub's database holds no window of any frame's bytes, no evidence file exists,
    and no spool was made."""
    import os

    from ivs.build import RunOptions, build_sensor
    from ivs.config import parse
    from ivs.hub.app import create_app
    from ivs.hub.store import Store
    from ivs.localnet import ServerThread

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    os.environ["IVS_PRIVACY_TOKEN"] = store.add_device("cam")
    hub = ServerThread(create_app(store, "", evidence_dir=tmp_path / "evidence"))
    try:
        cfg, problems, _ = parse(
            "id: cam\nsource: {url: 'synthetic:160x120@30:6', fps: 0}\nmodel: {name: classifier}\nframes: true\n"
            f"evidence: {{spool: '{tmp_path / 'spool.sqlite'}'}}\n"
            f"sinks:\n  - {{type: http, url: '{hub.url}/api/v1/ingest', token_env: IVS_PRIVACY_TOKEN,"
            f" outbox: '{tmp_path / 'out.sqlite'}'}}\n"
        )
        assert cfg is not None and cfg.evidence.policy == "none", problems
        built = build_sensor(cfg, RunOptions(watch=False, ledger_period_s=None))
        seen: list[np.ndarray] = []
        source = built.sensor.source
        frames = source.frames

        def spy():
            for frame in frames():
                seen.append(frame.pixels.copy())
                yield frame

        source.frames = spy  # type: ignore[method-assign]
        try:
            built.sensor.run()
        finally:
            built.close()
        assert built.sensor.evidence is None and len(seen) == 6
        stored = b"".join(p.encode() for p in store.events(limit=10_000))
        assert store.message_count() >= 6 and store.evidence() == []
    finally:
        hub.stop()
        store.close()
    rng = np.random.default_rng(2)
    for pixels in seen:
        for window in pixel_windows(pixels, rng):
            assert window not in stored and base64.b64encode(window)[:12] not in stored
    assert not (tmp_path / "spool.sqlite").exists() and not (tmp_path / "evidence").exists()
