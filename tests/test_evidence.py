"""Evidence without video: redacted snapshots and clips from a real sensor on vtest.avi to a real
hub, the spool's durability, retention, the audit log, and the dashboard in Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ivs.build import RunOptions, build_sensor
from ivs.config import parse
from ivs.evidence.redact import high_frequency
from ivs.evidence.spool import EvidenceSpool
from ivs.hub.app import create_app
from ivs.hub.evidence import prune_evidence
from ivs.hub.store import Store
from ivs.localnet import ServerThread

DETAIL = 4.0
"""Median absolute Laplacian inside a person box: every near person in vtest.avi measures 5 or
more (median 12-15), every pixelated one 3 or less (measured on three count clips)."""
NEAR = 1500
"""Boxes of at least this many square pixels (the far walkers are a few pixels wide anyway)."""


class Hub:
    def __init__(self, tmp: Path, evidence: bool = True) -> None:
        self.store = Store(f"sqlite:///{tmp / 'hub.sqlite'}")
        self.token = self.store.add_device("plaza")
        self.dir = tmp / "evidence"
        self.server = ServerThread(create_app(self.store, "", evidence_dir=self.dir if evidence else None))

    def close(self) -> None:
        self.server.stop()
        self.store.close()


def run_sensor(tmp: Path, hub: Hub, evidence: str, apps: str, frames: int = 150) -> list[dict]:
    os.environ["IVS_TEST_HUB_TOKEN"] = hub.token
    cfg, problems, _ = parse(
        f"id: plaza\nsource: {{url: '{ROOT}/.cache/media/vtest.avi', fps: 0, max_frames: {frames}}}\n"
        "model: {name: person, runtime: onnxruntime}\nframes: true\n"
        f"apps:\n{apps}"
        f"evidence:\n{evidence}"
        f"  spool: {tmp / 'spool.sqlite'}\n  url: {hub.server.url}/api/v1/evidence\n  token_env: IVS_TEST_HUB_TOKEN\n"
        f"sinks:\n  - {{type: jsonl, path: '{tmp / 'out.jsonl'}'}}\n"
        f"  - {{type: http, url: '{hub.server.url}/api/v1/ingest', token_env: IVS_TEST_HUB_TOKEN,"
        f" outbox: '{tmp / 'http.sqlite'}'}}\n"
    )
    assert cfg is not None, problems
    built = build_sensor(cfg, RunOptions(watch=False, ledger_period_s=5.0))
    try:
        built.sensor.run()
    finally:
        built.close()
    return [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]


ROOT = Path(__file__).resolve().parent.parent
LINE = "  - {type: line, name: door, p1: [384, 575], p2: [384, 0]}\n"


def decode(data: bytes) -> list[tuple[np.ndarray, float]]:
    with av.open(io.BytesIO(data)) as container:
        return [(f.to_ndarray(format="rgb24"), float(f.time or 0.0)) for f in container.decode(video=0)]


def originals(n: int) -> list[np.ndarray]:
    with av.open(str(ROOT / ".cache/media/vtest.avi")) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                return out
    return out


def test_redacted_clips_around_counts_have_no_detail_left_in_any_person_box(vtest: Path, tmp_path: Path):
    hub = Hub(tmp_path)
    try:
        out = run_sensor(tmp_path, hub, "  policy: redacted\n  events: [count]\n  pre_s: 1\n  post_s: 1\n", LINE)
        items = hub.store.evidence()
    finally:
        hub.close()
    counts = [m for m in out if m.get("kind") == "count"]
    records = {m["frame"]: m for m in out if m["schema"] == "ivs.frame/1"}
    assert len(counts) >= 2
    # one snapshot and one clip per count, linked to it by (sensor, seq)
    assert sorted((e.event_seq, e.kind) for e in items) == sorted(
        (c["seq"], k) for c in counts for k in ("clip", "snapshot")
    )
    frames = originals(150)
    measured = 0
    for item in (e for e in items if e.kind == "clip"):
        clip = decode((tmp_path / "evidence" / item.path).read_bytes())
        first = item.meta["first_frame"]
        assert len(clip) == item.meta["last_frame"] - first + 1 == item.meta["frames"]
        for k, (image, _) in enumerate(clip):
            h, w = image.shape[:2]
            for d in records[first + k]["detections"]:
                x1, y1, x2, y2 = d["box"]
                if d["label"] != "person" or (x2 - x1) * (y2 - y1) < NEAR:
                    continue
                original = high_frequency(frames[first + k][:h, :w], d["box"])
                redacted = high_frequency(image, d["box"])
                assert original > DETAIL > redacted, (item.id, first + k, original, redacted)
                measured += 1
    assert measured > 100
    # the ledger counts evidence apart from metadata
    ledger = [m for m in out if m.get("kind") == "ledger"][-1]
    sent = sum(e.size for e in items)
    assert ledger["evidence_bytes"] == sent > 0
    assert ledger["metadata_bytes"] < sum(len(json.dumps(m)) for m in out) * 2  # metadata only


def test_a_stop_clip_holds_pre_seconds_before_to_post_seconds_after(vtest: Path, tmp_path: Path):
    hub = Hub(tmp_path)
    zone = (
        "  - {type: safety, name: press, polygon: [[420, 300], [520, 300], [520, 380], [420, 380]], trigger: anchor}\n"
    )
    try:
        out = run_sensor(tmp_path, hub, "  policy: full\n  events: [stop]\n  pre_s: 1.5\n  post_s: 1\n", zone, 70)
        items = hub.store.evidence()
    finally:
        hub.close()
    stops = [m for m in out if m.get("kind") == "stop"]
    assert len(stops) == 2
    for stop in stops:
        (clip,) = [e for e in items if e.event_seq == stop["seq"] and e.kind == "clip"]
        # vtest.avi is 10 fps: 15 frames before the stop's, its own, 10 after
        assert (clip.meta["first_frame"], clip.meta["last_frame"]) == (stop["frame"] - 15, stop["frame"] + 10)
        frames = decode((tmp_path / "evidence" / clip.path).read_bytes())
        assert len(frames) == 26
        assert frames[-1][1] - frames[0][1] == pytest.approx(2.5, abs=0.01)  # its own timing kept
        (snap,) = [e for e in items if e.event_seq == stop["seq"] and e.kind == "snapshot"]
        assert snap.meta["snapshot_frame"] == stop["frame"] and snap.content_type == "image/jpeg"


def test_policy_none_keeps_no_pixel_on_the_sensor_the_spool_or_the_hub(vtest: Path, tmp_path: Path):
    hub = Hub(tmp_path)  # a hub that would keep evidence
    try:
        out = run_sensor(
            tmp_path,
            hub,
            "  policy: none\n",
            LINE + "  - {type: safety, name: p, polygon: [[0,0],[768,0],[768,576]]}\n",
            60,
        )
        assert hub.store.evidence() == []
    finally:
        hub.close()
    assert not (tmp_path / "spool.sqlite").exists()  # not even created
    assert not hub.dir.exists() or not any(hub.dir.rglob("*"))
    assert all(m.get("evidence_bytes", 0) == 0 for m in out if m.get("kind") == "ledger")


def test_the_hub_checks_who_uploads_what_and_audits_each_view(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    token = store.add_device("cam")
    store.add_user("vera", "viewer", "pw")
    _, viewer = store.create_token("vera", "viewer")
    jpeg = b"\xff\xd8\xff\xe0" + b"x" * 100
    meta = {"sensor_id": "cam", "kind": "snapshot", "event_seq": 7}

    def post(client: TestClient, data: bytes, ctype: str = "image/jpeg", m: dict | None = None, tok: str = token):
        headers = {"Authorization": f"Bearer {tok}", "Content-Type": ctype, "X-Ivs-Evidence": json.dumps(m or meta)}
        return client.post("/api/v1/evidence", content=data, headers=headers)

    try:
        with TestClient(create_app(store, "")) as nowhere:
            assert post(nowhere, jpeg).status_code == 409  # no --evidence-dir: refused
        with TestClient(create_app(store, "", evidence_dir=tmp_path / "ev")) as client:
            assert post(client, jpeg, m={**meta, "sensor_id": "other"}).status_code == 403
            assert post(client, jpeg, ctype="image/png").status_code == 415
            assert post(client, b"not a jpeg").status_code == 422
            assert post(client, jpeg, m={"kind": "movie", "sensor_id": "cam"}).status_code == 422
            assert post(client, jpeg, tok=viewer).status_code == 401  # a user's token is no device's
            r = post(client, jpeg)
            assert r.status_code == 201
            url = r.json()["url"]
            assert client.get(url).status_code == 401  # anonymous
            assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 403  # a device
            got = client.get(url, headers={"Authorization": f"Bearer {viewer}"})
            assert (
                got.status_code == 200 and got.content == jpeg and got.headers["cache-control"] == "private, no-store"
            )
            listed = client.get("/api/v1/evidence?seq=7", headers={"Authorization": f"Bearer {viewer}"}).json()
            assert [e["event_seq"] for e in listed] == [7] and "path" not in listed[0]
        actions = [(e.who, e.action) for e in store.audit_log()]
        assert ("device:cam", "POST /api/v1/evidence") in actions
        assert ("vera", url.replace("/api", "GET /api")) in actions
    finally:
        store.close()


def test_retention_deletes_old_evidence_files_index_and_says_so(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    folder = tmp_path / "ev"
    try:
        for n in range(5):
            (folder / "cam").mkdir(parents=True, exist_ok=True)
            (folder / "cam" / f"{n}.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 1000)
            store.add_evidence("cam", n + 1, "snapshot", "image/jpeg", 1003, f"cam/{n}.jpg", {"kind": "snapshot"})
        assert prune_evidence(store, folder, None, 2500) == 3  # the oldest three go, two fit
        assert sorted(p.name for p in (folder / "cam").iterdir()) == ["3.jpg", "4.jpg"]
        assert [e.event_seq for e in store.evidence()] == [5, 4]
        assert prune_evidence(store, folder, 0.0, None) == 2  # everything older than now
        assert store.evidence() == [] and not any((folder / "cam").iterdir())
        assert sum(1 for e in store.audit_log() if e.who == "retention") == 5
    finally:
        store.close()


SPOOL_CHILD = """
import sys
from ivs.evidence.spool import EvidenceSpool
spool = EvidenceSpool(sys.argv[1], 1.0)   # 1 MiB
n = 0
while True:
    got = spool.put({"kind": "clip", "n": n}, "video/mp4", bytes([n % 256]) * 100_000)
    print(("stored" if got is not None else "refused"), n, flush=True)
    n += 1
