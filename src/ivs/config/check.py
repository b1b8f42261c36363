"""Reading a sensor's YAML and refusing it, with the line of every problem: the YAML's
structure checked on the parser's events before anything recurses into it or expands an alias
(`read_yaml`), pydantic's validation (`parse`, `load`), and the checks that need the world: the
source's frame size and the model's labels (`check_against`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ivs.apps.registry import app_types
from ivs.config.sensor import FiltersConfig, SensorConfig
from ivs.errors import ConfigError
from ivs.sink_config import SINK_TYPES as _SINK_TYPES


@dataclass(frozen=True)
class Problem:
    """One error found in a config file, with where it is."""

    loc: tuple[str | int, ...]
    message: str
    line: int | None = None

    def format(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in self.loc).replace(".[", "[")
        return f"{where}: {field}: {self.message}" if field else f"{where}: {self.message}"


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest YAML node the pydantic location reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic adds the union member's tag ("line", "zone", ...) to the location of errors
    # inside a discriminated union; the YAML has no such level.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i > 0 and out and out[-2:-1] == ["apps"] and isinstance(part, str) and part in app_types():
            continue
        if i > 0 and out and out[-2:-1] == ["sinks"] and part in _SINK_TYPES:
            continue
        out.append(part)
    return tuple(out)


def load(path: Path) -> tuple[SensorConfig | None, list[Problem], yaml.Node | None]:
    """Parse and validate; returns the config (None if invalid), every problem, the YAML tree."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror}): expected a YAML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        why = f"byte {raw[err.start]:#04x} is not UTF-8: expected a YAML file in UTF-8"
        return None, [Problem((), why, line)], None
    return parse(text)


MAX_DEPTH = 32
"""Nesting a config may have (it needs 4); deeper YAML would exhaust the parser's recursion."""
MAX_NODES = 100_000
"""Values a config may hold with its aliases expanded (a site of 1,000 sensors needs ~30,000):
16 KB of YAML whose aliases nest ten deep expand to billions ("billion laughs")."""


def _structure_problems(text: str) -> list[Problem]:
    """Nesting too deep, keys set twice (YAML keeps the last silently, losing the first) and
    aliases that expand past `MAX_NODES` values, found on the parser's events, before anything
    recurses into the document or expands an alias."""
    problems: list[Problem] = []
    keys: list[dict[str, int] | None] = []  # per open collection: a mapping's keys -> line; None: a sequence
    items: list[int] = []  # per open collection: items so far (a mapping's even ones are keys)
    expanded = 0  # values so far, each alias counted as the values of what it names
    anchored: dict[str, int] = {}  # anchor -> values in its node, expanded
    opened: list[tuple[str | None, int]] = []  # per open collection: its anchor, `expanded` at its start
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = (event.start_mark.line if event.start_mark is not None else 0) + 1  # the parser marks every event
        if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            keys.pop()
            items.pop()
            anchor, start = opened.pop()
            if anchor is not None:
                anchored[anchor] = expanded - start
            continue
        expanded += anchored.get(event.anchor or "", 0) if isinstance(event, yaml.AliasEvent) else 1
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            anchored[event.anchor] = 1
        if expanded > MAX_NODES:
            return [Problem((), f"more than {MAX_NODES} values with its aliases expanded: expected a config of "
                                "plain settings", line)]  # fmt: skip
        if keys:
            seen = keys[-1]
            if seen is not None and items[-1] % 2 == 0 and isinstance(event, yaml.ScalarEvent):
                if event.value in seen and event.value != "<<":
                    twice = f"key {event.value[:64]!r} is set twice (lines {seen[event.value]} and {line})"
                    problems.append(Problem((), f"{twice}: expected once", line))
                seen.setdefault(event.value, line)
            items[-1] += 1
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if len(keys) == MAX_DEPTH:
                return [Problem((), f"nested more than {MAX_DEPTH} deep: expected a config of plain settings", line)]
            keys.append({} if isinstance(event, yaml.MappingStartEvent) else None)
            items.append(0)
            opened.append((event.anchor, expanded))
    return problems


def read_yaml(text: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """The YAML document as data and as a tree (for line numbers), or the problems that stop
    it being read: nesting too deep, a key set twice, not valid YAML."""
    try:
        structure = _structure_problems(text)
        if structure:
            return None, None, structure
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        why = getattr(err, "problem", None) or str(err)
        if isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, a position
            line = text[: err.position].count("\n") + 1
            code = err.character if isinstance(err.character, int) else ord(err.character)
            why = f"character #x{code:04x}: {err.reason}"
        return None, None, [Problem((), f"not valid YAML: {' '.join(why.split())}", line)]
    return data, node, []


def validation_problems(err: ValidationError, line: Callable[[tuple[str | int, ...]], int | None]) -> list[Problem]:
    """pydantic's errors as problems, each with its YAML line (`line` finds it for a location)."""
    problems = []
    for e in err.errors():
        loc = _clean_loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}: expected one of the documented keys (ivs config schema)"
        problems.append(Problem(loc, msg, line(loc)))
    return problems


def parse(text: str) -> tuple[SensorConfig | None, list[Problem], yaml.Node | None]:
    """`load` for YAML text (a config the hub deploys): the config (None if invalid), every
    problem, the YAML tree."""
    data, node, problems = read_yaml(text)
    if problems:
        return None, problems, None
    if not isinstance(data, dict):
        return (
            None,
            [Problem((), "expected a mapping of settings at the top level (id, source, model, ...)", 1)],
            node,
        )
    try:
        return SensorConfig.model_validate(data), [], node
    except ValidationError as err:
        return None, validation_problems(err, lambda loc: _line_of(node, loc)), node


def check_against(
    config: SensorConfig, node: yaml.Node | None, size: tuple[int, int] | None, labels: list[str] | None
) -> list[Problem]:
    """Checks that need the source's frame size and the model's labels."""
    problems: list[Problem] = []

    def bad(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(loc, message, _line_of(node, loc)))

    _check_filters(config.filters, bad, size, labels)
    for i, app in enumerate(config.apps):
        classes = app.class_names()
        if labels is not None and classes:
            for k, label in enumerate(classes):
                if label not in labels:
                    shown = ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
                    bad(("apps", i, "classes", k), f"unknown class {label!r}: the model's labels are {shown}")
        points = app.points()
        if app.coords == "normalized":
            for key, j, (x, y) in points:
                if not (0 <= x <= 1 and 0 <= y <= 1):
                    loc = ("apps", i, key) if j is None else ("apps", i, key, j)
                    bad(loc, f"point ({x}, {y}) is not normalized: expected 0 <= x, y <= 1")
        elif size is not None:
            w, h = size
            for key, j, (x, y) in points:
                if not (0 <= x <= w and 0 <= y <= h):
                    loc = ("apps", i, key) if j is None else ("apps", i, key, j)
                    bad(
                        loc,
                        f"point ({x:g}, {y:g}) is outside the {w}x{h} frame: expected 0 <= x <= {w}, 0 <= y <= {h}",
                    )
        for key, message in app.problems(config.model.classify_with is not None):
            bad(("apps", i, key), message)
    return problems


def _check_filters(
    filters: FiltersConfig,
    bad: Callable[[tuple[str | int, ...], str], None],
    size: tuple[int, int] | None,
    labels: list[str] | None,
) -> None:
    """The filters' labels are the model's and their masks' points on the frame."""
    if labels is not None:
        for label in filters.objects:
            if label != "*" and label not in labels:
                shown = ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
                bad(("filters", "objects", label), f'unknown class {label!r}: expected "*" or one of {shown}')
    for i, mask in enumerate(filters.exclude):
        for j, (x, y) in enumerate(mask.polygon):
            loc: tuple[str | int, ...] = ("filters", "exclude", i, "polygon", j)
            if filters.coords == "normalized" and not (0 <= x <= 1 and 0 <= y <= 1):
                bad(loc, f"point ({x}, {y}) is not normalized: expected 0 <= x, y <= 1")
            elif filters.coords == "pixels" and size is not None and not (0 <= x <= size[0] and 0 <= y <= size[1]):
                w, h = size
                bad(loc, f"point ({x:g}, {y:g}) is outside the {w}x{h} frame: expected 0 <= x <= {w}, 0 <= y <= {h}")
