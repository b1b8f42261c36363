"""Direct methods: commands the hub sends one sensor over MQTT, answered on the same connection.

    ivs/ID/commands   {"id": "...", "name": "ping", "args": {...}}         the hub publishes (QoS 1)
    ivs/ID/responses  {"id": "...", "ok": true, "result": {...}}           the sensor answers
                      {"id": "...", "ok": false, "error": "what was wrong and what was expected"}

A command is not kept for a sensor that is offline (not retained): as with Azure IoT's direct
methods, the caller gets a timeout and decides. What a command may do is small on purpose:

    ping                      the model, version, runtime, frames, drops and fps now
    reload                    check the package file, and ask the hub for the desired state now
    app  {name, enabled}      turn one app off (it sees no frames, sends nothing) or on again
    log  {lines}              the last lines (warnings and errors) of the sensor's log
    restart                   restart the sensor (a node's sensor; `ivs run` answers it cannot)
    evidence {since, until}   a snapshot and clip of that wall-clock range from the pre-event
                              buffer (with an evidence policy that lets pixels out), uploaded
                              like the rest; refused under policy none
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ivs.sensor import Sensor

log = logging.getLogger(__name__)

NAMES = ("ping", "reload", "app", "log", "restart", "evidence")
MAX_LOG_LINES = 200


class LogTail(logging.Handler):
    """The last `MAX_LOG_LINES` log lines of the `ivs` loggers, for the `log` command."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: deque[str] = deque(maxlen=MAX_LOG_LINES)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line that cannot be formatted is not worth an error
            self.handleError(record)

    @classmethod
    def attached(cls) -> LogTail:
        """The one attached to the `ivs` logger, attached now if there is none yet."""
        root = logging.getLogger("ivs")
        with _ATTACH:
            for h in root.handlers:
                if isinstance(h, cls):
                    return h
            tail = cls()
            root.addHandler(tail)
            return tail


_ATTACH = threading.Lock()


class Commands:
    """Answers the hub's commands for one sensor (see the module docstring).

    reload: check the package and the desired state now; app_names: the sensor's apps now (a
    deployed config may change them); restart: restart this sensor (None: it cannot be restarted
    from here, `ivs run`)."""

    def __init__(
        self,
        sensor: Sensor,
        respond: Callable[[bytes], None],
        *,
        reload: Callable[[], None],
        app_names: Callable[[], list[str]],
        restart: Callable[[], None] | None = None,
        tail: LogTail | None = None,
    ) -> None:
        self.sensor, self.respond = sensor, respond
        self.app_names = app_names
        self._reload, self._restart = reload, restart
        self.tail = tail or LogTail.attached()
        self.handled = 0

    def __call__(self, payload: bytes) -> None:
        """One command from MQTT: run it, publish the answer."""
        try:
            doc = json.loads(payload)
            cid = doc["id"]
            if not isinstance(cid, str) or not cid:
                raise KeyError("id")
        except (ValueError, KeyError, TypeError):
            log.warning('command ignored: expected {"id": ..., "name": ...}, got %r', payload[:80])
            return
        self.handled += 1
        try:
            answer = {"id": cid, "ok": True, "result": self.run(str(doc.get("name")), doc.get("args") or {})}
        except CommandError as err:
            answer = {"id": cid, "ok": False, "error": str(err)}
        except Exception as err:  # a command that breaks answers so, and the sensor runs on
            log.exception("command %s failed", doc.get("name"))
            answer = {"id": cid, "ok": False, "error": f"{type(err).__name__}: {err}"}
        self.respond(json.dumps(answer).encode())

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise CommandError(f"args {args!r}: expected a mapping")
        if name == "ping":
            return self._ping()
        if name == "reload":
            self._reload()
            return {"reloading": True}
        if name == "app":
            return self._app(args)
        if name == "log":
            lines = args.get("lines", 50)
            if not isinstance(lines, int) or not 1 <= lines <= MAX_LOG_LINES:
                raise CommandError(f"lines {lines!r}: expected 1 to {MAX_LOG_LINES}")
            return {"lines": list(self.tail.lines)[-lines:]}
        if name == "restart":
            if self._restart is None:
                raise CommandError(
                    "restart: this sensor runs alone (ivs run): restart its service; a node's sensors restart"
                )
            self._restart()
            return {"restarting": True}
        if name == "evidence":
            return self._evidence(args)
        raise CommandError(f"unknown command {name!r}: expected one of {', '.join(NAMES)}")

    def _evidence(self, args: dict[str, Any]) -> dict[str, Any]:
        recorder = self.sensor.evidence
        if recorder is None:
            raise CommandError("evidence: this sensor's evidence policy is none: no pixel is kept to send")
        since, until = args.get("since"), args.get("until")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (since, until)):
            raise CommandError(f"since {since!r}, until {until!r}: expected wall-clock seconds (epoch)")
        assert isinstance(since, int | float) and isinstance(until, int | float)
        if not 0 < until - since <= recorder.buffer.keep_s:
            raise CommandError(f"until - since: expected 0 to {recorder.buffer.keep_s:g} s (what the buffer keeps)")
        frames = len(recorder.buffer.between(float(since), float(until), clock="wall"))
        if frames == 0:
            raise CommandError("evidence: no buffered frame in that range (it is older than the buffer, or ahead)")
        recorder.request(float(since), float(until))
        return {"frames": frames}

    def _ping(self) -> dict[str, Any]:
        s = self.sensor
        m = s.model.manifest
        return {
            "sensor": s.sensor_id,
            "model": m.name,
            "version": m.version,
            "runtime": s.model.runner.name,
            "frames": s.stats.frames_processed,
            "dropped": s.stats.dropped,
            "fps": round(s.stats.recent_fps(), 2),
            "apps": {name: name not in s.disabled_apps for name in self.app_names()},
        }

    def _app(self, args: dict[str, Any]) -> dict[str, Any]:
        name, enabled = args.get("name"), args.get("enabled")
        names = self.app_names()
        if name not in names:
            raise CommandError(f"app {name!r}: expected one of this sensor's apps {names}")
        if not isinstance(enabled, bool):
            raise CommandError(f"enabled {enabled!r}: expected true or false")
        if enabled:
            self.sensor.disabled_apps.discard(name)
        else:
            self.sensor.disabled_apps.add(name)
        log.warning("app %s %s by a command", name, "enabled" if enabled else "disabled")
        return {"app": name, "enabled": enabled}


class CommandError(Exception):
    """A command that cannot be done: its answer's `error`."""
