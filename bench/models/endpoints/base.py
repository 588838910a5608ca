"""The endpoint axis: what a server kind adds to a request, and the endpoint's part of a plan.

Why a kind per server: the OpenAI chat-completions API has no field for "answer exactly N
tokens" or "do not reuse the prompt cache", and each server says its own timings differently.
Without them the numbers mislead: an answer that stops at EOS is shorter than asked, and a
server that caches the prompt (llama.cpp's ``cache_prompt``, vLLM's prefix cache) answers a
repeated image from its cache, so from the second iteration on TTFT no longer includes the
image. Each kind says which mechanism holds the length (recorded as ``endpoint_fixed_output``)
and which keeps the cache out (``endpoint_cache``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from ...registry import Registry

ENDPOINTS: Registry = Registry("endpoint kind")


class EndpointKind:
    """The generic OpenAI-compatible server: ``max_tokens`` only (an upper bound: the answer may
    stop at EOS, and the record says how many tokens came), a per-request text first in the
    message so that no prefix cache can match the image."""

    name = "openai"
    fixed_output = "max_tokens"  # the mechanism that holds the answer's length (recorded)
    cache = "nonce_text"  # what keeps the server's prompt cache out (recorded)

    def fields(self, max_tokens: int, nonce: str) -> Dict[str, Any]:
        """Request fields beyond the standard ones."""
        return {}

    def nonce_text(self, nonce: str) -> Optional[str]:
        """Text sent before the image, different in every request (None: not needed)."""
        return f"[{nonce}]" if self.cache == "nonce_text" else None

    def server_timings(self, timings: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The server's own per-request numbers from its final chunk (none for plain OpenAI)."""
        return {}


def get_kind(name: str) -> EndpointKind:
    return ENDPOINTS.get(name)()


@dataclass(frozen=True)
class EndpointPart:
    """An endpoint point's part of the plan: where to send, what, and how (docs/endpoint.md)."""

    kind: str
    url: Optional[str]  # None: the launched server's, known once it runs
    model: Optional[str]  # None: the first one /v1/models lists
    api_key_env: Optional[str]
    image_format: str
    timeout_s: float
    concurrency: int
    launch: Optional[str] = None
    gguf: Optional[str] = None
    mmproj: Optional[str] = None
    server_bin: Optional[str] = None
    server_version: Optional[str] = None
    server_threads: Optional[int] = None
    slots: int = 4
    ctx: int = 32768

    def api_key(self) -> Optional[str]:
        """Read at request time from the named variable; never stored in the plan or a record."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def fingerprint(path: str, edge: int = 1 << 20) -> str:
    """A launched GGUF's identity: its size and its first and last MiB, hashed. The content, not
    the path or mtime, so the same file written on two machines (scripts/tiny_gguf.py is
    deterministic) is the same point for ``compare``; reading 2 MiB keeps it instant for a
    model of gigabytes, whose header (first MiB) names every tensor and its shape."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(edge))
        if size > 2 * edge:
            f.seek(size - edge)
        h.update(f.read(edge))
    return h.hexdigest()[:12]


def plan_part(e) -> EndpointPart:
    """The endpoint's part of a plan from ``cfg.endpoint`` (an :class:`bench.config.EndpointConf`);
    a launched llama-server's binary is found here (one line and exit 2 when there is none)."""
    server_bin = version = None
    if e.launch:
        from .llama_server import find_server, server_version

        server_bin = find_server(e.server_bin)
        version = server_version(server_bin)
    return EndpointPart(kind=str(e.name), url=str(e.url).rstrip("/") if e.url else None, model=e.model,
                        api_key_env=e.api_key_env, image_format=str(e.image_format), timeout_s=float(e.timeout_s),
                        concurrency=int(e.concurrency), launch=e.launch,
                        gguf=str(Path(e.gguf).expanduser().resolve()) if e.gguf else None,
                        mmproj=str(Path(e.mmproj).expanduser().resolve()) if e.mmproj else None,
                        server_bin=server_bin, server_version=version, server_threads=e.server_threads,
                        slots=int(e.slots), ctx=int(e.ctx))


def point_fields(part: EndpointPart) -> Dict[str, Optional[str]]:
    """The point keys of an endpoint point (``bench.results.records.PointConfig``): the server,
    the model and the knobs that change what is measured, canonical and sorted. The url of a
    launched server is a free port, not an identity: the binary's version and the files' contents are."""
    opts = {"image_format": part.image_format}
    if part.launch:
        server = f"launch:{part.launch}:{part.server_version}"
        model = Path(part.gguf).name  # the path is the machine's: endpoint_info keeps it
        opts.update(gguf=fingerprint(part.gguf), mmproj=f"{Path(part.mmproj).name}:{fingerprint(part.mmproj)}",
                    threads=str(part.server_threads or "all"), slots=str(part.slots), ctx=str(part.ctx))
    else:
        server, model = part.url, part.model
    return {"endpoint": part.kind, "endpoint_server": server, "endpoint_model": model,
            "endpoint_options": ",".join(f"{k}={v}" for k, v in sorted(opts.items()))}
