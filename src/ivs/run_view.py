"""What `ivs run` shows on the console: a line per frame or per event, a live status table,
the model swaps and deploys as they happen, and the run's summary. Output only: the sensor is
built by `ivs.build` and knows nothing of this."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ivs.apps.registry import AppBase
from ivs.events import kind_of
from ivs.records import FrameRecord
from ivs.sensor import Sensor


class RunView:
    """The console of one run. `to_stdout`: the metadata goes to stdout, so nothing else does."""

    def __init__(self, *, quiet: bool, to_stdout: bool, has_apps: bool) -> None:
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)
        self.quiet, self.to_stdout, self.has_apps = quiet, to_stdout, has_apps
        self.sensor: Sensor | None = None
        self._apps: dict[str, AppBase] = {}

    def sinks(self) -> list[Any]:
        """The apps' events on the console as they happen (not with -q, nor with stdout taken)."""
        return [self] if self.has_apps and not self.quiet and not self.to_stdout else []

    def write(self, message: Any) -> None:
        if isinstance(message, FrameRecord):
            return
        app = self._apps.get(message.app)
        own = app.describe(message) if app is not None else None  # an app may say its events itself
        if own is not None:
            own = f"frame {message.frame:6d}  {kind_of(message):<10s} {message.app}: {own}"
        self.console.print(own or describe_event(message), highlight=False)

    def close(self) -> None:
        pass

    def on_record(self, record: Any, det: Any) -> None:
        if not self.quiet and not self.to_stdout and not self.has_apps:
            self.console.print(event_line(record), highlight=False)
        if self.sensor is not None:
            self.live.update(status_table(self.sensor))

    def say(self, message: str) -> None:
        """A swap, a refused package, a deploy: one unwrapped line (tests and logs grep them)."""
        style = "bold red" if "refused" in message or "failed" in message else "bold"
        self.console.print(Text(message, style=style), soft_wrap=True)

    def start(self, sensor: Sensor, out: str | None) -> None:
        self.sensor = sensor
        self._apps = {a.name: a for a in sensor.apps if isinstance(a, AppBase)}
        m, runner = sensor.model.manifest, sensor.model.runner.name
        if m.notice:
            self.console.print(f"[yellow]note: {m.name}: {m.notice}[/]")
        if sensor.model.choice is not None:  # which runtime `auto` took, and whether it was remembered
            self.console.print(Text(sensor.model.choice.describe(), style="dim"), soft_wrap=True)
        self.console.print(
            f"[bold]ivs[/] sensor [cyan]{sensor.sensor_id}[/]: {sensor.source.id} -> {m.name} {m.version} "
            f"({runner}, {m.model.precision}), mode {sensor.mode}" + (f", metadata -> {out}" if out else "")
        )


def describe_event(e: Any) -> str:
    """One human line for an event."""
    from ivs.events import kind_of

    kind = kind_of(e)
    head = f"frame {e.frame:6d}  {kind:<10s} {e.app}:"
    if kind == "count":
        totals = " ".join(f"{d} {sum(v.values())}" for d, v in e.totals.items())
        return f"{head} {e.label} #{e.track_id} {e.direction}  (totals {totals})"
    if kind in ("zone_enter", "zone_leave"):
        dwell = f" after {e.dwell_s:.1f} s" if kind == "zone_leave" else ""
        return f"{head} {e.label} #{e.track_id}{dwell}  (occupancy {e.occupancy})"
    if kind == "loiter":
        return f"{head} {e.label} #{e.track_id} has stayed {e.dwell_s:.1f} s"
    if kind == "stop":
        return f"{head} STOP: {e.objects} {', '.join(sorted(set(e.labels)))} in the zone"
    if kind == "clear":
        return f"{head} clear after {e.empty_frames} empty frames ({e.stopped_s:.1f} s stopped)"
    if kind == "mask":
        return f"{head} face #{e.track_id}: {'mask' if e.mask else 'NO MASK'} ({e.score:.0%} of {e.frames} frames)"
    if kind == "ledger":
        ratio = f", {e.raw_bytes / e.metadata_bytes:,.0f}x smaller than raw" if e.metadata_bytes else ""
        return f"{head} {e.metadata_bytes:,} B of metadata for {e.frames} frames{ratio}"
    if kind == "gap":
        return f"{head} source back after {e.duration_s:.1f} s ({e.reason}; about {e.frames_lost} frames lost)"
    if kind == "heatmap":
        return f"{head} {e.cols}x{e.rows} grid over {e.frames} frames ({sum(e.counts)} points)"
    return f"{head} {e}"


def event_line(record: Any) -> str:
    labels: dict[str, int] = {}
    for d in record.detections:
        labels[d.label] = labels.get(d.label, 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in sorted(labels.items())) or "nothing"
    answers: dict[str, int] = {}
    for d in record.detections:
        for name, attr in (d.attributes or {}).items():
            key = f"{name}: {attr.label}"
            answers[key] = answers.get(key, 0) + 1
    if answers:
        what += " (" + ", ".join(f"{n} {k}" for k, n in sorted(answers.items())) + ")"
    if record.model.task == "classification" and record.detections:
        d = record.detections[0]
        what = f"{d.label} {d.score:.2f}"
    drop = f"  dropped {record.dropped}" if record.dropped else ""
    return f"frame {record.frame:6d}  {what:<28s} {record.timings_ms.total:7.1f} ms{drop}"


def status_table(sensor: Any) -> Table:
    st = sensor.stats
    t = Table.grid(padding=(0, 2))
    row = [
        f"[bold]{st.frames_processed}[/] frames",
        f"{st.recent_fps():.1f} fps",
    ]
    row += [f"{s} {st.timings[s][-1]:.1f}" for s in ("read", "isp", "infer", "decode", "total") if st.timings[s]]
    row.append(f"ms | dropped [bold]{st.dropped}[/]")
    t.add_row(*row)
    return t


def print_summary(console: Console, sensor: Any) -> None:
    from ivs.sensor import summarize

    s = summarize(sensor.stats)
    table = Table(title="ivs run summary", show_header=True, header_style="bold")
    table.add_column("stage")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    for stage in s["timings_ms"]:  # the STAGES, and the IMX500's own timings when it reported them
        table.add_row(stage, f"{s['timings_ms'][stage]['p50']:.2f}", f"{s['timings_ms'][stage]['p99']:.2f}")
    console.print(table)
    line = (
        f"frames read {s['frames_read']}, processed {s['frames_processed']}, dropped {s['dropped']}, "
        f"detections {s['detections']}, {s['seconds']:.1f} s, {s['fps']:.1f} fps"
    )
    if s["late"]:
        line += f", late {s['late']} (behind the source's clock)"
    if s["skipped"]:
        line += f", skipped {s['skipped']} undecodable"
    if s["gaps"]:
        line += f", {s['gaps']} source outages (about {s['frames_lost']} frames lost)"
    metadata_bytes = sensor.metadata_bytes
    if s["frames_processed"]:
        line += f", metadata {metadata_bytes} bytes ({metadata_bytes / s['frames_processed']:.0f} B/frame)"
    console.print(line)
    if metadata_bytes:
        compressed = sensor.source.compressed_bytes
        ledger = f"ledger: {metadata_bytes:,} bytes of metadata replaced {sensor.raw_bytes:,} bytes of raw frames "
        ledger += f"({sensor.raw_bytes / metadata_bytes:,.0f}x)"
        if compressed:
            ledger += f" and {compressed:,} bytes of compressed video ({compressed / metadata_bytes:,.0f}x)"
        console.print(ledger)
