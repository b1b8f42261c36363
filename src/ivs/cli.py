"""The `ivs` command line. Errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ivs import __version__
from ivs.errors import ConfigError, IvsError
from ivs.records import FrameRecord

app = typer.Typer(
    help="ivs: an intelligent vision sensor in software. Frames in, metadata out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Model packages: list, inspect, verify, pack.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys for model packages.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(keys_app, name="keys")
config_app = typer.Typer(help="Sensor configuration files.", no_args_is_help=True)
hub_app = typer.Typer(help="The hub: stores what sensors report, answers queries.", no_args_is_help=True)
device_app = typer.Typer(help="Devices allowed to post to the hub.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
hub_app.add_typer(device_app, name="device")
package_app = typer.Typer(help="Model packages on the hub, to deploy with `ivs hub deploy`.", no_args_is_help=True)
hub_app.add_typer(package_app, name="package")
app.add_typer(config_app, name="config")

err_console = Console(stderr=True)
MODES = ("metadata", "image", "roi", "tensor")
RUNTIMES = ("auto", "onnxruntime", "openvino", "litert")


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(Text(f"ivs: error: {message}", style="bold red"), soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the ivs version."""
    typer.echo(__version__)


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
    runtime: Annotated[str, typer.Option(help="auto | onnxruntime | openvino | litert.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: the package's hint, or 2).")] = None,
    sensor_id: Annotated[str, typer.Option(help="This sensor's id in every record.")] = "ivs",
    keyring: Annotated[Path | None, typer.Option(help="Folder of trusted .pub keys (default: the zoo key).")] = None,
    allow_unsigned: Annotated[bool, typer.Option(help="DEVELOPMENT ONLY: load unsigned packages.")] = False,
    watch: Annotated[bool, typer.Option(help="Hot-swap when the package file is replaced (and on SIGHUP).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-frame lines on the console.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1 at this port.")
    ] = None,
) -> None:
    """Run a model on every frame of a source and emit metadata (and the apps' events)."""
    from ivs.apps import App
    from ivs.artifacts import ArtifactWriter
    from ivs.assemble import assemble, check_file, open_configured_source
    from ivs.hotswap import PackageWatcher
    from ivs.imx500 import check_run_options, is_sensor_source
    from ivs.imx500.model import attach, load_sensor_model
    from ivs.isp import Roi
    from ivs.model import Model, load_model
    from ivs.package.signing import Keyring
    from ivs.package.zoo import resolve
    from ivs.sensor import Sensor
    from ivs.sinks import Sink
    from ivs.sinks.jsonl import JsonlSink
    from ivs.sinks.mqtt import MqttSink
    from ivs.sources import open_source

    try:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if max_frames is not None and max_frames <= 0:
            raise ConfigError(f"--max-frames {max_frames}: expected a positive number")
        if fps is not None and fps < 0:
            raise ConfigError(f"--fps {fps}: expected 0 (unpaced) or a positive rate")
        region = Roi.parse(roi) if roi is not None else None
        grid = _parse_tiles(tiles) if tiles is not None else None
        if allow_unsigned:
            err_console.print(
                "[bold yellow]WARNING: --allow-unsigned: unsigned or untrusted model packages "
                "will run. Development only.[/]"
            )
        apps: list[App] = []
        tracker = None
        seq_start = 0
        cfg = None
        emit_frames = True
        if config is not None:
            if source is not None or model is not None:
                raise ConfigError("--config replaces --source and --model: expected one or the other")
            cfg, problems = check_file(config)
            if cfg is None:
                for problem in problems:
                    err_console.print(
                        Text(f"ivs: error: {problem.format(str(config))}", style="bold red"), soft_wrap=True
                    )
                raise typer.Exit(2)
            keyring = Path(cfg.keyring) if cfg.keyring else keyring
            source, model, sensor_id = cfg.source.url, cfg.model.name, cfg.id
            runtime, threads, classify_with = cfg.model.runtime, cfg.model.threads, cfg.model.classify_with
            fps = cfg.source.fps if fps is None else fps
            max_frames = cfg.source.max_frames if max_frames is None else max_frames
            region = Roi(*cfg.model.roi) if cfg.model.roi else region
            grid = cfg.model.tiles or grid
            emit_frames = cfg.frames
        elif source is None or model is None:
            raise ConfigError("expected --source and --model, or --config FILE")
        ring = Keyring.load(keyring) if keyring is not None else None
        package_path = resolve(model)
        on_sensor = source is not None and is_sensor_source(source)
        if on_sensor:
            check_run_options(mode, classify_with, grid)

        def load(path: Path) -> Model:
            if on_sensor:  # the network runs on the IMX500; the package gives decoder and labels
                return load_sensor_model(path, roi=region, keyring=ring, allow_unsigned=allow_unsigned)
            return load_model(
                path,
                runtime=runtime,
                roi=region,
                tiles=grid,
                threads=threads,
                keyring=ring,
                allow_unsigned=allow_unsigned,
            )

        loaded = load(package_path)
        second = []
        if classify_with is not None:
            second.append(
                load_model(
                    classify_with,
                    runtime=runtime,
                    threads=threads,
                    keyring=ring,
                    allow_unsigned=allow_unsigned,
                    roi=None,
                    tiles=(1, 1),
                )
            )
            if second[0].manifest.task != "classification":
                raise ConfigError(
                    f"--classify-with {classify_with}: a {second[0].manifest.task} model; expected a "
                    "classification model (e.g. mask)"
                )
        # a config's source keeps its reconnect and stall settings; --source takes the defaults
        src = open_configured_source(cfg.source) if cfg is not None else open_source(source)
        size = (getattr(src, "width", None), getattr(src, "height", None))
        if region is not None and size[0] and size[1]:
            region.check_inside(int(size[0]), int(size[1]))
        if on_sensor:
            attach(src, loaded)
        sinks: list[Sink] = []
        jsonl = JsonlSink(out) if out is not None else None
        if jsonl is not None:
            sinks.append(jsonl)
        if cfg is not None:
            assembly = assemble(cfg, allow_unsigned=allow_unsigned, source=src, model=loaded, second_stage=second)
            tracker, apps, seq_start = assembly.tracker, assembly.apps, assembly.seq_start
            if out is None:
                sinks.extend(assembly.sinks)
                to_stdout_config = any(getattr(x, "target", "") == "-" for x in assembly.sinks)
                if jsonl is None:
                    jsonl = next((x for x in assembly.sinks if isinstance(x, JsonlSink)), None)
                out = "-" if to_stdout_config else (jsonl.target if jsonl else None)
        writer = (
            ArtifactWriter(mode, artifacts, loaded.labels)  # type: ignore[arg-type]
            if mode != "metadata"
            else None
        )
    except IvsError as err:
        raise fail(str(err), 2) from None

    to_stdout = out == "-"
    console = Console(stderr=True)
    live = Live(console=console, refresh_per_second=4, transient=True)
    m = loaded.manifest
    if m.notice:
        console.print(f"[yellow]note: {m.name}: {m.notice}[/]")

    class ConsoleEvents:
        """Prints the apps' events on the console as they happen."""

        def write(self, message: Any) -> None:
            if not isinstance(message, FrameRecord):
                console.print(_describe_event(message), highlight=False)

        def close(self) -> None:
            pass

    if apps and not quiet and not to_stdout:
        sinks.append(ConsoleEvents())

    def on_record(record: Any, det: Any) -> None:
        if not quiet and not to_stdout and not apps:
            console.print(_event_line(record), highlight=False)
        live.update(_status(sensor))

    live_apps = None
    if cfg is not None and cfg.deploy is not None:
        from ivs.deploy import LiveApps

        live_apps = LiveApps(apps)  # a deployed config replaces the apps between frames
    sensor = Sensor(
        src,
        loaded,
        sinks,
        sensor_id=sensor_id,
        fps=fps,
        max_frames=max_frames,
        mode=mode,  # type: ignore[arg-type]
        artifacts=writer,
        on_record=on_record,
        second_stage=second,
        tracker=tracker,
        apps=[live_apps] if live_apps is not None else apps,
        emit_frames=emit_frames,
        seq_start=seq_start,
        ledger_period_s=60.0 if cfg is not None else None,
    )
    for sink in sinks:
        if isinstance(sink, MqttSink):
            sink.state = sensor.state  # the retained state topic says what this sensor runs and did

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        sensor.stop()

    if metrics_port is not None:
        from ivs.metrics import serve_metrics

        try:
            serve_metrics(sensor, metrics_port)
        except OSError as err:
            raise fail(
                f"--metrics-port {metrics_port}: cannot listen ({err.strerror}): expected a free port", 2
            ) from None

    def swap(new: Model) -> None:
        nm = new.manifest
        console.print(f"[bold green]model swap:[/] {nm.name} {nm.version} ({new.runner.name}) from the next frame")
        sensor.swap_model(new)

    watcher = None
    if watch:
        watcher = PackageWatcher(
            package_path,
            load,
            swap,
            on_error=lambda msg: console.print(f"[bold red]{msg}[/]", soft_wrap=True),
        ).start()
        w = watcher
        signal.signal(signal.SIGHUP, lambda signum, frame: w.reload())
    agent = None
    if cfg is not None and live_apps is not None:
        try:
            agent = _deploy_agent(cfg, sensor, live_apps, load, swap, second, console)
        except IvsError as err:
            if watcher is not None:
                watcher.close()
            raise fail(str(err), 2) from None
    previous = signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    console.print(
        f"[bold]ivs[/] sensor [cyan]{sensor_id}[/]: {src.id} -> {m.name} {m.version} "
        f"({loaded.runner.name}, {m.model.precision}), mode {mode}" + (f", metadata -> {out}" if out else "")
    )
    error: IvsError | None = None
    try:
        with live:
            sensor.run()
    except IvsError as err:
        error = err
    finally:
        signal.signal(signal.SIGINT, previous)
        if watcher is not None:
            watcher.close()
        if agent is not None:
            agent.close()
        sensor.model.close()
        for extra in second:
            extra.close()
    _print_summary(console, sensor)
    if error is not None:
        raise fail(str(error), 1)


