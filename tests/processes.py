"""The processes a test starts (an `ivs` command, a test server): what they write kept in a file
a test can read while they run (a pipe nobody reads could fill and stall them), and every one
killed at the test's end (`procs`, a fixture in conftest)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """A child process, its stdout and stderr together in `log`."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            args, stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as a user stops a sensor; its exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def output(self) -> str:
        """What it has written so far."""
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


def ivs(*args: str) -> list[str]:
    """The command line of `ivs ARGS` run with this interpreter."""
    return [sys.executable, "-m", "ivs", *args]
