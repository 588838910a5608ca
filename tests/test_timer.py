"""The timer and its stopping rule against workloads of known duration (ratios within one run,
with margins), and the median interval against its exact coverage."""
import gc
import random
import time

import numpy as np
import pytest

from bench.measure.timer import StageTimer
from bench.measure.stats import median_ci, summarize
from bench.measure.timer import StopRule

# serial (tests/conftest.py): the stopping rule is checked on times it measures; a neighbour's work would distort it.
pytestmark = pytest.mark.serial

FAST = dict(warmup=1, warmup_seconds=0.0, stable_window=1, min_seconds=0.0)


def test_stage_ratios_and_end_to_end_span():
    timer = StageTimer("cpu", spans={"total": ("a", "b")})

    def step(t):
        with t.stage("a"):
            time.sleep(0.010)
        with t.stage("b"):
            time.sleep(0.030)

    res = timer.run(step, StopRule(**FAST, min_repeats=8, max_repeats=8, target_stage="total"))
    a, b, total = res.stages["a"].median, res.stages["b"].median, res.stages["total"].median
    assert 2.0 < b / a < 4.0
    assert 0.95 < total / (a + b) < 1.25
    assert res.stages["a"].n == 8 and len(res.stages["a"].samples) == 8 and res.stop_reason == "max_repeats"
    s = res.stages["b"]
    assert s.p10 <= s.median <= s.p90 and s.iqr >= 0 and s.std >= 0
    assert s.ci_low <= s.median <= s.ci_high


def test_stops_when_the_median_interval_reaches_the_target():
    def step(t):
        with t.stage("x"):
            time.sleep(0.005)

    rule = StopRule(**FAST, min_repeats=10, max_seconds=20.0, target=0.05, target_stage="x")
    res = StageTimer("cpu").run(step, rule)
    assert res.stop_reason == "target"
    assert res.stages["x"].ci_rel <= 0.05 and res.iterations >= 10
    assert res.timed_s < 10  # it stopped early, long before the budget


def test_noisy_workload_stops_at_the_budget_with_its_interval_recorded():
    rng = random.Random(0)

    def step(t):
        with t.stage("x"):
            time.sleep(rng.choice([0.002, 0.008]))

    rule = StopRule(**FAST, min_repeats=10, max_seconds=0.6, target=0.001, target_stage="x")
    res = StageTimer("cpu").run(step, rule)
    assert res.stop_reason == "budget"
    assert 0.6 <= res.timed_s < 1.5 and res.stages["x"].ci_rel > 0.001


def test_min_repeats_and_min_seconds_are_floors_and_warmup_is_not_recorded():
    calls = []

    def step(t):
        calls.append(1)
        with t.stage("x"):
            time.sleep(0.01)

    rule = StopRule(warmup=3, warmup_seconds=0.0, stable_window=1, min_repeats=2, min_seconds=0.15,
                    max_seconds=0.1, target=0.5, target_stage="x")
    res = StageTimer("cpu").run(step, rule)
    assert res.iterations >= 10  # 0.15 s of 10 ms iterations although the budget is 0.1 s
    assert len(calls) == res.iterations + res.warmup_iterations and res.warmup_iterations == 3
    assert res.stages["x"].n == res.iterations and res.timed_s >= 0.15


def test_warmup_runs_until_iteration_times_are_stable():
    """Iterations speed up over the first 8 (cold caches settling): warm-up lasts until the last
    window's median matches the one before, so the timed loop sees only the settled time."""
    ramp = [40, 30, 22, 16, 12, 9, 7, 6]
    count = [0]

    def step(t):
        count[0] += 1
        with t.stage("x"):
            time.sleep((ramp[count[0] - 1] if count[0] <= len(ramp) else 5) / 1e3)

    rule = StopRule(warmup=2, warmup_seconds=0.0, stable_window=3, stable_tol=0.1, min_repeats=10,
                    min_seconds=0.0, max_repeats=10, target_stage="x")
    res = StageTimer("cpu").run(step, rule)
    assert res.warmup_reason == "stable" and res.warmup_iterations >= 10
    assert res.stages["x"].median < 6.5


def test_gc_is_disabled_inside_the_timed_loop_only():
    seen = []

    def step(t):
        with t.stage("x"):
            seen.append(gc.isenabled())

    assert gc.isenabled()
    StageTimer("cpu").run(step, StopRule(**FAST, min_repeats=5, max_repeats=5, target_stage="x"))
    assert seen[0] is True and seen[-5:] == [False] * 5 and gc.isenabled()


def test_isolated_mode_synchronises_around_every_stage():
    syncs = {}
    for mode in ("pipelined", "isolated"):
        timer = StageTimer("cpu", mode=mode)
        n = [0]
        real_sync = timer.clock.sync

        def counting_sync():
            n[0] += 1
            real_sync()

        timer.clock.sync = counting_sync

        def step(t):
            with t.stage("a"):
                pass
            with t.stage("b"):
                pass

        res = timer.run(step, StopRule(**FAST, min_repeats=4, max_repeats=4, target_stage="a"))
        syncs[mode] = n[0] / (res.iterations + res.warmup_iterations)
        assert res.mode == mode
    assert syncs["pipelined"] == 1 and syncs["isolated"] == 1 + 2 * 2
    with pytest.raises(ValueError, match="timing mode"):
        StageTimer("cpu", mode="overlapped")


def test_probe_runs_once_per_timed_iteration():
    class Probe:
        def begin(self):
            self.t = time.perf_counter()

        def end(self):
            return {"wall": time.perf_counter() - self.t}

    res = StageTimer("cpu").run(lambda t: time.sleep(0.001), StopRule(**FAST, min_repeats=6, max_repeats=6),
                                probe=Probe())
    assert len(res.probes) == 6 and all(p["wall"] >= 0.001 for p in res.probes)


@pytest.mark.parametrize("kw", [dict(warmup=-1), dict(min_repeats=0), dict(min_seconds=-1.0),
                                dict(min_repeats=5, max_repeats=2), dict(target=0)])
def test_bad_rules(kw):
    with pytest.raises(ValueError, match="bad timing rule"):
        StageTimer("cpu").run(lambda t: None, StopRule(**kw))


def test_median_interval_is_the_exact_order_statistic_interval():
    assert median_ci([1, 2, 3, 4, 5]) == (None, None)  # n=5: no 95 % interval exists
    x = list(range(1, 11))
    assert median_ci(x) == (2, 9)  # n=10: x(2)..x(9), coverage 97.9 %
    assert median_ci(list(range(1, 101))) == (40, 61)  # n=100: x(40)..x(61)
    s = summarize([10.0] * 20)
    assert s.ci_low == s.ci_high == 10.0 and s.ci_rel == 0.0


def test_median_interval_covers_the_true_median_at_least_95pct():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 2000
    for _ in range(trials):
        sample = rng.exponential(1.0, size=15)  # skewed, like latencies; true median ln 2
        lo, hi = median_ci(sample)
        hits += lo <= np.log(2) <= hi
    assert hits / trials >= 0.95


def test_median_interval_of_many_samples_does_not_overflow():
    """A long timed loop (more than 1023 iterations) once overflowed 2.0 ** n."""
    import random

    rng = random.Random(0)
    s = summarize([rng.gauss(10.0, 1.0) for _ in range(5000)])
    assert s.ci_low < s.median < s.ci_high and s.ci_rel < 0.01
