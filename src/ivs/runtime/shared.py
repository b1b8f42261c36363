"""One inference service per network and runtime, shared by every sensor of a node.

A node runs a site's cameras in one process. Loading the network once per camera would hold a
copy of it per camera and a thread pool per camera, all fighting over the same cores; instead
each (network, runtime) is loaded by one `InferenceService`, which owns `workers` runners
(each with `threads` intra-op threads: workers x threads is what it may use of the machine)
and serves every sensor that runs that network.

A sensor reaches it through a `SharedRunner`, which is a `Runner`: the sensor, its model,
tiles and decoder, and hot swap do not know they share one. `run` puts the tensor in the
sensor's own queue and waits for the answer. The workers take requests round robin across
the sensors' queues, so a sensor with many tiles waiting cannot starve one with a single
input. Pacing and drops stay each sensor's own: while the service is busy, that sensor's next
frame waits in its one-frame slot, where a frame replaced is counted as its drop.

No batching across streams: measured per zoo network (`python -m ivs.bench.batching`), a batch
saves nothing worth its wait but for one network on one runtime (docs/deploy.md, sizing).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ivs.errors import ModelError
from ivs.runtime.base import Runner

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray[Any, Any]]


@dataclass
class _Request:
    tensor: np.ndarray[Any, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Outputs | None = None
    error: BaseException | None = None
    asked: float = field(default_factory=time.monotonic)
    """When the client asked (monotonic seconds): how long it has waited, queued or running."""


class Runners(Protocol):
    """Where a sensor gets its runners from when it does not own them: a node's pool, or one
    sensor's view of it (`SensorRunners`)."""

    def runner(self, network: str, runtime: str, make: Callable[[int], Runner]) -> SharedRunner: ...


class InferenceService:
    """`workers` runners of one network, serving the queues of its clients round robin.

    make: creates one runner with the given number of intra-op threads.
    on_empty: called once the last client has gone and the service has closed (the pool
        forgets it).
    """

    def __init__(
        self,
        name: str,
        make: Callable[[int], Runner],
        workers: int,
        threads: int,
        on_empty: Callable[[InferenceService], None] | None = None,
    ) -> None:
        if workers < 1 or threads < 1:
            raise ValueError(f"an inference service needs >= 1 worker and thread, got {workers} and {threads}")
        self.name = name
        self.workers, self.threads = workers, threads
        self._runners = [make(threads) for _ in range(workers)]
        self.runtime = self._runners[0].name
        self._on_empty = on_empty
        self._queues: dict[int, deque[_Request]] = {}
        self._ready: deque[int] = deque()
        """Clients with requests waiting, in the order they are served next."""
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self.served: dict[int, int] = {}
        """Requests answered, per client."""
        self.left: list[threading.Thread] = []
        """Workers still inside their runtime when the service closed (stuck: never answered)."""
        self._waiting: dict[int, _Request] = {}
        """Each client's request not yet answered (a client waits for one at a time)."""
        self._running: dict[int, Runner] = {}
        """The runner running each request now, by id(request): what `abandon` cancels."""
        self.total_served = 0
        self._threads = [
            threading.Thread(target=self._work, args=(r,), name=f"ivs-infer-{name}-{i}", daemon=True)
            for i, r in enumerate(self._runners)
        ]
        for t in self._threads:
            t.start()

    @property
    def clients(self) -> int:
        with self._cond:
            return len(self._queues)

    def client(self) -> SharedRunner:
        """A runner for one more sensor (or model): its own queue in this service."""
        with self._cond:
            if self._closed:
                raise ModelError(f"inference service {self.name} is closed: expected a live service")
            cid = next(self._ids)
            self._queues[cid] = deque()
            self.served[cid] = 0
        return SharedRunner(self, cid)

    def run(self, cid: int, tensor: np.ndarray[Any, Any]) -> Outputs:
        """Queue `tensor` for client `cid` and wait for its outputs (raises what the runner raised)."""
        req = _Request(tensor)
        with self._cond:
            queue = self._queues.get(cid)
            if queue is None or self._closed:
                raise ModelError(f"inference service {self.name}: this runner was closed: expected an open one")
            if not queue:
                self._ready.append(cid)
            queue.append(req)
            self._waiting[cid] = req
            self._cond.notify()
        try:
            req.done.wait()
        finally:
            with self._cond:
                if self._waiting.get(cid) is req:
                    del self._waiting[cid]
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def waiting_s(self, cid: int) -> float | None:
        """Seconds client `cid` has waited for its answer (None: it waits for none now)."""
        with self._cond:
            req = self._waiting.get(cid)
        return None if req is None else time.monotonic() - req.asked

    def abandon(self, cid: int, why: str) -> None:
        """Answer client `cid`'s waiting request with an error now (the sensor thread waiting on
        it wakes and fails), whether it is still queued or a worker is stuck running it; a
        runtime that can cancel a run (`Runner.cancel`) gets its worker back."""
        with self._cond:
            req = self._waiting.pop(cid, None)
            queue = self._queues.get(cid)
            if req is not None and queue is not None and req in queue:
                queue.remove(req)
                if not queue and cid in self._ready:
                    self._ready.remove(cid)
            runner = self._running.get(id(req)) if req is not None else None
        if runner is not None and not runner.cancel():
            log.error("inference service %s: %s cannot cancel a run: its worker stays busy", self.name, runner.name)
        if req is not None:
            req.error = ModelError(f"inference service {self.name}: {why}")
            req.done.set()

    def release(self, cid: int) -> None:
        """Client `cid` is done; the last one to go closes the service."""
        with self._cond:
            queue = self._queues.pop(cid, None)
            self.served.pop(cid, None)
            if queue is None:
                return
            for req in queue:  # nobody waits on these any more, but never leave a waiter hanging
                req.error = ModelError(f"inference service {self.name}: runner closed while waiting")
                req.done.set()
            if cid in self._ready:
                self._ready.remove(cid)
            last = not self._queues
            if last:
                self._closed = True
                self._cond.notify_all()
        if last:
            self._close()

    def _work(self, runner: Runner) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closed:
                    self._cond.wait()
                if not self._ready:
                    return
                cid = self._ready.popleft()
                queue = self._queues[cid]
                req = queue.popleft()
                if queue:  # more from this client: back of the line, after every other client
                    self._ready.append(cid)
                if req.done.is_set():  # abandoned while queued: nobody waits for it
                    continue
                self._running[id(req)] = runner
            try:
                result = runner.run(req.tensor)
                if not req.done.is_set():
                    req.result = result
            except BaseException as err:  # the sensor that asked gets the error, the worker goes on
                if not req.done.is_set():
                    req.error = err
            with self._cond:
                del self._running[id(req)]
                self.total_served += 1
                if cid in self.served:
                    self.served[cid] += 1
            req.done.set()

    def _close(self) -> None:
        for t, r in zip(self._threads, self._runners, strict=True):
            if t is not threading.current_thread():
                t.join(timeout=2)
                if t.is_alive():  # stuck inside the runtime: its runner is in use and stays; the thread is a daemon
                    log.error("inference service %s: worker %s never answered; left running", self.name, t.name)
                    self.left.append(t)
                    continue
            r.close()
        log.debug("inference service %s closed", self.name)
        if self._on_empty is not None:
            self._on_empty(self)


