"""Write the shipped transformers model folders (``bench/data/hf/<name>/``) for ``hf=NAME``.

Each folder is what a user's local model folder holds, minus the weights: ``config.json``, the
processor's ``preprocessor_config.json`` / ``processor_config.json``, and a tokenizer. Nothing
can be downloaded here, so:

- the configs carry the published values of each checkpoint's own ``config.json`` and
  processor files on the Hugging Face Hub (the repo is named in ``SOURCE`` and in
  ``bench/data/hf/README.md``), written out by hand below;
- the tokenizer is a word-level one (``tokenizers.models.WordLevel``) holding the model's real
  special-token ids (the image placeholder, vision start/end, row/column tags): the processors
  only need those to expand the image placeholder, and latency does not depend on which text
  ids the prompt has. Its filler words ``w1 .. w199`` are one token each, so a prompt of N
  words is N text tokens.

Run ``python scripts/make_hf_systems.py`` after editing a value; ``tests/test_hf.py`` checks the
committed folders equal this script's output, so the two cannot drift.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench" / "data" / "hf"

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]

OV_GRIDS = [[h * 384, w * 384] for h in range(1, 7) for w in range(1, 7)]  # anyres_max_9's 36 pinpoints

QWEN2_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
             "num_hidden_layers": 24, "num_key_value_heads": 2, "max_position_embeddings": 32768,
             "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": True,
             "bos_token_id": 151643, "eos_token_id": 151645}

SYSTEMS = {
    "llava_onevision_0.5b": {
        "SOURCE": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "composed": {"encoder": "siglip_so400m", "llm": "qwen2_0.5b", "tiling": "anyres_max_9"},
        "differs": "transformers' SigLIP tower has 26 blocks (397.7 M parameters: the checkpoint's vision_config drops the last block), our siglip_so400m is timm's vit_so400m_patch14_siglip_384 with 27 (428 M)",
        "config": {
            "architectures": ["LlavaOnevisionForConditionalGeneration"], "model_type": "llava_onevision",
            "image_token_index": 151646, "video_token_index": 151647, "projector_hidden_act": "gelu",
            "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
            "vision_aspect_ratio": "anyres_max_9", "use_image_newline_parameter": True,
            "tie_word_embeddings": True, "image_grid_pinpoints": OV_GRIDS,
            "text_config": {**QWEN2_05B, "vocab_size": 152000},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384,
                              "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 26,
                              "patch_size": 14, "vision_use_head": False, "layer_norm_eps": 1e-06,
                              "hidden_act": "gelu_pytorch_tanh"}},
        "preprocessor": {"image_processor_type": "LlavaOnevisionImageProcessor",
                         "processor_class": "LlavaOnevisionProcessor", "do_resize": True,
                         "size": {"height": 384, "width": 384}, "resample": 3, "do_rescale": True,
                         "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": HALF, "image_std": HALF,
                         "do_pad": True, "do_convert_rgb": True, "image_grid_pinpoints": OV_GRIDS},
        "processor": {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 729,
                      "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"},
        "specials": {"<image>": 151646, "<video>": 151647, "<|endoftext|>": 151643, "<|im_start|>": 151644,
                     "<|im_end|>": 151645},
        "image_token": "<image>",
    },
    "llava_next_7b": {
        "SOURCE": "llava-hf/llava-v1.6-vicuna-7b-hf",
        "composed": {"encoder": "vit_l14", "llm": "vicuna_7b", "tiling": "anyres_next"},
        "differs": "transformers runs the CLIP tower to its second-to-last block (vision_feature_layer -2) and drops the CLS token; ours runs timm's ViT-L/14-336",
        "config": {
            "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
            "image_token_index": 32000, "projector_hidden_act": "gelu", "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "tie_word_embeddings": False,
            "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                            "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                            "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32064,
                            "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
            "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                              "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                              "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu",
                              "layer_norm_eps": 1e-05}},
        "preprocessor": {"image_processor_type": "LlavaNextImageProcessor", "processor_class": "LlavaNextProcessor",
                         "do_resize": True, "size": {"shortest_edge": 336}, "resample": 3,
                         "do_center_crop": True, "crop_size": {"height": 336, "width": 336}, "do_rescale": True,
                         "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN,
                         "image_std": CLIP_STD, "do_pad": True, "do_convert_rgb": True,
                         "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]},
        "processor": {"processor_class": "LlavaNextProcessor", "patch_size": 14,
                      "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1},
        "specials": {"<image>": 32000, "<s>": 1, "</s>": 2},
        "image_token": "<image>",
    },
    "qwen2_5_vl_3b": {
        "SOURCE": "Qwen/Qwen2.5-VL-3B-Instruct",
        "config": {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653, "tie_word_embeddings": True,
            "text_config": {"model_type": "qwen2_5_vl_text", "hidden_size": 2048, "intermediate_size": 11008,
                            "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
                            "max_position_embeddings": 128000, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
                            "vocab_size": 151936, "hidden_act": "silu", "tie_word_embeddings": True,
                            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                            "bos_token_id": 151643, "eos_token_id": 151645},
            "vision_config": {"model_type": "qwen2_5_vl", "depth": 32, "hidden_size": 1280,
                              "intermediate_size": 3420, "num_heads": 16, "in_channels": 3, "out_hidden_size": 2048,
                              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                              "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu",
                              "tokens_per_second": 2}},
        "preprocessor": {"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
                         "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
                         "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                         "do_convert_rgb": True, "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                         "temporal_patch_size": 2, "merge_size": 2},
        "processor": {"processor_class": "Qwen2_5_VLProcessor"},
        "specials": {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                     "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
                     "<|video_pad|>": 151656},
        "image_token": "<|vision_start|><|image_pad|><|vision_end|>",
    },
    "smolvlm_256m": {
        "SOURCE": "HuggingFaceTB/SmolVLM-256M-Instruct",
        "config": {
            "architectures": ["Idefics3ForConditionalGeneration"], "model_type": "idefics3",
            "image_token_id": 49190, "scale_factor": 4, "tie_word_embeddings": False, "pad_token_id": 2,
            "text_config": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                            "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
                            "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 100000.0,
                            "vocab_size": 49280, "hidden_act": "silu", "tie_word_embeddings": False,
                            "bos_token_id": 1, "eos_token_id": 49279, "pad_token_id": 2},
            "vision_config": {"model_type": "idefics3_vision", "hidden_size": 768, "image_size": 512,
                              "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
                              "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06}},
        "preprocessor": {"image_processor_type": "Idefics3ImageProcessor", "processor_class": "Idefics3Processor",
                         "do_resize": True, "size": {"longest_edge": 2048}, "resample": 1,
                         "do_image_splitting": True, "max_image_size": {"longest_edge": 512}, "do_rescale": True,
                         "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": HALF, "image_std": HALF,
                         "do_pad": True, "do_convert_rgb": True},
        "processor": {"processor_class": "Idefics3Processor", "image_seq_len": 64},
        "specials": {"<|im_start|>": 1, "<|im_end|>": 2, "<global-img>": 49152,
                     **{f"<row_{r}_col_{c}>": 49152 + (r - 1) * 6 + c for r in range(1, 7) for c in range(1, 7)},
                     "<fake_token_around_image>": 49189, "<image>": 49190, "<end_of_utterance>": 49279},
        "image_token": "<image>",
    },
    "fastvlm_0.5b": {
        "SOURCE": "apple/FastVLM-0.5B (transformers format: FastVlmForConditionalGeneration)",
        "composed": {"encoder": "fastvithd", "llm": "qwen2_0.5b", "tiling": "none"},
        "differs": "both build timm's fastvit_mci3 in its inference (re-parameterised) form, transformers through TimmWrapperModel; both projectors are Linear-GELU-Linear",
        "config": {
            "architectures": ["FastVlmForConditionalGeneration"], "model_type": "fast_vlm",
            "image_token_index": 151646, "image_seq_length": 256, "projector_hidden_act": "gelu",
            "vision_feature_layer": -1, "vision_feature_select_strategy": "full", "tie_word_embeddings": True,
            "multimodal_projector_bias": True,
            "text_config": {**QWEN2_05B, "vocab_size": 151936},
            "vision_config": {"model_type": "timm_wrapper", "architecture": "fastvit_mci3", "do_pooling": False,
                              "global_pool": "avg", "hidden_size": 3072, "initializer_range": 0.02,
                              "num_classes": 0, "model_args": {"inference_mode": True}}},
        "preprocessor": {"image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
                         "do_resize": True, "size": {"shortest_edge": 1024}, "resample": 3,
                         "do_center_crop": True, "crop_size": {"height": 1024, "width": 1024}, "do_rescale": True,
                         "rescale_factor": 1 / 255, "do_normalize": False, "image_mean": [0.0, 0.0, 0.0],
                         "image_std": [1.0, 1.0, 1.0], "do_convert_rgb": True},
        "processor": {"processor_class": "LlavaProcessor", "patch_size": 64, "num_additional_image_tokens": 0,
                      "vision_feature_select_strategy": "full"},
        "specials": {"<image>": 151646, "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645},
        "image_token": "<image>",
    },
    "gemma3_4b": {
        "SOURCE": "google/gemma-3-4b-it",
        "config": {
            "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
            "mm_tokens_per_image": 256, "initializer_range": 0.02,
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                            "num_attention_heads": 8, "num_hidden_layers": 34, "num_key_value_heads": 4,
                            "head_dim": 256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-06,
                            "vocab_size": 262208, "hidden_activation": "gelu_pytorch_tanh",
                            "query_pre_attn_scalar": 256, "sliding_window": 1024, "rope_theta": 1000000.0,
                            "rope_local_base_freq": 10000.0,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                            "final_logit_softcapping": None, "attn_logit_softcapping": None,
                            "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 896,
                              "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27,
                              "patch_size": 14, "vision_use_head": False, "hidden_act": "gelu_pytorch_tanh",
                              "layer_norm_eps": 1e-06}},
        "preprocessor": {"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
                         "do_resize": True, "size": {"height": 896, "width": 896}, "resample": 2,
                         "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                         "image_mean": HALF, "image_std": HALF, "do_convert_rgb": True, "do_pan_and_scan": None,
                         "pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
                         "pan_and_scan_min_ratio_to_activate": 1.2},
        "processor": {"processor_class": "Gemma3Processor", "image_seq_length": 256},
        "specials": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<start_of_image>": 255999, "<end_of_image>": 256000,
                     "<image_soft_token>": 262144},
        "image_token": "<start_of_image>",
        "tokens": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                   "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                   "image_token": "<image_soft_token>"},
    },
}


def tokenizer_files(specials: dict, image_token: str, named: dict) -> dict:
    """``tokenizer.json`` (word level: ``<unk>``, filler words ``w1..w199``, the special tokens at
    their real ids) and a ``tokenizer_config.json`` that names the image token."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"<unk>": 3 if 3 not in specials.values() else max(specials.values()) + 1}
    free = (i for i in range(4, 10**6) if i not in specials.values())
    for i in range(1, 200):
        vocab[f"w{i}"] = next(free)
    vocab.update(specials)
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    conf = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", "model_max_length": 131072, **named}
    return {"tokenizer.json": json.loads(tok.to_str()), "tokenizer_config.json": conf}


def files_of(name: str) -> dict:
    s = SYSTEMS[name]
    out = {"config.json": s["config"], "preprocessor_config.json": s["preprocessor"],
           "processor_config.json": s["processor"],
           "fastvlm_bench.json": {"source": s["SOURCE"], "image_token": s["image_token"],
                                  "composed": s.get("composed"), "differs": s.get("differs"),
                                  "note": "published config values; word-level tokenizer with the real special-token "
                                          "ids; no weights (placeholders)"}}
    out.update(tokenizer_files(s["specials"], s["image_token"], s.get("tokens", {})))
    return out


def render(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def main(check: bool = False) -> int:
    stale = []
    for name in SYSTEMS:
        folder = OUT / name
        for fname, obj in files_of(name).items():
            text = render(obj)
            p = folder / fname
            if check:
                if not p.is_file() or p.read_text() != text:
                    stale.append(str(p))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    if check and stale:
        print("stale: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(check="--check" in sys.argv))
