"""The sensor's deploy agent: run the model (and config) the hub assigns, verified, hot-swapped.

`DeployAgent` asks the hub for this device's desired state (`GET /api/v1/device/desired`, with
the device token) when it starts and every `interval_s` seconds. A new revision is acted on
once:

1. The package, when it is not the one running: downloaded into `folder` (or taken from it, if
   an earlier run downloaded it), its sha256 checked against the one the hub assigned, then
   loaded with the sensor's own keyring: the signature and every member's digest are
   verified, exactly as for a package given on the command line. A package that fails is
   deleted and not run: the running model stays, and the report says "failed" with the
   reader's reason. One that passes is handed to `Sensor.swap_model` (the source never stops;
   the next frame runs on it), and older downloads are removed.
2. The config, when the revision carries one: written to `folder/config.yaml`, then given to
   `apply_config` (see `LiveConfig`: the apps are replaced live; other sections need a restart,
   and the report says which).
3. A report (`POST /api/v1/device/report`): the revision, ok/failed and why, the model running
   now (name, version, sha256 of its package file) and what happened to the config.

A hub that cannot be reached, or a download that breaks off, is tried again at the next poll;
a report that cannot be sent is sent again then. Only a verification failure settles a
revision as failed: assigning again (a new revision) makes the agent try again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivs.apps import App, FrameContext
from ivs.config import SensorConfig, check_against, parse
from ivs.errors import ConfigError, IvsError
from ivs.events import Event
from ivs.model import Model
from ivs.package.reader import MAX_PACKAGE_BYTES

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SWAP_WAIT_S = 10.0
"""How long the agent waits for the sensor to run a swapped-in model before reporting anyway."""


class DeployError(IvsError):
    """Talking to the hub failed: `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _tls(ca_file: str | None) -> ssl.SSLContext:
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"hub ca_file {ca_file!r}: {err}: expected a CA certificate file (PEM), e.g. ca.pem from `ivs hub certs`"
        ) from None


class HubClient:
    """The hub's HTTP API over the standard library's urllib, with a bearer token (a device's,
    or the admin token for the operator's commands). Errors raise DeployError with the hub's
    reason.

    An https hub is verified against the system's CAs, or only against `ca_file` when given
    (the deployment's ca.pem from `ivs hub certs`), as the HTTP sink's `ca_file` does. A hub whose
    certificate does not verify is a DeployError that says so (and the agent tries again at the
    next poll: the file may be fixed)."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, ca_file: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"hub url {url!r}: expected http://host:port or https://host:port")
        if ca_file is not None and parsed.scheme != "https":
            raise ConfigError(f"hub ca_file {ca_file!r} with url {url!r}: expected an https:// url")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.ca_file = ca_file
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls(ca_file)))

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        """The answer's JSON (DeployError for anything but a 2xx)."""
        with self._open(method, path, body, content_type) as response:
            return json.loads(response.read())

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def send(self, method: str, path: str, doc: Any) -> Any:
        return self.request(method, path, json.dumps(doc).encode(), "application/json")

    def download(self, path: str, dest: Path, sha256: str, *, max_bytes: int = MAX_PACKAGE_BYTES) -> None:
        """Stream `path` into `dest` (via a .part file), checking its sha256 on the way."""
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        size = 0
        try:
            with self._open("GET", path) as response, part.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DeployError(f"download {path}: more than {max_bytes} bytes, expected a model package")
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:
            part.unlink(missing_ok=True)
            raise DeployError(f"download {path} broke off ({err})") from None
        except DeployError:
            part.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise DeployError(
                f"download {path}: sha256 {digest.hexdigest()[:16]}..., the hub assigned {sha256[:16]}...:"
                " the transfer was corrupted"
            )
        os.replace(part, dest)

    def _open(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            try:
                text = err.read(4000).decode(errors="replace")
            finally:
                err.close()
            try:
                detail = json.loads(text).get("detail", text)
            except (ValueError, AttributeError):
                detail = text
            raise DeployError(f"{method} {path}: the hub answered {err.code}: {detail}", err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise DeployError(
                    f"{method} {path}: TLS: the hub's certificate did not verify ({reason.verify_message}): expected"
                    " one signed by a CA this sensor trusts (set deploy.ca_file to the hub's CA, e.g. ca.pem from"
                    " `ivs hub certs`)"
                ) from None
            raise DeployError(f"{method} {path}: the hub at {self.url} did not answer ({reason})") from None


class LiveApps:
    """The sensor's apps behind one app, so that a deployed config can replace them between
    frames: the old apps hand in what they owe (`finish`, e.g. their last heatmap) and the new
    ones take the next frame. Give the sensor `[LiveApps(apps)]` instead of `apps`."""

    name = "live-apps"

    def __init__(self, apps: Sequence[App] = (), disabled: set[str] | None = None) -> None:
        self.apps: list[App] = list(apps)
        self.disabled = disabled if disabled is not None else set()
        """Names of apps turned off (the sensor's `disabled_apps`: the same set)."""
        self._next: list[App] | None = None
        self._lock = threading.Lock()
        self.replaced = 0

    def replace(self, apps: Sequence[App]) -> None:
        """Run `apps` from the next frame on (thread-safe)."""
        with self._lock:
            self._next = list(apps)

    def _take(self, ctx: FrameContext | None) -> list[Event]:
        with self._lock:
            new, self._next = self._next, None
        if new is None:
            return []
        old, self.apps = self.apps, new
        self.replaced += 1
        return [event for app in old for event in app.finish(ctx)]

    def update(self, ctx: FrameContext) -> list[Event]:
        owed = self._take(ctx)
        off = self.disabled
        return owed + [event for app in self.apps if app.name not in off for event in app.update(ctx)]

    def state(self) -> dict[str, Any]:
        return {app.name: app.state() for app in self.apps}

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        owed = self._take(ctx)
        return owed + [event for app in self.apps for event in app.finish(ctx)]


_RESTART_SECTIONS = (
    "id",
    "source",
    "model",
    "filters",
    "tracker",
    "sinks",
    "frames",
    "keyring",
    "heartbeat_s",
    "evidence",
    "deploy",
)


class LiveConfig:
    """Applies a deployed config to a running sensor: the apps are rebuilt and swapped in live
    (`LiveApps`); a change to any other section (source, model settings other than the name,
    tracker, sinks, frames, keyring, deploy) is kept in the stored file and needs a restart, and
    the answer says which. `model.name` is not compared: the deployed package is the model.

    build: makes the apps of a config for the model running now (e.g. `assemble.build_app`).
    """

    def __init__(
        self,
        running: SensorConfig,
        apps: LiveApps,
        build: Callable[[SensorConfig], list[App]],
        *,
        frame_size: tuple[int, int] | None = None,
        labels: Callable[[], list[str]] | None = None,
    ) -> None:
        self.running, self.live, self.build = running, apps, build
        self.frame_size, self.labels = frame_size, labels

    def __call__(self, new: SensorConfig) -> str:
        """What was done, in words. Raises ConfigError when the apps do not fit this sensor."""
        problems = check_against(new, None, self.frame_size, self.labels() if self.labels else None)
        if problems:
            raise ConfigError("; ".join(p.format("config") for p in problems[:5]))
        old = self.running.model_dump(mode="json")
        doc = new.model_dump(mode="json")
        old["model"].pop("name", None)
        doc["model"].pop("name", None)
        restart = [key for key in _RESTART_SECTIONS if old.get(key) != doc.get(key)]
        said = []
        if old["apps"] != doc["apps"]:
            self.live.replace(self.build(new))
            names = ", ".join(a.name for a in new.apps) or "none"
            said.append(f"apps applied live ({names})")
        else:
            said.append("apps unchanged")
        if restart:
            said.append(f"restart needed for: {', '.join(restart)}")
        self.running = new.model_copy(update={k: getattr(self.running, k) for k in restart})
        return "; ".join(said)


@dataclass(frozen=True)
class Running:
    """The model the sensor runs."""

    name: str
    version: str
    sha256: str | None


def file_sha256(path: Path) -> str | None:
    """sha256 of a file, or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class HubPoller:
    """A thread that asks the hub for something every `interval_s` (`poll`), and at once when the
    hub pushes a new revision (`nudge`, from an MQTT listener) or someone asks (`wake`). A hub
    that cannot be reached is asked again at the next turn. DeployAgent (a sensor's desired state)
    and NodeAgent (a node's site file) are two."""

    revision: int
    """The last revision acted on (0: none yet)."""

    def __init__(self, interval_s: float, what: str, thread_name: str) -> None:
        if interval_s <= 0:
            raise ConfigError(f"{what} interval {interval_s}: expected a positive number of seconds")
        self.interval_s, self.what = interval_s, what
        self.nudges = 0
        """Revisions the hub pushed (MQTT) that woke the agent before its next poll."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def poll(self) -> Any:
        """One turn: ask the hub, act on what is new, report."""
        raise NotImplementedError

    def start(self) -> Any:
        self._thread.start()
        return self

    def close(self, timeout: float = 35.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)

    def wake(self) -> None:
        """Ask the hub now, not at the next turn."""
        self._wake.set()

    def nudge(self, payload: bytes) -> None:
        """The hub published a revision (`{"revision": N}`, MQTT): poll now if it is new. Only a
        wake-up: what to do still comes from the hub over HTTP(S), checked as always."""
        try:
            revision = int(json.loads(payload)["revision"])
        except (ValueError, KeyError, TypeError):
            log.warning('%s: ignored a pushed revision that is not {"revision": N}: %r', self.what, payload[:80])
            return
        if revision != self.revision:
            self.nudges += 1
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.poll()
            except DeployError as err:
                log.warning("%s: %s; trying again in %g s", self.what, err, self.interval_s)
            except Exception:  # the agent must outlive a bug in one turn: the sensors keep running
                log.exception("%s: poll failed", self.what)
            self._wake.wait(self.interval_s)


class DeployAgent(HubPoller):
    """Keeps a sensor on the hub's desired state (see the module's docstring).

    current: the model the sensor runs now (`lambda: sensor.model`).
    load: verifies and loads a package file with the sensor's keyring and runtime settings.
    swap: hands a loaded model to the sensor (`sensor.swap_model`).
    apply_config: applies a deployed config and says what it did (`LiveConfig`); None: the
        config is only stored, and the report says a restart is needed.
    on_message: gets a line for the console on every swap, refusal and config change.
    """

    def __init__(
        self,
        client: HubClient,
        folder: Path,
        *,
        current: Callable[[], Model],
        load: Callable[[Path], Model],
        swap: Callable[[Model], None],
        apply_config: Callable[[SensorConfig], str] | None = None,
        interval_s: float = 10.0,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(interval_s, "deploy", "ivs-deploy")
        self.client, self.folder = client, folder
        self._current, self._load, self._swap = current, load, swap
        self.apply_config = apply_config
        self.on_message = on_message or (lambda msg: log.warning("%s", msg))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.revision = 0
        self.config_revision: int | None = None
        self.last_report: dict[str, Any] | None = None
        self.swaps = 0
        self.refused = 0
        self._unsent: dict[str, Any] | None = None
        self._shas: dict[tuple[str, int, int], str | None] = {}

    def start(self) -> DeployAgent:
        super().start()
        return self

    def close(self, timeout: float | None = None) -> None:
        super().close(max(5.0, self.client.timeout + 5) if timeout is None else timeout)

    def running(self) -> Running:
        """The model the sensor runs now, with the sha256 of its package file."""
        model = self._current()
        m = model.manifest
        path = model.package.path
        try:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
        except OSError:
            return Running(m.name, m.version, None)
        if key not in self._shas:
            self._shas[key] = file_sha256(path)
        return Running(m.name, m.version, self._shas[key])

    def poll(self) -> dict[str, Any] | None:
        """Ask for the desired state once and act on a new revision -> the report sent, or None
        when there was nothing new. Raises DeployError when the hub cannot be reached."""
        if self._unsent is not None:
            self._report(self._unsent)
        desired = self.client.get("/api/v1/device/desired")
        revision = int(desired.get("revision", 0))
        if revision == 0 or revision == self.revision:
            return None
        report = self._apply(desired)
        if not report.pop("_transient", False):  # a download that broke off is tried again
            self.revision = revision
        self._report(report)
        return report

    def _report(self, report: dict[str, Any]) -> None:
        self.last_report = report
        try:
            self.client.send("POST", "/api/v1/device/report", report)
        except DeployError:
            self._unsent = report
            raise
        self._unsent = None

    def _apply(self, desired: dict[str, Any]) -> dict[str, Any]:
        revision = int(desired["revision"])
        package = desired["package"]
        sha = str(package["sha256"]).lower()
        what = f"{package['name']} {package['version']} ({sha[:12]})"
        status, error, transient = "ok", None, False
        if self.running().sha256 != sha:
            path = self.folder / f"{sha}.ivsm"
            try:
                if file_sha256(path) != sha:
                    self.client.download(str(desired["download"]), path, sha)
            except DeployError as err:
                status, error, transient = "failed", f"package {what} not downloaded, trying again: {err}", True
            else:
                try:
                    model = self._load(path)
                except IvsError as err:
                    path.unlink(missing_ok=True)
                    self.refused += 1
                    status, error = "failed", f"package {what} refused, the running model stays: {err}"
                    self.on_message(f"deploy revision {revision}: {error}")
                else:
                    self._swap(model)
                    self.swaps += 1
                    self._wait_running(model)
                    self._keep_only(path)
                    self.on_message(f"deploy revision {revision}: now running {what}")
        report: dict[str, Any] = {"revision": revision, "status": status, "error": error}
        config = desired.get("config")
        if config is not None and status == "ok" and revision != self.config_revision:
            config_status, config_error = self._apply_config(str(config), revision)
            report["config_status"] = config_status
            if config_error:
                report["status"], report["error"] = "failed", config_status
        run = self.running()
        report["model"] = {"name": run.name, "version": run.version, "sha256": run.sha256}
        report["config_revision"] = self.config_revision
        if transient:
            report["_transient"] = True
        return report

    def _apply_config(self, text: str, revision: int) -> tuple[str, bool]:
        """(what was done with the config, whether it failed)."""
        config, problems, _ = parse(text)
        if config is None:
            return "config refused: " + "; ".join(p.format("config") for p in problems[:5]), True
        target = self.folder / "config.yaml"
        tmp = target.with_name("config.yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        self.config_revision = revision
        if self.apply_config is None:
            return f"config stored in {target}; restart the sensor with it to apply", False
        try:
            done = self.apply_config(config)
        except IvsError as err:
            return f"config stored in {target} but not applied: {err}", True
        self.on_message(f"deploy revision {revision}: config {done}")
        return f"{done} (stored in {target})", False

    def _wait_running(self, model: Model) -> None:
        # The sensor takes a swapped model at its next frame: report what it really runs.
        deadline = time.monotonic() + _SWAP_WAIT_S
        while self._current() is not model and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.02)

    def _keep_only(self, keep: Path) -> None:
        for old in self.folder.glob("*.ivsm"):
            if old != keep:
                with contextlib.suppress(OSError):
                    old.unlink()
