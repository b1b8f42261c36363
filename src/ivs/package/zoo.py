"""The built-in model zoo: names -> packages shipped inside ivs (built by the recipes in zoo/)."""

from __future__ import annotations

from pathlib import Path

from ivs.errors import ModelError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.ivsm"))


def resolve(model: str) -> Path:
    """A zoo name or a package path -> the package path."""
    path = Path(model)
    if path.suffix == ".ivsm" or path.exists() or "/" in model:
        if not path.is_file():
            raise ModelError(
                f"model package {model} not found: expected an .ivsm file or a zoo name ({', '.join(names())})"
            )
        return path
    candidate = ZOO_DIR / f"{model}.ivsm"
    if not candidate.is_file():
        raise ModelError(
            f"unknown model {model!r}: expected a zoo name ({', '.join(names()) or 'none built'}) "
            "or a path to an .ivsm package"
        )
    return candidate
