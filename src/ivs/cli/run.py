"""`ivs run`: flags or a YAML file -> a `SensorConfig` -> `ivs.build.build_sensor` -> run, with
the console view (`ivs.run_view`) and signals."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.text import Text

from ivs.cli.app import (
    RUNTIMES,
    app,
    err_console,
    fail,
)
from ivs.errors import ConfigError, IvsError


@app.command()
def run(
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            "-s",
            help="Video file, RTSP URL, camera index, image folder, or synthetic[:WxH][@FPS][:FRAMES].",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Zoo name (see `ivs model list`) or .ivsm package path."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A sensor YAML file (source, model, apps, sinks) instead of the flags."),
    ] = None,
    mode: Annotated[str, typer.Option(help="metadata (only metadata leaves) | image | roi | tensor.")] = "metadata",
    roi: Annotated[str | None, typer.Option(help="Region of interest X,Y,W,H in frame pixels.")] = None,
    tiles: Annotated[
        str | None,
        typer.Option(help="Cut the region into CxR overlapping tiles (default: the package's hint)."),
    ] = None,
    full_frame: Annotated[
        bool | None,
        typer.Option(help="With tiles, also one pass over the whole frame (default: the package's; off with --tiles)."),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(help="Pace at this rate (default: the source's); 0 = every frame, unpaced."),
    ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames from the source.")] = None,
    out: Annotated[str | None, typer.Option(help="Write metadata as JSON lines to a file, or - for stdout.")] = None,
    artifacts: Annotated[Path, typer.Option(help="Folder for image/roi/tensor outputs.")] = Path("ivs-artifacts"),
    classify_with: Annotated[
        str | None,
        typer.Option(help="Second stage: a classifier (zoo name or package) run on each detection's crop."),
    ] = None,
    runtime: Annotated[str, typer.Option(help="auto | onnxruntime | openvino | litert | onnxruntime-cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: the package's hint, or 2).")] = None,
    sensor_id: Annotated[str, typer.Option(help="This sensor's id in every record.")] = "ivs",
    keyring: Annotated[Path | None, typer.Option(help="Folder of trusted .pub keys (default: the zoo key).")] = None,
    allow_unsigned: Annotated[bool, typer.Option(help="DEVELOPMENT ONLY: load unsigned packages.")] = False,
    retime: Annotated[
        bool, typer.Option(help="runtime auto: time the runtimes again instead of the remembered choice.")
    ] = False,
    watch: Annotated[bool, typer.Option(help="Hot-swap when the package file is replaced (and on SIGHUP).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-frame lines on the console.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1 at this port.")
    ] = None,
) -> None:
    """Run a model on every frame of a source and emit metadata (and the apps' events)."""
    from ivs.build import RunOptions, build_sensor
    from ivs.run_view import RunView, print_summary

    try:
        cfg, out = _run_config(config, source, model, roi, (tiles, full_frame), fps, max_frames, out, runtime,
                               threads, classify_with, sensor_id, keyring)  # fmt: skip
        if allow_unsigned:
            err_console.print("[bold yellow]WARNING: --allow-unsigned: unsigned or untrusted model packages "
                              "will run. Development only.[/]")  # fmt: skip
        view = RunView(quiet=quiet, to_stdout=out == "-", has_apps=bool(cfg.apps))
        options = RunOptions(
            mode=mode, artifacts=artifacts, allow_unsigned=allow_unsigned, watch=watch, retime=retime,  # type: ignore[arg-type]
            ledger_period_s=60.0 if config is not None else None, sinks=view.sinks(), on_record=view.on_record,
            on_message=view.say,
        )  # fmt: skip
        built = build_sensor(cfg, options)
    except IvsError as err:
        raise fail(str(err), 2) from None
    sensor = built.sensor
    _serve_metrics(built, metrics_port)
    view.start(sensor, out)
    error = _run_until_stopped(built, view)
    print_summary(view.console, sensor)
    if error is not None:
        raise fail(str(error), 1)


def _serve_metrics(built: Any, port: int | None) -> None:
    """Prometheus /metrics on 127.0.0.1:`port` (None: not served)."""
    if port is None:
        return
    from ivs.metrics import serve_metrics

    try:
        serve_metrics(built.sensor, port)
    except OSError as err:
        built.close()
        raise fail(f"--metrics-port {port}: cannot listen ({err.strerror}): expected a free port", 2) from None


def _run_until_stopped(built: Any, view: Any) -> IvsError | None:
    """Run the sensor (Ctrl-C, SIGTERM: stop after the frame in hand; SIGHUP: check the package)."""

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        built.sensor.stop()

    previous = signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, lambda signum, frame: built.reload())
    try:
        with view.live:
            built.sensor.run()
    except IvsError as err:
        return err
    finally:
        signal.signal(signal.SIGINT, previous)
        built.close()
    return None


