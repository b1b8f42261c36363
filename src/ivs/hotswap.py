"""Hot swap: replace a running sensor's model package without stopping its source.

`PackageWatcher` polls the package file. When it changes (a new file moved over it, or
rewritten in place) and has stopped changing, the new package is verified and loaded on the
watcher's thread, so frames keep flowing meanwhile, and then handed to `Sensor.swap_model`.
A package that fails verification is refused, and the running model stays.
`reload()` does the same on demand (the CLI wires it to SIGHUP).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ivs.errors import IvsError
from ivs.model import Model

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class PackageWatcher:
    """Watches one package file and swaps the model in when it changes.

    load: makes a Model from the path (with the sensor's runtime, ROI, keyring...).
    swap: receives the new Model (`Sensor.swap_model`).
    on_error: receives the reason a new package was refused.
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], Model],
        swap: Callable[[Model], None],
        *,
        interval: float = 0.5,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path, self._load, self._swap = path, load, swap
        self.interval = interval
        self.on_error = on_error or (lambda msg: log.error("%s", msg))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivs-package-watch", daemon=True)
        self.loaded = 0
        self.refused = 0
        self._seen: tuple[int, int, int] | None = None

    def start(self) -> PackageWatcher:
        # The file as it is now is the running model's: only later changes count.
        self._seen = _stamp(self.path)
        self._thread.start()
        return self

    def reload(self) -> None:
        """Load the package now, changed or not (safe to call from a signal handler)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        seen = self._seen
        while not self._stop.is_set():
            forced = self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = _stamp(self.path)
            if not forced and (now == seen or now is None):
                continue
            # Wait until the file stops changing: a copy in progress is not a package yet.
            while not self._stop.wait(self.interval):
                again = _stamp(self.path)
                if again == now:
                    break
                now = again
            seen = now
            self._try_load()

    def _try_load(self) -> None:
        try:
            model = self._load(self.path)
        except IvsError as err:
            self.refused += 1
            self.on_error(f"new package refused, the running model stays: {err}")
            return
        self.loaded += 1
        self._swap(model)