def _deploy_agent(
    cfg: Any, sensor: Any, live_apps: Any, load: Any, swap: Any, second: list[Any], console: Console
) -> Any:
    """Start the deploy agent of a config with a `deploy:` section (see ivs.deploy)."""
    import os

    from ivs.assemble import build_app, source_size
    from ivs.deploy import DeployAgent, HubClient, LiveConfig

    d = cfg.deploy
    token = os.environ.get(d.token_env)
    if not token:
        raise ConfigError(
            f"deploy: token_env {d.token_env!r} is not set in the environment: expected the device token"
            " that `ivs hub device add` printed"
        )
    size = source_size(sensor.source, cfg)
    classifier = second[0] if second else None

    def build(config: Any) -> list[Any]:
        if size is None:
            raise ConfigError("the source does not say its frame size: expected source.frame_size: [w, h]")
        return [build_app(a, sensor.model.labels, size, classifier) for a in config.apps]

    return DeployAgent(
        HubClient(d.hub, token, ca_file=d.ca_file),
        Path(d.folder),
        current=lambda: sensor.model,
        load=load,
        swap=swap,
        apply_config=LiveConfig(cfg, live_apps, build, frame_size=size, labels=lambda: sensor.model.labels),
        interval_s=d.interval_s,
        on_message=lambda msg: console.print(Text(f"deploy: {msg}", style="bold"), soft_wrap=True),
    ).start()


