"""A short soak: the sensor at its source's rate (vtest.avi, 10 fps) with a counting line, a zone,
a heatmap and an MQTT sink to a real Mosquitto, sampled from outside for a minute. After warm-up
no file descriptor or thread may appear, and resident memory stays within 10%.

The 30-minute run (`python -m ivs.bench.soak`) and its figures are in docs/reliability.md.
"""

from __future__ import annotations

import pytest

from ivs.bench.soak import soak


@pytest.mark.slow
def test_a_minute_at_the_source_rate_grows_nothing() -> None:
    report = soak(60.0, warmup_s=20.0, interval_s=2.0)
    figures = report.figures()
    warm = report.after_warmup()
    assert len(warm) >= 15, "sampled all along"
    assert all(s.frames > 0 for s in warm), "the sensor was delivering during the whole measured part"
    assert figures is not None
    fds, threads, rss = figures.fds, figures.threads, figures.rss_mib
    assert fds.max_after_warmup == fds.min_after_warmup == fds.end, f"no descriptor leaked: {fds}"
    assert threads.max_after_warmup <= threads.min_after_warmup + 1, f"no thread piled up: {threads}"
    assert threads.end <= warm[0].threads, f"no thread piled up: {threads}"
    assert rss.max_growth_pct < 10.0, f"resident memory bounded after warm-up: {rss}"
    # It did real work, at the source's rate, and delivered all of it.
    child = report.child
    assert child is not None and child.frames_read >= 0.8 * 10 * 60, child
    assert report.received == child.last_seq > child.frames_processed, "every frame record and event arrived"
    assert report.rejected == 0
