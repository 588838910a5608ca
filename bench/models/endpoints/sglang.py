"""``endpoint=sglang``: SGLang's OpenAI server. ``ignore_eos`` holds the answer's length; its radix
cache is kept out by a per-request nonce text before the image (SGLang has no per-request switch)."""
from typing import Any, Dict

from .base import ENDPOINTS, EndpointKind


@ENDPOINTS.register("sglang")
class SGLang(EndpointKind):
    name = "sglang"
    fixed_output = "ignore_eos"

    def fields(self, max_tokens: int, nonce: str) -> Dict[str, Any]:
        return {"ignore_eos": True}