def _parse_tiles(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 8 for p in parts):
        raise ConfigError(f"malformed --tiles {text!r}: expected CxR with 1 <= C, R <= 8, e.g. 2x1")
    return int(parts[0]), int(parts[1])


def _describe_event(e: Any) -> str:
    """One human line for an event."""
    from ivs.events import kind_of

    kind = kind_of(e)
    head = f"frame {e.frame:6d}  {kind:<10s} {e.app}:"
    if kind == "count":
        totals = " ".join(f"{d} {sum(v.values())}" for d, v in e.totals.items())
        return f"{head} {e.label} #{e.track_id} {e.direction}  (totals {totals})"
    if kind in ("zone_enter", "zone_leave"):
        dwell = f" after {e.dwell_s:.1f} s" if kind == "zone_leave" else ""
        return f"{head} {e.label} #{e.track_id}{dwell}  (occupancy {e.occupancy})"
    if kind == "loiter":
        return f"{head} {e.label} #{e.track_id} has stayed {e.dwell_s:.1f} s"
    if kind == "stop":
        return f"{head} STOP: {e.objects} {', '.join(sorted(set(e.labels)))} in the zone"
    if kind == "clear":
        return f"{head} clear after {e.empty_frames} empty frames ({e.stopped_s:.1f} s stopped)"
    if kind == "mask":
        return f"{head} face #{e.track_id}: {'mask' if e.mask else 'NO MASK'} ({e.score:.0%} of {e.frames} frames)"
    if kind == "ledger":
        ratio = f", {e.raw_bytes / e.metadata_bytes:,.0f}x smaller than raw" if e.metadata_bytes else ""
        return f"{head} {e.metadata_bytes:,} B of metadata for {e.frames} frames{ratio}"
    if kind == "gap":
        return f"{head} source back after {e.duration_s:.1f} s ({e.reason}; about {e.frames_lost} frames lost)"
    if kind == "heatmap":
        return f"{head} {e.cols}x{e.rows} grid over {e.frames} frames ({sum(e.counts)} points)"
    return f"{head} {e}"


