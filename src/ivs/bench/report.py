"""What `ivs bench` prints: the console tables and the Markdown report (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ivs.bench.results import BenchResult, HubMemory, Ingest, Memory, NaiveRow, SafetyStop, SensorMemory, SustainedRow


def _fmt(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def print_report(result: BenchResult, console: Console) -> None:
    m = result.machine
    console.print(f"[bold]ivs bench[/] on {m.cpu} ({m.cpus_usable} usable CPUs); {result.seconds} s")
    _print_models(result, console)
    _print_sustained(result.sustained, console)
    _print_naive(result.versus_naive, console)
    _print_live(result, console)
    _print_footprint(result, console)
    _print_streams(result, console)
    for p in result.plant:
        console.print(
            f"[bold]k. plant[/] {p.kind}, {p.path}: p50 {p.p50_ms} ms, p99 {p.p99_ms} ms ({p.seen}/{p.stops})"
        )
    for r in result.counts:
        if r.absent:
            console.print(f"[bold]j. counts[/] {r.database}: {r.absent}")
        else:
            console.print(
                f"[bold]j. counts[/] {r.database}: {r.events:,} events, hourly over {r.days} days in"
                f" {r.hourly_query_ms} ms (raw messages {r.raw_query_ms} ms); retention {r.messages_before:,} ->"
                f" {r.messages_after:,} messages, rollups {r.rollup_total_before:,} -> {r.rollup_total_after:,}"
            )
    for key in ("mobilenet-v1", "litert", "fp32", "timing"):
        console.print(f"[dim]note ({key}): {result.notes[key]}[/]")
    for s in result.skipped:
        console.print(f"[dim]skipped: {s}[/]")
    console.print("[dim]not measured yet: " + "; ".join(result.not_measured) + "[/]")


def _print_models(result: BenchResult, console: Console) -> None:
    """Parts a and b: model latency and its ratios, frame to detections, the ISP resize."""
    t = Table(title="a. model latency: runner.run on a prepared tensor (ms)")
    for col in ("model", "runtime", "prec", "thr", "median", "p99", "IQR", "min-max", "n", "vs IMX500", "vs Coral"):
        t.add_column(col, justify="left" if col in ("model", "runtime", "prec") else "right")
    for r in result.latency:
        anchor = r.vs_anchor
        t.add_row(
            r.model,
            r.runtime,
            r.precision,
            str(r.threads),
            _fmt(r.median_ms),
            _fmt(r.p99_ms),
            _fmt(r.iqr_ms),
            f"{_fmt(r.min_ms)}-{_fmt(r.max_ms)}",
            str(r.n),
            f"{anchor['imx500']:.2f}x" if anchor else "",
            f"{anchor['coral']:.2f}x" if anchor else "",
        )
    console.print(t)
    if result.ratios:
        rt = Table(title="ratios of medians, same run")
        for col in ("ratio", "numerator", "denominator", "value"):
            rt.add_column(col, justify="right" if col == "value" else "left")
        for q in result.ratios:
            rt.add_row(q.kind, q.numerator, q.denominator, f"{q.value:.2f}")
        console.print(rt)
    if result.end_to_end:
        et = Table(title="b. frame to detections (ms, median / p99)")
        for col in ("model", "runtime", "frame", "tensors", "isp", "infer", "decode", "total", ">33.3", ">16.7"):
            et.add_column(col, justify="left" if col in ("model", "runtime", "frame") else "right")
        for e in result.end_to_end:
            s = e.stages
            et.add_row(
                e.model,
                e.runtime,
                e.frame,
                str(e.tensors_per_frame),
                *(f"{_fmt(s[k].median_ms)} / {_fmt(s[k].p99_ms)}" for k in ("isp", "infer", "decode", "total")),
                f"{e.over_deadline['33.3ms']:.0%}",
                f"{e.over_deadline['16.7ms']:.0%}",
            )
        console.print(et)
    rz = result.isp_resize
    if rz is not None:
        console.print(
            f"[bold]b. ISP resize[/] ({rz.crop}, ms p50 / p99): "
            + "; ".join(f"{k} {_fmt(v.p50_ms)} / {_fmt(v.p99_ms)}" for k, v in rz.ms.items())
            + f"; ivs vs one INTER_AREA: mean {rz.vs_single_area.mean_abs} grey levels, "
            f"p99 {rz.vs_single_area.p99_abs}"
        )


def _print_live(result: BenchResult, console: Console) -> None:
    """Parts d and e: the safety stop and delivery latency, hub ingest."""
    for safety in (result.safety_stop, result.safety_stop_normal):
        if safety is None:
            continue
        lat = safety.latency
        line = (
            f"[bold]d. safety stop[/] ({safety.model} tiles 1x1, {safety.runtime}, outbox "
            f"synchronous={safety.outbox_synchronous}): "
            f"{safety.stops_received}/{safety.stops_sent} stops received"
        )
        if lat is not None:
            line += (
                f", capture to subscriber p50 {_fmt(lat.p50_ms)} ms, p99 {_fmt(lat.p99_ms)} ms, "
                f"max {_fmt(lat.max_ms)} ms (target {safety.target_ms:.0f} ms)"
            )
        console.print(line)
        for stage, st in (safety.breakdown or {}).items():
            console.print(f"   {stage}: p50 {_fmt(st.p50_ms)} / p99 {_fmt(st.p99_ms)} ms")
    for r in result.safety_delivery:
        if r.received and r.p50_ms is not None and r.p99_ms is not None:
            console.print(
                f"[bold]d. delivery alone[/] (MqttSink.write to subscriber, outbox synchronous={r.synchronous}): "
                f"{r.received}/{r.pairs} stops, p50 {_fmt(r.p50_ms)} ms, p99 {_fmt(r.p99_ms)} ms"
            )
    ingest = result.hub_ingest
    if ingest is not None:
        for row in ingest.rows:
            if row.absent:
                console.print(f"[bold]e. hub ingest[/] {row.path} into {row.database}: absent: {row.absent}")
                continue
            console.print(
                f"[bold]e. hub ingest[/] {row.path} into {row.database}: {row.events:,} events in batches of "
                f"{row.batch:,}, {row.events_per_s or 0:,} events/s (target {ingest.target_events_per_s:,.0f})"
            )


def _print_footprint(result: BenchResult, console: Console) -> None:
    """Parts f and g: data reduction and memory."""
    red = result.data_reduction
    if red is not None:
        console.print(
            f"[bold]f. data reduction[/] ({red.model} on {red.video}, {red.frames} frames "
            f"{red.frame}): metadata {red.metadata_bytes:,} B ({red.metadata_bytes_per_frame} B/frame); "
            f"raw {red.raw_bytes:,} B = {red.raw_over_metadata:,}x; compressed read "
            f"{red.compressed_bytes_read:,} B = {red.compressed_over_metadata}x; file share "
            f"{red.file_bytes_for_frames:,} B = {red.file_over_metadata}x"
        )
    mem = result.memory
    growth = {r.model: r.rss_growth_on_load_mib for r in result.end_to_end}
    if growth:
        console.print(
            "[bold]g. memory[/]: resident set growth while loading a model for part b: "
            + ", ".join(f"{k} {v} MiB" for k, v in growth.items())
        )
    console.print(
        f"[bold]g. memory[/]: peak RSS of the bench process {mem.after_imports_mib} MiB after imports, "
        f"{mem.after_latency_mib} MiB after part a, {mem.after_end_to_end_mib} MiB after part b, "
        f"{mem.after_data_reduction_mib} MiB at the end (whole process, not one model)"
    )
    for p in mem.processes:
        idle = f" ({p.peak_rss_idle_mib} MiB idle after start)" if isinstance(p, HubMemory) else ""
        console.print(f"[bold]g. memory[/]: {p.process} peak RSS {p.peak_rss_mib} MiB{idle}: {p.what}")
    tr = result.tracking
    if tr is not None:
        console.print(
            f"[bold]h. tracking[/] ({tr.how}): HOTA {_opt(tr.hota)} (DetA {_opt(tr.deta)}, AssA {_opt(tr.assa)}), "
            f"IDF1 {tr.idf1:.3f} (IDP {tr.idp:.3f}, IDR {tr.idr:.3f}), "
            f"{tr.id_switches} ID switches, {tr.matched_boxes}/{tr.labelled_boxes} labelled boxes matched, "
            f"{tr.people} people"
        )


def _print_streams(result: BenchResult, console: Console) -> None:
    for r in result.streams:
        pss = f", {r.pss_mib_at_max} MiB PSS" if r.pss_mib_at_max is not None else ""
        tried = ", ".join(f"{t.streams}#{t.repeat}: {'ok' if t.passed else 'failed'}" for t in r.trials)
        console.print(f"[bold]i. streams[/] {r.how}: {r.max_streams} streams at 10 fps in every repeat{pss} ({tried})")


def _markdown_streams(result: BenchResult) -> list[str]:
    if not result.streams:
        return []
    rows = [[r.how, f"{r.threads}", f"{r.max_streams}", "-" if r.pss_mib_at_max is None else f"{r.pss_mib_at_max}",
             ", ".join(f"{t.streams}: {t.dropped}/{t.late}/{t.min_fps}" for t in r.trials)]
            for r in result.streams]  # fmt: skip
    return _markdown_rows(
        ("vtest.avi streams at 10 fps", "threads per inference", "most at 10 fps, every repeat", "PSS MiB there",
         "each trial: dropped/late/slowest fps"),
        rows, left=1,
    )  # fmt: skip


def _opt(v: float | None) -> str:
    """A metric to three places, or "-" where a saved run did not measure it."""
    return "-" if v is None else f"{v:.3f}"


def _sustained_cells(r: SustainedRow) -> list[str]:
    s = r.stages
    return [
        r.model,
        r.feed,
        r.frame,
        f"{r.fps_offered:.0f}",
        f"{r.fps_sustained:.1f}",
        *(f"{_fmt(s[k].p50_ms)} / {_fmt(s[k].p99_ms)}" for k in ("queue", "isp", "infer", "decode")),
        f"{_fmt(r.to_metadata.p50_ms)} / {_fmt(r.to_metadata.p99_ms)}",
        f"{r.dropped}",
        f"{r.late}",
        f"{r.deadline_misses} / {r.frames_offered}",
    ]


_SUSTAINED_COLS = (
    "model", "feed", "frame", "fps", "sustained", "queue", "isp", "infer", "decode", "to metadata",
    "dropped", "late", "misses / frames",
)  # fmt: skip


def _naive_cells(r: NaiveRow) -> list[str]:
    return [
        r.model,
        r.feed,
        r.frame,
        r.ivs_tiles,
        f"{_fmt(r.ivs.mean_ms)} ({_fmt(r.ivs.p50_ms)} / {_fmt(r.ivs.p99_ms)})",
        f"{_fmt(r.naive.mean_ms)} ({_fmt(r.naive.p50_ms)} / {_fmt(r.naive.p99_ms)})",
        f"{r.ivs_over_naive:.3f}",
        f"{r.speedup:.1f}×",
    ]


_NAIVE_COLS = ("model", "feed", "frame", "ivs tiles", "ivs ms/frame", "naive ms/frame", "ivs / naive", "speed-up")


def _print_sustained(rows: list[SustainedRow], console: Console) -> None:
    if not rows:
        return
    t = Table(title="b. the Sensor paced at 30/60 fps, sustained (ms p50 / p99; misses = late + dropped)")
    for col in _SUSTAINED_COLS:
        t.add_column(col, justify="left" if col in ("model", "feed", "frame") else "right")
    for r in rows:
        t.add_row(*_sustained_cells(r))
    console.print(t)


def _print_naive(rows: list[NaiveRow], console: Console) -> None:
    if not rows:
        return
    t = Table(title="c. ivs against the naive pipeline, same frames (ms per frame: mean (p50 / p99))")
    for col in _NAIVE_COLS:
        t.add_column(col, justify="left" if col in ("model", "feed", "frame", "ivs tiles") else "right")
    for r in rows:
        t.add_row(*_naive_cells(r))
    console.print(t)
    models = sorted({f"{r.model}: {r.naive_model}" for r in rows})
    console.print(f"[dim]naive fp32 models: {', '.join(models)}[/]")


def _markdown_rows(cols: Sequence[str], rows: list[list[str]], left: int = 3) -> list[str]:
    return [
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" if i < left else "---:" for i in range(len(cols))) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _markdown_memory(mem: Memory) -> list[str]:
    if not mem.processes:
        return []
    rows = [
        [
            p.process,
            p.what,
            f"{p.peak_rss_idle_mib or ''}" if isinstance(p, HubMemory) else "",
            f"{p.rss_running_mib or ''}" if isinstance(p, SensorMemory) else "",
            f"{p.peak_rss_mib}",
        ]
        for p in mem.processes
    ]
    cols = ("process", "run", "peak RSS idle MiB", "RSS running MiB", "peak RSS MiB")
    return _markdown_rows(cols, rows, left=2)


def markdown_report(result: BenchResult) -> str:
    """The results as Markdown tables (what docs/benchmarks.md shows)."""
    lines = [
        "| model | runtime | precision | threads | median ms | p99 ms | IQR ms | min–max ms | n "
        "| ÷ IMX500 3.1 | ÷ Coral 2.4 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result.latency:
        a = r.vs_anchor
        anchors = f"{a['imx500']:.2f}× | {a['coral']:.2f}×" if a else " | "
        lines.append(
            f"| {r.model} | {r.runtime} | {r.precision} | {r.threads} | {_fmt(r.median_ms)} | "
            f"{_fmt(r.p99_ms)} | {_fmt(r.iqr_ms)} | {_fmt(r.min_ms)}–{_fmt(r.max_ms)} | {r.n} | "
            f"{anchors} |"
        )
    lines += ["", "| ratio of medians | numerator | denominator | value |", "| --- | --- | --- | ---: |"]
    lines += [f"| {q.kind} | {q.numerator} | {q.denominator} | {q.value:.2f} |" for q in result.ratios]
    lines += [
        "",
        "| model | runtime | frame | tensors | ISP ms | infer ms | decode ms | total ms | > 33.3 ms | > 16.7 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in result.end_to_end:
        s = e.stages
        cells = " | ".join(f"{_fmt(s[k].median_ms)} / {_fmt(s[k].p99_ms)}" for k in ("isp", "infer", "decode", "total"))
        lines.append(
            f"| {e.model} | {e.runtime} | {e.frame} | {e.tensors_per_frame} | {cells} | "
            f"{e.over_deadline['33.3ms']:.0%} | {e.over_deadline['16.7ms']:.0%} |"
        )
    rz = result.isp_resize
    if rz is not None:
        resize_rows = [[k, _fmt(v.p50_ms), _fmt(v.p99_ms)] for k, v in rz.ms.items()]
        lines += _markdown_rows((f"resize: {rz.crop}", "p50 ms", "p99 ms"), resize_rows, left=1)
    if result.sustained:
        lines += _markdown_rows(_SUSTAINED_COLS, [_sustained_cells(r) for r in result.sustained])
    if result.versus_naive:
        lines += _markdown_rows(_NAIVE_COLS, [_naive_cells(r) for r in result.versus_naive], left=4)
    lines += _markdown_safety(result.safety_stop, result.safety_stop_normal)
    delivered = [r for r in result.safety_delivery if r.received]
    if delivered:
        rows = [
            [r.synchronous, f"{r.received} / {r.pairs}", *(_fmt(v or 0.0) for v in (r.p50_ms, r.p99_ms, r.max_ms))]
            for r in delivered
        ]
        lines += _markdown_rows(("delivery alone: outbox", "stops", "p50 ms", "p99 ms", "max ms"), rows, left=1)
    lines += _markdown_ingest(result.hub_ingest)
    lines += _markdown_memory(result.memory)
    tr = result.tracking
    if tr is not None:
        row = [tr.how, f"{tr.people}", f"{tr.matched_boxes} / {tr.labelled_boxes}", _opt(tr.hota), _opt(tr.deta),
               _opt(tr.assa), f"{tr.idf1:.3f}", f"{tr.idp:.3f}", f"{tr.idr:.3f}", f"{tr.id_switches}"]  # fmt: skip
        cols = ("tracking", "people", "boxes matched", "HOTA", "DetA", "AssA", "IDF1", "IDP", "IDR", "ID switches")
        lines += _markdown_rows(cols, [row], left=1)
    lines += _markdown_streams(result)
    if result.counts:
        from ivs.bench.counts import markdown as counts_markdown

        lines += ["", *counts_markdown(result.counts)]
    if result.plant:
        from ivs.bench.plant import markdown as plant_markdown

        lines += ["", *plant_markdown(result.plant)]
    return "\n".join(lines) + "\n"


def _markdown_safety(*runs: SafetyStop | None) -> list[str]:
    """One row per outbox durability, then the stage breakdown of each, side by side."""
    done = [r for r in runs if r is not None and r.latency is not None]
    if not done:
        return []
    lines = [
        "",
        "| model | runtime | outbox | stops sent / received | p50 ms | p99 ms | max ms | target ms | within target |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for safety in done:
        lat = safety.latency
        assert lat is not None and safety.within_target is not None  # done: it has a latency
        lines.append(
            f"| {safety.model} (tiles 1x1) | {safety.runtime} | {safety.outbox_synchronous} | "
            f"{safety.stops_sent} / {safety.stops_received} | {_fmt(lat.p50_ms)} | {_fmt(lat.p99_ms)} | "
            f"{_fmt(lat.max_ms)} | {safety.target_ms:.0f} | {safety.within_target:.0%} |"
        )
    with_breakdown = [r for r in done if r.breakdown]
    if with_breakdown:
        head = " | ".join(f"{r.outbox_synchronous}: p50 / p99 / max ms" for r in with_breakdown)
        lines += ["", f"| stop frame: stage | {head} |", "| --- |" + " ---: |" * len(with_breakdown)]
        breakdowns = [r.breakdown for r in with_breakdown if r.breakdown]
        for k in breakdowns[0]:
            cells = " | ".join(f"{_fmt(b[k].p50_ms)} / {_fmt(b[k].p99_ms)} / {_fmt(b[k].max_ms)}" for b in breakdowns)
            lines.append(f"| {k} | {cells} |")
    return lines


def _markdown_ingest(ingest: Ingest | None) -> list[str]:
    if ingest is None:
        return []
    target = ingest.target_events_per_s
    lines = [
        "",
        f"| path | database | events | batch | seconds | events/s | ÷ target {target:,.0f} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in ingest.rows:
        if r.absent:
            lines.append(f"| {r.path} | {r.database} | absent: {r.absent} | | | | |")
            continue
        eps = r.events_per_s or 0
        lines.append(
            f"| {r.path} | {r.database} | {r.events:,} | {r.batch:,} | {r.seconds} | {eps:,} | {eps / target:.2f}× |"
        )
    return lines
