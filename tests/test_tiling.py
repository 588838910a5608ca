"""Tiling (bench.models.tiling): token counts against transformers' own arithmetic and
processors, the merge against transformers' ``pack_image_features``, real forwards (tiny
models on the CPU, full-size towers on the meta device), ids of untiled points, a Hydra sweep."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bench.config import BenchConfig, ConfigError, EncoderConf, LLMConf, TilingConf, validate
from bench.models import build_vlm, get_encoder_spec
from bench.models.pipeline import Flow, build_pipeline
from bench.models.projector import build_projector
from bench.models.tiling import TileMerge, get_tiling, make_plan, placeholder_newline
from bench.models.tiling.base import select_best_resolution
from bench.results.records import PointConfig

from conftest import run_cli

# (width, height): square and not, small (1 tile) to huge (anyres_max_9's shrink), the
# sample photo's 512x600, and the sizes the papers quote (672 px NeXt, 1152 px OneVision)
NEXT_SIZES = [(672, 672), (336, 336), (1000, 1000), (512, 600), (800, 600), (600, 800), (1344, 336),
              (300, 1000), (1920, 1080), (100, 50), (1008, 336), (333, 777)]
OV_SIZES = [(1152, 1152), (384, 384), (2304, 2304), (512, 600), (1920, 1080), (1080, 1920), (4000, 1000),
            (640, 480), (800, 200), (3000, 3000), (333, 777), (1500, 1100)]
#: mode -> (encoder, tile px, tokens per tile, sizes)
MODES = {"anyres_next": ("vit_l14", 336, 576, NEXT_SIZES), "anyres_max_9": ("siglip_so400m", 384, 729, OV_SIZES)}


@pytest.fixture(scope="module")
def processors():
    """transformers' own processors, built offline: LLaVA-NeXT's as llava-hf/llava-v1.6 configures
    it (CLIP 336 crops, patch 14, the CLS counted then dropped), OneVision's with 729 tokens a tile."""
    from helpers_checkpoint import word_level_tokenizer
    from transformers import (LlavaNextImageProcessor, LlavaNextProcessor, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor)
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tok = word_level_tokenizer(["describe", "<image>", "<video>"], chat_template=False)
    nxt = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(size={"shortest_edge": 336},
                                                                     crop_size={"height": 336, "width": 336}),
                             tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                             num_additional_image_tokens=1)
    ov = LlavaOnevisionProcessor(image_processor=LlavaOnevisionImageProcessor(), tokenizer=tok,
                                 video_processor=LlavaOnevisionVideoProcessor(), num_image_tokens=729,
                                 vision_feature_select_strategy="full")
    return {"anyres_next": nxt, "anyres_max_9": ov, "image_token": tok.convert_tokens_to_ids("<image>")}


def test_pinpoints_are_the_released_configs():
    """LLaVA-NeXT's image_grid_pinpoints and OneVision's (1x1)..(6x6) of 384 px, as transformers'
    configs list them (height, width)."""
    from transformers import LlavaNextConfig, LlavaOnevisionConfig

    assert get_tiling("anyres_next").pinpoints(336) == LlavaNextConfig().image_grid_pinpoints
    assert get_tiling("anyres_max_9").pinpoints(384) == LlavaOnevisionConfig().image_grid_pinpoints


