"""`ivs model ...`, `ivs keys generate`, `ivs config check|schema`, `ivs schema`, `ivs heatmap`,
`ivs bench`: the commands around a sensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ivs.cli.app import (
    app,
    config_app,
    err_console,
    fail,
    keys_app,
    model_app,
)
from ivs.errors import IvsError


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
def config_check(path: Annotated[Path, typer.Argument(help="Sensor or node YAML file.")]) -> None:
    """Validate a sensor or node config: every error with its line number; exit 0 only when clean."""
    from ivs.assemble import check_file
    from ivs.node_config import NodeConfig, check_node_file, is_node_file

    node = is_node_file(path)
    try:
        checked, problems = check_node_file(path) if node else check_file(path)
    except IvsError as err:
        raise fail(str(err), 2) from None
    for problem in problems:
        err_console.print(Text(f"ivs: error: {problem.format(str(path))}", style="bold red"), soft_wrap=True)
    if checked is None:
        raise typer.Exit(1)
    if isinstance(checked, NodeConfig):
        ids = ", ".join(s.id for s in checked.sensors)
        typer.echo(f"OK {path}: node {checked.node.id}, {len(checked.sensors)} sensors: {ids}")
        return
    cfg = checked
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
    report: Annotated[
        Path | None,
        typer.Option(help="Measure nothing: print the tables of a results file that --json wrote.", exists=True),
    ] = None,
) -> None:
    """Measure model latency per runtime, frame-to-metadata, data reduction and memory here."""
    from ivs.bench import markdown_report, print_report, read_results, run_bench

    try:
        if report is not None:
            result = read_results(report)
            if not markdown:
                print_report(result, err_console)
        else:
            result = run_bench(quick, json_out, err_console)
    except (IvsError, ValueError) as err:
        raise fail(str(err), 1) from None
    if markdown:
        typer.echo(markdown_report(result))
