"""``endpoint=llama_cpp``: llama.cpp's ``llama-server`` (where its binary is: :mod:`.llama_server`).

Its request fields: ``ignore_eos`` holds the answer's length, ``cache_prompt: false`` keeps the
slot's cached prompt (image chunks included) out, so every request encodes its image. Its final
chunk carries ``timings``: ``prompt_n`` (prompt tokens it evaluated, image tokens included),
``prompt_ms``, ``predicted_n``, ``predicted_ms``, ``predicted_per_token_ms`` and ``cache_n``
(tokens taken from the cache: 0 here). The image tokens are ``prompt_n`` less a text-only
request's (bench.measure.endpoint_point).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from .base import ENDPOINTS, EndpointKind

#: The server's own numbers kept per request (``timings`` keys).
TIMING_KEYS = ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_token_ms", "cache_n")


@ENDPOINTS.register("llama_cpp")
class LlamaCpp(EndpointKind):
    name = "llama_cpp"
    fixed_output = "ignore_eos"
    cache = "cache_prompt=false"

    def fields(self, max_tokens: int, nonce: str) -> Dict[str, Any]:
        return {"ignore_eos": True, "cache_prompt": False}

    def server_timings(self, timings: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return {k: timings[k] for k in TIMING_KEYS if isinstance(timings, dict) and k in timings}
