"""The `ivs` command line. Errors become one line on stderr and a non-zero exit.

`app.py` holds the Typer apps; each module here registers its commands on them when imported:
`run.py` (`ivs run`), `node.py` (`ivs node`), `enrol.py` (`ivs enrol`), `tools.py` (model, keys,
config, schema, heatmap, bench), `hub.py` (`ivs hub`), `fleet.py` (`ivs hub tag`, `ivs hub rollout`),
`users.py` (`ivs hub user`, `ivs hub token`), `retention.py` (`ivs hub prune`, and the retention
options of `ivs hub serve`).
"""

from __future__ import annotations

from ivs.cli import enrol, fleet, hub, node, retention, run, tools, users
from ivs.cli.app import app

__all__ = ["app", "enrol", "fleet", "hub", "main", "node", "retention", "run", "tools", "users"]


def main() -> None:
    app()
