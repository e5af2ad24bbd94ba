"""The trace gate: an fx trace never overlaps a forward pass of another thread (fx patches nn.Module.__call__ for the
whole process), forwards run together, a waiting trace goes first, and a thread may trace from inside its forward."""
import threading

import torch.nn as nn

from prunekit.models.layers import TraceGate, conv_layers


def test_a_trace_waits_for_the_running_forwards_and_holds_new_ones_off():
    gate, events = TraceGate(), []
    inside, release, traced = threading.Event(), threading.Event(), threading.Event()

    def forward():
        with gate:
            events.append("forward starts")
            inside.set()
            release.wait(60)
            events.append("forward ends")

    def trace():
        with gate.tracing():
            events.append("trace")
        traced.set()

    first = threading.Thread(target=forward)
    first.start()
    assert inside.wait(60)
    tracer = threading.Thread(target=trace)
    tracer.start()
    with gate._cond:  # the trace is waiting for the forward (a state, not a time)
        assert gate._cond.wait_for(lambda: gate._traces_waiting == 1, 60)
    def late_forward():
        with gate:
            events.append("late forward")

    late = threading.Thread(target=late_forward)
    late.start()
    release.set()
    for t in (first, tracer, late):
        t.join(60)
    assert events == ["forward starts", "forward ends", "trace", "late forward"]


def test_forwards_run_together_and_nest():
    gate, both = TraceGate(), threading.Barrier(2, timeout=60)

    def forward():
        with gate, gate:  # re-entrant
            both.wait()  # both threads inside at once, or the barrier breaks

    threads = [threading.Thread(target=forward) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not both.broken and gate._forwards == 0


def test_a_thread_may_trace_inside_its_own_forward_region():
    gate = TraceGate()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with gate:
        with gate.tracing():
            pass
        assert gate._forwards == 1
    assert gate._forwards == 0 and [layer.name for layer in conv_layers(model)] == ["0"]
