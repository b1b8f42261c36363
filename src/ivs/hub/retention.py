"""Retention while the hub runs: `RetentionJob` prunes the store (`Store.prune`) at start and
then every `every_s` seconds on a thread of its own; `ivs hub prune` runs the same once."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from ivs.hub.store import Pruned, Retention, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceRetention:
    """Evidence older than `days`, and the oldest past `max_mib` in all, deleted from `folder`."""

    folder: Path
    days: float | None = None
    max_mib: float | None = None

    def run(self, store: Store) -> int:
        from ivs.hub.evidence import prune_evidence

        older = self.days * 86400 if self.days is not None else None
        cap = int(self.max_mib * 2**20) if self.max_mib is not None else None
        return prune_evidence(store, self.folder, older, cap)


class RetentionJob:
    """Applies `retention` to `store` now and every `every_s` seconds until `close`. Several hub
    workers on one database may each run one: deleting what another already deleted is a no-op."""

    def __init__(
        self,
        store: Store,
        retention: Retention,
        every_s: float = 3600.0,
        *,
        evidence: EvidenceRetention | None = None,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s {every_s}: expected > 0")
        self.store, self.retention, self.every_s, self.evidence = store, retention, every_s, evidence
        self.runs = 0
        self.last: Pruned | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ivs-hub-retention", daemon=True)

    def start(self) -> RetentionJob:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.store.prune(self.retention)
                if self.evidence is not None:
                    self.evidence.run(self.store)
                self.runs += 1
            except SQLAlchemyError:
                log.exception("retention run failed; trying again in %.0f s", self.every_s)
            self._stop.wait(self.every_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
