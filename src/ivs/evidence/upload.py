"""The uploader: empties the evidence spool into the hub, as the device.

    POST <hub>/api/v1/evidence
    Authorization: Bearer <device token>
    Content-Type: image/jpeg | video/mp4
    X-Ivs-Evidence: {"sensor_id": ..., "kind": "snapshot" | "clip", "event_seq": ..., ...}

    <the file's bytes>

An item leaves the spool only when the hub answered 2xx (it stored it); no answer, 5xx, 408
and 429 are retried with backoff; a 4xx other than those keeps the item and backs off too (a
token or url that can be fixed), except 413 and 422 (the hub refuses the item itself), which
drop it, counted in `dropped`.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request

from ivs.evidence.spool import EvidenceSpool, Item
from ivs.sinks.http import _NoRedirect, _tls

log = logging.getLogger(__name__)


class Uploader:
    def __init__(self, spool: EvidenceSpool, url: str, token: str, *, ca_file: str | None = None,
                 timeout_s: float = 30.0, max_backoff_s: float = 30.0) -> None:  # fmt: skip
        self.spool, self.url, self.timeout_s, self.max_backoff_s = spool, url, timeout_s, max_backoff_s
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "ivs"}
        self._opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=_tls(ca_file)))
        self.uploaded = self.dropped = self.failures = 0
        self.bytes_sent = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ivs-evidence-upload", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        streak = 0
        while not self._stop.is_set():
            items = self.spool.pending(limit=4)
            if not items:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            for item in items:
                status = self._post(item)
                if status is not None and 200 <= status < 300:
                    self.spool.ack(item.id)
                    self.uploaded += 1
                    streak = 0
                    continue
                if status in (413, 422):
                    self.spool.ack(item.id)
                    self.dropped += 1
                    log.error("the hub refused evidence %s: %s; dropped", item.meta.get("kind"), self.last_error)
                    continue
                streak += 1
                self.failures += 1
                self._stop.wait(min(self.max_backoff_s, 0.5 * 2 ** min(streak, 10)) * random.uniform(0.5, 1.0))
                break

    def _post(self, item: Item) -> int | None:
        headers = {**self._headers, "Content-Type": item.content_type, "X-Ivs-Evidence": json.dumps(item.meta)}
        request = urllib.request.Request(self.url, data=item.data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                self.bytes_sent += len(item.data)
                return int(response.status)
        except urllib.error.HTTPError as err:
            with err:
                self.last_error = f"HTTP {err.code}: {err.read(300).decode('utf-8', 'replace')}"
            return int(err.code)
        except (urllib.error.URLError, OSError) as err:
            self.last_error = f"no answer: {err}"
            return None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the spool is empty (everything stored by the hub) or the timeout passes."""
        deadline = time.monotonic() + timeout
        while self.spool.depth() and time.monotonic() < deadline:
            self._wake.set()
            self._stop.wait(0.05)
        return self.spool.depth() == 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(self.timeout_s + 5)
