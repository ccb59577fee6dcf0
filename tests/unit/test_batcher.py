"""Dynamic batching policy and auto-tuning, with a scripted queue and a fake clock (no Redis, no model)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbvision.core.letterbox import Letterbox
from fbvision.core.wire import FrameMessage, encode_frame
from fbvision.inference.batcher import Batcher, autotune, candidate_batch_sizes, format_table

pytestmark = pytest.mark.timeout(60)

WALL0 = 1_700_000_000.0


class FakeQueue:
    """A FIFO whose items arrive at scripted fake times; ``pop`` behaves like Transport.pop_frames:
    blocks (advancing the clock) until the first item or the timeout, then takes up to max_n at once."""

    def __init__(self, arrivals: list[tuple[float, bytes]], pop_cost_s: float = 0.0002):
        self.t = 0.0
        self.arrivals = sorted(arrivals, key=lambda a: a[0])
        self.pop_cost_s = pop_cost_s
        self.calls: list[tuple[int, float]] = []

    def clock(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    def pop(self, max_n: int, timeout_s: float) -> list[bytes]:
        self.calls.append((max_n, timeout_s))
        assert timeout_s > 0 and max_n >= 1
        self.t += self.pop_cost_s
        if not self.arrivals or self.arrivals[0][0] > self.t + timeout_s:
            self.t += timeout_s
            return []
        self.t = max(self.t, self.arrivals[0][0])
        ready = [a for a in self.arrivals if a[0] <= self.t][:max_n]
        del self.arrivals[: len(ready)]
        return [payload for _, payload in ready]


def frame(seq: int, captured_at: float, camera: str = "cam1") -> bytes:
    """A frame message captured at fake time ``captured_at``."""
    return encode_frame(FrameMessage(camera, seq, WALL0 + captured_at, WALL0 + captured_at, Letterbox(640, 360, 160, 160,
                                     0.25, 0.0, 35.0), b"\xff\xd8jpeg"))


def batcher_for(queue: FakeQueue, **kw) -> Batcher:
    defaults = dict(max_batch=8, max_wait_ms=10.0, max_age_ms=1000.0)
    defaults.update(kw)
    return Batcher(queue.pop, clock=queue.clock, wall=queue.wall, **defaults)


def test_backlog_fills_a_full_batch_without_waiting():
    queue = FakeQueue([(0.0, frame(i, 0.0)) for i in range(20)])
    batcher = batcher_for(queue, max_batch=8, max_wait_ms=50)
    batch = batcher.next()
    assert [f.seq for f in batch.frames] == list(range(8))
    assert batch.wait_ms < 1.0
    assert len(queue.calls) == 1
    assert [f.seq for f in batcher.next().frames] == list(range(8, 16))
    assert [f.seq for f in batcher.next().frames] == [16, 17, 18, 19]  # partial: waited max_wait for more


def test_trickle_waits_at_most_max_wait_after_the_first_frame():
    # One frame every 4 ms; with max_wait 10 ms the batch closes ~10 ms after its first frame.
    queue = FakeQueue([(0.5 + 0.004 * i, frame(i, 0.5 + 0.004 * i)) for i in range(50)])
    batcher = batcher_for(queue, max_batch=16, max_wait_ms=10.0)
    batch = batcher.next()
    assert 2 <= len(batch) <= 4
    assert batch.wait_ms <= 10.0 + 0.5
    assert queue.t - 0.5 <= 0.010 + 0.001


def test_first_frame_wait_is_bounded_for_the_stop_event():
    queue = FakeQueue([])
    batch = batcher_for(queue, first_wait_s=1.0).next()
    assert len(batch) == 0 and batch.popped == 0
    assert queue.t == pytest.approx(1.0, abs=0.01)


def test_max_wait_zero_takes_what_is_there():
    queue = FakeQueue([(0.0, frame(0, 0.0)), (0.0, frame(1, 0.0)), (0.001, frame(2, 0.001))])
    batch = batcher_for(queue, max_wait_ms=0).next()
    assert [f.seq for f in batch.frames] == [0, 1]
    assert len(queue.calls) == 1


def test_stale_frames_are_dropped_counted_and_do_not_start_the_wait():
    # Frames captured at t=0 are popped at t=2 (age 2 s > 1 s); a fresh one arrives at 2.3 s.
    arrivals = [(2.0, frame(i, 0.0)) for i in range(5)] + [(2.3, frame(5, 2.29)), (2.305, frame(6, 2.30))]
    queue = FakeQueue(arrivals)
    queue.t = 1.9
    batch = batcher_for(queue, max_age_ms=1000, max_wait_ms=20).next()
    assert [f.seq for f in batch.stale] == [0, 1, 2, 3, 4]
    assert [f.seq for f in batch.frames] == [5, 6]
    assert batch.popped == 7
    assert batch.popped_at[0] == pytest.approx(WALL0 + 2.3)
    assert batch.wait_ms <= 20.5


def test_undecodable_messages_are_returned_with_reasons_and_the_rest_batched():
    good = frame(1, 0.0)
    bad_version = good[:2] + bytes([99]) + good[3:]
    queue = FakeQueue([(0.0, frame(0, 0.0)), (0.0, b"garbage!"), (0.0, good[:20]), (0.0, bad_version), (0.0, good)])
    batch = batcher_for(queue).next()
    assert [f.seq for f in batch.frames] == [0, 1]
    assert sorted(exc.reason for _, exc in batch.rejected) == ["garbage", "truncated", "version"]
    assert batch.popped == 5


def test_max_batch_one_never_waits():
    queue = FakeQueue([(0.0, frame(i, 0.0)) for i in range(3)])
    batcher = batcher_for(queue, max_batch=1, max_wait_ms=100)
    assert [len(batcher.next()) for _ in range(3)] == [1, 1, 1]
    assert queue.t < 0.01


def test_settings_can_change_between_batches():
    queue = FakeQueue([(0.0, frame(i, 0.0)) for i in range(10)])
    batcher = batcher_for(queue, max_batch=8)
    batcher.max_batch = 2
    assert len(batcher.next()) == 2


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=0, max_size=60),
    ages=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=60, max_size=60),
    max_batch=st.integers(1, 16),
    max_wait_ms=st.floats(0.0, 40.0),
)
def test_policy_invariants(gaps, ages, max_batch, max_wait_ms):
    t, arrivals = 0.0, []
    for i, gap in enumerate(gaps):
        t += gap
        arrivals.append((t, frame(i, t - ages[i])))
    queue = FakeQueue(arrivals)
    batcher = batcher_for(queue, max_batch=max_batch, max_wait_ms=max_wait_ms, max_age_ms=1000.0)
    seen, fresh = [], []
    for _ in range(len(arrivals) + 2):
        batch = batcher.next()
        assert len(batch) <= max_batch
        assert batch.wait_ms <= max_wait_ms + 0.5  # one pop's cost of slack
        assert batch.popped == len(batch.frames) + len(batch.stale) + len(batch.rejected)
        for f, popped_at in zip(batch.frames, batch.popped_at, strict=True):
            assert (popped_at - f.capture_ts) * 1000 <= 1000.0
        for f in batch.stale:
            assert (queue.wall() - f.capture_ts) * 1000 > 1000.0
        seen += [f.seq for f in batch.frames] + [f.seq for f in batch.stale]
        fresh += [f.seq for f in batch.frames]
    assert sorted(seen) == list(range(len(arrivals)))  # nothing lost, nothing twice
    assert fresh == sorted(fresh)  # FIFO


# -- autotune -----------------------------------------------------------------------------------------------------


class CostModelEngine:
    """An engine whose time per batch follows ``cost(b)`` seconds on a fake clock."""

    input_size = (32, 32)
    class_names = ["horse"]
    provider = "FakeProvider"

    def __init__(self, cost, max_batch=16, jitter=0.0):
        self.cost, self.max_batch, self.jitter = cost, max_batch, jitter
        self.t = 0.0
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.t

    def infer(self, batch):
        b = batch.shape[0]
        self.calls.append(b)
        wobble = 1.0 + (self.jitter if len(self.calls) % 2 else -self.jitter)
        self.t += self.cost(b) * wobble
        return batch

    def warmup(self, sizes):
        return {}


@pytest.mark.parametrize("name,cost,expected", [
    ("cpu: linear, no gain", lambda b: 0.010 * b, 1),
    ("cpu: batching is slower", lambda b: 0.010 * b * (1.0 if b == 1 else 1.15), 1),
    ("gpu: fixed overhead dominates", lambda b: 0.008 + 0.0005 * b, 16),
    ("gpu: saturates at 4", lambda b: 0.010 * max(1, b / 4), 4),
    ("within noise of the best: prefer the smaller", lambda b: 0.010 * b / (1.0 if b == 1 else 1.03), 1),
])
def test_autotune_picks_the_smallest_batch_within_noise_of_the_best(name, cost, expected):
    engine = CostModelEngine(cost)
    result = autotune(engine, candidate_batch_sizes(16), budget_s=1.0, clock=engine.clock)
    assert result.batch == expected, name
    rows = {r["batch"]: r for r in result.table}
    assert sorted(rows) == [1, 2, 4, 8, 16]
    assert rows[1]["ratio_vs_1"] == pytest.approx(1.0)
    assert rows[result.batch]["ratio_vs_1"] >= 0.95
    for b, row in rows.items():
        assert row["ms_per_batch"] == pytest.approx(cost(b) * 1000, rel=1e-6)
        assert row["frames_per_s"] == pytest.approx(b / cost(b), rel=1e-6)
        assert row["iterations"] >= 3
    if expected == 1:
        assert result.max_wait_ms == 0.0
    else:
        assert 0 < result.max_wait_ms <= rows[1]["ms_per_batch"]


def test_autotune_uses_the_median_so_one_slow_run_does_not_decide():
    engine = CostModelEngine(lambda b: 0.008 + 0.0005 * b, jitter=0.3)
    result = autotune(engine, [1, 8], budget_s=0.5, clock=engine.clock)
    assert result.batch == 8


def test_autotune_respects_the_budget_and_the_engine_limit():
    engine = CostModelEngine(lambda b: 0.001 * b, max_batch=6)
    result = autotune(engine, [1, 2, 4, 8, 32], budget_s=0.6, clock=engine.clock)
    assert [r["batch"] for r in result.table] == [1, 2, 4]
    assert result.seconds <= 0.6 + 3 * 0.004 * 2  # budget + one overshooting run per size (+ untimed run)
    assert "frames/s" in format_table(result.table)


def test_candidate_sizes():
    assert candidate_batch_sizes(1) == [1]
    assert candidate_batch_sizes(8) == [1, 2, 4, 8]
    assert candidate_batch_sizes(12) == [1, 2, 4, 8, 12]


def test_sparse_traffic_does_not_wait_for_a_batch_that_will_not_come():
    # 4 cameras x 5 fps, staggered: a frame every 50 ms. Waiting 10 ms for a second frame would only add latency.
    queue = FakeQueue([(0.05 * i, frame(i, 0.05 * i)) for i in range(200)])
    batcher = batcher_for(queue, max_batch=8, max_wait_ms=10.0)
    waits = [batcher.next().wait_ms for _ in range(120)]
    assert max(waits[:30]) > 9.0  # the first window: no rate known yet, it waits as configured
    assert max(waits[60:]) < 1.0  # once the rate is known (one frame per 50 ms): no pointless wait


def test_dense_traffic_still_waits_to_fill_batches():
    # A frame every 2 ms: waiting up to 10 ms gathers several.
    queue = FakeQueue([(0.002 * i, frame(i, 0.002 * i)) for i in range(3000)])
    batcher = batcher_for(queue, max_batch=8, max_wait_ms=10.0)
    sizes = [len(batcher.next()) for _ in range(400)]
    assert sum(sizes[-100:]) / 100 >= 4