@pytest.mark.parametrize("mode", list(MODES))
def test_token_counts_match_transformers(mode, processors):
    """Per image size: the grid and tile count from the modeling helpers, the token count from
    the processor's arithmetic, and for three sizes the processor run on a real image."""
    import numpy as np
    from PIL import Image
    from transformers.image_processing_utils import select_best_resolution as hf_best
    from transformers.models.llava_next import modeling_llava_next as next_mod
    from transformers.models.llava_onevision import modeling_llava_onevision as ov_mod

    modeling = next_mod if mode == "anyres_next" else ov_mod
    encoder, tile, per_tile, sizes = MODES[mode]
    proc = processors[mode]
    pins = get_tiling(mode).pinpoints(tile)
    hf = proc._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in sizes]).num_image_tokens
    unpadded = shrunk = 0
    for (w, h), expected in zip(sizes, hf):
        plan = make_plan(encoder, max(w, h), mode, tile, f"{w}x{h}")
        assert (plan.best_h, plan.best_w) == hf_best((h, w), pins) == select_best_resolution((h, w), pins)
        assert (plan.rows, plan.cols) == modeling.get_anyres_image_grid_shape((h, w), pins, tile)
        assert plan.tiles == modeling.image_size_to_num_patches((h, w), pins, tile)
        assert plan.tile_tokens == per_tile
        assert plan.tokens == expected, (mode, w, h, plan)
        unpadded += plan.window[1:4:2] != (plan.rows * plan.side, plan.cols * plan.side)
        shrunk += plan.shrunk
    assert unpadded >= 3 and (mode == "anyres_next" or shrunk >= 3)
    # the quoted cases, by the implementations' arithmetic (the papers' tiles x tokens beside them)
    sq = make_plan(encoder, 672 if mode == "anyres_next" else 1152, mode, tile)
    assert (sq.tokens, sq.paper_tokens) == ((2928, 2880) if mode == "anyres_next" else (7371, 7290))
    # the processor on real pixels: as many <image> tokens, and tiles + base image in pixel_values
    rng = np.random.default_rng(0)
    for w, h in [sizes[0], (512, 600), sizes[4]]:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        out = proc(images=im, text="describe <image>", return_tensors="pt")
        plan = make_plan(encoder, max(w, h), mode, tile, f"{w}x{h}")
        assert int((out["input_ids"] == processors["image_token"]).sum()) == plan.tokens
        assert out["pixel_values"].shape[1:] == (plan.tiles, 3, tile, tile)


