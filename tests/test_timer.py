"""The timer against workloads of known duration (ratios within one run, with margins)."""
import time

import pytest

from bench.timing import StageTimer


def test_stage_ratios_and_end_to_end_span():
    timer = StageTimer("cpu", spans={"total": ("a", "b")})

    def step(t):
        with t.stage("a"):
            time.sleep(0.010)
        with t.stage("b"):
            time.sleep(0.030)

    res = timer.run(step, warmup=1, min_repeats=8)
    a, b, total = res.stages["a"].median, res.stages["b"].median, res.stages["total"].median
    assert 2.0 < b / a < 4.0
    assert 0.95 < total / (a + b) < 1.25
    assert res.stages["a"].n == 8 and len(res.stages["a"].samples) == 8
    s = res.stages["b"]
    assert s.p10 <= s.median <= s.p90 and s.iqr >= 0 and s.std >= 0


def test_min_seconds_extends_repeats_and_warmup_is_not_recorded():
    timer = StageTimer("cpu")
    calls = []

    def step(t):
        calls.append(1)
        with t.stage("x"):
            time.sleep(0.01)

    res = timer.run(step, warmup=3, min_repeats=2, min_seconds=0.15)
    assert res.iterations >= 10  # 0.15 s of 10 ms iterations
    assert len(calls) == res.iterations + 3
    assert res.stages["x"].n == res.iterations
    assert res.timed_s >= 0.15


def test_max_repeats_caps_the_loop():
    res = StageTimer("cpu").run(lambda t: None, warmup=0, min_repeats=1, min_seconds=100, max_repeats=5)
    assert res.iterations == 5


@pytest.mark.parametrize("kw", [dict(warmup=-1), dict(min_repeats=0), dict(min_seconds=-1.0),
                                dict(min_repeats=5, max_repeats=2)])
def test_bad_knobs(kw):
    with pytest.raises(ValueError, match="bad timing knobs"):
        StageTimer("cpu").run(lambda t: None, **kw)