class SharedRunner:
    """A sensor's handle on an `InferenceService`: a `Runner` whose `run` waits its turn."""

    def __init__(self, service: InferenceService, cid: int) -> None:
        self.service, self.cid = service, cid
        self.name = service.runtime
        self._closed = False

    def run(self, tensor: np.ndarray[Any, Any]) -> Outputs:
        return self.service.run(self.cid, tensor)

    def waiting_s(self) -> float | None:
        """Seconds this runner's `run` has waited for its answer (None: not waiting)."""
        return None if self._closed else self.service.waiting_s(self.cid)

    def abandon(self, why: str) -> None:
        """Fail the `run` waiting now (see `InferenceService.abandon`)."""
        if not self._closed:
            self.service.abandon(self.cid, why)

    def cancel(self) -> bool:
        self.abandon("the run was cancelled")
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.service.release(self.cid)


class RunnerPool:
    """A node's inference services, one per (network, runtime): the first model that needs one
    starts it, the last one closed stops it.

    workers: runners per network (default: the machine's cores); threads: intra-op threads of
    each (default 1: on this kind of machine two one-thread runs side by side finish more
    frames per second than one two-thread run, docs/deploy.md).
    """

    def __init__(self, workers: int | None = None, threads: int = 1) -> None:
        import os

        self.workers = workers or max(1, os.cpu_count() or 1)
        self.threads = threads
        self._services: dict[tuple[str, str], InferenceService] = {}
        self._lock = threading.Lock()
        self._left: list[threading.Thread] = []

    def runner(self, network: str, runtime: str, make: Callable[[int], Runner]) -> SharedRunner:
        """A runner of `network` (a digest of its bytes) on `runtime`, sharing the service."""
        key = (network, runtime)
        with self._lock:
            service = self._services.get(key)
            if service is not None:
                try:
                    return service.client()
                except ModelError:  # its last client left just now: it is closing; start a new one
                    pass
            service = InferenceService(f"{runtime}-{network[:8]}", make, self.workers, self.threads, self._forget)
            self._services[key] = service
            return service.client()

    def services(self) -> list[InferenceService]:
        with self._lock:
            return list(self._services.values())

    def stuck(self) -> list[str]:
        """The inference workers of closed services still inside their runtime (never answered)."""
        with self._lock:
            return [t.name for t in self._left if t.is_alive()]

    def _forget(self, service: InferenceService) -> None:
        with self._lock:
            self._left.extend(service.left)
            for key, s in list(self._services.items()):
                if s is service:
                    del self._services[key]


class SensorRunners:
    """One sensor's view of a node's pool: the runners handed to it, so that the node's watchdog
    can tell how long its inference has waited and wake it when a runtime never answers."""

    def __init__(self, pool: Runners) -> None:
        self.pool = pool
        self._handed: list[SharedRunner] = []
        self._lock = threading.Lock()

    def runner(self, network: str, runtime: str, make: Callable[[int], Runner]) -> SharedRunner:
        r = self.pool.runner(network, runtime, make)
        with self._lock:
            self._handed = [h for h in self._handed if not h._closed] + [r]
        return r

    def waiting(self) -> tuple[SharedRunner, float] | None:
        """The runner that has waited longest for an answer, and for how many seconds."""
        with self._lock:
            handed = list(self._handed)
        waits = [(r, w) for r in handed if (w := r.waiting_s()) is not None]
        return max(waits, key=lambda rw: rw[1]) if waits else None

    def abandon(self, why: str) -> None:
        with self._lock:
            handed = list(self._handed)
        for r in handed:
            r.abandon(why)