def _tiny_hf_model(mode: str, tile: int, patch: int, hidden: int):
    """A real transformers LLaVA-NeXT / OneVision model with tiny towers, whose
    pack_image_features is the reference for our merge."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextModel, LlavaOnevisionConfig,
                              LlavaOnevisionModel, SiglipVisionConfig)

    text = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2)
    vis = dict(image_size=tile, patch_size=patch, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
               num_attention_heads=2)
    pins = get_tiling(mode).pinpoints(tile)
    if mode == "anyres_next":
        return LlavaNextModel(LlavaNextConfig(vision_config=CLIPVisionConfig(**vis), text_config=text,
                                              image_grid_pinpoints=pins)).eval()
    return LlavaOnevisionModel(LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**vis), text_config=text,
                                                    image_grid_pinpoints=pins)).eval()


@pytest.mark.parametrize("mode,sizes", [("anyres_next", [(128, 128), (200, 90), (70, 180)]),
                                        ("anyres_max_9", [(384, 384), (300, 200), (64, 64), (380, 100)])])
def test_merge_matches_transformers_pack_image_features(mode, sizes):
    """Same projected tile features and newline in: the same embeddings out, value for value
    (unpad, newline per row, and OneVision's bilinear shrink), for a batch of two images."""
    tile, patch, hidden = 64, 16, 16
    model = _tiny_hf_model(mode, tile, patch, hidden)
    gen = torch.Generator().manual_seed(0)
    for w, h in sizes:
        plan = make_plan("tiny_vit", max(w, h), mode, tile, f"{w}x{h}")
        feats = torch.randn(2 * plan.tiles, plan.tile_tokens, hidden, generator=gen)
        merge = TileMerge(plan, model.image_newline.detach().clone())
        with torch.no_grad():
            ours = merge(feats)
            kw = {"vision_feature_select_strategy": "full"} if mode == "anyres_next" else {}
            ref, lens = model.pack_image_features(list(feats.split(plan.tiles)), torch.tensor([[h, w]] * 2),
                                                  image_newline=model.image_newline, **kw)
        assert ours.shape == (2, plan.tokens, hidden) and lens.tolist() == [plan.tokens] * 2
        for i in range(2):
            torch.testing.assert_close(ours[i], ref[i], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_vlm():
    vlm, _ = build_vlm("tiny_vit", "qwen2_tiny", 64, "cpu", "fp32")
    return vlm


def _point(encoder="tiny_vit", resolution=128, tiling="none", tile=None, image_size=None, batch=1):
    return PointConfig(encoder=encoder, resolution=resolution, llm="qwen2_tiny", dtype="fp32", device="cpu",
                       batch_size=batch, tiling=tiling, tile_size=tile, image_size=image_size)


@pytest.mark.parametrize("mode,w,h,batch", [("anyres_next", 128, 128, 1), ("anyres_next", 190, 64, 2),
                                            ("anyres_max_9", 384, 384, 1), ("anyres_max_9", 512, 600, 2)])
def test_real_forward_on_tiny_models_gives_the_count(tiny_vlm, mode, w, h, batch):
    """The pipeline as a sweep runs it (tiles cut from a real photo, the encoder on the batch of
    tiles, projector, merge, prefill): the LLM gets exactly the analytical count."""
    from bench.models.preprocess import load_sample_image
    from bench.models.tiling import source_image

    point = _point(resolution=max(w, h), tiling=mode, tile=64, image_size=None if w == h else f"{w}x{h}",
                   batch=batch)
    plan = make_plan(point.encoder, point.resolution, mode, 64, point.image_size)
    pipe = build_pipeline(tiny_vlm, point)
    assert pipe.names() == ["vision_latency", "projector", "merge", "prefill"]
    assert pipe.owners()["merge"] == mode and pipe.preprocess_owner == mode
    pixels = pipe.preprocess([source_image(point, load_sample_image())] * batch)
    assert pixels.shape == (batch * plan.tiles, 3, 64, 64)
    with torch.inference_mode():
        flow = pipe(Flow(pixels, tiny_vlm.prompt_ids(batch, 4)))
    assert flow.feats.shape[:2] == (batch * plan.tiles, plan.tile_tokens)
    assert flow.embeds.shape == (batch, plan.tokens, 64) and torch.isfinite(flow.embeds).all()
    assert flow.token.shape == (batch,)


@pytest.mark.parametrize("mode,encoder,w,h", [("anyres_next", "vit_l14", 672, 672), ("anyres_next", "vit_l14", 1000, 600),
                                              ("anyres_max_9", "siglip_so400m", 1152, 1152),
                                              ("anyres_max_9", "siglip_so400m", 2304, 1296),
                                              ("anyres_max_9", "siglip_so400m", 512, 600)])
def test_full_size_forward_on_meta_gives_the_count(mode, encoder, w, h):
    """CLIP ViT-L/14-336 and SigLIP-SO400M/14@384 as built for a sweep, on the meta device (shapes
    only): the encoder on all tiles, the projector to Qwen2-0.5B's width, the merge."""
    spec = get_encoder_spec(encoder)
    plan = make_plan(encoder, max(w, h), mode, spec.native_resolution, None if w == h else f"{w}x{h}")
    with torch.device("meta"):
        enc = spec.build(plan.tile).eval()
        proj = build_projector("mlp2x_gelu", spec.channels, 896)
    merge = TileMerge(plan, placeholder_newline(896, "meta", torch.float32))
    with torch.no_grad():
        out = merge(proj(enc(torch.empty(plan.tiles, 3, plan.tile, plan.tile, device="meta"))))
    assert out.shape == (1, plan.tokens, 896)
    if w == h:
        assert plan.tokens == (2928 if mode == "anyres_next" else 7371)


def test_tiling_none_keeps_point_ids_and_the_path(tiny_vlm):
    """Untiled points: the ids measured before tiling existed, today's three stages, the same
    pixels as before (the crop of the photo) and the encoder's own token count."""
    from bench.measure.scenario import resolve_point
    from bench.models.preprocess import load_sample_image

    assert PointConfig(encoder="fastvithd", resolution=1024, llm="qwen2_0.5b", dtype="fp32", device="cpu",
                       threads=2).point_id() == "d72f867a8b48"
    assert PointConfig(encoder="vit_l14", resolution=336, llm="qwen2_0.5b", dtype="bf16", device="cuda", tf32=False,
                       cudnn_benchmark=True).point_id() == "8780727f846a"
    # allocator=glibc: the process state the pinned id was measured in (issue 33's default is glibc_held)
    p = resolve_point(BenchConfig(encoder=EncoderConf("fastvithd"), llm=LLMConf("qwen2_0.5b"), device="cpu", threads=2,
                                  allocator="glibc"))
    assert (p.tiling, p.tile_size, p.image_size, p.point_id()) == ("none", None, None, "d72f867a8b48")
    tiled = resolve_point(BenchConfig(encoder=EncoderConf("vit_l14"), llm=LLMConf("qwen2_0.5b"), device="cpu",
                                      resolution=672, tiling=TilingConf("anyres_next")))
    assert (tiled.tiling, tiled.tile_size, tiled.image_size) == ("anyres_next", 336, None)
    assert tiled.point_id() != PointConfig(**{**tiled.__dict__, "tiling": "none", "tile_size": None}).point_id()
    photo = resolve_point(BenchConfig(encoder=EncoderConf("siglip_so400m"), llm=LLMConf("qwen2_0.5b"), device="cpu",
                                      tiling=TilingConf("anyres_max_9"), image_size="photo"))
    assert (photo.resolution, photo.image_size, photo.tile_size) == (600, "512x600", 384)

    point = _point()
    pipe = build_pipeline(tiny_vlm, point)
    assert pipe.names() == ["vision_latency", "projector", "prefill"] and set(pipe.owners().values()) == {"vlm"}
    images = [load_sample_image()]
    assert torch.equal(pipe.preprocess(images), tiny_vlm.preprocess(images))
    assert make_plan("tiny_vit", 128) is None


@pytest.mark.parametrize("kw,match", [({"image_size": "600x400"}, "needs a tiling mode"),
                                      ({"image_size": "600by400", "tiling": TilingConf("anyres_next")}, "WxH"),
                                      ({"tiling": TilingConf("anyres_nxt")}, "unknown tiling"),
                                      ({"tiling": TilingConf("anyres_next", tile=0)}, "tiling.tile")])
def test_bad_tiling_knobs_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        validate(BenchConfig(encoder=EncoderConf("tiny_vit"), llm=LLMConf("qwen2_tiny"), **kw))


def test_tiled_sweep_through_hydra_then_report_compare_gate(tmp_path):
    """A real multirun (tiny models, every mode at 128 px), its report, compare of the set with
    itself, and the gate's token check on the tiled rows."""
    from bench.cli import main as cli
    from bench.regress.checks import registry_token_count, row_token_count

    res = tmp_path / "results"
    r = run_cli(["-m", "sweep=none", "llm=qwen2_tiny", "timing=quick", "name=tiles", f"results_dir={res}",
                 f"reports_dir={tmp_path / 'reports'}", "encoder=tiny_vit", "measure_peak=false", "resolution=128",
                 "tiling=none,anyres_next,anyres_max_9"])
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(res / "tiles" / "results.csv")
    assert sorted(df.tiling) == ["anyres_max_9", "anyres_next", "none"]
    assert (df.status == "ok").all() and (df.visual_tokens == df.visual_tokens_measured).all()
    tiled, plain = df[df.tiling != "none"], df[df.tiling == "none"].iloc[0]
    assert tiled.merge_ms.notna().all() and pd.isna(plain.merge_ms) and pd.isna(plain.tiles)
    assert all("merge:anyres" in p for p in tiled.pipeline) and "merge" not in plain.pipeline
    assert (tiled.tile_size == 64).all() and set(tiled.tiling_grid) == {"2x2"} and set(tiled.tiles) == {5}
    for row in df.to_dict("records"):
        assert row_token_count(row, registry_token_count) == row["visual_tokens_measured"]
    assert (tmp_path / "reports" / "tiles" / "index.html").is_file()
    assert cli(["compare", str(res / "tiles"), str(res / "tiles"), "--metrics", "ttft,merge,visual_tokens",
                "--json", str(tmp_path / "cmp.json")]) == 0
    cmp = json.loads((tmp_path / "cmp.json").read_text())["comparison"]
    assert cmp["matched"] == 3 and not cmp["ambiguous_base"], cmp


def test_image_size_through_hydra_composes_to_the_photo_shape():
    """``tiling=anyres_max_9 image_size=photo`` as Hydra composes it: the photo's 512x600, with
    the longer side as resolution; a swept tiling defers the image_size check to each point."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bench.config import register_configs, sweeps_dir
    from bench.measure.scenario import resolve_point

    register_configs()
    with initialize_config_dir(config_dir=str(sweeps_dir()), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=["sweep=none", "encoder=siglip_so400m", "device=cpu",
                                                               "tiling=anyres_max_9", "image_size=photo"]))
    p = resolve_point(cfg)
    assert (p.tiling, p.tile_size, p.resolution, p.image_size) == ("anyres_max_9", 384, 600, "512x600")
    assert make_plan(p.encoder, p.resolution, p.tiling, p.tile_size, p.image_size).tokens == 3267  # transformers'
    cfg.tiling.name = "none"
    validate(cfg, swept=("tiling",))
    with pytest.raises(ConfigError, match="needs a tiling mode"):
        validate(cfg)
