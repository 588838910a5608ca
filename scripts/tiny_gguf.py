#!/usr/bin/env python3
"""Write a tiny random-weight Qwen2-VL as GGUF: a text model and its ``mmproj``, no download.

Why: the endpoint mode (docs/endpoint.md) needs a real server to measure, and a test and a
first run need a model that a 2-core CI machine loads in a second. llama.cpp's own converter
wants a transformers checkpoint (and torch); this writes the two files straight from numpy
with the ``gguf`` package, with the keys and tensor names llama.cpp's converter writes for
Qwen2-VL (``convert_hf_to_gguf.py``: ``Qwen2VLModel``, ``Qwen2VLVisionModel``; read by
``src/models/qwen2vl.cpp`` and ``tools/mtmd/clip.cpp``).

What the server then does is what it does for the real model, at toy size: the image is
resized to a multiple of 28 px, cut into 14 px patches, encoded by a 3-block ViT, merged 2x2
(224 px square -> 64 image tokens, 448 -> 256) and prefilled with the prompt by a 2-layer
Qwen2 with M-RoPE. The vocabulary is synthetic: the printable ASCII bytes in GPT-2's byte
mapping, `` the`` as one token (so a prompt of N words is N tokens), and Qwen2-VL's chat
and vision marker tokens. The answer is random text; only its timing means anything.

    python scripts/tiny_gguf.py OUT_DIR     # writes OUT_DIR/tiny-qwen2vl.gguf and
                                            # OUT_DIR/tiny-qwen2vl-mmproj.gguf
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

import numpy as np

MODEL_NAME = "tiny-qwen2vl.gguf"
MMPROJ_NAME = "tiny-qwen2vl-mmproj.gguf"

# text model
N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, N_CTX = 64, 4, 2, 128, 2, 32768
ROPE_SECTIONS = [2, 3, 3, 0]  # M-RoPE: temporal, height, width (sum = head_dim / 2 = 8)
# vision tower (Qwen2-VL layout: 14 px patches, 2x2 merge, 3 blocks)
V_EMBD, V_HEAD, V_FF, V_LAYER, PATCH, MERGE = 32, 2, 64, 3, 14, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
                 "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
                 "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
                 "{% else %}{{ '<__media__>' }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def vocabulary() -> Tuple[List[str], List[int], List[str]]:
    """Tokens, their types and BPE merges: GPT-2's byte mapping of printable ASCII (space is
    ``Ġ``, newline ``Ċ``), `` the`` merged to one token, then the special tokens (CONTROL)."""
    import gguf

    tokens = [chr(b) for b in range(0x21, 0x7F)] + ["\u0120", "\u010a", "\u0120t", "\u0120th", "\u0120the"]
    merges = ["\u0120 t", "\u0120t h", "\u0120th e"]
    types = [int(gguf.TokenType.NORMAL)] * len(tokens) + [int(gguf.TokenType.CONTROL)] * len(SPECIALS)
    return tokens + SPECIALS, types, merges


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.05) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _write(writer, path: Path) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_text_model(path: Path, rng: np.random.Generator) -> None:
    import gguf

    tokens, types, merges = vocabulary()
    w = gguf.GGUFWriter(str(path), "qwen2vl")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("tiny-qwen2vl (random weights, fastvlm-bench)")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_sections(ROPE_SECTIONS)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    n_vocab, kv = len(tokens), N_EMBD // N_HEAD * N_HEAD_KV
    embd = _w(rng, n_vocab, N_EMBD, scale=1.0)
    embd[:, 0] = 8.0
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    # Keep the special tokens from ever being sampled, so that every output token is one printable
    # character and one streamed chunk: every token's embedding has a large constant in dimension
    # 0, which the residual stream carries to the last norm (the layers' weights are small), and
    # the output head (untied) weighs that dimension -100 for the specials and 0 for the others.
    head = _w(rng, n_vocab, N_EMBD, scale=1.0)
    head[:, 0] = 0.0
    head[len(tokens) - len(SPECIALS):, 0] = -100.0
    w.add_tensor("output.weight", head)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, np.float32))
        for name, out in (("attn_q", N_EMBD), ("attn_k", kv), ("attn_v", kv)):
            w.add_tensor(p + name + ".weight", _w(rng, out, N_EMBD))
            w.add_tensor(p + name + ".bias", np.zeros(out, np.float32))
        w.add_tensor(p + "attn_output.weight", _w(rng, N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(p + "ffn_gate.weight", _w(rng, N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", _w(rng, N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", _w(rng, N_EMBD, N_FF))
    _write(w, path)


def write_mmproj(path: Path, rng: np.random.Generator) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name("tiny-qwen2vl mmproj (random weights, fastvlm-bench)")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(gguf.VisionProjectorType.QWEN2VL)
    w.add_vision_projection_dim(N_EMBD)
    w.add_vision_image_size(560)
    w.add_vision_patch_size(PATCH)
    w.add_vision_embedding_length(V_EMBD)
    w.add_vision_feed_forward_length(V_FF)
    w.add_vision_block_count(V_LAYER)
    w.add_vision_head_count(V_HEAD)
    w.add_vision_attention_layernorm_eps(1e-6)
    w.add_vision_spatial_merge_size(MERGE)
    w.add_vision_image_mean([0.48145466, 0.4578275, 0.40821073])
    w.add_vision_image_std([0.26862954, 0.26130258, 0.27577711])
    # Qwen2-VL's Conv3D patch embedding, split in its two temporal halves as the converter does
    w.add_tensor("v.patch_embd.weight", _w(rng, V_EMBD, 3, PATCH, PATCH))
    w.add_tensor("v.patch_embd.weight.1", _w(rng, V_EMBD, 3, PATCH, PATCH))
    for i in range(V_LAYER):
        p = f"v.blk.{i}."
        for name in ("ln1", "ln2"):
            w.add_tensor(p + name + ".weight", np.ones(V_EMBD, np.float32))
            w.add_tensor(p + name + ".bias", np.zeros(V_EMBD, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(p + name + ".weight", _w(rng, V_EMBD, V_EMBD))
            w.add_tensor(p + name + ".bias", np.zeros(V_EMBD, np.float32))
        w.add_tensor(p + "ffn_up.weight", _w(rng, V_FF, V_EMBD))
        w.add_tensor(p + "ffn_up.bias", np.zeros(V_FF, np.float32))
        w.add_tensor(p + "ffn_down.weight", _w(rng, V_EMBD, V_FF))
        w.add_tensor(p + "ffn_down.bias", np.zeros(V_EMBD, np.float32))
    w.add_tensor("v.post_ln.weight", np.ones(V_EMBD, np.float32))
    w.add_tensor("v.post_ln.bias", np.zeros(V_EMBD, np.float32))
    merged = V_EMBD * MERGE * MERGE  # the 2x2 merger: 4 patches' features in, the text width out
    w.add_tensor("mm.0.weight", _w(rng, merged, merged))
    w.add_tensor("mm.0.bias", np.zeros(merged, np.float32))
    w.add_tensor("mm.2.weight", _w(rng, N_EMBD, merged))
    w.add_tensor("mm.2.bias", np.zeros(N_EMBD, np.float32))
    _write(w, path)


def write_tiny(out_dir: Path, seed: int = 0) -> Tuple[Path, Path]:
    """Both files in ``out_dir`` (made if missing), each written to a temporary name and renamed
    into place, so a reader never sees half a file; the same seed gives the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, writer in ((MODEL_NAME, write_text_model), (MMPROJ_NAME, write_mmproj)):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        os.close(fd)
        try:
            writer(Path(tmp), rng)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out_dir / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths.append(out_dir / name)
    return paths[0], paths[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("tiny_gguf.py: error: the gguf package is missing: pip install 'fastvlm-bench[endpoint]' "
              "(or pip install gguf)", file=sys.stderr)
        return 2
    model, mmproj = write_tiny(args.out_dir, args.seed)
    print(model)
    print(mmproj)
    return 0


if __name__ == "__main__":
    sys.exit(main())
