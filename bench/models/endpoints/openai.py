"""``endpoint=openai``: any OpenAI-compatible server, with the standard fields only
(:class:`~.base.EndpointKind`: ``max_tokens`` as an upper bound, a per-request nonce text)."""
from .base import ENDPOINTS, EndpointKind

ENDPOINTS.add("openai", EndpointKind)
