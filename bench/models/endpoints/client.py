"""A streaming OpenAI chat-completions client on the standard library, timed per chunk.

Why not the ``openai`` package or ``requests``: the timing is the point, and a client library's
own buffering, retries and connection pool would be part of every number. This sends one
request per connection (``http.client``), reads the server-sent events line by line and takes
``time.perf_counter()`` as each content chunk arrives; nothing else runs between the reads.

Every way a server can fail a request is one :class:`EndpointError` with a one-line reason: no
server at the address, a 4xx/5xx (with its body), a stream that ends without ``[DONE]``, an
``error`` event, no complete answer within the per-request timeout.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit


class EndpointError(RuntimeError):
    """A request the server did not answer as the API says; the message is one line."""


@dataclass
class Answer:
    """One streamed answer: perf_counter times of the request and of each content chunk."""

    sent: float
    chunks: List[float] = field(default_factory=list)  # arrival of each chunk with content
    end: float = 0.0
    usage: Optional[Dict[str, Any]] = None  # the last ``usage`` seen
    timings: Optional[Dict[str, Any]] = None  # llama.cpp's ``timings`` in the final chunk
    finish_reason: Optional[str] = None
    model: Optional[str] = None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class Client:
    """Requests to ``base`` (``http://HOST:PORT/v1``); ``timeout_s`` bounds each socket wait and,
    checked between chunks, the whole answer."""

    def __init__(self, base: str, api_key: Optional[str], timeout_s: float):
        u = urlsplit(base)
        self.base, self.timeout_s, self.api_key = base, float(timeout_s), api_key
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")

    def _conn(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout_s)

    def _headers(self) -> Dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _send(self, conn, method: str, path: str, body: Optional[bytes]):
        url = f"{self.base}{path}"
        try:
            conn.request(method, f"{self.prefix}{path}", body=body, headers=self._headers())
            resp = conn.getresponse()
        except ConnectionRefusedError:
            raise EndpointError(f"no server answers at {self.base} (connection refused)") from None
        except socket.timeout:
            raise EndpointError(f"{url}: no answer within endpoint.timeout_s={self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise EndpointError(f"{url}: {type(exc).__name__}: {_one_line(exc)}") from None
        if resp.status >= 400:
            try:
                text = resp.read(4000).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            try:
                err = json.loads(text).get("error", text)
                text = err.get("message", err) if isinstance(err, dict) else err
            except (ValueError, AttributeError):
                pass
            raise EndpointError(f"HTTP {resp.status} from {url}: {_one_line(text) or resp.reason}")
        return resp

    def models(self) -> List[str]:
        """The model ids ``GET /models`` lists."""
        conn = self._conn()
        try:
            resp = self._send(conn, "GET", "/models", None)
            try:
                data = json.loads(resp.read(1 << 20))
            except (ValueError, OSError, http.client.HTTPException) as exc:
                raise EndpointError(f"{self.base}/models: not an OpenAI model list ({_one_line(exc)})") from None
        finally:
            conn.close()
        return [str(m.get("id")) for m in (data.get("data") or []) if isinstance(m, dict)]

    def chat(self, body: Dict[str, Any]) -> Answer:
        """``POST /chat/completions`` with ``stream: true``; the answer's chunk times."""
        payload = json.dumps(body).encode()
        conn = self._conn()
        ans = Answer(sent=time.perf_counter())
        url = f"{self.base}/chat/completions"
        try:
            resp = self._send(conn, "POST", "/chat/completions", payload)
            deadline = ans.sent + self.timeout_s
            done = False
            while True:
                try:
                    line = resp.readline()
                except socket.timeout:
                    raise EndpointError(f"{url}: no complete answer within endpoint.timeout_s={self.timeout_s:g} s "
                                        f"({len(ans.chunks)} chunks came)") from None
                except (OSError, http.client.HTTPException) as exc:
                    raise EndpointError(f"{url}: the stream broke after {len(ans.chunks)} chunks "
                                        f"({type(exc).__name__}): the server dropped it") from None
                now = time.perf_counter()
                if not line:
                    break
                if now > deadline:
                    raise EndpointError(f"{url}: no complete answer within endpoint.timeout_s={self.timeout_s:g} s "
                                        f"({len(ans.chunks)} chunks came)")
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    ev = json.loads(data)
                except ValueError:
                    raise EndpointError(f"{url}: not a server-sent JSON event: {_one_line(data[:200])}") from None
                self._event(ev, ans, now, url)
            ans.end = time.perf_counter()
        finally:
            conn.close()
        if not done:
            raise EndpointError(f"{url}: the stream ended after {len(ans.chunks)} chunks without [DONE]: "
                                "the server dropped it")
        return ans

    @staticmethod
    def _event(ev: Dict[str, Any], ans: Answer, now: float, url: str) -> None:
        if not isinstance(ev, dict):
            raise EndpointError(f"{url}: not a chat-completions chunk: {_one_line(ev)}")
        if ev.get("error"):
            err = ev["error"]
            raise EndpointError(f"{url}: the server sent an error: "
                                f"{_one_line(err.get('message', err) if isinstance(err, dict) else err)}")
        ans.model = ev.get("model", ans.model)
        if ev.get("usage"):
            ans.usage = ev["usage"]
        if ev.get("timings"):
            ans.timings = ev["timings"]
        for choice in ev.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                ans.chunks.append(now)
            if choice.get("finish_reason"):
                ans.finish_reason = choice["finish_reason"]
