"""Measure an ``endpoint=`` point: a running server's streamed answers to the sample photo.

Why the same timer as in-process points: a server point is read beside them (``compare``,
``gate``, the report), so it has the same stopping rule, intervals and raw samples
(:class:`~.timer.StageTimer`); only where the marks come from differs. One iteration sends
``endpoint.concurrency`` requests at once (each on its own connection and thread) and ends when
the last answer ends, as a batch of that size ends in process:

- ``ttft``: request sent -> first content chunk, mean over the iteration's requests;
- ``ttst``: request sent -> second content chunk, likewise (with ``decode_tokens`` >= 2);
- ``decode``: first -> last content chunk, mean; its steps are every gap between chunks of
  every request (``itl`` raw, ``tpot`` their mean per iteration);
- ``e2e``: the iteration's first request sent -> its last answer ended, so that
  ``requests_per_s`` = concurrency / e2e and ``output_tokens_per_s`` = concurrency x
  decode_tokens / e2e are the throughput that ``sweep=throughput`` reports in process.

Each request carries the image as a data URL (PNG or JPEG), a prompt of ``prompt_tokens`` words
and asks for ``max(decode_tokens, 1)`` tokens, with the kind's fields that hold the length fixed
and keep the prompt cache out (:mod:`bench.models.endpoints`). A text-only request first counts
the prompt's own tokens, so the image's tokens are the server's prompt tokens less those.
Client ITL of a tiny model says little (a read may hold several chunks): the server's own
``predicted_per_token_ms`` is kept beside it where the server reports it.
"""
from __future__ import annotations

import base64
import datetime as _dt
import io
import itertools
import logging
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from ..models.endpoints import get_kind
from ..models.endpoints.client import Answer, Client, EndpointError
from ..results.records import STATUS_ERROR, STATUS_OK, Record
from .environment import environment
from .interrupt import PointInterrupted
from .stats import step_stages
from .timer import StageTimer

log = logging.getLogger("fastvlm_bench")
_NONCE = itertools.count()


