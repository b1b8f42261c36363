"""A sensor or node box installs `ivs` alone; the hub's packages come with `ivs[hub]`.

The hub's packages are made unimportable in a child interpreter (as if not installed): sensors
and nodes still run, and `ivs hub` says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ivs.cli.hub import HUB_MODULES

ROOT = Path(__file__).resolve().parent.parent


def without_hub(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "nohub"
    site.mkdir(exist_ok=True)
    # None in sys.modules: `import fastapi` fails and importlib finds no spec, as when not installed.
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in (*HUB_MODULES, "starlette"))
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "ivs", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)  # fmt: skip


def test_sensors_and_nodes_run_without_the_hubs_packages(tmp_path: Path):
    check = without_hub(tmp_path, "hub", "serve")
    assert check.returncode == 2
    assert "pip install 'ivs[hub]'" in check.stderr and "fastapi" in check.stderr
    run = without_hub(tmp_path, "run", "--source", "synthetic:96x96@10:5", "--model", "face", "--runtime",
                      "onnxruntime", "--fps", "0", "--out", "-", "-q")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.count('"schema":"ivs.frame/1"') == 5
    site = tmp_path / "site.yaml"
    site.write_text(
        "defaults: {model: {name: face, runtime: onnxruntime}, frames: true}\n"
        "sensors:\n"
        f"  - {{id: a, source: {{url: 'synthetic:96x96@10:5', fps: 0}}, sinks: [{{type: jsonl, path: '{tmp_path}/a.jsonl'}}]}}\n"
    )
    node = without_hub(tmp_path, "node", "--config", str(site), "--status-s", "0")
    assert node.returncode == 0, node.stderr
    assert (tmp_path / "a.jsonl").read_text().count('"schema":"ivs.frame/1"') == 5
