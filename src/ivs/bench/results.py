"""What `ivs bench` measured, as typed records: the parts build them, the report reads them, and
`--json` writes them (`read_results` reads a file back, checked field by field).

Field names are the JSON keys of the results file (schema "ivs.bench/1"); times are in ms unless
a name says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

SCHEMA = "ivs.bench/1"


class Spread(msgspec.Struct, kw_only=True):
    """p50, p99 and the worst of a set of timings (ms)."""

    p50_ms: float
    p99_ms: float
    max_ms: float


class Stats(msgspec.Struct, kw_only=True):
    """Median, p99 and spread (IQR and min/max) of timings (ms)."""

    n: int
    median_ms: float
    p99_ms: float
    q1_ms: float
    q3_ms: float
    iqr_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float


class Machine(msgspec.Struct, kw_only=True):
    cpu: str
    cpus_usable: int | None
    cpu_count: int | None
    platform: str
    python: str
    versions: dict[str, str]


class RunConfig(msgspec.Struct, kw_only=True):
    """What the run measured with (a summary of `BenchConfig`)."""

    models: list[str]
    iterations: int
    warmup: int
    blocks: int
    threads: list[int]
    e2e_frames: int
    ledger_frames: int | None
    stops: int
    ingest_events: int
    sustain_s: float
    naive_frames: int
    naive_blocks: int
    rss_frames: int | None
    rss_events: int
    rss_runtimes: list[str]
    streams_s: float = 0.0
    counts_events: int = 0
    plant_stops: int = 0


# ---------------------------------------------------------------------------------------- part a


class LatencyRow(Stats, kw_only=True):
    """`runner.run` on a prepared tensor: one (model, runtime, precision, threads)."""

    key: str
    model: str
    runtime: str
    precision: str
    threads: int
    input: str
    vs_anchor: dict[str, float] | None = None
    """median / the anchor's published latency (mobilenet-v1 only)."""


class Ratio(msgspec.Struct, kw_only=True):
    """A ratio of two rows' medians, from the same run."""

    kind: str
    numerator: str
    denominator: str
    value: float


# ---------------------------------------------------------------------------------------- part b


class EndToEndRow(msgspec.Struct, kw_only=True):
    """Frame to detections for one model and frame size, stage by stage."""

    model: str
    runtime: str
    threads: int
    frame: str
    size: str
    tensors_per_frame: int
    frames: int
    stages: dict[str, Stats]
    """isp, infer, decode, total."""
    over_deadline: dict[str, float]
    """The fraction of frames whose total exceeded each deadline ("33.3ms", "16.7ms")."""
    detections_median: float
    rss_growth_on_load_mib: float | None


class ResizeDiff(msgspec.Struct, kw_only=True):
    mean_abs: float
    p99_abs: float
    max_abs: int


class IspResize(msgspec.Struct, kw_only=True):
    crop: str
    runs: int
    ms: dict[str, Spread]
    vs_single_area: ResizeDiff
    """How far the ISP's output is from one INTER_AREA resize (grey levels)."""


class SensorRun(msgspec.Struct, kw_only=True):
    """What one paced `Sensor` run did."""

    frames_offered: int
    frames_processed: int
    dropped: int
    seconds: float
    stages: dict[str, Spread]
    records: int


class SustainedRow(SensorRun, kw_only=True):
    """The Sensor paced at one rate over one feed."""

    model: str
    runtime: str
    tensors_per_frame: int
    feed: str
    frame: str
    fps_offered: float
    fps_sustained: float
    deadline_ms: float
    to_metadata: Spread
    late: int
    deadline_misses: int
    miss_fraction: float


# ---------------------------------------------------------------------------------------- part c


class FrameTimes(Spread, kw_only=True):
    mean_ms: float
    n: int


class NaiveRow(msgspec.Struct, kw_only=True):
    """ivs against the naive pipeline on the same frames."""

    model: str
    runtime: str
    feed: str
    frame: str
    ivs: FrameTimes
    naive: FrameTimes
    ivs_over_naive: float | None
    """Below 1: ivs takes less time per frame."""
    speedup: float | None
    """naive / ivs."""
    naive_model: str = ""
    ivs_tiles: str = ""


# ---------------------------------------------------------------------------------------- part d


class StopLatency(Spread, kw_only=True):
    n: int


