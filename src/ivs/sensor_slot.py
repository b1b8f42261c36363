"""The one-frame slot between the sensor's capture thread and its processing loop: the newest
frame waits there; when the model is slower than the source the waiting frame is replaced and
counted as dropped, so memory holds one frame and latency never grows (or, for a source
without a clock and `fps=0`, the capture thread waits and nothing is dropped)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ivs.frame import Frame


@dataclass
class _Captured:
    frame: Frame
    read_ms: float


class FrameSlot:
    """A mailbox of one frame. `replace=True`: a new frame replaces an unread one (a drop)."""

    def __init__(self, replace: bool) -> None:
        self._replace = replace
        self._item: _Captured | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: _Captured, stop: threading.Event) -> bool:
        """Hand over a frame; False when stopped while an unread frame waits (this one is not taken)."""
        with self._cond:
            if self._item is not None:
                if self._replace:
                    self.dropped += 1
                else:
                    while self._item is not None and not stop.is_set():
                        self._cond.wait(0.1)
                    if self._item is not None:
                        # Stopped with a frame still unread: that one is processed, this one
                        # is not taken. (Overwriting the older one lost it without a word.)
                        return False
            self._item = item
            self._cond.notify_all()
            return True

    def get(self) -> _Captured | None:
        """The next frame, or None once the slot is closed and empty."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait(0.1)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
