"""Issue 28: a point's config is read in one place, its plan (``bench.measure.plan``), and the
measurement reads the plan, never the config again and never an axis's part worked out anew."""
from __future__ import annotations

import dataclasses

import pytest

from bench.config import BenchConfig, EncoderConf, LLMConf, TimingConf


def _cfg(tmp_path, **kw):
    return BenchConfig(name="p", encoder=EncoderConf("tiny_vit"), llm=LLMConf("qwen2_tiny"), resolution=128,
                       device="cpu", threads=1, count_flops=False, measure_peak=False, results_dir=str(tmp_path),
                       timing=TimingConf(warmup=1, min_repeats=2, max_repeats=2), **kw)


def test_the_plan_is_frozen_and_the_measurement_resolves_nothing_again(tmp_path, monkeypatch):
    """Each axis's part comes from the plan: the resolvers the measurement used to call again
    (the tiling plan, the reduction, the backend) fail if called once the plan is made."""
    from bench.config import TilingConf
    import bench.models.backends as backends
    import bench.models.reduction.base as reduction
    import bench.models.tiling as tiling
    from bench.measure.plan import resolve_plan
    from bench.measure.scenario import measure_point

    cfg = _cfg(tmp_path, tiling=TilingConf(name="anyres_next", tile=64))
    plan = resolve_plan(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.skip = "no"  # type: ignore[misc]
    assert plan.tiling is not None and plan.tiling.tiles == 5 and plan.reduction.tokens_to_llm == plan.tiling.tokens
    assert plan.memory is not None and plan.memory.total > 0 and plan.backend.backend.name == "eager"

    def again(*a, **k):
        raise AssertionError("resolved again below the plan")

    for mod, name in ((tiling, "plan_for"), (tiling, "make_plan"), (reduction, "method_of"),
                      (backends, "get_backend")):
        monkeypatch.setattr(mod, name, again)
    cfg.resolution = 999  # the config is not read again: the plan is what is measured
    rec = measure_point(plan)
    assert rec.status == "ok", rec.message
    assert rec.config == plan.point and rec.visual_tokens == rec.visual_tokens_measured == plan.tiling.tokens
    assert (rec.tiles, rec.pipeline.get("merge")) == (5, "anyres_next")


def test_a_skip_reason_is_part_of_the_plan(tmp_path):
    from bench.measure.plan import resolve_plan
    from bench.measure.scenario import measure_point

    plan = resolve_plan(_cfg(tmp_path, paper_resolutions_only=True))
    assert plan.skip and "not a paper resolution" in plan.skip and plan.memory is None
    rec = measure_point(plan)
    assert (rec.status, rec.message, rec.visual_tokens) == ("skipped", plan.skip, plan.reduction.tokens_to_llm)


def test_an_hf_point_resolves_its_folder_config_and_processor_once(tmp_path, monkeypatch):
    """Its folder, config and processor were resolved 2-3 times (the id, the measurement, the
    build); now once, by the plan, and the build and the measurement take them from it."""
    import bench.models.hf as hf
    import bench.models.hf.inputs as inputs
    import bench.models.hf.model as model
    import bench.models.hf.plan as hf_plan
    from bench.measure.plan import resolve_plan
    from bench.measure.scenario import measure_point

    calls = {"resolve_source": 0, "check_config": 0, "load_processor": 0}

    def counted(mod, name):
        real = getattr(mod, name)

        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        monkeypatch.setattr(mod, name, wrapper)

    for mod, name in ((hf_plan, "resolve_source"), (hf, "resolve_source"), (hf_plan, "check_config"),
                      (model, "check_config"), (hf_plan, "load_processor"), (inputs, "load_processor")):
        counted(mod, name)
    cfg = dataclasses.replace(_cfg(tmp_path), hf="smolvlm_256m", memory_headroom=1000.0)
    plan = resolve_plan(cfg)
    assert plan.hf.source.name == "smolvlm_256m" and plan.point.hf == "smolvlm_256m"
    rec = measure_point(plan)  # processor, tokens, the build's memory check: skipped before allocating
    assert rec.status == "skipped" and "GiB" in rec.message and rec.visual_tokens > 0
    assert calls == {"resolve_source": 1, "check_config": 1, "load_processor": 1}


def test_a_measured_hf_point_resumes_without_loading_its_processor(tmp_path, monkeypatch):
    """A resumed sweep loaded every hf= point's processor (seconds each) before finding the point
    measured already; now the processor is loaded only for a point that is to be measured, and
    still before anything is claimed or built."""
    import bench.models.hf.plan as hf_plan
    from bench.measure.runner import run_point

    loads = []
    real = hf_plan.load_processor
    monkeypatch.setattr(hf_plan, "load_processor", lambda *a, **k: loads.append(a) or real(*a, **k))
    cfg = dataclasses.replace(_cfg(tmp_path), hf="smolvlm_256m", memory_headroom=1000.0)
    first = run_point(cfg, in_grid=False)  # measured: skipped by the memory check, after the processor's count
    assert (first["status"], first["resumed"], len(loads)) == ("skipped", False, 1)
    again = run_point(cfg, in_grid=False)
    assert (again["status"], again["resumed"], len(loads)) == ("skipped", True, 1)
