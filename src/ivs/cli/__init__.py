"""The `ivs` command line. Errors become one line on stderr and a non-zero exit.

`app.py` holds the Typer apps; each module here registers its commands on them when imported:
`run.py` (`ivs run`), `node.py` (`ivs node`), `enrol.py` (`ivs enrol`), `tools.py` (model, keys,
config, schema, heatmap, bench), `hub.py` (`ivs hub`).
"""

from __future__ import annotations

from ivs.cli import enrol, hub, node, run, tools
from ivs.cli.app import app

__all__ = ["app", "enrol", "hub", "main", "node", "run", "tools"]


def main() -> None:
    app()
