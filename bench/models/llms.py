"""LLM zoo: decoder-only language models built from their published config values.

No hub access: each entry holds the numbers of the model's ``config.json`` (Qwen2 0.5B/1.5B/7B
instruct, Vicuna-7B v1.5 which has the Llama-2-7B shape, Meta-Llama-3-8B) and transformers builds the
architecture from them. Parameters are created on the meta device and materialised later on
the target device (``bench.models.materialize``), so a 7B model costs no CPU initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from ..registry import Registry


@dataclass(frozen=True)
class LLMSpec:
    name: str
    family: str  # "qwen2" or "llama"
    description: str
    config: Dict[str, Any] = field(hash=False)
    tiny: bool = False

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def kv_bytes_per_token(self, element_size: int) -> int:
        """Bytes the KV cache holds per token of one sequence: a key and a value vector of
        ``num_key_value_heads x head_dim`` per layer (grouped-query attention shares them)."""
        c = self.config
        head_dim = int(c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])
        return 2 * int(c["num_hidden_layers"]) * int(c.get("num_key_value_heads") or c["num_attention_heads"]) \
            * head_dim * int(element_size)

    def hf_config(self, attn_implementation: str = "sdpa"):
        """The transformers config object for this LLM."""
        if self.family == "qwen2":
            from transformers import Qwen2Config as Config
        elif self.family == "llama":
            from transformers import LlamaConfig as Config
        else:  # pragma: no cover - guarded by registration
            raise ValueError(f"unknown LLM family {self.family}")
        cfg = Config(**self.config)
        cfg._attn_implementation = attn_implementation
        return cfg

    def build(self, attn_implementation: str = "sdpa"):
        """Build the causal LM (parameters wherever the caller's context puts them)."""
        if attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
        if self.family == "qwen2":  # only the family's own module: each costs imports on first use
            from transformers import Qwen2ForCausalLM as cls
        else:
            from transformers import LlamaForCausalLM as cls
        model = cls(self.hf_config(attn_implementation))
        return model.eval()


LLMS: Registry[LLMSpec] = Registry("llm")

#: ``llm=none``: an encoder-only point (Tables 1 and 4 of the paper are encoder-level). No LLM and
#: no projector are built and the pipeline is the encoder stage alone (``bench.models.pipeline``);
#: prefill, projector and TTFT are null in its record. Not a registry entry: it is no model, so
#: ``fastvlm-bench list`` does not show it and nothing can build it.
from ..config import NO_LLM  # noqa: E402, F401  (defined with the configs, which check it; re-exported here)


def register_llm(spec: LLMSpec) -> LLMSpec:
    return LLMS.add(spec.name, spec)


_QWEN2_COMMON = dict(hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, use_sliding_window=False, bos_token_id=151643,
                     eos_token_id=151645, attention_dropout=0.0)

register_llm(LLMSpec("qwen2_0.5b", "qwen2", "Qwen2-0.5B-Instruct", dict(
    _QWEN2_COMMON, vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)))
register_llm(LLMSpec("qwen2_1.5b", "qwen2", "Qwen2-1.5B-Instruct", dict(
    _QWEN2_COMMON, vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)))
register_llm(LLMSpec("qwen2_7b", "qwen2", "Qwen2-7B-Instruct", dict(
    _QWEN2_COMMON, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)))
register_llm(LLMSpec("vicuna_7b", "llama", "Vicuna-7B v1.5 (Llama-2-7B shape)", dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", max_position_embeddings=4096,
    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    pad_token_id=0)))
# meta-llama/Meta-Llama-3-8B config.json (LLaVA-NeXT's row R39 runs its -Instruct twin: the same
# shape, eos_token_id 128009). Grouped-query attention (8 KV heads), a 128 256-token vocabulary.
register_llm(LLMSpec("llama3_8b", "llama", "Meta-Llama-3-8B", dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, hidden_act="silu", max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=None, attention_bias=False, attention_dropout=0.0,
    tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)))
register_llm(LLMSpec("qwen2_tiny", "qwen2", "tiny Qwen2-shaped LM for tests", dict(
    _QWEN2_COMMON, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096,
    bos_token_id=1, eos_token_id=2), tiny=True))
register_llm(LLMSpec("llama_tiny", "llama", "tiny Llama-shaped LM for tests", dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=1,
    eos_token_id=2), tiny=True))


def get_llm_spec(name: str) -> LLMSpec:
    return LLMS.get(name)