def _event_line(record: Any) -> str:
    labels: dict[str, int] = {}
    for d in record.detections:
        labels[d.label] = labels.get(d.label, 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in sorted(labels.items())) or "nothing"
    answers: dict[str, int] = {}
    for d in record.detections:
        for name, attr in (d.attributes or {}).items():
            key = f"{name}: {attr.label}"
            answers[key] = answers.get(key, 0) + 1
    if answers:
        what += " (" + ", ".join(f"{n} {k}" for k, n in sorted(answers.items())) + ")"
    if record.model.task == "classification" and record.detections:
        d = record.detections[0]
        what = f"{d.label} {d.score:.2f}"
    drop = f"  dropped {record.dropped}" if record.dropped else ""
    return f"frame {record.frame:6d}  {what:<28s} {record.timings_ms.total:7.1f} ms{drop}"


def _status(sensor: Any) -> Table:
    st = sensor.stats
    t = Table.grid(padding=(0, 2))
    row = [
        f"[bold]{st.frames_processed}[/] frames",
        f"{st.recent_fps():.1f} fps",
    ]
    row += [f"{s} {st.timings[s][-1]:.1f}" for s in ("read", "isp", "infer", "decode", "total") if st.timings[s]]
    row.append(f"ms | dropped [bold]{st.dropped}[/]")
    t.add_row(*row)
    return t


def _print_summary(console: Console, sensor: Any) -> None:
    from ivs.sensor import summarize

    s = summarize(sensor.stats)
    table = Table(title="ivs run summary", show_header=True, header_style="bold")
    table.add_column("stage")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    for stage in s["timings_ms"]:  # the STAGES, and the IMX500's own timings when it reported them
        table.add_row(stage, f"{s['timings_ms'][stage]['p50']:.2f}", f"{s['timings_ms'][stage]['p99']:.2f}")
    console.print(table)
    line = (
        f"frames read {s['frames_read']}, processed {s['frames_processed']}, dropped {s['dropped']}, "
        f"detections {s['detections']}, {s['seconds']:.1f} s, {s['fps']:.1f} fps"
    )
    if s["skipped"]:
        line += f", skipped {s['skipped']} undecodable"
    if s["gaps"]:
        line += f", {s['gaps']} source outages (about {s['frames_lost']} frames lost)"
    metadata_bytes = sensor.metadata_bytes
    if s["frames_processed"]:
        line += f", metadata {metadata_bytes} bytes ({metadata_bytes / s['frames_processed']:.0f} B/frame)"
    console.print(line)
    if metadata_bytes:
        compressed = getattr(sensor.source, "compressed_bytes", None)
        ledger = f"ledger: {metadata_bytes:,} bytes of metadata replaced {sensor.raw_bytes:,} bytes of raw frames "
        ledger += f"({sensor.raw_bytes / metadata_bytes:,.0f}x)"
        if compressed:
            ledger += f" and {compressed:,} bytes of compressed video ({compressed / metadata_bytes:,.0f}x)"
        console.print(ledger)


@model_app.command("list")
def model_list() -> None:
    """List the zoo models shipped with ivs."""
    from ivs.package.reader import read_package
    from ivs.package.zoo import names, resolve

    for name in names():
        m = read_package(resolve(name)).manifest
        note = f"  [{m.notice}]" if m.notice else ""
        typer.echo(f"{name:14s} {m.version:8s} {m.task:15s} {m.description}{note}")


@model_app.command("inspect")
def model_inspect(
    package: Annotated[str, typer.Argument(help="Zoo name or .ivsm path.")],
    allow_unsigned: Annotated[bool, typer.Option(help="Show an unsigned package too.")] = False,
) -> None:
    """Print a package's manifest (labels shortened)."""
    from ivs.package.reader import read_package
    from ivs.package.zoo import resolve

    try:
        pkg = read_package(resolve(package), allow_unsigned=allow_unsigned)
    except IvsError as err:
        raise fail(str(err), 1) from None
    doc = pkg.manifest.model_dump(mode="json", exclude_none=True)
    if len(doc["labels"]) > 12:
        doc["labels"] = [*doc["labels"][:10], f"... {len(doc['labels'])} labels"]
    doc["signed_by"] = pkg.signed_by
    typer.echo(json.dumps(doc, indent=2))


