"""transformers VLMs as sweep points (``hf=NAME`` / ``hf=PATH``, bench.models.hf).

Every family is built at full width and two layers through the same path a user's folder takes
(``hf=PATH``), measured by the real CLI in one shared sweep, and checked against an independent
reading of its own processor: tokens, the stage split against TTFT, decode on the model's own
cache, FLOPs per stage. Tying, buffers, real safetensors weights and bad input are checked on
their own.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from helpers_hf import SHIPPED, two_layer

# serial (tests/conftest.py), the tests of the shared sweep (hf_sweep, measured by the first of
# them): stages must sum to TTFT within 5 % in the same iterations; a neighbour's work would
# distort it. The others check tokens, weights and errors, not times, and run beside other tests.

FAMILIES = ("llava_onevision_0.5b", "qwen2_5_vl_3b", "smolvlm_256m", "fastvlm_0.5b", "gemma3_4b")
QUICK = ["sweep=none", "report=false", "timing=quick", "measure_peak=false"]


@pytest.fixture(scope="session")
def hf_sweep(tmp_path_factory):
    """One real multirun over the five families (two layers each) at 384 px, 3 output tokens."""
    base = tmp_path_factory.mktemp("hf")
    folders = [two_layer(name, base / "models") for name in FAMILIES]
    p = run_cli(["-m", *QUICK, "name=hf", f"results_dir={base}", "hf=" + ",".join(map(str, folders)),
                 "resolution=384", "decode_tokens=3"], cwd=base, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    recs = {}
    for f in (base / "hf" / "records").glob("*.json"):
        r = json.loads(f.read_text())
        recs[r["config"]["hf"].rsplit("/", 1)[-1]] = r
    return folders, recs


def _processor_count(folder, size):
    """The placeholder count, read independently of the harness: the folder's own processor on
    a ``size`` x ``size`` image with the shipped image-token text."""
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    proc = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    meta = json.loads((folder / "fastvlm_bench.json").read_text())
    out = proc(images=[Image.new("RGB", (size, size), (120, 80, 40))], text=[meta["image_token"] + " w1"],
               return_tensors="pt")
    tid = getattr(cfg, "image_token_id", None) or cfg.image_token_index
    return int((out["input_ids"] == tid).sum())


def test_shipped_folders_equal_the_generator(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_hf_systems.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.serial
@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_measures_its_processors_tokens_and_stages(hf_sweep, name):
    folders, recs = hf_sweep
    r = recs[name]
    assert r["status"] == "ok", r["message"]
    folder = [f for f in folders if f.name == name][0]
    assert r["visual_tokens"] == _processor_count(folder, 384)
    assert r["visual_tokens_measured"] == r["visual_tokens"]  # what the forward scattered
    assert r["config"]["encoder"] == r["config"]["llm"] == f"hf:{name}"
    info = r["hf_info"]
    assert info["weights"] == "placeholder" and info["llm_layers"] == 2
    assert info["class"].endswith("ForConditionalGeneration")
    assert r["params"]["vision"] > 0 and r["params"]["llm"] > 0
    s = {k: v["median"] for k, v in r["stages"].items()}
    parts = sum(s[k] for k in ("vision_latency", "projector", "merge", "prefill") if k in s)
    # TTFT is the model's own forward end to end; the hooked stages inside it sum to it
    assert abs(parts - s["ttft"]) <= 0.05 * s["ttft"], (s, parts)
    assert s["vision_latency"] > 0 and s["prefill"] > 0
    # decode on the model's own cache: 2 steps per iteration, after the first token
    assert r["stages"]["decode"]["n"] == r["stages"]["ttft"]["n"]
    assert len(r["stages"]["itl"]["samples"]) == 2 * r["stages"]["ttft"]["n"]
    assert s["e2e"] > s["ttft"]
    f = r["flops"]
    assert f["ttft"] >= f["vision_latency"] > 0 and f["prefill"] > 0


@pytest.mark.serial
def test_onevision_384_gives_1485_tokens_from_the_forward(hf_sweep):
    """The issue's headline: OneVision at 384 px is 1485 visual tokens (729 base + 729 grid, unpad,
    newlines), from the processor, equal to what the model's forward fills."""
    r = hf_sweep[1]["llava_onevision_0.5b"]
    assert r["visual_tokens"] == r["visual_tokens_measured"] == 1485
    assert set(r["stages"]) >= {"preprocess", "vision_latency", "projector", "merge", "prefill", "ttft"}


