"""LLaVA-style checkpoints: save/load round trips, sharding, ViT position-embedding resampling,
fused FastViT towers, FastVLM's MobileCLIP prefix and clear errors for bad checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from bench.models.checkpoint import (CheckpointError, LLAVA_PROJECTOR, LLAVA_TOWER, SAFE_INDEX, load_tokenizer,
                                     read_state_dict)
from helpers_checkpoint import save_checkpoint, word_level_tokenizer
from bench.models.vlm import build_vlm

WORDS = "what color is the picture red blue green yes no answer using a single word".split()


def _randomize(vlm, seed=0):
    """Distinct weights, so that a load that silently did nothing cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return vlm


def _build(encoder, res, llm="qwen2_tiny", **kw):
    return build_vlm(encoder, llm, res, device="cpu", dtype="fp32", **kw)[0]


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"weights differ after loading: {diff[:5]}"


@pytest.mark.parametrize("encoder,llm,shard", [("tiny_vit", "qwen2_tiny", None), ("tiny_convnext", "llama_tiny", 60_000)])
def test_round_trip_with_tokenizer(tmp_path, encoder, llm, shard):
    src = _randomize(_build(encoder, 64, llm))
    tok = word_level_tokenizer(WORDS)
    save_checkpoint(src, tmp_path, tokenizer=tok, max_shard_bytes=shard)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["fastvlm_bench"] == {"encoder": encoder, "llm": llm, "resolution": 64, "projector": "mlp2x_gelu",
                                    "tower_layout": "model.vision_tower.backbone.<timm keys>"}
    assert cfg["mm_hidden_size"] == src.encoder.channels
    if shard:
        index = json.loads((tmp_path / SAFE_INDEX).read_text())
        assert len(set(index["weight_map"].values())) > 1
    keys = read_state_dict(tmp_path).keys()
    assert {f"{LLAVA_PROJECTOR}0.weight", f"{LLAVA_PROJECTOR}2.bias"} <= set(keys)
    assert any(k.startswith(LLAVA_TOWER + "backbone.") for k in keys)
    assert any(k.startswith("model.layers.0.") for k in keys)
    assert ("lm_head.weight" in keys) == (llm == "llama_tiny")  # tied for qwen2_tiny: not saved

    dst = _build(encoder, 64, llm, checkpoint=str(tmp_path))
    _assert_same_weights(src, dst)
    if llm == "qwen2_tiny":  # tied embeddings stay tied
        assert dst.llm.lm_head.weight.data_ptr() == dst.llm.get_input_embeddings().weight.data_ptr()

    loaded = load_tokenizer(tmp_path)
    ids = loaded("what color is the picture")["input_ids"]
    assert loaded.decode(ids) == "what color is the picture"
    assert loaded.eos_token_id == 2 and loaded.chat_template


