"""The reconnect settings of a sensor config: `source.reconnect` and `source.stall_s` reach the
live source (a real TCP stream here), and bad values fail `ivs config check` naming the line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ivs.assemble import open_configured_source, reconnect_policy
from ivs.config import SensorConfig, parse
from ivs.errors import SourceError
from ivs.localnet import free_port
from ivs.sources.reconnect import Reconnect
from ivs.sources.video import VideoSource
from tests.stream_server import make_clip
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
id: cam-1
source:
  url: {url}
  stall_s: 4
  reconnect:
    first_s: 0.1
    max_s: 0.4
    factor: 3
    give_up_s: 1.5
model:
  name: person
"""


def wait_listening(port: int, timeout: float = 30.0) -> None:
    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait_for(listening, timeout, f"the stream server to listen on port {port}")


def config(text: str) -> SensorConfig:
    cfg, problems, _ = parse(text)
    assert cfg is not None, [p.format("sensor.yaml") for p in problems]
    return cfg


def test_defaults_and_off_become_the_sources_policy() -> None:
    plain = config("id: a\nsource:\n  url: rtsp://cam/1\nmodel:\n  name: person\n")
    assert reconnect_policy(plain.source) == Reconnect()  # the class's own defaults: one truth
    assert plain.source.stall_s == 10.0
    off = config("id: a\nsource:\n  url: rtsp://cam/1\n  reconnect: {enabled: false}\nmodel:\n  name: person\n")
    assert reconnect_policy(off.source) is None


def test_the_configs_reconnect_settings_reach_the_live_source_and_rule_it(tmp_path: Path, vtest: Path) -> None:
    clip = make_clip(vtest, tmp_path / "clip.ts", frames=20)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.stream_server", str(clip), str(port), "2"], cwd=ROOT)
    try:
        wait_listening(port)
        cfg = config(CONFIG.format(url=f"tcp://127.0.0.1:{port}"))
        src = open_configured_source(cfg.source)
        assert isinstance(src, VideoSource)
        assert src.reconnect == Reconnect(first_s=0.1, max_s=0.4, factor=3.0, give_up_s=1.5)
        assert src.stall_s == 4.0
        # The settings are the ones in force: with the server gone, the source gives up after the
        # config's give_up_s (the default would keep trying for ever).
        server.kill()
        server.wait(10)
        with pytest.raises(SourceError, match=r"not back after 1.5 s of reconnecting"):
            for _ in src.frames():
                pass
    finally:
        server.kill()
        server.wait(10)


def test_first_wait_longer_than_the_longest_is_refused_on_its_line() -> None:
    text = CONFIG.format(url="rtsp://cam/1").replace("first_s: 0.1", "first_s: 5")
    cfg, problems, _ = parse(text)
    assert cfg is None
    assert [p.format("s.yaml") for p in problems] == [
        "s.yaml:5: source.reconnect: first_s 5 is more than max_s 0.4: expected first_s <= max_s"
    ]


def test_bad_reconnect_values_fail_config_check_with_their_lines(tmp_path: Path) -> None:
    bad = (
        CONFIG.format(url="rtsp://cam/1")
        .replace("stall_s: 4", "stall_s: 0")  # line 4
        .replace("first_s: 0.1", "first_s: -1")  # line 6
        .replace("factor: 3", "factor: 0.5")  # line 8
        .replace("give_up_s: 1.5", "give_up_s: soon\n    retries: 3")  # lines 9, 10
    )
    path = tmp_path / "sensor.yaml"
    path.write_text(bad)
    r = subprocess.run(
        [sys.executable, "-m", "ivs", "config", "check", str(path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stdout
    errors = [x for x in " ".join(r.stderr.split()).split("ivs: error: ") if x]
    expected = {
        4: "source.stall_s: Input should be greater than 0",
        6: "source.reconnect.first_s: Input should be greater than 0",
        8: "source.reconnect.factor: Input should be greater than or equal to 1",
        9: "source.reconnect.give_up_s: Input should be a valid number",
        10: "source.reconnect.retries: unknown key 'retries'",
    }
    for line, message in expected.items():
        assert any(x.startswith(f"{path}:{line}: {message}") for x in errors), (line, errors)
    assert len(errors) == len(expected), errors
