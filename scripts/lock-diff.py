"""Print the packages whose version in a virtual environment differs from uv.lock.

`make test-latest` runs it before the suite, so a failure on the newest releases names the
releases that are new. Usage: python scripts/lock-diff.py uv.lock VENV
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main(lock_path: str, venv: str) -> int:
    locked: dict[str, set[str]] = {}
    for package in tomllib.loads(Path(lock_path).read_text())["package"]:
        locked.setdefault(canonical(package["name"]), set()).add(package["version"])
    site = next(Path(venv).glob("lib/python*/site-packages"))
    newer = []
    for dist in metadata.distributions(path=[str(site)]):
        name = canonical(dist.metadata["Name"])
        if name != "ivs" and dist.version not in locked.get(name, {dist.version}):
            newer.append(f"  {name}: {', '.join(sorted(locked[name]))} (lock) -> {dist.version}")
    added = sorted(canonical(d.metadata["Name"]) for d in metadata.distributions(path=[str(site)]))
    extra = [n for n in added if n not in locked and n != "ivs"]
    print(f"lock-diff: {len(newer)} package(s) newer than uv.lock, {len(extra)} not in it")
    for line in sorted(newer):
        print(line)
    for name in extra:
        print(f"  {name}: not in uv.lock")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