"""


def test_kill_9_with_a_full_spool_loses_nothing_it_committed(tmp_path: Path):
    path = tmp_path / "spool.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", SPOOL_CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    stored: list[int] = []
    assert child.stdout is not None
    for line in child.stdout:
        word, n = line.split()
        if word == "stored":
            stored.append(int(n))
        elif len(stored) >= 10:  # full, and refusing
            break
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    spool = EvidenceSpool(path, 1.0)
    try:
        items = spool.pending(limit=100)
        assert [i.meta["n"] for i in items] == stored and len(stored) == 10  # 10 x 100 kB fit in 1 MiB
        assert all(i.data == bytes([i.meta["n"] % 256]) * 100_000 for i in items)
    finally:
        spool.close()


@pytest.mark.slow
def test_the_dashboard_shows_an_events_snapshot_to_a_viewer_and_not_to_anyone_else(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    from tests.test_users import auth

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    store.add_user("vera", "viewer", "vera-password")
    token = store.add_device("cam")
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :, 0] = 200
    from ivs.evidence.encode import jpeg

    hub = ServerThread(create_app(store, "", evidence_dir=tmp_path / "ev"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "make test installs Debian's chromium (scripts/install-browser.sh)"
    try:
        import urllib.request

        meta = {"sensor_id": "cam", "kind": "snapshot", "event_seq": 3, "event_kind": "stop", "app": "press",
                "time": time.time(), "policy": "redacted"}  # fmt: skip
        request = urllib.request.Request(
            hub.url + "/api/v1/evidence", data=jpeg(image), method="POST",
            headers={**auth(token), "Content-Type": "image/jpeg", "X-Ivs-Evidence": json.dumps(meta)},
        )  # fmt: skip
        with urllib.request.urlopen(request) as r:
            evidence_id = json.loads(r.read())["id"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                anonymous = browser.new_page()
                anonymous.goto(hub.url + "/dashboard")
                anonymous.locator("form#login").wait_for(state="visible", timeout=20_000)
                assert anonymous.locator("#evidence figure").count() == 0
                status = anonymous.evaluate(f"fetch('api/v1/evidence/{evidence_id}').then(r => r.status)")
                assert status == 401
                viewer = browser.new_page()
                viewer.goto(hub.url + "/dashboard")
                viewer.fill("input[name=user]", "vera")
                viewer.fill("input[name=password]", "vera-password")
                viewer.click("form#login button")
                figure = viewer.locator(f'#evidence figure[data-evidence="{evidence_id}"]')
                figure.wait_for(timeout=20_000)
                assert "stop · press · cam #3" in figure.inner_text()
                viewer.wait_for_function(
                    f"document.querySelector('#evidence figure[data-evidence=\"{evidence_id}\"] img')?.naturalWidth === 64",
                    timeout=20_000,
                )  # the image loaded: the viewer's session fetched it
            finally:
                browser.close()
        assert any(e.who == "vera" and e.action == f"GET /api/v1/evidence/{evidence_id}" for e in store.audit_log())
    finally:
        assert hub.stop()
        store.close()


def test_the_hub_can_ask_for_a_time_range_from_the_buffer(tmp_path: Path):
    from types import SimpleNamespace

    from ivs.commands import CommandError, Commands
    from ivs.detections import Detections
    from ivs.evidence.recorder import Recorder
    from ivs.evidence.redact import Redaction

    spool = EvidenceSpool(tmp_path / "spool.sqlite", 64)
    recorder = Recorder("cam", spool, Redaction("redacted"), pre_s=1, post_s=1)
    none = SimpleNamespace(evidence=None)
    rng = np.random.default_rng(1)
    t0 = time.time()
    for i in range(30):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        person = Detections(
            np.asarray([[8, 8, 40, 44]], np.float32), np.asarray([0.9], np.float32), np.zeros(1, np.int64)
        )
        recorder.take_frame(i, i / 10, t0 + i / 10, pixels, person)

    def run(sensor, args):
        return Commands(sensor, lambda b: None, reload=lambda: None, app_names=list).run("evidence", args)

    try:
        with pytest.raises(CommandError, match="policy is none"):
            run(none, {"since": t0, "until": t0 + 1})
        with pytest.raises(CommandError, match="no buffered frame"):
            run(SimpleNamespace(evidence=recorder), {"since": t0 - 100, "until": t0 - 99})
        assert run(SimpleNamespace(evidence=recorder), {"since": t0 + 0.5, "until": t0 + 1.5}) == {"frames": 11}
        assert recorder.flush(30)
        kinds = sorted(i.meta["kind"] for i in spool.pending())
        assert kinds == ["clip", "snapshot"]
        clip = next(i for i in spool.pending() if i.meta["kind"] == "clip")
        assert clip.meta["reason"] == "hub request" and len(decode(clip.data)) == 11
    finally:
        recorder.close(timeout=0)


def test_faces_are_blurred_where_the_face_detector_found_them_and_masks_black_out_always():
    from ivs.evidence.redact import Redaction

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    person = np.asarray([[10, 10, 90, 110]], np.float32)
    face = np.asarray([[30, 15, 60, 45]], np.float32)
    mask = [np.asarray([[120, 0], [159, 0], [159, 40], [120, 40]], np.int32)]
    faces = Redaction("redacted", "faces", masks=mask).apply(image, person, np.zeros(1, np.int64), face)
    assert high_frequency(faces, face[0]) < DETAIL < high_frequency(image, face[0])  # the face blurred
    below = [30, 70, 60, 100]  # the rest of the person, under the face: untouched
    assert np.array_equal(faces[70:100, 30:60], image[70:100, 30:60]) and high_frequency(faces, below) > DETAIL
    assert not faces[0:40, 121:159].any()  # the mask: black
    full = Redaction("full", masks=mask).apply(image, person, np.zeros(1, np.int64))
    assert np.array_equal(full[:, :100], image[:, :100]) and not full[0:40, 121:159].any()
    persons = Redaction("redacted", "persons").apply(image, person, np.zeros(1, np.int64))
    assert high_frequency(persons, person[0]) < DETAIL and np.array_equal(persons[:, 100:], image[:, 100:])


def test_the_hubs_retention_job_prunes_evidence_too(tmp_path: Path):
    from ivs.hub.retention import EvidenceRetention, RetentionJob
    from ivs.hub.store import Retention
    from tests.waiting import wait_for

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    folder = tmp_path / "ev"
    (folder / "cam").mkdir(parents=True)
    for n in range(3):
        (folder / "cam" / f"{n}.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 600_000)
        store.add_evidence("cam", n + 1, "snapshot", "image/jpeg", 600_003, f"cam/{n}.jpg", {"kind": "snapshot"})
    job = RetentionJob(store, Retention(), every_s=3600, evidence=EvidenceRetention(folder, max_mib=1.0)).start()
    try:
        wait_for(lambda: job.runs >= 1, what="the first run")
        assert sorted(p.name for p in (folder / "cam").iterdir()) == ["2.jpg"]  # 600 kB fits in 1 MiB, 1.2 MB not
        assert [e.event_seq for e in store.evidence()] == [3]
    finally:
        job.close()
        store.close()