def _median(xs: List[float]) -> Optional[float]:
    xs = [float(x) for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def encode_image(image, fmt: str) -> str:
    """The image as a ``data:`` URL: PNG, or JPEG at quality 90."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode()


def prompt_tokens_of(ans: Answer, timings: Dict[str, Any]) -> Optional[int]:
    """The server's count of the prompt's tokens: llama.cpp's ``prompt_n`` plus ``cache_n``, else
    ``usage.prompt_tokens``; None when it says neither."""
    if "prompt_n" in timings:
        return int(timings["prompt_n"]) + int(timings.get("cache_n") or 0)
    if ans.usage and ans.usage.get("prompt_tokens") is not None:
        return int(ans.usage["prompt_tokens"])
    return None


def output_tokens_of(ans: Answer, timings: Dict[str, Any]) -> int:
    if ans.usage and ans.usage.get("completion_tokens") is not None:
        return int(ans.usage["completion_tokens"])
    if "predicted_n" in timings:
        return int(timings["predicted_n"])
    return len(ans.chunks)


def measure_endpoint_point(plan) -> Record:
    """Run one endpoint point and return its record; a failed request or server is an ``error``
    record with the reason (never raises for it), a signal raises as for every point."""
    t_start = time.perf_counter()
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")  # as scenario's records say it
    rec = Record(sweep=plan.run.sweep, config=plan.point, env=environment(), timestamp=now,
                 settings=plan.run.settings)
    rec.device_info = {"type": "endpoint"}
    try:
        _measure(plan, rec)
        rec.status = STATUS_OK
    except PointInterrupted:
        if plan.endpoint.launch:  # at once: in-flight requests end with it, not after their answers
            from .endpoint_server import stop_all

            stop_all()
        raise
    except EndpointError as exc:
        rec.status, rec.message = STATUS_ERROR, str(exc)
    except Exception as exc:  # a broken point must not end the sweep
        rec.status, rec.message = STATUS_ERROR, f"{type(exc).__name__}: {exc}".strip()
    rec.wall_s = time.perf_counter() - t_start
    return rec


def _measure(plan, rec: Record) -> None:
    from ..models.preprocess import load_sample_image

    part, point, run = plan.endpoint, plan.point, plan.run
    info: Dict[str, Any] = rec.endpoint_info
    server = None
    if part.launch:
        from .endpoint_server import server_for

        server = server_for(part, run.exports_dir.parent / run.sweep / "endpoint")
        info["server_log"] = str(server.log_path)
        info["server_cpus"] = server.cpus
    base = server.url if server else part.url
    client = Client(base, part.api_key(), part.timeout_s)
    t0 = time.perf_counter()
    served = client.models()
    if part.model and served and part.model not in served:
        raise EndpointError(f"model {part.model!r} is not served at {base} (it serves: {', '.join(served[:5])})")
    model = part.model or (served[0] if served else None)
    if model is None:
        raise EndpointError(f"{base}/models lists no model; name one with endpoint.model=NAME")
    kind = get_kind(part.kind)
    image = plan.image.load(load_sample_image().convert("RGB"))
    data_url = encode_image(image, part.image_format)
    max_tokens = max(int(point.decode_tokens), 1)
    prompt = "".join([" the"] * int(point.prompt_tokens))  # one token per word in BPE vocabularies
    if part.launch:
        info.update(gguf=part.gguf, mmproj=part.mmproj, server_bin=part.server_bin)
    info.update(served_model=model, kind=part.kind, fixed_output=kind.fixed_output, cache=kind.cache,
                image_wh=[image.width, image.height], image_bytes=len(data_url), max_tokens=max_tokens)

    def body(with_image: bool = True) -> Dict[str, Any]:
        nonce = f"{next(_NONCE):08d}"
        content: List[Dict[str, Any]] = []
        text = kind.nonce_text(nonce)
        if text:
            content.append({"type": "text", "text": text})
        if with_image:
            content.append({"type": "image_url", "image_url": {"url": data_url}})
        content.append({"type": "text", "text": prompt})
        return {"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
                "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0.0,
                **kind.fields(max_tokens, nonce)}

    text_ans = client.chat(body(with_image=False))
    text_tokens = prompt_tokens_of(text_ans, kind.server_timings(text_ans.timings))
    rec.build_s = time.perf_counter() - t0  # reaching the server, listing models, the text-only request
    c = point.batch_size
    pool = ThreadPoolExecutor(max_workers=c, thread_name_prefix="endpoint") if c > 1 else None
    iterations: List[List[Answer]] = []
    log_from = server.log_offset() if server else 0

    def step(t: StageTimer) -> None:
        bodies = [body() for _ in range(c)]
        start = time.perf_counter()
        answers = list(pool.map(client.chat, bodies)) if pool else [client.chat(bodies[0])]
        end = max(a.end for a in answers)
        for a in answers:
            if not a.chunks:
                raise EndpointError(f"{base}: an answer came with no content (finish_reason "
                                    f"{a.finish_reason!r}, usage {a.usage})")
        iterations.append(answers)
        t.record("ttft", statistics.fmean(a.chunks[0] - a.sent for a in answers) * 1e3)
        if max_tokens >= 2:
            if all(len(a.chunks) >= 2 for a in answers):
                t.record("ttst", statistics.fmean(a.chunks[1] - a.sent for a in answers) * 1e3)
            gaps = [(y - x) * 1e3 for a in answers for x, y in zip(a.chunks, a.chunks[1:])]
            t.record("decode", statistics.fmean(a.chunks[-1] - a.chunks[0] for a in answers) * 1e3, steps=gaps)
            t.record("e2e", (end - start) * 1e3)

    timer = StageTimer()
    try:
        result = timer.run(step, run.timing)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    rec.target_stage = run.timing.target_stage
    rec.stages = dict(result.stages)
    if max_tokens >= 2:
        rec.stages.update(step_stages(result.steps.get("decode", []), run.timing.confidence))
    rec.pipeline = {s: f"endpoint:{part.kind}" for s in ("ttft", "decode") if s in rec.stages}
    result.fill_run_fields(rec)
    _server_numbers(rec, kind, iterations[-result.iterations:], text_tokens,
                    server.encode_ms(log_from) if server else [])


def _server_numbers(rec: Record, kind, timed: List[List[Answer]], text_tokens: Optional[int],
                    encode_ms: List[float]) -> None:
    """The server's own numbers over the timed requests: raw per request, medians as columns."""
    info = rec.endpoint_info
    answers = [a for it in timed for a in it]
    per: Dict[str, List[Any]] = {k: [] for k in ("ttft_ms", "e2e_ms", "chunks", "prompt_tokens", "output_tokens",
                                                 "prompt_ms", "predicted_per_token_ms", "cache_n")}
    for a in answers:
        tm = kind.server_timings(a.timings)
        per["ttft_ms"].append(round((a.chunks[0] - a.sent) * 1e3, 4))
        per["e2e_ms"].append(round((a.end - a.sent) * 1e3, 4))
        per["chunks"].append(len(a.chunks))
        per["prompt_tokens"].append(prompt_tokens_of(a, tm))
        per["output_tokens"].append(output_tokens_of(a, tm))
        for k in ("prompt_ms", "predicted_per_token_ms", "cache_n"):
            per[k].append(tm.get(k))
    per["image_encode_ms"] = encode_ms  # warm-up requests included: the same image each time
    info["requests"] = per
    prompt = _median(per["prompt_tokens"])
    info["text_prompt_tokens"] = text_tokens
    info["prompt_tokens"] = int(prompt) if prompt is not None else None
    info["image_tokens"] = int(prompt - text_tokens) if prompt is not None and text_tokens is not None else None
    info["server_prompt_ms"] = _median(per["prompt_ms"])
    info["server_decode_per_token_ms"] = _median(per["predicted_per_token_ms"])
    info["server_image_encode_ms"] = _median(encode_ms)
    info["output_tokens"] = _median(per["output_tokens"])
    rec.visual_tokens = rec.visual_tokens_measured = info["image_tokens"]  # the server's own count
    notes = []
    if prompt is None:
        notes.append("the server reported neither usage nor timings: its prompt and image tokens are unknown")
    if any(o != info["max_tokens"] for o in per["output_tokens"]):
        notes.append(f"answers of {min(per['output_tokens'])}-{max(per['output_tokens'])} tokens, "
                     f"{info['max_tokens']} asked ({kind.fixed_output})")
    if any(x for x in per["cache_n"] if x):
        notes.append("the server took prompt tokens from its cache (cache_n > 0)")
    if notes:
        info["notes"] = notes
        log.warning("%s: %s", rec.config.label(), "; ".join(notes))


def log_summary(rec: Record) -> str:
    """One line for the runner's log."""
    s, i = rec.stages, rec.endpoint_info
    parts = [f"TTFT {s['ttft'].median:.1f} ms (n={s['ttft'].n})"] if "ttft" in s else []
    if "e2e" in s:
        parts.append(f"E2E {s['e2e'].median:.1f} ms")
    for key, label in (("image_tokens", "image tokens"), ("server_prompt_ms", "server prompt ms"),
                       ("server_image_encode_ms", "encode ms")):
        if i.get(key) is not None:
            parts.append(f"{label} {i[key]:.4g}")
    return " | ".join(parts)