class SafetyStop(msgspec.Struct, kw_only=True):
    """Capture to a `stop` event at an MQTT subscriber, through a real Mosquitto."""

    model: str
    tiles: list[int]
    runtime: str
    threads: int
    scene: str
    zone: str
    frames: int
    dropped: int
    seconds: float
    stops_sent: int
    stops_received: int
    target_ms: float
    outbox_synchronous: Literal["full", "normal"]
    transport: str
    latency: StopLatency | None = None
    within_target: float | None = None
    breakdown: dict[str, Spread] | None = None
    """Per stage of the stop frames: queue, isp, infer, decode, apps, sensor, delivery."""


class DeliveryRow(msgspec.Struct, kw_only=True):
    """`MqttSink.write` to a subscriber alone (no model), for one outbox durability."""

    synchronous: Literal["full", "normal"]
    pairs: int
    received: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    within_target: float | None = None


class PlantRow(msgspec.Struct, kw_only=True):
    """A stop at a plant's client: Modbus coil or OPC UA data change (`ivs.bench.plant`)."""

    kind: str
    path: str
    stops: int
    seen: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    target_ms: float
    within_target: float | None
    note: str


# ---------------------------------------------------------------------------------------- part e


class IngestRow(msgspec.Struct, kw_only=True):
    """Events per second along one path into one database; `absent` says why it did not run."""

    path: str
    database: str
    events: int
    accepted: int
    batch: int
    seconds: float | None
    events_per_s: int | None
    absent: str | None = None
    publish_seconds: float | None = None
    per_worker: list[int] | None = None


class Ingest(msgspec.Struct, kw_only=True):
    target_events_per_s: float
    note: str
    rows: list[IngestRow]


# ---------------------------------------------------------------------------------------- parts f, g


class DataReduction(msgspec.Struct, kw_only=True):
    """Metadata bytes against raw frames and the compressed file, over the sample video."""

    video: str
    model: str
    frames: int
    frames_in_file: int | None
    frame: str
    seconds: float
    metadata_bytes: int
    metadata_bytes_per_frame: float
    raw_bytes: int
    compressed_bytes_read: int
    file_bytes: int
    file_bytes_for_frames: int
    raw_over_metadata: float
    compressed_over_metadata: float
    file_over_metadata: float
    records: str


class SensorMemory(msgspec.Struct, kw_only=True, tag_field="process", tag="ivs run"):
    """Peak RSS of a real `ivs run` process."""

    runtime: str
    what: str
    frames: int | None
    messages: int
    seconds: float
    peak_rss_mib: float
    rss_running_mib: float | None
    """The resident set while frames flow (the later half of the samples)."""

    @property
    def process(self) -> str:
        return "ivs run"


class HubMemory(msgspec.Struct, kw_only=True, tag_field="process", tag="ivs hub serve"):
    """Peak RSS of a real `ivs hub serve` process, idle and after an ingest."""

    what: str
    events: int
    accepted: int
    seconds: float
    exit_code: int
    peak_rss_idle_mib: float | None
    peak_rss_mib: float

    @property
    def process(self) -> str:
        return "ivs hub serve"


class Memory(msgspec.Struct, kw_only=True):
    """ru_maxrss of the bench process after each part, and the processes of part g."""

    what: str
    after_imports_mib: float
    after_latency_mib: float = 0.0
    after_end_to_end_mib: float = 0.0
    after_data_reduction_mib: float = 0.0
    current_rss_mib: float | None = None
    processes: list[SensorMemory | HubMemory] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------- part h


class TrackIdentity(msgspec.Struct, kw_only=True):
    """How well the tracker keeps identities on the hand-labelled tracks (`ivs.bench.tracking`)."""

    how: str
    people: int
    labelled_boxes: int
    matched_boxes: int
    hota: float | None = None
    """HOTA averaged over IoU 0.05..0.95 (None in results saved before it was measured)."""
    deta: float | None = None
    """HOTA's detection accuracy."""
    assa: float | None = None
    """HOTA's association accuracy."""
    idf1: float
    idp: float
    idr: float
    id_switches: int
    unlabelled_boxes_left_out: int
    """Tracked boxes overlapping no labelled box: people nobody labelled, left out."""