def _run_config(
    config: Path | None,
    source: str | None,
    model: str | None,
    roi: str | None,
    layout: tuple[str | None, bool | None],
    fps: float | None,
    max_frames: int | None,
    out: str | None,
    runtime: str,
    threads: int | None,
    classify_with: str | None,
    sensor_id: str,
    keyring: Path | None,
) -> tuple[Any, str | None]:
    """The sensor `ivs run` builds, as a `SensorConfig`: the YAML file's with the flags that
    override it, or one made of the flags; and where its metadata goes ("-": stdout)."""
    from ivs.assemble import check_file
    from ivs.config import ModelConfig, SensorConfig, SourceConfig
    from ivs.isp import Roi
    from ivs.sink_config import JsonlSinkConfig

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if max_frames is not None and max_frames <= 0:
        raise ConfigError(f"--max-frames {max_frames}: expected a positive number")
    if fps is not None and fps < 0:
        raise ConfigError(f"--fps {fps}: expected 0 (unpaced) or a positive rate")
    region = Roi.parse(roi) if roi is not None else None
    tiles, full_frame = layout
    grid = _parse_tiles(tiles) if tiles is not None else None
    jsonl = [JsonlSinkConfig(type="jsonl", path=out)] if out is not None else []
    if config is None:
        if source is None or model is None:
            raise ConfigError("expected --source and --model, or --config FILE")
        roi_box = (region.x, region.y, region.w, region.h) if region else None
        cfg = SensorConfig(
            id=sensor_id, source=SourceConfig(url=source, fps=fps, max_frames=max_frames), frames=True, sinks=jsonl,
            heartbeat_s=None,  # as no ledger: a run from flags writes frame records, for a person or a pipe
            model=ModelConfig(name=model, runtime=runtime, roi=roi_box, tiles=grid, full_frame=full_frame,  # type: ignore[arg-type]
                              threads=threads, classify_with=classify_with),
            keyring=str(keyring) if keyring is not None else None,
        )  # fmt: skip
        return cfg, out
    if source is not None or model is not None:
        raise ConfigError("--config replaces --source and --model: expected one or the other")
    checked, problems = check_file(config)
    if checked is None:
        for problem in problems:
            err_console.print(Text(f"ivs: error: {problem.format(str(config))}", style="bold red"), soft_wrap=True)
        raise typer.Exit(2)
    cfg = checked
    frames = cfg.source.max_frames if max_frames is None else max_frames
    src = cfg.source.model_copy(update={"fps": cfg.source.fps if fps is None else fps, "max_frames": frames})
    mc = cfg.model.model_copy(
        update={"roi": cfg.model.roi or ((region.x, region.y, region.w, region.h) if region else None),
                "tiles": cfg.model.tiles or grid,
                "full_frame": cfg.model.full_frame if full_frame is None else full_frame}
    )  # fmt: skip
    update: dict[str, Any] = {"source": src, "model": mc, "keyring": cfg.keyring or (str(keyring) if keyring else None)}
    if jsonl:  # --out replaces the config's sinks
        update["sinks"] = jsonl
    cfg = cfg.model_copy(update=update)
    targets = [s.path for s in cfg.sinks if isinstance(s, JsonlSinkConfig)]
    return cfg, "-" if "-" in targets else (targets[0] if targets else None)


def _parse_tiles(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 8 for p in parts):
        raise ConfigError(f"malformed --tiles {text!r}: expected CxR with 1 <= C, R <= 8, e.g. 2x1")
    return int(parts[0]), int(parts[1])
