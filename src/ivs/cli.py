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
from rich.text import Text

from ivs import __version__
from ivs.errors import ConfigError, IvsError

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
    from ivs.build import RunOptions, build_sensor
    from ivs.run_view import RunView, print_summary

    try:
        cfg, out = _run_config(config, source, model, roi, tiles, fps, max_frames, out, runtime, threads,
                               classify_with, sensor_id, keyring, mode)  # fmt: skip
        if allow_unsigned:
            err_console.print("[bold yellow]WARNING: --allow-unsigned: unsigned or untrusted model packages "
                              "will run. Development only.[/]")  # fmt: skip
        view = RunView(quiet=quiet, to_stdout=out == "-", has_apps=bool(cfg.apps))
        options = RunOptions(
            mode=mode, artifacts=artifacts, allow_unsigned=allow_unsigned, watch=watch,  # type: ignore[arg-type]
            ledger_period_s=60.0 if config is not None else None, sinks=view.sinks(), on_record=view.on_record,
            on_message=view.say,
        )  # fmt: skip
        built = build_sensor(cfg, options)
    except IvsError as err:
        raise fail(str(err), 2) from None
    sensor = built.sensor
    if metrics_port is not None:
        from ivs.metrics import serve_metrics

        try:
            serve_metrics(sensor, metrics_port)
        except OSError as err:
            built.close()
            raise fail(
                f"--metrics-port {metrics_port}: cannot listen ({err.strerror}): expected a free port", 2
            ) from None
    view.start(sensor, out)
    error = _run_until_stopped(built, view)
    print_summary(view.console, sensor)
    if error is not None:
        raise fail(str(error), 1)


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
    tiles: str | None,
    fps: float | None,
    max_frames: int | None,
    out: str | None,
    runtime: str,
    threads: int | None,
    classify_with: str | None,
    sensor_id: str,
    keyring: Path | None,
    mode: str,
) -> tuple[Any, str | None]:
    """The sensor `ivs run` builds, as a `SensorConfig`: the YAML file's with the flags that
    override it, or one made of the flags; and where its metadata goes ("-": stdout)."""
    from ivs.assemble import check_file
    from ivs.build import MODES
    from ivs.config import JsonlSinkConfig, ModelConfig, SensorConfig, SourceConfig
    from ivs.isp import Roi

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
    jsonl = [JsonlSinkConfig(type="jsonl", path=out)] if out is not None else []
    if config is None:
        if source is None or model is None:
            raise ConfigError("expected --source and --model, or --config FILE")
        roi_box = (region.x, region.y, region.w, region.h) if region else None
        cfg = SensorConfig(
            id=sensor_id, source=SourceConfig(url=source, fps=fps, max_frames=max_frames), frames=True, sinks=jsonl,
            model=ModelConfig(name=model, runtime=runtime, roi=roi_box, tiles=grid, threads=threads,  # type: ignore[arg-type]
                              classify_with=classify_with),
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
                "tiles": cfg.model.tiles or grid}
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