@model_app.command("verify")
def model_verify(
    package: Annotated[str, typer.Argument(help="Zoo name or .ivsm path.")],
    keyring: Annotated[Path | None, typer.Option(help="Folder of trusted .pub keys.")] = None,
) -> None:
    """Check a package's signature and every member's digest."""
    from ivs.package.reader import read_package
    from ivs.package.signing import Keyring
    from ivs.package.zoo import resolve

    try:
        ring = Keyring.load(keyring) if keyring else None
        pkg = read_package(resolve(package), ring)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(
        f"OK {pkg.manifest.name} {pkg.manifest.version}: signed by {pkg.signed_by}, "
        f"{len(pkg.manifest.members)} members verified"
    )


@model_app.command("pack")
def model_pack(
    model: Annotated[
        Path, typer.Argument(help="fp32 model: ONNX, TFLite, TensorFlow frozen graph or SavedModel, OpenVINO IR.")
    ],
    spec: Annotated[
        Path,
        typer.Option(help="spec.json: name, version, task, input, outputs, labels, decoder, assets."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Package file to write (.ivsm).")],
    calibration: Annotated[Path | None, typer.Option(help="Folder of calibration images; int8 when given.")] = None,
    key: Annotated[Path | None, typer.Option(help="Ed25519 private key (PEM) to sign with.")] = None,
    budget: Annotated[float, typer.Option(help="Memory budget in MiB.")] = 8.0,
    target: Annotated[
        str | None,
        typer.Option(
            help="litert: keep a .tflite in TFLite, int8 by AI Edge Quantizer (runs on LiteRT and OpenVINO). "
            "Default (or spec quantize.target): ONNX stays ONNX, other sources become OpenVINO IR."
        ),
    ] = None,
) -> None:
    """Quantize, check the memory budget, sign and write a model package."""
    from rich.progress import Progress

    from ivs.package.pack import load_spec, pack
    from ivs.package.signing import load_private

    try:
        signing_key = load_private(key) if key else None
        doc = load_spec(spec)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("calibrating", total=None)
            manifest = pack(
                model,
                doc,
                output,
                calibration=calibration,
                key=signing_key,
                budget=int(budget * 2**20),
                asset_dir=spec.parent,
                progress=lambda n: progress.advance(task, n),
                target=target,
            )
    except IvsError as err:
        raise fail(str(err), 1) from None
    b = manifest.budget
    assert b is not None
    typer.echo(
        f"wrote {output}: {manifest.name} {manifest.version} {manifest.model.precision}, weights "
        f"{b.weight_bytes / 2**20:.2f} MiB + peak activations {b.peak_activation_bytes / 2**20:.2f} MiB "
        f"of {b.budget_bytes / 2**20:.1f} MiB" + ("" if signing_key else " (UNSIGNED)")
    )


@model_app.command("export-imx500")
def model_export_imx500(
    package: Annotated[str, typer.Argument(help="Zoo name or .ivsm path.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for packerOut.zip and its reports.")],
    keyring: Annotated[Path | None, typer.Option(help="Folder of trusted .pub keys (default: the zoo key).")] = None,
) -> None:
    """Compile a package's network for the IMX500 (Sony's MCT + imx500-converter): packerOut.zip."""
    from ivs.imx500.export import export_imx500
    from ivs.package.signing import Keyring

    try:
        ring = Keyring.load(keyring) if keyring is not None else None
        with err_console.status(f"quantizing {package} with MCT and compiling it with imxconv-pt (minutes)"):
            done = export_imx500(package, output, keyring=ring)
    except IvsError as err:
        raise fail(str(err), 1) from None
    r = done.memory_report
    used, total = r.get("Memory Usage", "?"), r.get("Total Memory Available On Chip", "?")
    typer.echo(f"wrote {done.packer_zip}: on chip {used} of {total}")
    typer.echo(f"on the Raspberry Pi (sudo apt install imx500-tools): {done.on_pi}")


@keys_app.command("generate")
def keys_generate(
    path: Annotated[Path, typer.Argument(help="Private key file to write; the .pub goes beside it.")],
) -> None:
    """Generate an Ed25519 signing key pair."""
    from ivs.package.signing import generate

    if path.exists():
        raise fail(f"{path} exists: expected a new file name (refusing to overwrite a key)", 2)
    pub = generate(path)
    typer.echo(f"private key {path} (keep it secret), public key {pub} (put it in sensors' keyrings)")


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="Sensor YAML file.")]) -> None:
    """Validate a sensor config: every error with its line number; exit 0 only when clean."""
    from ivs.assemble import check_file

    try:
        cfg, problems = check_file(path)
    except IvsError as err:
        raise fail(str(err), 2) from None
    for problem in problems:
        err_console.print(Text(f"ivs: error: {problem.format(str(path))}", style="bold red"), soft_wrap=True)
    if cfg is None:
        raise typer.Exit(1)
    kinds = ", ".join(f"{a.type} {a.name!r}" for a in cfg.apps) or "no apps"
    typer.echo(f"OK {path}: sensor {cfg.id}, {cfg.source.url} -> {cfg.model.name}; {kinds}")


