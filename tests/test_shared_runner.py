"""The node's shared inference service (ivs.runtime.shared): one network loaded once for many
sensors, requests served round robin, errors to the asker only."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ivs.errors import ModelError
from ivs.model import load_model
from ivs.runtime.shared import InferenceService, RunnerPool
from tests.waiting import wait_for


class Gate:
    """A runner that records what it ran and waits at a gate before answering."""

    name = "gate"

    def __init__(self, order: list[str], gate: threading.Event) -> None:
        self.order, self.gate, self.closed = order, gate, False
        self.started: list[str] = []

    def run(self, tensor):
        self.started.append(str(tensor.item()))
        self.gate.wait(10)
        tag = str(tensor.item())
        if tag == "boom":
            raise ModelError("the network failed on this input")
        self.order.append(tag)
        return {"out": tensor}

    def cancel(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def test_clients_are_served_round_robin_so_none_starves():
    order: list[str] = []
    gate = threading.Event()
    runners: list[Gate] = []
    service = InferenceService("t", lambda t: runners.append(Gate(order, gate)) or runners[-1], workers=1, threads=1)
    a, b = service.client(), service.client()
    threads = [threading.Thread(target=a.run, args=(np.array("a1"),))]
    threads[0].start()
    wait_for(lambda: runners[0].started == ["a1"], 5, "the worker to take a1")
    for name, client in (("a2", a), ("a3", a), ("b1", b)):
        t = threading.Thread(target=client.run, args=(np.array(name),))
        t.start()
        threads.append(t)
        wait_for(lambda n=name: any(r.tensor.item() == n for q in service._queues.values() for r in q), 5, name)
    gate.set()
    for t in threads:
        t.join(10)
    # a had two waiting when b asked: b is served after a's next one, not after all of a's.
    assert order == ["a1", "a2", "b1", "a3"]
    assert service.served == {a.cid: 3, b.cid: 1}
    a.close()
    assert not runners[0].closed  # b still uses it
    b.close()
    assert runners[0].closed


def test_a_runner_error_goes_to_the_asker_and_the_service_goes_on():
    gate = threading.Event()
    gate.set()
    service = InferenceService("t", lambda t: Gate([], gate), workers=2, threads=1)
    a, b = service.client(), service.client()
    with pytest.raises(ModelError, match="failed on this input"):
        a.run(np.array("boom"))
    assert b.run(np.array("ok"))["out"].item() == "ok"
    assert a.run(np.array("again"))["out"].item() == "again"
    a.close()
    b.close()
    with pytest.raises(ModelError, match="closed"):
        a.run(np.array("late"))


def test_models_of_one_network_share_one_service_and_answer_as_a_runner_of_their_own(vtest, media):
    import cv2

    pixels = cv2.cvtColor(cv2.imread(str(media / "messi5.jpg")), cv2.COLOR_BGR2RGB)
    alone = load_model("person", runtime="onnxruntime")
    expected = alone(pixels)
    alone.close()
    pool = RunnerPool(workers=2, threads=1)
    first = load_model("person", runtime="onnxruntime", pool=pool)
    second = load_model("person", runtime="onnxruntime", pool=pool, tiles=(1, 1))  # its own layout, same network
    (service,) = pool.services()
    assert service.clients == 2 and service.workers == 2
    assert first.runner.name == "onnxruntime"
    got = first(pixels)
    np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
    assert len(second(pixels)) >= 1
    first.close()
    assert pool.services() == [service]
    second.close()
    assert pool.services() == []  # the last model closed stopped it
