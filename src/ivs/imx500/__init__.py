"""The real IMX500 path: the network runs on the Raspberry Pi AI Camera's sensor.

`ivs run --source imx500:NETWORK.rpk --model PACKAGE` reads each frame's output tensors and the
sensor's DNN/DSP timings from picamera2's metadata (no pixels) and feeds them to the package's
decoder, the tracker, the apps and the sinks, as the CPU path does. `imx500-replay:FILE.npz`
replays recorded metadata the same way, anywhere. See docs/imx500.md.

- `tensors.py`: the metadata layout (tensor info struct, flat tensors, KPI) and its parser.
- `model.py`: `SensorModel`, the package as the model of this path.
- `source.py`: `CameraSource` (picamera2, imported lazily) and `ReplaySource`.
- `recording.py`: the replay file; `record` writes one from a real model run here.
- `export.py`: `ivs model export-imx500` (Sony's Model Compression Toolkit and imx500-converter).
"""

from __future__ import annotations

SOURCE_PREFIXES = ("imx500:", "imx500-replay:")


def is_sensor_source(spec: str) -> bool:
    """Whether a source spec names the IMX500 (or a replay of its metadata)."""
    return spec.startswith(SOURCE_PREFIXES)


def check_run_options(mode: str, classify_with: str | None, tiles: tuple[int, int] | None) -> None:
    """Refuse what the sensor path cannot do, saying why (a `ConfigError`)."""
    from ivs.errors import ConfigError

    if mode != "metadata":
        raise ConfigError(
            f"--mode {mode} with an imx500 source: expected metadata (the sensor path never reads the image stream)"
        )
    if classify_with is not None:
        raise ConfigError("--classify-with with an imx500 source: a second stage needs pixels, which it never reads")
    if tiles is not None and tiles != (1, 1):
        raise ConfigError(f"--tiles {tiles[0]}x{tiles[1]} with an imx500 source: the sensor runs one region per frame")