@app.command("schema")
def messages_schema() -> None:
    """Print the JSON Schema of the messages a sensor sends (events and frame records)."""
    from ivs.consumer import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of sensor config files (every field, with its description)."""
    from ivs.config import SensorConfig

    typer.echo(json.dumps(SensorConfig.model_json_schema(), indent=2))


@app.command()
def heatmap(
    events: Annotated[Path, typer.Argument(help="JSON lines holding `heatmap` events.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")],
    background: Annotated[
        Path | None, typer.Option(help="An image of the scene to draw on (same size as the frames).")
    ] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Only this heatmap app's events.")] = None,
) -> None:
    """Render the heatmap events of a run (summed) to a PNG."""
    from ivs.render import render_heatmap

    try:
        n = render_heatmap(events, output, background, app_name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"wrote {output} from {n} heatmap events")


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="A short run (about half a minute) with fewer models and iterations.")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every number as JSON here.")] = None,
    markdown: Annotated[bool, typer.Option(help="Print the results as Markdown tables (docs/benchmarks.md).")] = False,
) -> None:
    """Measure model latency per runtime, frame-to-metadata, data reduction and memory here."""
    from ivs.bench import markdown_report, run_bench

    try:
        result = run_bench(quick, json_out, err_console)
    except IvsError as err:
        raise fail(str(err), 1) from None
    if markdown:
        typer.echo(markdown_report(result))


@hub_app.command("serve")
def hub_serve(
    db: Annotated[str, typer.Option(help="SQLAlchemy URL: sqlite:///hub.db or postgresql://user@host/db.")] = (
        "sqlite:///ivs-hub.db"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    mqtt: Annotated[str | None, typer.Option(help="Also ingest from this broker, HOST:PORT.")] = None,
    group: Annotated[str, typer.Option(help="Shared-subscription group: hubs in one group split the stream.")] = (
        "ivs-hub"
    ),
    mqtt_user: Annotated[str | None, typer.Option(help="MQTT user name (ivs-hub with `ivs hub mqtt-auth`).")] = None,
    mqtt_password_file: Annotated[
        Path | None, typer.Option(help="File holding the MQTT password (hub.password from `ivs hub mqtt-auth`).")
    ] = None,
    mqtt_ca: Annotated[
        Path | None, typer.Option(help="Connect to the broker over TLS, verified with this CA (ca.pem).")
    ] = None,
    mqtt_cert: Annotated[
        Path | None, typer.Option(help="Client certificate, for a listener that wants one (`ivs hub certs --device`).")
    ] = None,
    mqtt_key: Annotated[Path | None, typer.Option(help="... and its key.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (server.pem).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="... and this key (server.key, from `ivs hub certs`).")] = None,
) -> None:
    """Serve the hub's HTTP API (ingest, queries, OpenAPI docs at /docs, /metrics).

    The admin token for device management comes from the environment: IVS_HUB_ADMIN_TOKEN.
    """
    import os

    from ivs.hub.serve import serve

    mqtt_password = None
    if mqtt_password_file is not None:
        try:
            mqtt_password = mqtt_password_file.read_text().strip()
        except OSError as err:
            raise fail(
                f"--mqtt-password-file {mqtt_password_file}: {err.strerror}: expected a readable file", 2
            ) from None
        if mqtt_user is None:
            raise fail("--mqtt-password-file without --mqtt-user: expected both (e.g. --mqtt-user ivs-hub)", 2)

    mqtt_host, mqtt_port = None, 1883
    if mqtt is not None:
        h, _, p = mqtt.rpartition(":")
        if not h or not p.isdigit():
            raise fail(f"--mqtt {mqtt!r}: expected HOST:PORT, e.g. 127.0.0.1:1883", 2)
        mqtt_host, mqtt_port = h, int(p)
    try:
        serve(
            db, host=host, port=port, admin_token=os.environ.get("IVS_HUB_ADMIN_TOKEN", ""),
            mqtt_host=mqtt_host, mqtt_port=mqtt_port, mqtt_group=group,
            mqtt_username=mqtt_user, mqtt_password=mqtt_password,
            mqtt_tls_ca=str(mqtt_ca) if mqtt_ca else None, mqtt_tls_cert=str(mqtt_cert) if mqtt_cert else None,
            mqtt_tls_key=str(mqtt_key) if mqtt_key else None,
            tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None


@device_app.command("add")
def hub_device_add(
    name: Annotated[str, typer.Argument(help="Device name: the sensor id it will post as.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """Register a device and print its token (shown once; only its hash is stored)."""
    from ivs.hub.store import Store

    try:
        token = Store(db).add_device(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"device {name}: token {token}")
    typer.echo(
        "give it to the sensor as IVS_HUB_TOKEN (http sink token_env); it is also its MQTT password, user name"
        f" {name}, once `ivs hub mqtt-auth` has run; it is not shown again"
    )


@device_app.command("revoke")
def hub_device_revoke(
    name: Annotated[str, typer.Argument(help="Device name.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """Revoke a device: its token is refused from now on."""
    from ivs.hub.store import Store

    try:
        ok = Store(db).revoke_device(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    if not ok:
        raise fail(f"no active device {name!r}: expected one of `ivs hub device list`", 1)
    typer.echo(f"device {name} revoked")


@device_app.command("list")
def hub_device_list(db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db") -> None:
    """List the registered devices (JSON lines: name, created, revoked; never tokens)."""
    import dataclasses

    from ivs.hub.store import Store

    try:
        for device in Store(db).devices():
            typer.echo(json.dumps(dataclasses.asdict(device)))
    except IvsError as err:
        raise fail(str(err), 1) from None


@hub_app.command("certs")
def hub_certs(
    out: Annotated[Path, typer.Option(help="Folder for ca.pem/.key, server.pem/.key, devices/NAME.pem/.key.")],
    hosts: Annotated[
        str, typer.Option(help="Names and addresses of the hub and broker, comma-separated (the server certificate).")
    ] = "127.0.0.1,localhost",
    device: Annotated[
        list[str] | None, typer.Option(help="Also a client certificate for this device (repeatable).")
    ] = None,
    server: Annotated[bool, typer.Option(help="Write the server certificate (--no-server: only devices).")] = True,
    days: Annotated[int, typer.Option(help="Validity of the server and device certificates.")] = 825,
    force: Annotated[bool, typer.Option(help="Replace certificates and keys that exist.")] = False,
) -> None:
    """Make a CA (or reuse the one in --out) and certificates for TLS: the hub's and broker's, and devices'."""
    from ivs.hub.certs import make_certs

    try:
        written = make_certs(
            out, hosts=[h.strip() for h in hosts.split(",") if h.strip()], devices=device or [], server=server,
            force=force, days=days,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"{'using the CA' if written.ca_reused else 'new CA'} {written.ca_cert}: give it to every sensor")
    for path in written.files:
        typer.echo(f"wrote {path}" + (" (private: mode 600)" if path.suffix == ".key" else ""))


