"""Servers on this machine's loopback for tests, benchmarks and demos: a free port, a
throw-away Mosquitto broker, and an ASGI app under uvicorn in a thread."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return exe if Path(exe).exists() else None


class LocalMosquitto:
    """A Mosquitto on a free 127.0.0.1 port that can be stopped and started again (same port;
    with `persistence`, queued QoS 1 messages and durable sessions survive the restart)."""

    def __init__(self, workdir: Path, extra_config: str = "", *, persistence: bool = True) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto not found: `make test` installs it (scripts/install-system-deps.sh)")
        self.exe, self.port, self.workdir = exe, free_port(), workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        keep = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistence
            else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{keep}max_queued_messages 100000\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            # Started as root, mosquitto switches to the user "mosquitto", who cannot read a
            # private temporary folder: stay as the user who started it.
            + (f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else "")
            + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    why = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"mosquitto exited: {why}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None


class ServerThread:
    """An ASGI app (the hub) under uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        )
        self.thread = threading.Thread(target=self.server.run, name="ivs-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving; True when the thread ended within `timeout`."""
        self.server.should_exit = True
        self.thread.join(timeout)
        return not self.thread.is_alive()