def test_tied_weights_stay_tied_and_buffers_are_initialised(tmp_path):
    import torch

    from bench.models.hf import resolve_source
    from bench.models.hf.model import build_model
    from bench.models.materialize import count_parameters

    src = resolve_source(str(two_layer("llava_onevision_0.5b", tmp_path)))
    model, config, parts, _ = build_model(src, torch.device("cpu"), torch.float32, "sdpa", 1 << 40, 1.0, 2000, 1,
                                          RuntimeError)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    untied = sum(p.numel() for p in model.parameters()) + model.lm_head.weight.numel()
    assert count_parameters(model) == untied - model.lm_head.weight.numel()
    pos = parts.vision.embeddings.position_ids
    assert torch.equal(pos[0], torch.arange(pos.shape[1]))
    rot = parts.language_model.rotary_emb
    dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    theta = json.loads((src.folder / "config.json").read_text())["text_config"]["rope_theta"]  # the published 1e6
    want = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    assert torch.allclose(rot.inv_freq, want)
    counts = parts.counts(model)
    assert counts["vision"] + counts["projector"] + counts["llm"] == count_parameters(model)


def test_real_safetensors_weights_load_from_the_folder(tmp_path):
    """A folder with weights loads them through transformers' from_pretrained: the model the
    harness times carries the written values, and the record says ``loaded``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = two_layer("llava_onevision_0.5b", tmp_path)
    c = json.loads((folder / "config.json").read_text())
    c["text_config"].update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    c["vision_config"].update(hidden_size=64, intermediate_size=128, num_attention_heads=4)
    (folder / "config.json").write_text(json.dumps(c))
    torch.manual_seed(123)
    real = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(folder)))
    real.save_pretrained(str(folder))
    assert list(folder.glob("*.safetensors"))
    from bench.models.hf import resolve_source
    from bench.models.hf.model import build_model

    model, *_ = build_model(resolve_source(str(folder)), torch.device("cpu"), torch.float32, "sdpa", 1 << 40, 1.0,
                            2000, 1, RuntimeError)
    got = model.model.multi_modal_projector.linear_1.weight
    assert torch.equal(got, real.model.multi_modal_projector.linear_1.weight)
    p = run_cli([*QUICK, "count_flops=false", f"results_dir={tmp_path}", f"hf={folder}", "image_size=96x64"],
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(next((tmp_path / "adhoc" / "records").glob("*.json")).read_text())
    assert r["status"] == "ok" and r["hf_info"]["weights"] == "loaded"
    # a non-square image: recorded as such, its tokens the processor's for that shape
    assert r["config"]["image_size"] == "96x64" and r["config"]["resolution"] == 96
    assert r["visual_tokens"] == r["visual_tokens_measured"]


def test_llava_next_tokens_equal_our_tiling_and_its_own_features(tmp_path):
    """LLaVA-NeXT (the 7B is too slow to time here): the processor's count equals our
    anyres_next plan for the same image, and the model's own image features have that many."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor

    from bench.models.hf import resolve_source
    from bench.models.hf.model import build_model
    from bench.models.tiling import make_plan

    folder = two_layer("llava_next_7b", tmp_path)
    for w, h in ((672, 672), (1000, 600)):
        n_proc = _processor_count_wh(folder, w, h)
        plan = make_plan("vit_l14", max(w, h), "anyres_next", 336, None if w == h else f"{w}x{h}")
        assert n_proc == plan.tokens, (w, h, n_proc, plan.tokens)
    model, *_ = build_model(resolve_source(str(folder)), torch.device("cpu"), torch.float32, "sdpa", 1 << 40, 1.0,
                            4000, 1, RuntimeError)
    proc = AutoProcessor.from_pretrained(str(folder))
    inp = proc(images=[Image.new("RGB", (1000, 600))], text=["<image> w1"], return_tensors="pt")
    with torch.inference_mode():
        feats = model.model.get_image_features(pixel_values=inp["pixel_values"], image_sizes=inp["image_sizes"])
    from bench.measure.hf_point import _count_features

    assert _count_features(feats) == _processor_count_wh(folder, 1000, 600)