@hub_app.command("mqtt-auth")
def hub_mqtt_auth(
    out: Annotated[Path, typer.Option(help="Folder for passwd, acl, hub.password and mosquitto.conf.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
    certs: Annotated[
        Path | None, typer.Option(help="Folder from `ivs hub certs`: the sensors' listener uses TLS.")
    ] = None,
    listen: Annotated[str, typer.Option(help="The sensors' listener, HOST:PORT.")] = "0.0.0.0:8883",
    hub_listen: Annotated[
        str, typer.Option(help="The hub's own listener, HOST:PORT ('' for none: the hub uses the devices' listener).")
    ] = "127.0.0.1:1883",
    hub_tls: Annotated[
        bool, typer.Option(help="The hub's listener uses TLS too (with --certs; the hub logs in with its password).")
    ] = False,
    hub_user: Annotated[str, typer.Option(help="The hub's MQTT user name.")] = "ivs-hub",
    client_certs: Annotated[
        bool, typer.Option(help="Devices log in with their certificate (`ivs hub certs --device`), not a password.")
    ] = False,
    ha_prefix: Annotated[
        str, typer.Option(help="Home Assistant discovery prefix devices may publish under ('' for none).")
    ] = "homeassistant",
) -> None:
    """Write Mosquitto's password file, ACL and config from the hub's devices: each device may publish
    only under ivs/<its name>/. Run again after `device add`/`revoke`, then reload Mosquitto (SIGHUP)."""
    import shlex

    from ivs.hub.mqtt_auth import write_mqtt_auth
    from ivs.hub.store import Store

    try:
        result = write_mqtt_auth(
            Store(db), out, hub_user=hub_user, certs=certs, listen=listen, hub_listen=hub_listen or None,
            client_certs=client_certs, ha_prefix=ha_prefix, hub_tls=hub_tls,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None
    for warning in result.warnings:
        err_console.print(Text(f"ivs: warning: {warning}", style="yellow"), soft_wrap=True)
    typer.echo(f"{len(result.devices)} devices: {', '.join(result.devices) or '-'}")
    typer.echo(f"wrote {result.passwd}, {result.acl}, {result.conf}; the hub's password is in {result.hub_password}")
    typer.echo("include mosquitto.conf in Mosquitto's configuration, then reload it (SIGHUP)")
    typer.echo(f"the hub: ivs hub serve {shlex.join(result.hub_args)} ...")


HubUrl = Annotated[str, typer.Option("--hub", envvar="IVS_HUB_URL", help="The hub's base URL (or IVS_HUB_URL).")]
AdminToken = Annotated[
    str | None, typer.Option(envvar="IVS_HUB_ADMIN_TOKEN", help="The hub's admin token (or IVS_HUB_ADMIN_TOKEN).")
]
HubCa = Annotated[
    Path | None,
    typer.Option("--ca-file", envvar="IVS_HUB_CA_FILE", help="CA to verify an https hub (ca.pem, `ivs hub certs`)."),
]


def _hub_client(hub: str, admin_token: str | None, ca_file: Path | None = None) -> Any:
    from ivs.deploy import HubClient

    if not admin_token:
        raise fail("expected the hub's admin token: --admin-token or IVS_HUB_ADMIN_TOKEN", 2)
    try:
        return HubClient(hub, admin_token, ca_file=str(ca_file) if ca_file else None)
    except IvsError as err:
        raise fail(str(err), 2) from None


@package_app.command("upload")
def hub_package_upload(
    package: Annotated[Path, typer.Argument(help="The .ivsm file (`ivs model pack` writes one).")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Upload a model package to the hub; prints its sha256 (what `ivs hub deploy` can name)."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        data = package.read_bytes()
    except OSError as err:
        raise fail(f"{package}: cannot read it ({err.strerror}): expected an .ivsm file", 2) from None
    try:
        p = client.request("POST", "/api/v1/packages", data, "application/octet-stream")
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"{p['name']} {p['version']} sha256 {p['sha256']} ({p['size']} bytes) on {hub}")
    if p["problem"]:
        err_console.print(Text(f"ivs: warning: sensors will refuse it: {p['problem']}", style="yellow"), soft_wrap=True)


@package_app.command("list")
def hub_package_list(
    hub: HubUrl = "http://127.0.0.1:8080", admin_token: AdminToken = None, ca_file: HubCa = None
) -> None:
    """List the packages on the hub, newest first (JSON lines)."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        for p in client.get("/api/v1/packages"):
            typer.echo(json.dumps(p))
    except IvsError as err:
        raise fail(str(err), 1) from None


@hub_app.command("deploy")
def hub_deploy(
    device: Annotated[str, typer.Argument(help="The device (sensor id) to deploy to.")],
    package: Annotated[
        str, typer.Option(help="The package: its sha256, NAME@VERSION, or NAME (the newest upload of that name).")
    ],
    config: Annotated[
        Path | None, typer.Option(help="A sensor config (YAML) to deploy with it; its id must be DEVICE.")
    ] = None,
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Assign a package (and a config) to a device; it swaps at its next poll (`ivs hub deploy-status`)."""
    client = _hub_client(hub, admin_token, ca_file)
    body: dict[str, Any] = {"package": package}
    if config is not None:
        try:
            body["config"] = config.read_text()
        except OSError as err:
            raise fail(f"{config}: cannot read it ({err.strerror}): expected a sensor YAML file", 2) from None
    try:
        d = client.send("PUT", f"/api/v1/devices/{device}/desired", body)
    except IvsError as err:
        raise fail(str(err), 1) from None
    p = d["package"]
    with_config = " with its config" if d["config"] is not None else ""
    typer.echo(f"{device}: revision {d['revision']} -> {p['name']} {p['version']} ({p['sha256'][:12]}){with_config}")


@hub_app.command("deploy-status")
def hub_deploy_status(
    device: Annotated[str, typer.Argument(help="The device (sensor id).")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Desired vs reported state of a device (JSON); exit 1 when its last deploy failed."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        state = client.get(f"/api/v1/devices/{device}/deploy")
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(json.dumps(state, indent=2))
    if state["status"] == "failed":
        raise fail(f"{device}: the deploy failed: {state['reported']['error']}", 1)


def main() -> None:
    app()