class StreamsTrial(msgspec.Struct, kw_only=True):
    """N streams of the sample video at 10 fps for the part's seconds, once (`ivs.bench.streams`)."""

    streams: int
    repeat: int = 1
    """Which of the repeats of this N (1, 2, 3)."""
    dropped: int
    """Frames dropped by all streams together."""
    late: int = 0
    """Frames captured a frame period or more after their time, all streams together: a stream
    that fell behind the video's clock, whether it dropped anything or not."""
    frames: int
    """Frames processed by all streams together."""
    min_frames: int
    """Frames processed by the stream that processed fewest."""
    min_fps: float = 0.0
    """The slowest stream's frames processed over its wall seconds (its first to its last frame)."""
    pss_mib: float
    """Proportional set size of every process of the trial, summed at the same moment (sampled
    every 0.5 s from /proc/PID/smaps_rollup), the largest such sum: shared pages counted once."""

    @property
    def passed(self) -> bool:
        """No frame dropped, none late, every stream at 10 fps in wall time (within 2%)."""
        return self.dropped == 0 and self.late == 0 and self.min_fps >= 9.8


class StreamsRun(msgspec.Struct, kw_only=True):
    """`python -m ivs.bench.streams` on its own: its rows and where and when they were measured."""

    commit: str
    machine: Machine
    when: str
    """UTC, ISO 8601."""
    seconds: float
    runtime: str
    rows: list[StreamsRow]


class StreamsRow(msgspec.Struct, kw_only=True):
    """How many streams one box sustains at 10 fps in every repeat, one way of running them."""

    how: str
    threads: int = 1
    """Intra-op threads per inference, the same on both sides."""
    max_streams: int
    pss_mib_at_max: float | None
    """The largest PSS of the repeats at `max_streams`."""
    trials: list[StreamsTrial]


# ---------------------------------------------------------------------------------------- part j


class CountsRow(msgspec.Struct, kw_only=True):
    """Counts at fleet scale on one database (`ivs.bench.counts`); `absent` says why it did not run."""

    database: str
    events: int
    sensors: int
    days: int
    ingest_s: float | None = None
    hourly_query_ms: float | None = None
    """Median of the runs: an hourly count over the whole range, from the rollups."""
    hourly_query_max_ms: float | None = None
    raw_query_ms: float | None = None
    """The same hours read from the raw messages (what every count query did before the rollups)."""
    target_ms: float = 200.0
    keep_days: float | None = None
    max_messages: int | None = None
    messages_before: int | None = None
    messages_after: int | None = None
    data_mib_before: float | None = None
    data_mib_after: float | None = None
    data_mib_week_later: float | None = None
    """After another `keep_days` of events at the same rate and a second retention run."""
    prune_s: float | None = None
    rollup_total_before: int | None = None
    rollup_total_after: int | None = None
    hourly_unchanged: bool | None = None
    """The hourly answer after retention is the one before it, and the one the raw messages gave."""
    absent: str | None = None


# ---------------------------------------------------------------------------------------- the run


class BenchResult(msgspec.Struct, kw_only=True):
    """One `ivs bench` run: every part's rows; a part not run is empty or None, and says why in `skipped`."""

    schema: str
    quick: bool
    time: str
    machine: Machine
    config: RunConfig
    frames_from: str
    anchors_ms: dict[str, float]
    latency: list[LatencyRow]
    ratios: list[Ratio]
    end_to_end: list[EndToEndRow]
    isp_resize: IspResize | None
    sustained: list[SustainedRow]
    versus_naive: list[NaiveRow]
    safety_stop: SafetyStop | None
    safety_stop_normal: SafetyStop | None
    safety_delivery: list[DeliveryRow]
    hub_ingest: Ingest | None
    data_reduction: DataReduction | None
    memory: Memory
    tracking: TrackIdentity | None = None
    streams: list[StreamsRow] = []
    counts: list[CountsRow] = []
    plant: list[PlantRow] = []
    not_measured: list[str]
    notes: dict[str, str]
    skipped: list[str]
    seconds: float


def write_results(result: BenchResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")


def read_results(path: Path) -> BenchResult:
    """A results file written by `ivs bench --json`, checked against these types."""
    try:
        result = msgspec.json.decode(path.read_bytes(), type=BenchResult)
    except msgspec.ValidationError as err:
        raise ValueError(f"{path}: not an {SCHEMA} results file: {err}") from None
    except msgspec.DecodeError as err:
        raise ValueError(f"{path}: not JSON ({err}); expected what `ivs bench --json` writes") from None
    if result.schema != SCHEMA:
        raise ValueError(f"{path}: schema {result.schema!r}, expected {SCHEMA!r}")
    return result
