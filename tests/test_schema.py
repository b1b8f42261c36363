"""The message schema: generated from the types, committed in docs/, and what sensors send
validates against it (JSON and MessagePack)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from ivs.consumer import decode_message, json_schema, normalise_descriptions
from ivs.events import Count, Stop
from ivs.records import encode

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "schema" / "ivs-messages.schema.json"


def test_committed_schema_is_the_generated_one():
    # The schema's meaning, not its whitespace: descriptions compare as normalised text, so a
    # re-indented docstring is no change, while a new field, type or reworded text is.
    committed = normalise_descriptions(json.loads(COMMITTED.read_text()))
    assert committed == json_schema(), "run: ivs schema > docs/schema/ivs-messages.schema.json"


def test_schema_descriptions_do_not_depend_on_docstring_indentation():
    indented = {"description": "A count.\n\n    Over two lines,\n      indented."}
    dedented = {"description": "A count.\n\nOver two lines,\n  indented."}
    assert normalise_descriptions(indented) == normalise_descriptions(dedented)
    assert normalise_descriptions(indented) != normalise_descriptions({"description": "A count. Over one line."})


def stop(seq: int = 1) -> Stop:
    return Stop(frame=3, time=1.5, t_capture_ns=9, t_source=0.3, app="cell", objects=1, labels=["person"],
                boxes=[(1.0, 2.0, 3.0, 4.0)], sensor_id="s1", seq=seq)  # fmt: skip


def test_messages_of_a_real_run_validate(tmp_path: Path):
    import subprocess
    import sys

    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "id: s1\nsource: {url: 'synthetic:320x240@30:40'}\nmodel: {name: classifier}\nframes: true\n"
        f"apps:\n  - {{type: heatmap, name: h, period_s: 0.5}}\nsinks: [{{type: jsonl, path: {tmp_path / 'o.jsonl'}}}]\n"
    )
    r = subprocess.run([sys.executable, "-m", "ivs", "run", "--config", str(cfg), "--fps", "0", "-q"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    schema = json.loads(COMMITTED.read_text())
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    kinds = set()
    for line in lines:
        doc = json.loads(line)
        jsonschema.validate(doc, schema)
        kinds.add(doc.get("kind", doc["schema"]))
    assert {"ivs.frame/1", "heatmap", "ledger"} <= kinds


@pytest.mark.parametrize("encoder", [msgspec.json.encode, msgspec.msgpack.encode], ids=["json", "msgpack"])
def test_both_encodings_round_trip(encoder):
    for message in (stop(), Count(frame=1, time=1.0, t_capture_ns=1, t_source=0.1, app="door", track_id=4,
                                  class_id=0, label="person", direction="in", anchor_from=(1.0, 2.0),
                                  anchor_to=(3.0, 4.0), totals={"in": {"person": 1}, "out": {}}, sensor_id="s1", seq=2)):  # fmt: skip
        assert decode_message(encoder(message)) == message


def test_invalid_messages_fail_the_schema():
    schema = json.loads(COMMITTED.read_text())
    doc = json.loads(encode(stop()))
    doc["objects"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "stop"}, schema)
