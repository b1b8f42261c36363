"""`ivs model export-imx500`: a package's network compiled for the IMX500 (`packerOut.zip`).

Sony's converter (`imxconv-pt`, PyPI `imx500-converter[pt]`) compiles only networks quantized by
Sony's Model Compression Toolkit, so the export starts from the package's PyPI-sourced PyTorch
model (the zoo recipe), quantizes it with MCT for the "imx500" platform, and compiles it. The
toolchain lives in two virtual environments of its own, never ivs's: `.venv-imx500-mct` (MCT
2.2.2: newer MCT needs torchvision, whose PyPI wheels need CUDA torch) and `.venv-imx500` (the
converter, which needs Java 17). zoo/imx500/README.md says how to create both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ivs.errors import ModelError
from ivs.package.reader import read_package
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "zoo" / "imx500" / "quantize.py"
# The IMX500 holds the whole network on chip: weights + runtime memory within 8 MiB.
SENSOR_BYTES = 8 * 2**20
# Packages whose network has a PyTorch source the recipe quantizes with MCT.
PYTORCH_SOURCES = ("classifier",)
ON_PI = "imx500-package -i {zip} -o {out}"


@dataclass(frozen=True)
class Exported:
    packer_zip: Path
    memory_report: dict[str, object]
    on_pi: str


def _fail_text(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln or "error:" in ln]
    return " | ".join((errors or lines)[-3:])


def export_imx500(
    package: str,
    out: Path,
    *,
    keyring: Keyring | None = None,
    venv: Path | None = None,
    mct_venv: Path | None = None,
) -> Exported:
    """Quantize with MCT and compile with imxconv-pt into `out`; a `ModelError` says why not.
    The package must verify against `keyring` (default: the zoo key)."""
    pkg = read_package(resolve(package), keyring)
    m = pkg.manifest
    if m.budget is not None:
        need = m.budget.weight_bytes + m.budget.peak_activation_bytes
        if need > SENSOR_BYTES:
            raise ModelError(
                f"{m.name} does not fit the IMX500: its int8 weights {m.budget.weight_bytes / 2**20:.2f} MiB + "
                f"peak activations {m.budget.peak_activation_bytes / 2**20:.2f} MiB = {need / 2**20:.2f} MiB, over "
                f"the sensor's {SENSOR_BYTES / 2**20:.0f} MiB"
            )
    if m.name not in PYTORCH_SOURCES:
        source = m.upstream.get("package", "?")
        raise ModelError(
            f"{m.name}: no PyTorch source to quantize with Sony's Model Compression Toolkit (its network comes "
            f"from {source}); imx500-converter compiles only MCT-quantized networks. Exportable: "
            f"{', '.join(PYTORCH_SOURCES)}"
        )
    if m.input.resize == "letterbox":
        raise ModelError(f"{m.name}: the IMX500 cannot letterbox its input; expected 'stretch' or 'crop'")
    venv = venv or REPO / ".venv-imx500"
    mct_venv = mct_venv or REPO / ".venv-imx500-mct"
    conv, python = venv / "bin" / "imxconv-pt", mct_venv / "bin" / "python"
    setup = "see zoo/imx500/README.md"
    if not RECIPE.is_file():
        raise ModelError(f"the MCT recipe {RECIPE} is missing: export-imx500 runs from an ivs source checkout")
    if not python.is_file():
        raise ModelError(f"the MCT environment {mct_venv} is missing ({setup})")
    if not conv.is_file():
        raise ModelError(f"imxconv-pt is not installed in {venv} ({setup})")
    if shutil.which("java") is None:
        raise ModelError("imx500-converter needs Java 17 (`java` is not on PATH): apt install openjdk-17-jre-headless")
    out.mkdir(parents=True, exist_ok=True)
    quantized = out / "model.mct.onnx"
    result = subprocess.run(
        [str(python), str(RECIPE), m.name, "--out", str(out)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not quantized.is_file():
        raise ModelError(f"MCT quantization of {m.name} failed: {_fail_text(result)}")
    conv_dir = out / "imxconv"
    result = subprocess.run(
        [str(conv), "-i", str(quantized), "-o", str(conv_dir), "--overwrite-output"],
        capture_output=True,
        text=True,
        check=False,
    )
    reports = sorted(conv_dir.glob("*_MemoryReport.json"))
    report: dict[str, object] = {}
    if reports:
        report = json.loads(reports[0].read_text()).get("Memory Report", {})
    if report.get("Fit In Chip") is False:
        raise ModelError(
            f"{m.name} does not fit the IMX500: the converter reports {report.get('Memory Usage')} of "
            f"{report.get('Total Memory Available On Chip')} on chip"
        )
    packer = conv_dir / "packerOut.zip"
    if result.returncode != 0 or not packer.is_file():
        raise ModelError(f"imxconv-pt failed on {m.name}: {_fail_text(result)}")
    final = out / "packerOut.zip"
    shutil.copyfile(packer, final)
    return Exported(final, report, ON_PI.format(zip=final.name, out=f"{m.name}-rpk/"))
