"""The code's layers (docs/architecture.md): no module imports one of a higher layer, and no
modules import each other in a circle. Read from the source's import statements (a name in a
string, as `ivs.sources.PLUGINS` holds, is not an import)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ivs", "ivs.errors", "ivs.frame", "ivs.detections", "ivs.geometry", "ivs.isp", "ivs.events",
              "ivs.records", "ivs.mqtt_client", "ivs.outbox", "ivs.localnet")),
    ("models", ("ivs.runtime", "ivs.decode", "ivs.package", "ivs.model", "ivs.cascade", "ivs.track")),
    ("parts", ("ivs.sources", "ivs.imx500", "ivs.apps", "ivs.sinks", "ivs.consumer", "ivs.artifacts",
               "ivs.render", "ivs.zoo", "ivs.filters", "ivs.evidence")),
    ("sensor", ("ivs.sensor", "ivs.sensor_slot", "ivs.sensor_stats", "ivs.sensor_record", "ivs.config", "ivs.config_base", "ivs.sink_config", "ivs.assemble", "ivs.hotswap",
                "ivs.deploy", "ivs.metrics", "ivs.node_config", "ivs.commands")),
    ("programs", ("ivs.build", "ivs.node", "ivs.node_agent", "ivs.run_view", "ivs.hub", "ivs.bench", "ivs.cli", "ivs.__main__")),
]  # fmt: skip


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def imports() -> dict[str, set[str]]:
    """Every module of src/ivs and the ivs modules it imports (anywhere in it, typing-only too)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} ({LAYERS[layer_of(m) or 0][0]}) imports {t} ({LAYERS[layer_of(t) or 0][0]})"
        for m, targets in graph.items()
        for t in targets
        if (layer_of(t) or 0) > (layer_of(m) or 0)
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (Tarjan's components)."""
    found: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones() -> None:
    graph = imports()
    assert [m for m in graph if layer_of(m) is None] == [], "give the new module a layer (here and in the docs)"
    assert upward(graph) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles(imports()) == []


def test_the_checks_see_an_upward_import_and_a_circle() -> None:
    made_up = {"ivs.frame": {"ivs.cli.run"}, "ivs.cli.run": {"ivs.frame"}, "ivs.isp": {"ivs.errors"}}
    assert upward(made_up) == ["ivs.frame (base) imports ivs.cli.run (programs)"]
    assert circles(made_up) == [["ivs.cli.run", "ivs.frame"]]
    assert layer_of("ivs.hub.store.schema") == 4 and layer_of("ivs.sensor_stats") == 3