def _processor_count_wh(folder, w, h):
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    out = proc(images=[Image.new("RGB", (w, h))], text=["<image> w1"], return_tensors="pt")
    return int((out["input_ids"] == 32000).sum())


@pytest.mark.parametrize("setup,args,expect", [
    ("noconfig", [], "has no config.json"),
    ("unknown_type", [], "model_type 'no_such_vlm'"),
    ("text_only", [], "not an image-text-to-text model"),
    ("missing", [], "no shipped system of that name"),
    ("ok", ["tiling=anyres_next"], "does not apply to hf="),
    ("ok", ["reduction=pool", "reduction.tokens=16"], "not supported on hf= points"),
    ("ok", ["min_pixels=0"], "min_pixels must be a positive"),
    ("onevision", ["max_pixels=50176"], "has no min/max pixels"),
])
def test_bad_hf_input_is_one_line_and_exit_2(tmp_path, setup, args, expect):
    folder = tmp_path / "m"
    folder.mkdir()
    if setup == "unknown_type":
        (folder / "config.json").write_text(json.dumps({"model_type": "no_such_vlm"}))
    elif setup == "text_only":
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64,
                                                        "num_attention_heads": 4, "num_hidden_layers": 1}))
    elif setup == "ok":
        folder = two_layer("qwen2_5_vl_3b", tmp_path / "x")
    elif setup == "onevision":
        folder = two_layer("llava_onevision_0.5b", tmp_path / "x")
    hf = "no_such_system" if setup == "missing" else str(folder)
    p = run_cli([*QUICK, f"results_dir={tmp_path / 'r'}", f"hf={hf}", *args], cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert expect in lines[-1] and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not list((tmp_path / "r").rglob("records/*.json"))  # nothing half-written


def test_a_model_too_big_for_memory_is_skipped_with_the_figure(tmp_path):
    p = run_cli([*QUICK, f"results_dir={tmp_path}", "hf=llava_next_7b", "memory_headroom=1000"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(next((tmp_path / "adhoc" / "records").glob("*.json")).read_text())
    assert r["status"] == "skipped" and "GiB" in r["message"] and "parameters" in r["message"]


def test_lmms_eval_results_of_the_same_model_join_every_measured_size(tmp_path):
    """An lmms-eval run of the deployed model (``--model llava_hf --model_args pretrained=<repo>``)
    keys to the hf point; its score holds for each measured image size of that model."""
    import pandas as pd

    from bench.accuracy.lmms_import import import_results
    from bench.analysis.join import join_efficiency_accuracy

    res = tmp_path / "lmms" / "llava-hf__llava-onevision-qwen2-0.5b-ov-hf" / "20261206_120000_results.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps({
        "results": {"pope": {"alias": "pope", "pope_accuracy,none": 0.871}},
        "config": {"model": "llava_hf", "model_args": "pretrained=llava-hf/llava-onevision-qwen2-0.5b-ov-hf"},
        "date": "20261206_120000"}))
    rep = import_results([tmp_path / "lmms"])
    assert not rep.problems, rep.problems
    acc = rep.rows
    assert list(acc["encoder"]) == ["hf:llava_onevision_0.5b"] and list(acc["resolution"]) == [0]
    results = pd.DataFrame({"encoder": ["hf:llava_onevision_0.5b"] * 2 + ["fastvithd"], "resolution": [384, 768, 384],
                            "llm": ["hf:llava_onevision_0.5b"] * 2 + ["qwen2_0.5b"], "status": ["ok"] * 3,
                            "ttft_ms": [1.0, 2.0, 3.0]})
    joined, um_res, um_acc = join_efficiency_accuracy(results, acc)
    assert sorted(joined["resolution"]) == [384, 768] and math.isclose(joined["accuracy"].iloc[0], 87.1)
    assert list(um_res["encoder"]) == ["fastvithd"] and not len(um_acc)


