"""Auto-tune under load: interleaved rounds, per-round ratios vs batch 1, a confidence margin before leaving batch 1
(fake clock: deterministic), and the table the run report shows."""

from __future__ import annotations

import pytest

from fbvision.inference.batcher import AUTOTUNE_MARGIN, autotune, format_table


class BurstyEngine:
    """Batch 1 always takes 10 ms; batch 4 is 1.59x batch 1 in most rounds, 0.82x in the others (contention bursts
    hitting the batched calls), as in the demo run where b4 measured 1.59x and then 0.82x."""

    input_size = (16, 16)
    class_names = ["horse"]
    provider = "Bursty"
    max_batch = 4

    def __init__(self, slow_every: int = 3):
        self.t = 0.0
        self.b4_calls = 0
        self.slow_every = slow_every

    def clock(self) -> float:
        return self.t

    def infer(self, batch):
        b = batch.shape[0]
        if b == 1:
            self.t += 0.010
        else:
            self.b4_calls += 1
            timed = self.b4_calls % 2 == 0  # every second call of a size is the timed one
            slow = timed and (self.b4_calls // 2) % self.slow_every == 0
            self.t += 4 * 0.010 / (0.82 if slow else 1.59)
        return batch

    def warmup(self, sizes):
        return {}


def test_a_lucky_median_does_not_leave_batch_1_without_the_margin():
    # 1 round in 3 is slow: the median ratio is 1.59x (the former rule picked batch 4), the lower quartile 0.82x.
    engine = BurstyEngine()
    before = autotune(engine, [1, 4], budget_s=1.0, margin=None, clock=engine.clock)
    assert before.batch == 4  # the former rule: the smallest size within 5 % of the best median throughput
    engine = BurstyEngine()
    after = autotune(engine, [1, 4], budget_s=1.0, clock=engine.clock)
    assert after.batch == 1 and after.max_wait_ms == 0.0
    row4 = after.table[1]
    assert row4["ratio_median"] == pytest.approx(1.59, rel=1e-6)
    assert row4["ratio_p25"] == pytest.approx(0.82, rel=1e-6)
    assert row4["eligible"] is False and after.table[0]["eligible"] is True
    assert 0.6 < row4["wins"] < 0.7
    assert after.rounds >= 5 and after.margin == AUTOTUNE_MARGIN
    text = format_table(after.table)
    assert "p25" in text and " no" in text


def test_a_consistent_gain_clears_the_margin():
    engine = BurstyEngine(slow_every=10**9)  # never slow: 1.59x in every round
    result = autotune(engine, [1, 4], budget_s=1.0, clock=engine.clock)
    assert result.batch == 4
    assert result.table[1]["ratio_p25"] == pytest.approx(1.59, rel=1e-6) and result.table[1]["wins"] == 1.0


def test_a_gain_below_the_margin_stays_at_batch_1():
    class Small(BurstyEngine):
        def infer(self, batch):
            self.t += 0.010 * batch.shape[0] / (1.0 if batch.shape[0] == 1 else 1.08)  # 8 % < 10 % margin
            return batch

    engine = Small()
    assert autotune(engine, [1, 4], budget_s=0.5, clock=engine.clock).batch == 1
    engine = Small()
    assert autotune(engine, [1, 4], budget_s=0.5, clock=engine.clock, margin=0.05).batch == 4


def test_rounds_pair_each_size_with_batch_1_and_rotate_the_order():
    class Recorder(BurstyEngine):
        max_batch = 8

        def __init__(self):
            super().__init__()
            self.order: list[int] = []

        def infer(self, batch):
            self.order.append(batch.shape[0])
            self.t += 0.001 * batch.shape[0]
            return batch

    engine = Recorder()
    result = autotune(engine, [1, 2, 4, 8], budget_s=0.0, min_iterations=3, clock=engine.clock)
    per_round = 3 * 4  # 3 sizes > 1, each: untimed + timed, then batch 1 untimed + timed
    rounds = [engine.order[i:i + per_round] for i in range(0, len(engine.order), per_round)]
    assert rounds[0] == [2, 2, 1, 1, 4, 4, 1, 1, 8, 8, 1, 1]
    assert [r[0] for r in rounds] == [2, 4, 8]  # the order rotates
    assert {r["batch"]: r["iterations"] for r in result.table} == {1: 9, 2: 3, 4: 3, 8: 3}


def test_batch_1_alone_is_still_measured():
    class One(BurstyEngine):
        max_batch = 1

    engine = One()
    result = autotune(engine, [1], budget_s=0.1, clock=engine.clock)
    assert result.batch == 1 and result.table[0]["iterations"] >= 5
