"""HTTP sink: batches of messages POSTed as JSON arrays, through the durable outbox.

Every message is committed to the outbox before it is sent and removed only when the
receiver has answered a POST that carried it with a 2xx. A sender thread takes up to
`batch_size` pending messages in sequence order (waiting up to `batch_wait_s` for a batch to
fill) and POSTs them as one JSON array:

    POST <url>
    Content-Type: application/json
    Authorization: Bearer <token>        (when a token is given)
    X-Ivs-Sensor: <sensor_id>

    [{"schema": "ivs.event/1", "kind": "stop", "seq": 41, ...}, {...}, ...]

Delivery is **at least once**: a batch whose answer is lost (a dropped connection, a timeout)
is sent again, and so is everything left in the outbox by a crash or a stop, by the next
sink on the same outbox. The receiver removes duplicates by `(sensor_id, seq)`
(`ivs.consumer.Dedup`); elements of a batch, and batches, arrive in increasing seq order.

What the receiver answers decides what happens next:

- 2xx: the whole batch is acknowledged (removed from the outbox).
- No answer (connection refused or dropped, timeout), 5xx, 408, 429: sent again after an
  exponential backoff with jitter, 0.5 s doubling up to `max_backoff_s`; a `Retry-After`
  header (on 429 and 503, in seconds or as an HTTP date) is honoured instead, up to an hour.
- 400, 413, 422 (the batch itself is bad or too large): the batch is halved, and halved
  again, to isolate what the receiver refuses; a message refused on its own is dropped,
  counted in `dropped`, its reason kept in `last_error` and `last_drop`. Nothing else is lost.
- Any other answer (401 and 403: credentials; 404, 405, 3xx: the wrong url): the messages
  are kept and sent again after a backoff, as the configuration may be fixed at the receiver.

Every refusal (a 3xx or 4xx answer) is logged with the receiver's body and counted in
`rejected`. The standard library's `urllib.request` does the HTTP (no dependency); each POST
is one connection (`Connection: close`), so batches, not connection reuse, make it cheap.
Redirects are not followed (urllib would turn a redirected POST into a GET and lose the body).
An https url is verified against the system's CAs, or against `ca_file` (the hub's own CA from
`ivs hub certs`); a certificate that does not verify is a failure to answer: kept and retried,
with `last_error` saying so.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ivs.errors import ConfigError
from ivs.events import Event, kind_of
from ivs.outbox import Outbox, Pending

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_RETRY_AFTER_S = 3600.0
_TRANSIENT = frozenset({408, 429})
_SPLIT = frozenset({400, 413, 422})
_REASON_CHARS = 500


def topic_for(message: msgspec.Struct) -> str:
    """The outbox topic of a message: "events/<kind>" or "frames"."""
    if isinstance(message, Event):
        return f"events/{kind_of(message)}"
    return "frames"


@dataclass(frozen=True)
class _Answer:
    status: int | None
    """HTTP status, or None when there was no answer (refused, dropped, timed out)."""
    reason: str
    retry_after: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        return None  # the 3xx surfaces as an HTTPError: a rejection, kept and retried


def _tls(ca_file: str | None) -> ssl.SSLContext:
    """Verify https servers against `ca_file` (e.g. ca.pem from `ivs hub certs`) instead of the
    system's CAs when given."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"http sink ca_file {ca_file!r}: {err}: expected a CA certificate file (PEM)") from None