def test_fidelity_points_name_the_shipped_pairs():
    """sweeps/fidelity_point/*: each shipped pair's two sides, the composed side as the shipped
    folder names it (one source of truth for the fidelity table's pairing)."""
    import yaml

    group = ROOT / "sweeps" / "fidelity_point"
    sides = {p.stem: yaml.safe_load(p.read_text()) for p in group.glob("*.yaml")}
    for meta_path in SHIPPED.glob("*/fastvlm_bench.json"):
        meta = json.loads(meta_path.read_text())
        if not meta.get("composed"):
            continue
        hf = [s for s in sides.values() if s.get("hf") == meta_path.parent.name]
        assert len(hf) == 1, meta_path.parent.name
        ours = [s for s in sides.values() if not s.get("hf") and s["resolution"] == hf[0]["resolution"]
                and {"override /encoder": meta["composed"]["encoder"]} in s["defaults"]]
        assert len(ours) == 1, meta_path.parent.name


@pytest.mark.serial
def test_resume_report_compare_and_gate_work_on_hf_points(hf_sweep, tmp_path):
    """The same command again re-measures nothing; report, compare and the gate's token check
    read hf rows like any other (the gate's count is the processor's, checked against the forward)."""
    import shutil

    folders, recs = hf_sweep
    src = folders[0].parent.parent / "hf"
    res = tmp_path / "res"
    shutil.copytree(src, res / "hf")
    p = run_cli(["-m", *QUICK, "name=hf", f"results_dir={res}", "hf=" + ",".join(map(str, folders)),
                 "resolution=384", "decode_tokens=3"], cwd=tmp_path)
    assert p.returncode == 0 and (p.stdout + p.stderr).count("already measured") == len(FAMILIES), p.stderr[-3000:]
    p = run_cli(["report", str(res / "hf"), "--out", str(tmp_path / "rep")])
    assert p.returncode == 0, p.stderr[-3000:]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "hf:qwen2_5_vl_3b" in html
    gate = tmp_path / "gate.yaml"
    gate.write_text("sweep: hf\ntarget: hf:qwen2_5_vl_3b\nselect: {dtype: fp32}\ncheck_visual_tokens: true\n")
    p = run_cli(["gate", str(res / "hf"), "--config", str(gate)])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "visual_tokens" in p.stdout
    p = run_cli(["compare", str(res / "hf"), str(res / "hf")])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]


def test_min_and_max_pixels_bound_qwens_tokens():
    """max_pixels / min_pixels reach Qwen2.5-VL's smart_resize: a 448 px image is 256 tokens by
    default, 64 under max_pixels = 224^2, 361 over min_pixels = 512^2 (19 x 19 merged patches)."""
    import torch
    from PIL import Image

    from bench.models.hf import resolve_source
    from bench.models.hf.inputs import load_processor, make_inputs, prompt_text, token_counts

    src = resolve_source("qwen2_5_vl_3b")
    got = []
    for mn, mx in ((None, None), (None, 224 * 224), (512 * 512, None)):
        p = load_processor(src, mn, mx)
        inp = make_inputs(p, [Image.new("RGB", (448, 448))], prompt_text(src, p, 4), torch.device("cpu"), torch.float32)
        got.append(token_counts(p, inp, 151655, (448, 448))["placeholders"])
    assert got == [256, 64, 361]
