"""The decode axis: ``decode_tokens=N`` appends a ``decode`` stage after ``prefill``.

An answer of N output tokens is the prefill's first token and then N-1 greedy decode steps,
each one token per sequence on the KV cache that the same iteration's prefill built (never a
cache kept from an earlier iteration). End of sequence is ignored, as ``vllm bench`` does with
``ignore_eos``: placeholder weights emit arbitrary tokens, and a benchmark must produce exactly
the answer length it was asked for (vllm-project/vllm, ``benchmarks/benchmark_serving.py``:
``output_len`` tokens with ``ignore_eos``; TPOT = (E2E - TTFT) / (output_len - 1)).

Each step ends when its token is on the host (``.cpu()``), as a server has a token only when
it can stream it; then the step is marked (``flow.step``, the timer's
:meth:`~bench.measure.timer.StageTimer.step`), so the record keeps every step's time (ITL) and
the time to the second token. The step itself is :meth:`bench.models.vlm.VLM.decode_step`, the
one implementation that ``VLM.generate`` (the lmms-eval plugin) uses too.

Analytic sizes for the memory-bound decode (:func:`kv_cache_bytes`, :func:`decode_bytes_per_step`)
live here because they follow from the stage's shapes: what the cache holds at the end of the
answer, and what one step must read from memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .stages import AXES, Flow, Pipeline, Stage


def decode_steps(point) -> int:
    """Decode steps of one answer: output tokens minus the prefill's first (0 without decode)."""
    n = int(getattr(point, "decode_tokens", 0) or 0)
    return n - 1 if n > 1 else 0


def apply(pipe: Pipeline, vlm, point) -> None:
    """Append ``decode`` after ``prefill`` when the point asks for more than the first token."""
    steps = decode_steps(point)
    if not steps:
        return

    def decode(f: Flow) -> None:
        token, past, logits = f.token, f.past, f.logits
        for _ in range(steps):
            token, past, logits = vlm.decode_step(token, past)
            token.cpu()
            f.step()
        f.token, f.past, f.logits = token, past, logits

    pipe.insert_after("prefill", Stage("decode", decode, owner="decode"))


if apply not in AXES:
    AXES.append(apply)


@dataclass(frozen=True)
class DecodePart:
    """The decode axis's part of a point's plan: output tokens per answer, the decode steps
    after the first, and the KV cache the answer ends with (analytic; None without decoding)."""

    tokens: int
    steps: int
    kv_cache_bytes: Optional[int]


def plan_part(point, llm_spec, element_size: int, visual_tokens: int) -> DecodePart:
    """The axis's part of the plan (``bench.measure.plan``); ``llm_spec`` None: no LLM."""
    kv = (kv_cache_bytes(llm_spec, element_size, point.batch_size, visual_tokens, point.prompt_tokens,
                         point.decode_tokens) if point.decode_tokens and llm_spec is not None else None)
    return DecodePart(int(point.decode_tokens), decode_steps(point), kv)


def cache_tokens(visual_tokens: int, prompt_tokens: int, decode_tokens: int) -> int:
    """Positions in the KV cache at the end of an answer: the prefill's (visual + prompt) and one
    per decode step (the last output token is never fed back)."""
    return int(visual_tokens) + int(prompt_tokens) + max(int(decode_tokens) - 1, 0)


def kv_cache_bytes(llm_spec, element_size: int, batch_size: int, visual_tokens: int, prompt_tokens: int,
                   decode_tokens: int) -> int:
    """KV-cache bytes at the end of the answer, for the whole batch (analytic)."""
    return batch_size * cache_tokens(visual_tokens, prompt_tokens, decode_tokens) * \
        llm_spec.kv_bytes_per_token(element_size)


def weight_bytes_per_step(llm_spec, llm_params: int, element_size: int) -> int:
    """LLM parameter bytes one decode step reads: every weight once, except an untied input
    embedding table, of which a step gathers one row per sequence (a tied table is the output
    projection and is read whole)."""
    c = llm_spec.config
    embed = 0 if c.get("tie_word_embeddings") else int(c["vocab_size"]) * int(c["hidden_size"])
    return (int(llm_params) - embed) * int(element_size)


def decode_bytes_per_step(llm_spec, llm_params: int, element_size: int, batch_size: int, visual_tokens: int,
                          prompt_tokens: int, decode_tokens: int) -> float:
    """Bytes read from memory by one decode step, averaged over the answer's steps (analytic):
    the weights once (shared by the batch) plus the KV cache as it stands at that step, whose
    length grows from visual + prompt + 1 to visual + prompt + steps positions (its own included)."""
    steps = max(int(decode_tokens) - 1, 0)
    if not steps:
        return 0.0
    mean_len = int(visual_tokens) + int(prompt_tokens) + (steps + 1) / 2.0  # step k attends over V+P+k+1
    return weight_bytes_per_step(llm_spec, llm_params, element_size) + \
        batch_size * mean_len * llm_spec.kv_bytes_per_token(element_size)
