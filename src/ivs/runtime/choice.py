"""`--runtime auto`'s choice, made once per network and machine and remembered.

Timing the runtimes on the spot made the answer depend on the machine's load at that moment:
two runs of the same command could pick different runtimes, whose boxes differ in the last
digits. So the first `auto` load times them (in a throw-away process, `ivs.runtime`) and writes
the winner, with the medians it measured, to `runtime-choice.json` in the cache folder
(`$IVS_CACHE_DIR`, else `$XDG_CACHE_HOME/ivs`, else `~/.cache/ivs`); every later load of that
network on this machine takes the remembered runtime without timing. `ivs run --retime` (here
`retime=True`) times again and replaces it. The key is the network's bytes (sha256), the
thread count, the installed runtimes and their versions, and the machine (CPU model, cores):
a different package, an upgraded runtime or another box is timed afresh.

A cache that cannot be read or written (a read-only home, a full disk) costs a timing per
load, never the load itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "runtime-choice.json"
_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert"}


@dataclass(frozen=True)
class Choice:
    runtime: str
    medians_ms: dict[str, float]
    timed: str
    """When it was timed (UTC, ISO 8601)."""
    remembered: bool
    """True when read from the cache, False when timed by this load."""

    def describe(self) -> str:
        how = f"remembered from {self.timed}; --retime to time again" if self.remembered else "timed now"
        medians = ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(self.medians_ms.items()))
        return f"runtime auto: {self.runtime} ({how}: {medians})"


def cache_file() -> Path:
    base = os.environ.get("IVS_CACHE_DIR")
    if base:
        return Path(base) / FILE
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ivs" / FILE


def key(model: bytes, weights: bytes | None, model_format: str, threads: int, candidates: list[str]) -> str:
    """What the choice depends on, as one string (a network, its runtimes, this machine)."""
    digest = hashlib.sha256(model + (weights or b"")).hexdigest()
    runtimes = ",".join(f"{c}={_version(c)}" for c in sorted(candidates))
    machine = f"{platform.machine()}:{_cpu_model()}:{os.cpu_count()}"
    return f"{digest}:{model_format}:t{threads}:{runtimes}:{machine}"


def recall(choice_key: str) -> Choice | None:
    entry = _read().get(choice_key)
    if not isinstance(entry, dict) or not isinstance(entry.get("runtime"), str):
        return None
    medians = entry.get("medians_ms")
    return Choice(
        entry["runtime"], dict(medians) if isinstance(medians, dict) else {}, str(entry.get("timed", "?")), True
    )


def remember(choice_key: str, runtime: str, medians_s: dict[str, float]) -> Choice:
    """Store the choice just timed (best effort); returns it."""
    choice = Choice(
        runtime,
        {k: round(v * 1e3, 3) for k, v in medians_s.items()},
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        False,
    )
    entries = _read()
    entries[choice_key] = {"runtime": runtime, "medians_ms": choice.medians_ms, "timed": choice.timed}
    path = cache_file()
    written: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            written = tmp.name
            json.dump(entries, tmp, indent=1, sort_keys=True)
        os.replace(written, path)  # whole or not at all: a reader never sees half a file
    except OSError as err:
        log.warning("runtime auto: cannot remember the choice in %s (%s): it will be timed again", path, err)
        if written is not None:
            with contextlib.suppress(OSError):
                os.unlink(written)
    return choice


def _read() -> dict[str, Any]:
    path = cache_file()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("runtime auto: ignoring %s (%s): the runtimes are timed again", path, err)
        return {}
    return doc if isinstance(doc, dict) else {}


def _version(runtime: str) -> str:
    try:
        return version(_DISTRIBUTIONS.get(runtime, runtime))
    except PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"
