"""Token reduction (bench.models.reduction): tokens reaching the LLM, FLOPs, ids, core steps."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from bench.config import BenchConfig, ConfigError, EncoderConf, LLMConf, validate
from bench.measure.plan import resolve_plan, resolve_point
from bench.measure.scenario import _count_stage_flops, _write_tokens
from bench.models import build_vlm, get_encoder_spec
from bench.models.pipeline import Flow, build_pipeline
from bench.models.reduction import REDUCTIONS, point_params
from bench.models.reduction.fastv import FastVConf, fastv_topk
from bench.models.reduction.pool import PoolConf
from bench.models.reduction.random import RandomConf
from bench.models.reduction.tome import ToMeConf, bipartite_soft_matching, merge_wavg
from bench.models.reduction.visionzip import VisionZipConf, visionzip_select
from bench.results.records import POINT_KEYS, PointConfig, Record

RES = 96  # tiny_vit: 6 x 6 = 36 tokens


def _cfg(red=None, **kw) -> BenchConfig:
    extra = {"reduction": red} if red is not None else {}
    kw.setdefault("resolution", RES)
    return BenchConfig(encoder=EncoderConf(kw.pop("encoder", "tiny_vit")), llm=LLMConf("qwen2_tiny"),
                       device="cpu", **extra, **kw)


@pytest.fixture(scope="module")
def tiny():
    vlm, _ = build_vlm("tiny_vit", "qwen2_tiny", RES, "cpu", "fp32")
    pixels = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    return vlm, pixels, vlm.prompt_ids(1, 8)


def _run(tiny, red):
    """Tokens reaching the LLM on a real run, the analytic count and the stage FLOPs."""
    vlm0, pixels, ids = tiny
    vlm, _ = build_vlm("tiny_vit", "qwen2_tiny", RES, "cpu", "fp32")  # apply may wrap the encoder
    vlm.llm = vlm0.llm
    cfg = _cfg(red)
    validate(cfg)
    plan = resolve_plan(cfg)
    point = plan.point
    rec = Record(sweep="t", config=point)
    _write_tokens(plan, rec)
    pipe = build_pipeline(vlm, point, plan.pipeline_parts)
    with torch.inference_mode():
        flow = pipe(Flow(pixels, ids))
        flops = _count_stage_flops(point, pipe, Flow(pixels, ids))
    assert torch.isfinite(flow.logits).all()
    return int(flow.embeds.shape[1]), rec, flops, pipe.owners()


_BASE: dict = {}


def _base(tiny):
    """The point without reduction (run once for every test)."""
    if not _BASE:
        _BASE["run"] = _run(tiny, None)
    return _BASE["run"]


CASES = {  # method -> (a setting, one that reduces more, tokens reaching the LLM at the first)
    "pool": (PoolConf(), PoolConf(tokens=4), 9),
    "random": (RandomConf(tokens=20), RandomConf(tokens=8), 20),
    "tome": (ToMeConf(r=4), ToMeConf(r=8), 36 - 8),
    "visionzip": (VisionZipConf(dominant=12, contextual=6), VisionZipConf(dominant=5, contextual=3), 18),
    "fastv": (FastVConf(k=1, ratio=0.25), FastVConf(k=1, ratio=0.75), 36),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tokens_to_llm_and_flops_fall(tiny, name):
    low, high, tokens = CASES[name]
    got, rec, flops, owners = _run(tiny, low)
    assert got == rec.visual_tokens == tokens and rec.visual_tokens_encoder == 36
    assert f"reduction:{name}" in owners.values()
    got_hi, _, flops_hi, _ = _run(tiny, high)
    assert got_hi <= got and flops_hi["ttft"] < flops["ttft"]
    base = _base(tiny)
    assert base[1].visual_tokens == 36 and base[1].visual_tokens_encoder is None
    if name == "fastv":  # fewer tokens per layer from layer K on, fewer prefill FLOPs
        assert rec.llm_visual_tokens_per_layer == [36, 27]
        assert flops["prefill"] < base[2]["prefill"]


def test_fastv_mask_saves_nothing(tiny):
    _, rec, flops, _ = _run(tiny, FastVConf(name="fastv_mask", k=1, ratio=0.75))
    _, _, base, _ = _base(tiny)
    assert rec.llm_visual_tokens_per_layer == [36, 36]
    assert flops["prefill"] >= base["prefill"]  # every token computed, plus the eager layer


def test_none_keeps_records_and_ids():
    point = resolve_point(_cfg())
    assert (point.reduction, point.reduction_params) == ("none", None)
    old = [k for k in POINT_KEYS if k not in ("reduction", "reduction_params")]
    plain = PointConfig("tiny_vit", RES, "qwen2_tiny", "fp32", "cpu")
    # the id as it was before the keys existed, for the default point (pins "none" to today's id)
    from bench.results.records import _LATER_KEYS

    knobs = {k: getattr(plain, k) for k in old if not (k in _LATER_KEYS and getattr(plain, k) == _LATER_KEYS[k])}
    assert plain.point_id() == hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:12]
    pts = {resolve_point(_cfg(c)).point_id() for c in (None, ToMeConf(r=4), ToMeConf(r=5), PoolConf())}
    assert len(pts) == 4
    assert point_params(ToMeConf(r=4)) == '{"prop_attn": true, "r": 4, "tokens": 0}'


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match="tome works inside ViT blocks; fastvithd is a conv encoder"):
        validate(_cfg(ToMeConf(), encoder="fastvithd", resolution=256))
    with pytest.raises(ConfigError, match="needs a class token"):
        validate(_cfg(VisionZipConf(), encoder="siglip_so400m", resolution=384))
    with pytest.raises(ConfigError, match="cannot run under torch.compile"):
        validate(_cfg(FastVConf(k=1), compile=True))
    with pytest.raises(ConfigError, match="reduction.k must be in 1..1"):
        validate(_cfg(FastVConf()))  # K=2 on a 2-layer LLM
    # encoder-only points (llm=none): methods inside the encoder only
    only = dict(llm=LLMConf("none"))
    with pytest.raises(ConfigError, match="pool works on the LLM's input; llm=none"):
        validate(BenchConfig(encoder=EncoderConf("tiny_vit"), resolution=RES, device="cpu", reduction=PoolConf(), **only))
    validate(BenchConfig(encoder=EncoderConf("tiny_vit"), resolution=RES, device="cpu", reduction=ToMeConf(r=4), **only))


def test_tome_merge_hand_worked():
    # 6 tokens, class token first; A = tokens 0, 2, 4 and B = 1, 3, 5. Cosine similarities:
    # token 2 -> (1: 0, 3: 1, 5: 0), token 4 -> (1: .6, 3: .8, 5: .6); token 0 is protected (-inf).
    # r = 2 merges the two best edges, 2->3 (1.0) and 4->3 (0.8): both into token 3.
    metric = torch.tensor([[[1., 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, .6, .8], [0, 1, 0]]])
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1) * 10  # token values 0, 10, ..., 50
    merge = bipartite_soft_matching(metric, 2, class_token=True)
    out, size = merge_wavg(merge, x)
    # unmerged A (the class token 0), then B: 1 alone, 3 = mean(20, 30, 40), 5 alone
    assert out.flatten().tolist() == [0.0, 10.0, 30.0, 50.0]
    assert size.flatten().tolist() == [1.0, 1.0, 3.0, 1.0]
    # sizes weight the mean: 3 tokens of sizes (1, 1, 2), A = 0, 2 and B = 1; token 2 is like 1,
    # so 1 becomes (10 * 1 + 40 * 2) / 3 = 30 with size 3; token 0 stays
    m2 = bipartite_soft_matching(torch.tensor([[[1., 0], [0, 1], [0, 1]]]), 1)
    out2, size2 = merge_wavg(m2, torch.tensor([[[0.], [10.], [40.]]]), torch.tensor([[[1.], [1.], [2.]]]))
    assert size2.flatten().tolist() == [1.0, 3.0] and out2.flatten().tolist() == [0.0, 30.0]


def test_visionzip_select_hand_worked():
    # class token + 6 patches; class-token attention (summed over 2 heads) ranks patches 4 and 2
    # highest: dominant=3 keeps the class token, 2 and 4 (original order).
    t = 7
    attn = torch.zeros(1, 2, t, t)
    attn[0, :, 0, 1:] = torch.tensor([.05, .3, .05, .4, .1, .1])
    hidden = torch.arange(t, dtype=torch.float32).reshape(1, t, 1) * torch.ones(1, 1, 2)
    # rest = tokens 1, 3, 5, 6; contextual=2 -> step 2, targets rest[0]=1 and rest[2]=5;
    # token 3 is most like 1, token 6 most like 5
    metric = torch.tensor([[[0., 0], [1, 0], [0, 0], [1, .1], [0, 0], [0, 1], [.1, 1]]])
    out = visionzip_select(hidden, attn, metric, dominant=3, contextual=2)
    assert out[0, :, 0].tolist() == [0.0, 2.0, 4.0, 1.0 + 3.0, 5.0 + 6.0]  # target + mean of absorbed


def test_fastv_topk_hand_worked():
    # 2 heads, 4 visual tokens then 2 text tokens; the last token's mean attention over visual
    # tokens is (0.1, 0.35, 0.05, 0.3): keep=2 keeps 1 and 3
    w = torch.zeros(1, 2, 6, 6)
    w[0, 0, -1, :4] = torch.tensor([.2, .3, .0, .4])
    w[0, 1, -1, :4] = torch.tensor([.0, .4, .1, .2])
    assert fastv_topk(w, 4, 2).tolist() == [[1, 3]]
    assert fastv_topk(w, 4, 3).tolist() == [[0, 1, 3]]


def test_every_method_is_a_hydra_option():
    from hydra.core.config_store import ConfigStore

    from bench.config import register_configs

    register_configs()
    repo = ConfigStore.instance().repo
    assert set(REDUCTIONS.names()) <= {n[:-5] for n in repo["reduction"]}
    assert math.isclose(REDUCTIONS.get("fastv").Conf().ratio, 0.5) and REDUCTIONS.get("fastv").Conf().k == 2


def test_budget_knob_and_sweep_resolutions():
    from bench.app import resolution_for_tokens
    from bench.models.reduction.visionzip import split

    # one budget (reduction.tokens) for every method; VisionZip splits it as its README's 54 : 10
    assert [split(VisionZipConf(tokens=t)) for t in (64, 128, 192)] == [(54, 10), (108, 20), (162, 30)]
    assert REDUCTIONS.get("fastv").tokens_to_llm(FastVConf(tokens=144), 576, None) == 576
    assert REDUCTIONS.get("fastv").llm_tokens_per_layer(FastVConf(tokens=144), 576, 24) == [576] * 2 + [144] * 22
    # the resolution lines of sweep=token_reduction hit the same budgets
    assert [resolution_for_tokens("fastvithd", t) for t in (64, 144, 256)] == [512, 768, 1024]
    assert [get_encoder_spec("vit_l14").num_tokens(resolution_for_tokens("vit_l14", t)) for t in (64, 144, 256)] \
        == [64, 144, 256]
    for t in (64, 144, 256):  # every method lands on the budget at ViT-L/14@336
        for name in ("pool", "random", "tome", "visionzip"):
            conf = REDUCTIONS.get(name).Conf(name=name, tokens=t)
            assert not validate(_cfg(conf, encoder="vit_l14", resolution=336))
            assert REDUCTIONS.get(name).tokens_to_llm(conf, 576, get_encoder_spec("vit_l14")) == t


def test_reduction_figures(tmp_path):
    import pandas as pd

    from bench.report import reduction_figures as R
    from bench.report.figures import plotting

    rows = [dict(encoder="fastvithd", resolution=r, reduction="none", visual_tokens=t, ttft_ms=ms,
                 reduction_overhead_ms=None, reduction_overhead_in=None)
            for r, t, ms in ((512, 64, 90.0), (768, 144, 160.0))]
    rows += [dict(encoder="vit_l14", resolution=336, reduction="tome", visual_tokens=t, ttft_ms=ms,
                  reduction_overhead_ms=3.0, reduction_overhead_in="vision_latency") for t, ms in ((64, 900.), (144, 1000.))]
    with plotting():
        assert R.ttft_vs_llm_tokens_figure(pd.DataFrame(rows[:2]), tmp_path) == []  # no method: no figure
        (png, caption), = R.ttft_vs_llm_tokens_figure(pd.DataFrame(rows), tmp_path)
        (png2, _), = R.reduction_overhead_figure(pd.DataFrame(rows), tmp_path)
    assert png.stat().st_size > 1000 and png2.stat().st_size > 1000 and "reach the LLM" in caption


def test_cli_reduction_records_and_refusal(tmp_path):
    from conftest import TINY, run_cli

    res = tmp_path / "results"
    bad = run_cli([*TINY, "name=r", f"results_dir={res}", "encoder=tiny_convnext", "resolution=64",
                   "reduction=tome"])
    assert bad.returncode == 2 and "tome works inside ViT blocks" in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = run_cli([*TINY, "name=r", f"results_dir={res}", "encoder=tiny_vit", f"resolution={RES}",
                  "reduction=tome", "reduction.r=4", "count_flops=false", "measure_peak=false"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    t, = [json.loads(p.read_text()) for p in (res / "r" / "records").glob("*.json")]
    assert t["config"]["reduction"] == "tome" and json.loads(t["config"]["reduction_params"])["r"] == 4
    assert t["visual_tokens"] == t["visual_tokens_measured"] == 28 and t["visual_tokens_encoder"] == 36
    assert t["pipeline"]["vision_latency"] == "reduction:tome" and t["reduction_overhead_in"] == "vision_latency"
    assert t["reduction_overhead_ms"] is not None and t["status"] == "ok"


def test_lmms_plugin_takes_the_knob(tmp_path):
    from PIL import Image

    from bench.accuracy.lmms_plugin import FastVLMBench
    from helpers_checkpoint import word_level_tokenizer

    tok_dir = tmp_path / "tok"
    word_level_tokenizer(["what", "color", "red", "?"]).save_pretrained(tok_dir)
    args = dict(encoder="tiny_vit", llm="qwen2_tiny", resolution=str(RES), tokenizer=str(tok_dir), device="cpu",
                dtype="fp32", timings_out=str(tmp_path / "t.json"))
    m = FastVLMBench(reduction="pool", **{"reduction.tokens": "16"}, **args)
    m._respond("what color ?", {"max_new_tokens": 2}, [Image.new("RGB", (RES, RES), (200, 0, 0))], "t", 0)
    sample = m.samples[-1]
    assert sample["visual_tokens"] == 16 and sample["reduce_ms"] > 0
    assert m.timings_summary()["reduction_params"] == '{"tokens": 16}'
    with pytest.raises(ValueError, match="replaces the LLM's prefill"):
        FastVLMBench(reduction="fastv", **{"reduction.k": "1"}, **args)
    with pytest.raises(ValueError, match="works inside ViT blocks"):
        FastVLMBench(**{**args, "encoder": "tiny_convnext", "resolution": "64"}, reduction="tome")


def test_token_reduction_claims_match_their_rows():
    import pandas as pd

    from bench.analysis.claims import _rows, load_claims, sweep_points
    from bench.config import register_configs

    register_configs()  # the model groups the claims' points are checked against
    claims = load_claims("bench/data/claims/token_reduction.yaml")
    assert {c.baseline.reduction for c in claims} == set(REDUCTIONS.names()) - {"none"}
    points, left_out = sweep_points(claims)
    assert not left_out and "vit_l14_336_tome144_qwen2_0.5b" in points
    df = pd.DataFrame([dict(encoder="vit_l14", resolution=336, llm="qwen2_0.5b", reduction=r, reduction_params=p)
                       for r, p in (("none", None), ("tome", '{"tokens": 144}'), ("tome", '{"tokens": 64}'))])
    tome = next(c for c in claims if c.baseline.reduction == "tome").baseline
    assert _rows(df, tome)["reduction_params"].tolist() == ['{"tokens": 144}']
    plain = type(tome)("vit_l14", 336, "qwen2_0.5b")
    assert _rows(df, plain)["reduction"].tolist() == ["none"]