def test_pos_embed_resampled_at_another_resolution(tmp_path):
    src = _randomize(_build("tiny_vit", 64))  # 4x4 grid
    save_checkpoint(src, tmp_path)
    dst = _build("tiny_vit", 96, checkpoint=str(tmp_path))  # 6x6 grid
    pe_src, pe_dst = src.encoder.backbone.pos_embed, dst.encoder.backbone.pos_embed
    assert pe_dst.shape == (1, 1 + 36, 64)
    assert torch.equal(pe_dst[:, :1], pe_src[:, :1])  # class token kept
    from timm.layers import resample_abs_pos_embed

    want = resample_abs_pos_embed(pe_src, new_size=[6, 6], old_size=[4, 4], num_prefix_tokens=1)
    torch.testing.assert_close(pe_dst, want)
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sd_src[k], sd_dst[k]) for k in sd_src if "pos_embed" not in k)
    assert dst.encode(torch.zeros(1, 3, 96, 96)).shape == (1, 36, 64)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_checkpoint(_build("tiny_vit", 64), tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd.pop(f"{LLAVA_PROJECTOR}2.weight")
    sd["model.layers.7.mlp.extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        _build("tiny_vit", 64, checkpoint=str(tmp_path))
    msg = str(err.value)
    assert "1 missing key(s): model.mm_projector.2.weight" in msg
    assert "1 unexpected key(s): model.layers.7.mlp.extra.weight" in msg


def test_wrong_configuration_and_corrupt_files(tmp_path):
    save_checkpoint(_build("tiny_vit", 64), tmp_path / "vit")
    with pytest.raises(CheckpointError, match="(?s)does not match tiny_convnext@64\\+qwen2_tiny.*missing key"):
        _build("tiny_convnext", 64, checkpoint=str(tmp_path / "vit"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        _build("tiny_vit", 64, "llama_tiny", checkpoint=str(tmp_path / "vit"))
    (tmp_path / "vit" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        _build("tiny_vit", 64, checkpoint=str(tmp_path / "vit"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no weights in"):
        _build("tiny_vit", 64, checkpoint=str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="does not exist"):
        _build("tiny_vit", 64, checkpoint=str(tmp_path / "nowhere"))


def test_unknown_tower_layout_is_explained(tmp_path):
    from safetensors.torch import load_file, save_file

    save_checkpoint(_build("tiny_vit", 64), tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd = {k.replace(LLAVA_TOWER + "backbone.", LLAVA_TOWER + "vision_tower.vision_model."): v for k, v in sd.items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unrecognised vision tower layout.*vision_tower"):
        _build("tiny_vit", 64, checkpoint=str(tmp_path))


def test_fastvit_unfused_mobileclip_prefix_and_fused(tmp_path):
    """FastViT towers: checkpoints hold un-fused weights; FastVLM's prefix and fused towers load."""
    from safetensors.torch import load_file, save_file

    import bench.models.vlm as vlm_mod
    from bench.models.materialize import materialize, meta_parameters
    from bench.models.encoders import get_encoder_spec
    from bench.models.llms import get_llm_spec
    from bench.models.projector import build_projector

    def unfused():  # build_vlm without prepare_for_inference
        spec = get_encoder_spec("fastvit")
        with meta_parameters():
            v = vlm_mod.VLM(spec.build(64), build_projector("mlp2x_gelu", spec.channels, 64),
                            get_llm_spec("qwen2_tiny").build(), "fastvit", "qwen2_tiny", 64)
        return _randomize(materialize(v, torch.device("cpu"), torch.float32)).eval()

    src = unfused()
    save_checkpoint(src, tmp_path / "own")
    keys = read_state_dict(tmp_path / "own").keys()
    assert not any("reparam_conv" in k for k in keys)
    dst = _build("fastvit", 64, checkpoint=str(tmp_path / "own"))  # loads, then fuses
    ref = src.encoder.prepare_for_inference()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst.encode(x), ref(x), rtol=1e-4, atol=1e-4)

    # FastVLM layout: model.vision_tower.vision_tower.model.<timm fastvit names> (+ the CLIP head)
    sd = load_file(str(tmp_path / "own" / "model.safetensors"))
    sd = {k.replace(LLAVA_TOWER + "backbone.", LLAVA_TOWER + "vision_tower.model."): v for k, v in sd.items()}
    sd[LLAVA_TOWER + "vision_tower.model.head.proj"] = torch.zeros(1280, 768)
    (tmp_path / "fastvlm").mkdir()
    save_file(sd, str(tmp_path / "fastvlm" / "model.safetensors"))
    dst2 = _build("fastvit", 64, checkpoint=str(tmp_path / "fastvlm"))
    with torch.no_grad():
        torch.testing.assert_close(dst2.encode(x), ref(x), rtol=1e-4, atol=1e-4)

    # a checkpoint saved after fusion holds reparam_conv weights: the fresh tower is fused first
    save_checkpoint(dst, tmp_path / "fused")
    assert any("reparam_conv" in k for k in read_state_dict(tmp_path / "fused"))
    dst3 = _build("fastvit", 64, checkpoint=str(tmp_path / "fused"))
    with torch.no_grad():
        torch.testing.assert_close(dst3.encode(x), ref(x), rtol=1e-4, atol=1e-4)