def _untrusted(err: ssl.SSLCertVerificationError) -> str:
    return (
        f"TLS: the server's certificate did not verify ({err.verify_message}): expected one signed by a CA"
        " this sensor trusts (set ca_file to the hub's CA, e.g. ca.pem from `ivs hub certs`)"
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class HttpSink:
    """POSTs a sensor's messages to an HTTP endpoint in batches, losing none across outages.

    Counters (read them from any thread): `posted` (POSTs sent), `acked` (messages removed on a
    2xx), `retries` (POSTs that failed transiently and will be repeated), `rejected` (3xx/4xx
    answers), `dropped` (single messages the receiver refused and that were given up),
    `bytes_sent` (request bodies). `last_error` is the last failure's reason, `last_drop` the
    last dropped message's.
    """

    def __init__(
        self,
        sensor_id: str,
        outbox: Outbox,
        url: str,
        *,
        token: str | None = None,
        batch_size: int = 100,
        batch_wait_s: float = 0.2,
        timeout_s: float = 10,
        max_backoff_s: float = 30,
        encoding: str = "json",
        ca_file: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"http sink url {url!r}: expected an http:// or https:// url")
        if encoding != "json":
            raise ConfigError(f"http sink encoding {encoding!r}: expected 'json' (batches are JSON arrays)")
        if batch_size < 1:
            raise ConfigError(f"http sink batch_size {batch_size}: expected at least 1")
        if batch_wait_s < 0 or timeout_s <= 0 or max_backoff_s < 0:
            raise ConfigError(
                f"http sink batch_wait_s {batch_wait_s}, timeout_s {timeout_s}, max_backoff_s {max_backoff_s}: "
                "expected batch_wait_s >= 0, timeout_s > 0, max_backoff_s >= 0"
            )
        if ca_file is not None and not url.startswith("https://"):
            raise ConfigError(f"http sink ca_file {ca_file!r} with url {url!r}: expected an https:// url")
        self.sensor_id, self.outbox, self.url = sensor_id, outbox, url
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.timeout_s, self.max_backoff_s = timeout_s, max_backoff_s
        self._encoder: Callable[[Any], bytes] = msgspec.json.encode
        self._headers = {"Content-Type": "application/json", "X-Ivs-Sensor": sensor_id, "User-Agent": "ivs"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=_tls(ca_file)))

        self.posted = self.acked = self.retries = self.rejected = self.dropped = 0
        self.bytes_sent = 0
        self.last_error: str | None = None
        self.last_drop: str | None = None
        self._failures = 0  # consecutive failed POSTs: the backoff exponent
        self._limit = batch_size  # smaller while isolating a message the receiver refuses
        self._suspect_upto = 0  # ... in the messages up to this seq
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name=f"ivs-http-{sensor_id}", daemon=True)
        self._sender.start()

    # the sink interface
    def write(self, message: msgspec.Struct) -> None:
        """Commit a message to the outbox (it is on disk when this returns) and wake the sender."""
        seq = int(getattr(message, "seq", 0)) or None
        self.outbox.put(topic_for(message), self._encoder(message), seq=seq)
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "outbox": self.outbox.depth(),
            "posted": self.posted,
            "acked": self.acked,
            "retries": self.retries,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "bytes_sent": self.bytes_sent,
            "last_error": self.last_error,
        }

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox is empty (everything acknowledged) or the timeout passes."""
        return self.outbox.wait_empty(timeout, self._wake.set)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within `timeout`, then stop the sender. Undelivered
        messages stay in the outbox for the next run (the outbox itself stays open)."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        # A POST in progress ends within timeout_s; its batch is acknowledged or stays.
        self._sender.join(timeout=self.timeout_s + 5)

    # the sender thread
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._collect()
                if not batch:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self._deliver(batch)
            except Exception as err:  # an outbox failure must not end delivery for good
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("HTTP sink %s: unexpected error; retrying", self.url)
                self._failures += 1
                self._stop.wait(self._backoff())

    def _collect(self) -> list[Pending]:
        """The next batch, oldest first; waits up to batch_wait_s for a partial one to fill."""
        batch = self._pending()
        if not batch or len(batch) >= self._limit or self._limit < self.batch_size:
            return batch
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self._limit and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._wake.wait(left):
                self._wake.clear()
                batch = self._pending()
        return batch

    def _pending(self) -> list[Pending]:
        first = next(iter(self.outbox.pending(limit=1)), None)
        if first is None:
            return []
        if first.seq > self._suspect_upto:
            self._limit = self.batch_size  # past the messages being split: full batches again
        return list(self.outbox.pending(limit=self._limit))

    def _deliver(self, batch: list[Pending]) -> None:
        answer = self._post(batch)
        status = answer.status
        if status is not None and 200 <= status < 300:
            self.acked += self.outbox.ack([p.seq for p in batch])
            self._failures = 0
            return
        self.last_error = answer.reason
        self._failures += 1
        if status is None or status >= 500 or status in _TRANSIENT:
            self.retries += 1
            log.warning("HTTP sink %s: %s; retrying %d messages", self.url, answer.reason, len(batch))
            self._stop.wait(answer.retry_after if answer.retry_after is not None else self._backoff())
            return
        self.rejected += 1
        log.warning("HTTP sink %s refused %d messages: %s", self.url, len(batch), answer.reason)
        if status not in _SPLIT:
            # Credentials or the url: keep the messages, they may be accepted once it is fixed.
            self._stop.wait(answer.retry_after if answer.retry_after is not None else self._backoff())
            return
        self._failures = 0  # the receiver answers: no need to wait while splitting
        if len(batch) > 1:
            self._limit = max(1, len(batch) // 2)
            self._suspect_upto = batch[-1].seq
            return
        bad = batch[0]
        self.dropped += self.outbox.ack([bad.seq])
        self.last_drop = self.last_error = f"seq {bad.seq} ({bad.topic}) dropped: {answer.reason}"
        log.error("HTTP sink %s: %s", self.url, self.last_drop)

    def _request(self, batch: list[Pending]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one POST (a webhook's differ: `ivs.sinks.webhook`)."""
        return b"[" + b",".join(p.payload for p in batch) + b"]", self._headers

    def _post(self, batch: list[Pending]) -> _Answer:
        body, headers = self._request(batch)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.posted += 1
        self.bytes_sent += len(body)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                return _Answer(int(response.status), f"HTTP {response.status}")
        except urllib.error.HTTPError as err:
            with err:
                try:
                    text = err.read(_REASON_CHARS * 4).decode("utf-8", "replace").strip()
                except (OSError, http.client.HTTPException):
                    text = ""
                reason = f"HTTP {err.code} {err.reason}" + (f": {text[:_REASON_CHARS]}" if text else "")
                retry = _retry_after(err.headers.get("Retry-After")) if err.code in (429, 503) else None
                return _Answer(err.code, reason, retry)
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLCertVerificationError):
                return _Answer(None, f"no answer: {_untrusted(err.reason)}")
            return _Answer(None, f"no answer: {err.reason}")
        except (OSError, http.client.HTTPException) as err:  # timeouts, resets after the request
            return _Answer(None, f"no answer: {type(err).__name__}: {err}")

    def _backoff(self) -> float:
        """0.5 s doubling per consecutive failure, capped at max_backoff_s, with jitter."""
        ceiling = min(self.max_backoff_s, FIRST_BACKOFF_S * 2.0 ** min(max(self._failures - 1, 0), 30))
        return ceiling * random.uniform(0.5, 1.0)
