"""Target conditions on device tags, as Azure IoT Edge's deployments at scale have them.

    site = berlin and role = entrance
    site = berlin and role != till
    *                                   every device

Clauses `KEY = VALUE` or `KEY != VALUE` joined by `and`; keys and values are tag words (letters,
digits, `. _ -`), optionally in single quotes. A device without the key matches no `=` clause
and every `!=` clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ivs.hub.store import HubError

_WORD = r"'[^']{1,256}'|[A-Za-z0-9._-]{1,256}"
_CLAUSE = re.compile(rf"^\s*({_WORD})\s*(!=|=)\s*({_WORD})\s*$")
TAG_KEY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConditionError(HubError):
    """A target condition that cannot be read: says where and what was expected."""


@dataclass(frozen=True)
class Condition:
    """A parsed target condition; `matches(tags)`."""

    text: str
    clauses: tuple[tuple[str, str, str], ...]
    """(key, "=" or "!=", value); empty: every device."""

    def matches(self, tags: dict[str, str]) -> bool:
        return all((tags.get(key) == value) == (op == "=") for key, op, value in self.clauses)


def parse_condition(text: str) -> Condition:
    """The condition in `text`; ConditionError saying which clause is wrong otherwise."""
    stripped = text.strip()
    if stripped == "*":
        return Condition(text, ())
    if not stripped:
        raise ConditionError("empty target: expected KEY = VALUE [and ...], or * for every device")
    clauses = []
    for i, part in enumerate(re.split(r"\s+and\s+", stripped)):
        m = _CLAUSE.match(part)
        if m is None:
            raise ConditionError(f"target clause {i + 1} {part.strip()!r}: expected KEY = VALUE or KEY != VALUE")
        key, op, value = (g.strip("'") for g in m.groups())
        if TAG_KEY.fullmatch(key) is None:
            raise ConditionError(f"tag key {key!r}: expected letters, digits, '.', '_' or '-' (at most 64)")
        clauses.append((key, op, value))
    return Condition(text, tuple(clauses))
