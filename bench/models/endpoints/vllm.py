"""``endpoint=vllm``: vLLM's OpenAI server. ``ignore_eos`` with ``min_tokens`` holds the answer's
length; ``cache_salt`` (vLLM >= 0.9) keeps each request out of the prefix cache, images included."""
from typing import Any, Dict

from .base import ENDPOINTS, EndpointKind


@ENDPOINTS.register("vllm")
class VLLM(EndpointKind):
    name = "vllm"
    fixed_output = "ignore_eos+min_tokens"
    cache = "cache_salt"

    def fields(self, max_tokens: int, nonce: str) -> Dict[str, Any]:
        return {"ignore_eos": True, "min_tokens": max_tokens, "cache_salt": nonce}
